//! One step of the sharded loss, collective by collective: the header exchange and its
//! checks, the target scores, the partials, and each rank's loss and gradient slice.
//!
//! Every rank makes the same collectives in the same order whatever its inputs, and turns
//! a failure into an error only at a point where every rank knows of it: the header's
//! checks run on the gathered headers, identically everywhere; a rejected input travels
//! in its row's partial and is named after the merge, from a value its owner broadcasts;
//! an overflowing gradient entry is found by one more maximum. No rank ever returns while
//! another waits in a collective.

use std::ops::Range;

use num_traits::Float;

use svsoftmax_core::scalar::Pieces;
use svsoftmax_core::{
    Error, Forward, Real, Reduction, Result, RowDiagnostics, SvSoftmax, Targets, Upstream,
};
use svsoftmax_ndarray::Element;

use crate::kernel::{self, Scan};
use crate::wire::{field, Header, Transport, WirePartial, FINGERPRINTS, NO_GRADIENT};

/// The buffers of one step, reused from step to step: O(batch) each, nothing of the size of
/// the cosines.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    headers: Vec<u64>,
    local_scores: Vec<f64>,
    scores: Vec<f64>,
    target_slopes: Vec<f64>,
    local_partials: Vec<WirePartial>,
    partials: Vec<WirePartial>,
    /// The input behind each row's local error key.
    error_values: Vec<f64>,
}

/// This rank's cosines, row-major: `n_rows` rows of its columns.
pub(crate) struct Block<'a, E> {
    pub columns: Range<usize>,
    pub cosines: &'a [E],
    pub shape: [usize; 2],
}

/// The backward pass's inputs: the upstream gradient and this rank's gradient slice, whose
/// shape is checked against the block's on every rank before it is written.
pub(crate) struct Backward<'a, E> {
    pub upstream: Upstream<'a>,
    pub grad: &'a mut [E],
    pub grad_shape: [usize; 2],
}

/// Runs one step over `transport`; see the module's documentation.
pub(crate) fn run<T: Transport, E: Element>(
    transport: &T,
    buffers: &mut Buffers,
    config: &SvSoftmax,
    block: Block<'_, E>,
    targets: &Targets,
    mut backward: Option<Backward<'_, E>>,
    out: &mut Forward,
) -> Result<()> {
    let header = Header {
        columns: block.columns.clone(),
        shape: block.shape,
        grad_shape: backward.as_ref().map(|backward| backward.grad_shape),
        n_targets: targets.len(),
    };
    let upstream = backward.as_ref().map(|backward| backward.upstream);
    let mine = header.encode(config, targets, upstream, E::NAME);
    buffers.headers.resize(transport.size() * field::LEN, 0);
    transport.all_gather(&mine, &mut buffers.headers);
    let n_classes = check_headers(&buffers.headers, targets)?;
    if let Some(upstream) = upstream {
        upstream.check(config.reduction(), targets.len())?;
    }
    let pieces = Pieces::<E::Real>::new(config)?;

    let step = Step {
        pieces,
        block,
        targets,
        n_classes,
        reduction: config.reduction(),
    };
    step.target_scores(transport, buffers);
    step.partials(
        transport,
        buffers,
        backward.as_mut().map(|backward| &mut *backward.grad),
    );
    if let Some(error) = step.first_error(transport, buffers) {
        return Err(error);
    }
    step.losses(buffers, out)?;
    if let Some(backward) = backward {
        step.gradient(transport, buffers, backward)?;
    }
    out.loss = config
        .reduction()
        .reduce(&out.row_losses, targets.n_active());
    if !out.loss.is_finite() {
        return Err(overflow::<E>(None, "reduced loss", out.loss));
    }
    Ok(())
}

fn overflow<E: Element>(row: Option<usize>, quantity: &'static str, value: f64) -> Error {
    Error::Overflow {
        row,
        quantity,
        value,
        dtype: <E::Real as Real>::NAME,
    }
}

