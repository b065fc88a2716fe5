//! The self-check's cases and comparisons, shared by the unit tests (shards on threads)
//! and the `svsoftmax-mpi-check` binary (shards on MPI ranks): seeded batches for every
//! margin kind, indicator and reduction, split evenly, unevenly and with a shard that owns
//! no target, each compared with the single-process ndarray engine (and, in f64, the
//! reference) on the whole batch; and bad inputs, whose error every shard must report as
//! the single-process engine does.

use std::ops::Range;

use ndarray::{s, Array2, ArrayView2};
use svsoftmax_core::scalar::Pieces;
use svsoftmax_core::{
    reference, BeyondPi, CosineMatrix, Error, Forward, Indicator, Margin, Real, Reduction,
    SvSoftmax, Targets, Upstream,
};
use svsoftmax_ndarray::Element;

use svsoftmax_mpi::even_columns;

/// A batch, its configuration, and how its columns are split over the shards.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub config: SvSoftmax,
    pub cosines: Array2<f64>,
    pub targets: Targets,
    pub upstream: Vec<f64>,
    pub splits: Vec<Range<usize>>,
}

impl Case {
    pub fn upstream(&self) -> Upstream<'_> {
        match self.config.reduction() {
            Reduction::None => Upstream::Rows(&self.upstream),
            _ => Upstream::Scalar(self.upstream[0]),
        }
    }

    /// Shard `shard`'s block of the cosines in `E` (a column slice: not contiguous).
    pub fn block<E: Element>(&self, shard: usize) -> Array2<E> {
        let range = self.splits[shard].clone();
        self.cosines
            .slice(s![.., range])
            .mapv(|value| E::store(E::Real::from_f64(value)))
    }
}

/// SplitMix64: a few lines of seeded randomness, the same on every rank.
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn margins() -> Vec<Margin> {
    vec![
        Margin::None,
        Margin::additive(0.35),
        Margin::Angular {
            m: 0.5,
            beyond_pi: BeyondPi::Fallback,
        },
        Margin::Multiplicative { m: 3, lambda: 2.0 },
        Margin::combined(1.1, 0.3, 0.2),
    ]
}

/// Every margin kind x indicator x reduction, over `n_shards` shards, each split three
/// ways: evenly, at seeded uneven cuts (empty shards included), and evenly with every
/// target outside the last shard.
pub fn cases(n_shards: usize, seed: u64) -> Vec<Case> {
    let mut random = Random::new(seed);
    let reductions = [Reduction::Mean, Reduction::Sum, Reduction::None];
    let mut cases = Vec::new();
    for margin in margins() {
        for indicator in [Indicator::Adaptive, Indicator::Fixed] {
            for (index, reduction) in reductions.into_iter().enumerate() {
                let (scale, t) = [(32.0, 1.2), (64.0, 1.5), (48.0, 1.3)][index];
                let config = SvSoftmax::builder()
                    .scale(scale)
                    .t(t)
                    .margin(margin)
                    .indicator(indicator)
                    .reduction(reduction)
                    .build()
                    .expect("the cases' parameters are valid");
                for split in ["even", "uneven", "no target in the last shard"] {
                    let name = format!(
                        "{} / {indicator:?} / {} / s {scale} t {t} / {split}",
                        margin.name(),
                        reduction.name()
                    );
                    cases.push(batch(&mut random, name, config, n_shards, split));
                }
            }
        }
    }
    cases
}