/// Checks every rank's header in rank order, the same way on every rank, and returns the
/// global number of classes. The order follows the single-process engines' where the
/// checks are theirs: targets, then the gradient's shape.
fn check_headers(headers: &[u64], targets: &Targets) -> Result<usize> {
    let ranks: Vec<&[u64]> = headers.chunks_exact(field::LEN).collect();
    let usize_of = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
    for (rank, header) in ranks.iter().enumerate() {
        let differs = (0..FINGERPRINTS.len())
            .find(|&i| header[field::FINGERPRINTS + i] != ranks[0][field::FINGERPRINTS + i]);
        if let Some(i) = differs {
            return Err(Error::ShardMismatch {
                rank,
                what: FINGERPRINTS[i],
            });
        }
    }
    let mut expected_start = 0;
    for (rank, header) in ranks.iter().enumerate() {
        let (start, end) = (usize_of(header[field::START]), usize_of(header[field::END]));
        if start != expected_start || end < start {
            return Err(Error::ShardColumns {
                rank,
                expected_start,
                start,
                end,
            });
        }
        expected_start = end;
    }
    let n_classes = expected_start;
    for (rank, header) in ranks.iter().enumerate() {
        let (start, end) = (usize_of(header[field::START]), usize_of(header[field::END]));
        let got = usize_of(header[field::COLS]);
        if got != end - start {
            return Err(Error::ShardWidth {
                rank,
                start,
                end,
                got,
            });
        }
    }
    if n_classes < 2 {
        return Err(Error::TooFewClasses { n_classes });
    }
    for header in &ranks {
        let (n_rows, n_targets) = (header[field::ROWS], header[field::TARGETS]);
        if n_rows != n_targets {
            return Err(Error::TargetsLength {
                n_rows: usize_of(n_rows),
                n_targets: usize_of(n_targets),
            });
        }
    }
    targets.check(targets.len(), n_classes)?;
    for header in &ranks {
        let grad = [header[field::GRAD_ROWS], header[field::GRAD_COLS]];
        let block = [header[field::ROWS], header[field::COLS]];
        if grad != [NO_GRADIENT; 2] && grad != block {
            return Err(Error::GradShape {
                expected: block.map(usize_of),
                got: grad.map(usize_of),
            });
        }
    }
    Ok(n_classes)
}

/// The checked inputs of one step on this rank.
struct Step<'a, E: Element> {
    pieces: Pieces<E::Real>,
    block: Block<'a, E>,
    targets: &'a Targets,
    n_classes: usize,
    reduction: Reduction,
}