fn batch(
    random: &mut Random,
    name: String,
    config: SvSoftmax,
    n_shards: usize,
    split: &str,
) -> Case {
    let (n_rows, n_classes) = (5 + random.below(4), 23 + random.below(20));
    let splits = match split {
        "uneven" => uneven(random, n_classes, n_shards),
        _ => (0..n_shards)
            .map(|shard| even_columns(n_classes, n_shards, shard))
            .collect(),
    };
    // Targets avoid the last shard's columns when asked (with one shard, its last column).
    let last_start = match splits.last() {
        Some(last) if n_shards > 1 => last.start.max(1),
        _ => n_classes - 1,
    };
    let target_limit = if split.starts_with("no target") {
        last_start
    } else {
        n_classes
    };
    let targets = (0..n_rows)
        .map(|row| (row != 1).then(|| random.below(target_limit)))
        .collect();
    let mut cosines = Array2::from_shape_fn((n_rows, n_classes), |_| 2.0 * random.unit() - 1.0);
    // Cosines of exactly ±1, where the angular slopes are steepest.
    cosines[[0, 0]] = 1.0;
    cosines[[2, n_classes - 1]] = -1.0;
    let upstream = (0..n_rows).map(|_| 0.5 + random.unit()).collect();
    Case {
        name,
        config,
        cosines,
        targets: Targets::with_ignored(targets),
        upstream,
        splits,
    }
}

/// `n_shards` ranges tiling `0..n_classes` at seeded cuts; repeated cuts make empty shards.
fn uneven(random: &mut Random, n_classes: usize, n_shards: usize) -> Vec<Range<usize>> {
    let mut cuts: Vec<usize> = (1..n_shards).map(|_| random.below(n_classes + 1)).collect();
    cuts.sort_unstable();
    let starts = std::iter::once(0).chain(cuts.iter().copied());
    let ends = cuts.iter().copied().chain(std::iter::once(n_classes));
    starts.zip(ends).map(|(start, end)| start..end).collect()
}

/// How far a shard's numbers may lie from the single-process engine's in `E`.
///
/// Both compute each adjusted logit with the same code, so they differ by the order of the
/// sums (`n ε` relative for `n` terms), the final scaling of the gradient and the loss's
/// formula (64 ε relative), and the reference points the exponentials are taken from: an
/// exponent `z - ref` as large as `2B` is rounded differently, which moves the term by up
/// to `2B ε` relative (the target's term, and with it `p_y - 1`, too); the engine's loss is
/// a difference of logarithms near the logit bound `B` when the row is not well classified
/// (`4 ε B` absolute); gradient entries far below the largest may be flushed to zero in one and
/// not the other, or lose terms below `e^-87` of `B` (64 ε of the largest entry).
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    relative: f64,
    loss_absolute: f64,
    grad_share: f64,
}

impl Tolerance {
    pub fn new<R: Real>(config: &SvSoftmax, n_classes: usize) -> Self {
        let epsilon = R::epsilon().to_f64();
        let bound = Pieces::<f64>::new(config)
            .expect("a checked configuration")
            .logit_bound();
        Self {
            relative: (64.0 + n_classes as f64 + 2.0 * bound) * epsilon,
            loss_absolute: 4.0 * epsilon * bound,
            grad_share: 64.0 * epsilon,
        }
    }

    fn close(&self, got: f64, expected: f64, absolute: f64) -> bool {
        (got - expected).abs() <= self.relative * expected.abs() + absolute
    }
}

/// Compares shard `shard`'s result with the whole batch's single-process result.
pub fn compare<E: Element>(
    case: &Case,
    shard: usize,
    got: &Forward,
    grad: ArrayView2<'_, E>,
    expected: &Forward,
    expected_grad: ArrayView2<'_, f64>,
    tolerance: Tolerance,
) -> Result<(), String> {
    let loss = |got: f64, expected: f64, what: &str| {
        if tolerance.close(got, expected, tolerance.loss_absolute) {
            Ok(())
        } else {
            Err(format!("{what}: {got} against {expected}"))
        }
    };
    loss(got.loss, expected.loss, "loss")?;
    for (row, (&got, &expected)) in got.row_losses.iter().zip(&expected.row_losses).enumerate() {
        loss(got, expected, &format!("row {row} loss"))?;
    }
    for (row, (got, expected)) in got
        .diagnostics
        .iter()
        .zip(&expected.diagnostics)
        .enumerate()
    {
        let same = match (got, expected) {
            (Some(got), Some(expected)) => {
                got.support_vectors == expected.support_vectors
                    && got.target_score == expected.target_score
            }
            (None, None) => true,
            _ => false,
        };
        if !same {
            return Err(format!(
                "row {row} diagnostics: {got:?} against {expected:?}"
            ));
        }
    }
    // The largest entry of the whole gradient: a shard's slice may hold only tiny ones.
    let largest = expected_grad.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    let columns = case.splits[shard].clone();
    let expected_grad = expected_grad.slice(s![.., columns.clone()]);
    for ((row, col), &expected) in expected_grad.indexed_iter() {
        let got = grad[[row, col]].load().to_f64();
        if !tolerance.close(got, expected, tolerance.grad_share * largest) {
            let col = columns.start + col;
            return Err(format!("gradient [{row}, {col}]: {got} against {expected}"));
        }
    }
    Ok(())
}

/// The whole batch on the single-process ndarray engine in `E`, widened to f64.
pub fn single_process<E: Element>(case: &Case) -> Result<(Forward, Array2<f64>), Error> {
    let cosines = case
        .cosines
        .mapv(|value| E::store(E::Real::from_f64(value)));
    let (forward, grad) = svsoftmax_ndarray::forward_backward(
        &case.config,
        cosines.view(),
        &case.targets,
        case.upstream(),
    )?;
    Ok((forward, grad.mapv(|value| value.load().to_f64())))
}

/// The whole batch on the f64 reference.
pub fn reference(case: &Case) -> Result<(Forward, Array2<f64>), Error> {
    let flat: Vec<f64> = case.cosines.iter().copied().collect();
    let (n_rows, n_classes) = case.cosines.dim();
    let matrix = CosineMatrix::new(&flat, n_rows, n_classes)?;
    let evaluation =
        reference::forward_backward(&case.config, matrix, &case.targets, case.upstream())?;
    let grad = Array2::from_shape_vec((n_rows, n_classes), evaluation.grad_cosines)
        .expect("the reference's gradient has the batch's shape");
    Ok((evaluation.forward, grad))
}

/// A bad input: what each shard passes, and the error every shard must return.
pub struct BadInput {
    pub name: &'static str,
    pub case: Case,
    /// Per shard: its column range, its block (f64), its targets, and its gradient's shape.
    pub inputs: Vec<ShardInput>,
    pub expected: String,
}

/// What one shard passes in a bad-input case.
#[derive(Clone)]
pub struct ShardInput {
    pub columns: Range<usize>,
    pub cosines: Array2<f64>,
    pub targets: Targets,
    pub grad_shape: (usize, usize),
}

impl ShardInput {
    pub fn block<E: Element>(&self) -> Array2<E> {
        self.cosines
            .mapv(|value| E::store(E::Real::from_f64(value)))
    }
}

/// What every shard passes for `case` when nothing is wrong.
pub fn shard_inputs(case: &Case) -> Vec<ShardInput> {
    (0..case.splits.len())
        .map(|shard| ShardInput {
            columns: case.splits[shard].clone(),
            cosines: case.block::<f64>(shard),
            targets: case.targets.clone(),
            grad_shape: case.block::<f64>(shard).dim(),
        })
        .collect()
}