impl<E: Element> Step<'_, E> {
    fn n_rows(&self) -> usize {
        self.block.shape[0]
    }

    fn row(&self, row: usize) -> &[E] {
        let width = self.block.shape[1];
        &self.block.cosines[row * width..(row + 1) * width]
    }

    /// The local column of `row`'s target, if this rank owns it.
    fn owned_target(&self, row: usize) -> Option<usize> {
        let columns = &self.block.columns;
        let target = self.targets.get(row)?;
        columns.contains(&target).then(|| target - columns.start)
    }

    /// Records an error key of `row` if it comes before the one recorded.
    fn record(&self, buffers: &mut Buffers, row: usize, phase: usize, col: usize, value: f64) {
        let key = (phase * self.n_classes + col) as f64;
        if key < buffers.local_partials[row].first_error {
            buffers.local_partials[row].first_error = key;
            buffers.error_values[row] = value;
        }
    }

    /// Exchange 1: the owner of each row's target computes `f`; the others contribute
    /// `-∞`, the maximum's identity, and so does an owner whose target cosine is rejected
    /// (its error is recorded for exchange 2). An ignored row stays at `-∞` everywhere.
    fn target_scores<T: Transport>(&self, transport: &T, buffers: &mut Buffers) {
        let n_rows = self.n_rows();
        buffers.local_scores.clear();
        buffers.local_scores.resize(n_rows, f64::NEG_INFINITY);
        buffers.target_slopes.clear();
        buffers.target_slopes.resize(n_rows, 0.0);
        buffers.local_partials.clear();
        buffers.local_partials.resize(n_rows, WirePartial::EMPTY);
        buffers.error_values.clear();
        buffers.error_values.resize(n_rows, 0.0);
        for row in 0..n_rows {
            let Some(local) = self.owned_target(row) else {
                continue;
            };
            let col = self.block.columns.start + local;
            let raw = self.row(row)[local].load();
            if !self.pieces.accepts(raw) {
                self.record(buffers, row, 0, col, raw.to_f64());
                continue;
            }
            let cosine = self.pieces.clamp_cosine(raw);
            let target = self.pieces.target_logit(cosine);
            if !target.logit.is_finite() {
                self.record(buffers, row, 1, col, cosine.to_f64());
            }
            buffers.local_scores[row] = target.score.to_f64();
            buffers.target_slopes[row] = target.slope.to_f64();
        }
        buffers.scores.resize(n_rows, 0.0);
        transport.all_max(&buffers.local_scores, &mut buffers.scores);
    }

    /// Exchange 2: every rank's partial of every active row, merged; with `grad`, the
    /// unscaled gradient terms are stored on the way. A row whose target score is unknown
    /// (its target cosine was rejected) is only checked, so that the first bad input of
    /// the row is found wherever it lies.
    fn partials<T: Transport>(
        &self,
        transport: &T,
        buffers: &mut Buffers,
        mut grad: Option<&mut [E]>,
    ) {
        let (n_rows, width) = (self.n_rows(), self.block.shape[1]);
        for row in 0..n_rows {
            if self.targets.get(row).is_none() {
                continue;
            }
            let cosines = self.row(row);
            let score = buffers.scores[row];
            let scan = if score == f64::NEG_INFINITY {
                kernel::first_rejected(&self.pieces, cosines).map(|col| Scan::Rejected { col })
            } else {
                let grad_row = grad
                    .as_deref_mut()
                    .map(|grad| &mut grad[row * width..(row + 1) * width]);
                let score = E::Real::from_f64(score);
                let target = self.owned_target(row);
                Some(kernel::scan_row(
                    &self.pieces,
                    score,
                    cosines,
                    target,
                    grad_row,
                ))
            };
            match scan {
                Some(Scan::Partial {
                    reference,
                    sum,
                    support_vectors,
                }) => {
                    let partial = &mut buffers.local_partials[row];
                    partial.max = reference;
                    partial.sum = sum;
                    partial.support_vectors = support_vectors as f64;
                }
                Some(Scan::Rejected { col }) => {
                    let value = cosines[col].load().to_f64();
                    self.record(buffers, row, 0, self.block.columns.start + col, value);
                }
                None => {}
            }
        }
        buffers.partials.resize(n_rows, WirePartial::EMPTY);
        transport.all_merge(&buffers.local_partials, &mut buffers.partials);
    }

    /// The first rejected input of the batch, the same on every rank: the smallest key of
    /// the first row that has one, named from the value its owner broadcasts.
    fn first_error<T: Transport>(&self, transport: &T, buffers: &Buffers) -> Option<Error> {
        let row = buffers
            .partials
            .iter()
            .position(|p| p.first_error.is_finite())?;
        let key = buffers.partials[row].first_error as usize;
        let (phase, col) = (key / self.n_classes, key % self.n_classes);
        let owner = owner_of(&buffers.headers, col);
        let mut value = if owner == transport.rank() {
            buffers.error_values[row]
        } else {
            0.0
        };
        transport.broadcast(owner, &mut value);
        let value = E::Real::from_f64(value);
        // Re-running the core's own check on the value gives the very error (and message)
        // that the single-process engines give.
        let error = match phase {
            0 => self.pieces.check_cosine(row, col, value).err(),
            _ => {
                let logit = E::Real::infinity();
                self.pieces.check_logit(row, col, value, logit).err()
            }
        };
        // The check failed on the owner with this very value, so it fails here too; the
        // fallback only keeps this path free of panics.
        Some(error.unwrap_or(Error::NonFiniteCosine {
            row,
            col,
            value: value.to_f64(),
        }))
    }

    /// Every row's loss and diagnostics, on every rank alike: `L = log(1 + O e^{-z_y})`,
    /// with `O` the merged sum of the non-target exponentials.
    fn losses(&self, buffers: &Buffers, out: &mut Forward) -> Result<()> {
        let n_rows = self.n_rows();
        out.row_losses.clear();
        out.row_losses.resize(n_rows, 0.0);
        out.diagnostics.clear();
        out.diagnostics.resize(n_rows, None);
        for row in 0..n_rows {
            if self.targets.get(row).is_none() {
                continue;
            }
            let score = buffers.scores[row];
            let partial = buffers.partials[row];
            let loss = softplus(partial.row_partial().log_sum_exp() - self.target_logit(score));
            if !loss.is_finite() {
                return Err(overflow::<E>(Some(row), "row loss", f64::INFINITY));
            }
            out.row_losses[row] = loss;
            out.diagnostics[row] = Some(RowDiagnostics {
                target_score: score,
                support_vectors: partial.support_vectors as usize,
                target_prob: (-loss).exp(),
            });
        }
        Ok(())
    }

    /// `z_y = s f` in the engine's float type, bit for bit what the owner computed.
    fn target_logit(&self, score: f64) -> f64 {
        (self.pieces.scale() * E::Real::from_f64(score)).to_f64()
    }

    /// This rank's gradient slice, then exchange 3: the first row whose gradient overflowed
    /// on any rank.
    fn gradient<T: Transport>(
        &self,
        transport: &T,
        buffers: &Buffers,
        backward: Backward<'_, E>,
    ) -> Result<()> {
        let (n_rows, width) = (self.n_rows(), self.block.shape[1]);
        let n_active = self.targets.n_active();
        let mut first_overflow = f64::NEG_INFINITY;
        for row in 0..n_rows {
            let grad = &mut backward.grad[row * width..(row + 1) * width];
            if self.targets.get(row).is_none() {
                grad.fill(E::store(<E::Real as num_traits::Zero>::zero()));
                continue;
            }
            let weight = backward.upstream.row_weight(self.reduction, n_active, row);
            let z_y = self.target_logit(buffers.scores[row]);
            let reference = buffers.local_partials[row].max;
            let merged = buffers.partials[row].row_partial();
            // `e^{reference - lse}` as one over the row's sum of exponentials taken relative to
            // this rank's reference. Differences of nearby logits are exact, where
            // `reference - (z_y + loss)` would carry the rounding of a sum of two numbers of
            // the size of `s` into the exponent (a relative error of `s ε`). A shard whose
            // reference lies far below the row's maximum gets 0, its probabilities' value.
            let denominator = merged.sum * (merged.max - reference).exp() + (z_y - reference).exp();
            let factor = E::Real::from_f64(1.0 / denominator);
            let target = self.owned_target(row);
            let mut largest =
                kernel::scale_row(grad, target, factor, E::Real::from_f64(weight)).to_f64();
            if let Some(local) = target {
                // p_y - 1 = -1 / (1 + e^{z_y - log O}), free of the cancellation in p_y - 1.
                let log_others = buffers.partials[row].row_partial().log_sum_exp();
                let entry = -weight * buffers.target_slopes[row] / (1.0 + (z_y - log_others).exp());
                grad[local] = E::store(E::Real::from_f64(entry));
                largest = largest.max(E::Real::from_f64(entry).abs().to_f64());
            }
            if !largest.is_finite() && first_overflow == f64::NEG_INFINITY {
                first_overflow = -(row as f64);
            }
        }
        let mut global = [0.0];
        transport.all_max(&[first_overflow], &mut global);
        if global[0] > f64::NEG_INFINITY {
            let row = (-global[0]) as usize;
            return Err(overflow::<E>(Some(row), "gradient", f64::INFINITY));
        }
        Ok(())
    }
}

/// `log(1 + e^x)` without overflow for large `x` nor loss of accuracy for very negative.
fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// The rank whose columns hold `col`.
fn owner_of(headers: &[u64], col: usize) -> usize {
    let col = col as u64;
    headers
        .chunks_exact(field::LEN)
        .position(|header| (header[field::START]..header[field::END]).contains(&col))
        .unwrap_or(0)
}