/// Bad inputs for `n_shards` shards, each with the error the single-process engine (or,
/// for the shard layout itself, the documented rule) gives.
pub fn bad_inputs(n_shards: usize, seed: u64) -> Vec<BadInput> {
    let base = {
        let mut random = Random::new(seed);
        let config = SvSoftmax::builder()
            .margin(Margin::angular(0.5))
            .build()
            .expect("valid");
        batch(
            &mut random,
            "bad".into(),
            config,
            n_shards,
            "no target in the last shard",
        )
    };
    let honest = shard_inputs;
    let engine_error = |case: &Case| match single_process::<f64>(case) {
        Err(error) => error.to_string(),
        Ok(_) => "no error".into(),
    };
    let mut bad = Vec::new();
    let (n_rows, n_classes) = base.cosines.dim();
    let last = n_shards - 1;

    // Two bad cosines: a NaN in the last shard (which owns no target) at row 3, and 1.5
    // in the first shard at row 4. The first in row-major order, row 3's, is the error.
    let mut case = base.clone();
    case.cosines[[3, n_classes - 1]] = f64::NAN;
    case.cosines[[4, 0]] = 1.5;
    let expected = engine_error(&case);
    bad.push(BadInput {
        name: "bad cosines on two shards",
        inputs: honest(&case),
        expected,
        case,
    });

    // A target cosine past 1 + tolerance: its owner finds it in the first exchange.
    let mut case = base.clone();
    let target = case.targets.get(0).expect("row 0 is active");
    case.cosines[[0, target]] = 1.01;
    let expected = engine_error(&case);
    bad.push(BadInput {
        name: "bad target cosine",
        inputs: honest(&case),
        expected,
        case,
    });

    // A target at the global class count: out of range, whichever shard looks.
    let mut case = base.clone();
    let mut targets: Vec<Option<usize>> = case.targets.as_slice().to_vec();
    targets[2] = Some(n_classes);
    case.targets = Targets::with_ignored(targets);
    let expected = engine_error(&case);
    bad.push(BadInput {
        name: "target out of range",
        inputs: honest(&case),
        expected,
        case,
    });

    // A gradient overflow: an upstream gradient of 1e308 times slopes above 1.
    let mut case = base.clone();
    case.config = case.config.with_reduction(Reduction::Sum);
    case.upstream = vec![1e308; n_rows];
    let expected = engine_error(&case);
    bad.push(BadInput {
        name: "gradient overflow",
        inputs: honest(&case),
        expected,
        case,
    });

    // The last shard's range starts one column late (with one shard: at 1).
    let mut inputs = honest(&base);
    let shifted = inputs[last].columns.start + 1..inputs[last].columns.end.max(1);
    let expected_start = inputs[last].columns.start;
    inputs[last].columns = shifted.clone();
    let expected = Error::ShardColumns {
        rank: last,
        expected_start,
        start: shifted.start,
        end: shifted.end,
    };
    bad.push(BadInput {
        name: "column ranges with a gap",
        case: base.clone(),
        inputs,
        expected: expected.to_string(),
    });

    // The first shard's block is one column short of its range.
    let mut inputs = honest(&base);
    let columns = inputs[0].columns.clone();
    let width = columns.len().saturating_sub(1);
    inputs[0].cosines = inputs[0].cosines.slice(s![.., ..width]).to_owned();
    inputs[0].grad_shape = inputs[0].cosines.dim();
    let expected = Error::ShardWidth {
        rank: 0,
        start: columns.start,
        end: columns.end,
        got: width,
    };
    bad.push(BadInput {
        name: "block narrower than its range",
        case: base.clone(),
        inputs,
        expected: expected.to_string(),
    });

    // The last shard's gradient buffer has a row too many.
    let mut inputs = honest(&base);
    let (rows, cols) = inputs[last].grad_shape;
    inputs[last].grad_shape = (rows + 1, cols);
    let expected = Error::GradShape {
        expected: [rows, cols],
        got: [rows + 1, cols],
    };
    bad.push(BadInput {
        name: "gradient of the wrong shape",
        case: base.clone(),
        inputs,
        expected: expected.to_string(),
    });

    // The last shard passes other targets (only meaningful with two shards or more).
    if n_shards > 1 {
        let mut inputs = honest(&base);
        let mut targets: Vec<Option<usize>> = base.targets.as_slice().to_vec();
        targets[0] = targets[0].map(|target| (target + 1) % n_classes);
        inputs[last].targets = Targets::with_ignored(targets);
        let expected = Error::ShardMismatch {
            rank: last,
            what: "targets",
        };
        bad.push(BadInput {
            name: "targets differ across shards",
            case: base.clone(),
            inputs,
            expected: expected.to_string(),
        });
    }
    bad
}
