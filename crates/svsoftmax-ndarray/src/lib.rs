//! A fused, vectorized CPU engine for the SV-X-Softmax loss family on ndarray.
//!
//! Per row, the target's score comes first; one pass then forms the exponentials of the
//! adjusted logits with the support-vector mask and the indicator applied on the fly,
//! relative to a proven upper bound of the logits, and writes them into the gradient buffer
//! the caller owns; a second pass over the row, still in cache, normalizes them into the
//! gradient. Rows the bound does not suit take an exact blocked path (see the `kernel`
//! module). With a reused [`Forward`], a training loop allocates nothing after its first
//! step. The instruction set (AVX-512, AVX2 or the baseline) is chosen at run time, and
//! rows are split across threads with rayon above a measured size. The scalar pieces of
//! the loss come from [`svsoftmax_core::scalar`].
//!
//! ```
//! use ndarray::array;
//! use svsoftmax_core::Targets;
//!
//! let cosines = array![[0.5f32, 0.6, -0.2], [0.1, 0.9, 0.3]];
//! let targets = Targets::new(&[0, 1]);
//! // SV-AM-Softmax with s = 32, m = 0.35, t = 1.2.
//! let (loss, grad) = svsoftmax_ndarray::sv_am(cosines.view(), &targets, 32.0, 0.35, 1.2)?;
//! assert!(loss > 0.0 && grad.dim() == (2, 3));
//! # Ok::<(), svsoftmax_core::Error>(())
//! ```
#![warn(missing_docs)]

mod element;
mod engine;
mod exp;
mod kernel;

use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use num_traits::{Float, Zero};
use svsoftmax_core::scalar::Pieces;
use svsoftmax_core::{Error, Forward, Real, Result, RowDiagnostics, SvSoftmax, Targets, Upstream};

pub use element::Element;
pub use engine::NdarrayEngine;
pub use exp::FastExp;
pub use kernel::instruction_set;

/// The fewest cosines a thread is given: a block of rows splits in two only while each half
/// keeps at least this many. Handing work to rayon's pool from outside it costs a thread
/// wake-up, tens of microseconds here, so below ~32 000 cosines one thread is as fast
/// (measured in this crate's README).
pub const PARALLEL_THRESHOLD: usize = 1 << 14;

/// The loss, the per-row losses and the diagnostics.
///
/// `cosines` is `(n_rows, n_classes)` with any strides; contiguous rows are the fast path,
/// and other layouts are copied once into a contiguous buffer. An ignored row's cosines are
/// never read.
///
/// # Errors
/// The core's [`Error`]s: shapes, targets, non-finite or out-of-range cosines, overflow.
pub fn forward<E: Element>(
    config: &SvSoftmax,
    cosines: ArrayView2<'_, E>,
    targets: &Targets,
) -> Result<Forward> {
    let mut out = Forward::default();
    forward_into(config, cosines, targets, &mut out)?;
    Ok(out)
}

/// [`forward`] into a reused result, which allocates nothing once it has held a batch of
/// this size.
///
/// # Errors
/// As [`forward`].
pub fn forward_into<E: Element>(
    config: &SvSoftmax,
    cosines: ArrayView2<'_, E>,
    targets: &Targets,
    out: &mut Forward,
) -> Result<()> {
    let (n_rows, n_classes) = cosines.dim();
    targets.check(n_rows, n_classes)?;
    let cosines = cosines.as_standard_layout();
    let flat = cosines.as_slice().expect("standard layout is contiguous");
    run(config, flat, n_classes, targets, None, out)
}

/// The forward pass and the gradient of the reduced loss (times `upstream`) with respect
/// to the cosines, written into `grad`, which must have the shape of `cosines`.
///
/// A contiguous `grad` is written in place; any other layout is computed in a temporary
/// and copied in. On error, `grad` holds unspecified values.
///
/// # Errors
/// As [`forward`], plus [`Error::GradShape`] and the upstream gradient's errors.
pub fn forward_backward_into<E: Element>(
    config: &SvSoftmax,
    cosines: ArrayView2<'_, E>,
    targets: &Targets,
    upstream: Upstream<'_>,
    mut grad: ArrayViewMut2<'_, E>,
    out: &mut Forward,
) -> Result<()> {
    let (n_rows, n_classes) = cosines.dim();
    targets.check(n_rows, n_classes)?;
    if grad.dim() != cosines.dim() {
        let (rows, cols) = grad.dim();
        return Err(Error::GradShape {
            expected: [n_rows, n_classes],
            got: [rows, cols],
        });
    }
    upstream.check(config.reduction(), n_rows)?;
    let cosines = cosines.as_standard_layout();
    let flat = cosines.as_slice().expect("standard layout is contiguous");
    match grad.as_slice_mut() {
        Some(grad) => run(
            config,
            flat,
            n_classes,
            targets,
            Some((upstream, grad)),
            out,
        ),
        None => {
            let mut contiguous = Array2::from_elem(grad.dim(), E::store(Zero::zero()));
            let slice = contiguous
                .as_slice_mut()
                .expect("new arrays are contiguous");
            run(
                config,
                flat,
                n_classes,
                targets,
                Some((upstream, slice)),
                out,
            )?;
            grad.assign(&contiguous);
            Ok(())
        }
    }
}

/// [`forward_backward_into`] with a new gradient array.
///
/// # Errors
/// As [`forward_backward_into`].
pub fn forward_backward<E: Element>(
    config: &SvSoftmax,
    cosines: ArrayView2<'_, E>,
    targets: &Targets,
    upstream: Upstream<'_>,
) -> Result<(Forward, Array2<E>)> {
    let mut grad = Array2::from_elem(cosines.dim(), E::store(Zero::zero()));
    let mut out = Forward::default();
    forward_backward_into(
        config,
        cosines,
        targets,
        upstream,
        grad.view_mut(),
        &mut out,
    )?;
    Ok((out, grad))
}

/// The common case in one call: SV-AM-Softmax with scale `s`, margin `m` and weight `t`,
/// the other settings at their defaults (adaptive indicator, mean). Returns the mean loss
/// and its gradient.
///
/// # Errors
/// As [`forward_backward`], and the configuration's [`Error::Hyperparameter`].
pub fn sv_am<E: Element>(
    cosines: ArrayView2<'_, E>,
    targets: &Targets,
    scale: f64,
    m: f64,
    t: f64,
) -> Result<(f64, Array2<E>)> {
    let config = SvSoftmax::sv_am(scale, m, t)?;
    let (forward, grad) = forward_backward(&config, cosines, targets, Upstream::default())?;
    Ok((forward.loss, grad))
}

/// A block of consecutive rows, split in halves for the threads.
struct Block<'a, E> {
    first_row: usize,
    cosines: &'a [E],
    grad: Option<&'a mut [E]>,
    targets: &'a [Option<usize>],
    losses: &'a mut [f64],
    diagnostics: &'a mut [Option<RowDiagnostics>],
}

struct Shared<'a, F> {
    pieces: Pieces<F>,
    config: &'a SvSoftmax,
    n_classes: usize,
    n_active: usize,
    upstream: Option<Upstream<'a>>,
}

fn run<E: Element>(
    config: &SvSoftmax,
    cosines: &[E],
    n_classes: usize,
    targets: &Targets,
    backward: Option<(Upstream<'_>, &mut [E])>,
    out: &mut Forward,
) -> Result<()> {
    let n_rows = targets.len();
    out.row_losses.clear();
    out.row_losses.resize(n_rows, 0.0);
    out.diagnostics.clear();
    out.diagnostics.resize(n_rows, None);

    let (upstream, grad) = match backward {
        Some((upstream, grad)) => (Some(upstream), Some(grad)),
        None => (None, None),
    };
    let shared = Shared {
        pieces: Pieces::new(config)?,
        config,
        n_classes,
        n_active: targets.n_active(),
        upstream,
    };
    let block = Block {
        first_row: 0,
        cosines,
        grad,
        targets: targets.as_slice(),
        losses: &mut out.row_losses,
        diagnostics: &mut out.diagnostics,
    };
    process(&shared, block);

    // The reference's order: a bad input anywhere first, then an overflowing loss, then an
    // overflowing gradient, each at its first row.
    let first = |sentinel: f64| {
        out.row_losses
            .iter()
            .position(|&loss| loss == sentinel || (sentinel.is_nan() && loss.is_nan()))
    };
    let overflow = |row, quantity| Error::Overflow {
        row: Some(row),
        quantity,
        value: f64::INFINITY,
        dtype: <E::Real as Real>::NAME,
    };
    if let Some(row) = first(REJECTED) {
        let target = targets.get(row).expect("only active rows are rejected");
        let row_cosines = &cosines[row * n_classes..][..n_classes];
        return Err(
            diagnose(&shared.pieces, row, row_cosines, target).unwrap_or(overflow(row, "logit"))
        );
    }
    if let Some(row) = first(LOSS_OVERFLOW) {
        return Err(overflow(row, "row loss"));
    }
    if let Some(row) = first(GRADIENT_OVERFLOW) {
        return Err(overflow(row, "gradient"));
    }
    out.loss = config.reduction().reduce(&out.row_losses, shared.n_active);
    if !out.loss.is_finite() {
        return Err(Error::Overflow {
            row: None,
            quantity: "reduced loss",
            value: out.loss,
            dtype: <E::Real as Real>::NAME,
        });
    }
    Ok(())
}

fn process<E: Element>(shared: &Shared<'_, E::Real>, block: Block<'_, E>) {
    #[cfg(feature = "rayon")]
    if block.targets.len() >= 2 && block.cosines.len() >= 2 * PARALLEL_THRESHOLD {
        let n_rows = block.targets.len();
        let (left, right) = split(block, n_rows / 2, shared.n_classes);
        rayon::join(|| process(shared, left), || process(shared, right));
        return;
    }
    let Block {
        first_row,
        cosines,
        mut grad,
        targets,
        losses,
        diagnostics,
    } = block;
    let n_classes = shared.n_classes;
    for (i, ((&target, loss), diagnostic)) in targets
        .iter()
        .zip(losses.iter_mut())
        .zip(diagnostics.iter_mut())
        .enumerate()
    {
        let row_cosines = &cosines[i * n_classes..][..n_classes];
        let row_grad = grad
            .as_deref_mut()
            .map(|grad| &mut grad[i * n_classes..][..n_classes]);
        let Some(target) = target else {
            if let Some(row_grad) = row_grad {
                row_grad.fill(E::store(Zero::zero()));
            }
            continue;
        };
        let backward = row_grad.map(|row_grad| {
            let upstream = shared
                .upstream
                .expect("a gradient buffer comes with an upstream");
            let weight =
                upstream.row_weight(shared.config.reduction(), shared.n_active, first_row + i);
            (row_grad, E::Real::from_f64(weight))
        });
        *loss = match kernel::row(&shared.pieces, row_cosines, target, backward) {
            None => REJECTED,
            Some(stats) if !stats.loss.is_finite() => LOSS_OVERFLOW,
            Some(stats) if !stats.max_grad.is_finite() => GRADIENT_OVERFLOW,
            Some(stats) => {
                *diagnostic = Some(RowDiagnostics {
                    target_score: stats.target_score.to_f64(),
                    support_vectors: stats.support_vectors,
                    target_prob: stats.target_prob.to_f64(),
                });
                stats.loss.to_f64()
            }
        };
    }
}

// A row that fails leaves one of these in place of its loss, which no accepted row can have,
// and the caller turns the first one into the row's error.
const REJECTED: f64 = f64::NAN;
const LOSS_OVERFLOW: f64 = f64::INFINITY;
const GRADIENT_OVERFLOW: f64 = f64::NEG_INFINITY;

#[cfg(feature = "rayon")]
fn split<'a, E>(block: Block<'a, E>, mid: usize, n_classes: usize) -> (Block<'a, E>, Block<'a, E>) {
    let (cosines_left, cosines_right) = block.cosines.split_at(mid * n_classes);
    let (grad_left, grad_right) = match block.grad {
        Some(grad) => {
            let (left, right) = grad.split_at_mut(mid * n_classes);
            (Some(left), Some(right))
        }
        None => (None, None),
    };
    let (targets_left, targets_right) = block.targets.split_at(mid);
    let (losses_left, losses_right) = block.losses.split_at_mut(mid);
    let (diagnostics_left, diagnostics_right) = block.diagnostics.split_at_mut(mid);
    (
        Block {
            first_row: block.first_row,
            cosines: cosines_left,
            grad: grad_left,
            targets: targets_left,
            losses: losses_left,
            diagnostics: diagnostics_left,
        },
        Block {
            first_row: block.first_row + mid,
            cosines: cosines_right,
            grad: grad_right,
            targets: targets_right,
            losses: losses_right,
            diagnostics: diagnostics_right,
        },
    )
}

/// The error of a row the kernel rejected, found with the core's scalar checks in the
/// reference's order: every cosine of the row first, then every logit.
fn diagnose<E: Element>(
    pieces: &Pieces<E::Real>,
    row: usize,
    cosines: &[E],
    target: usize,
) -> Option<Error> {
    let checked: Result<Vec<E::Real>> = cosines
        .iter()
        .enumerate()
        .map(|(col, value)| pieces.check_cosine(row, col, value.load()))
        .collect();
    let checked = match checked {
        Ok(checked) => checked,
        Err(error) => return Some(error),
    };
    let target_logit = pieces.target_logit(checked[target]);
    checked.iter().enumerate().find_map(|(col, &cosine)| {
        let logit = if col == target {
            target_logit.logit
        } else {
            pieces.negative_logit(target_logit.score, cosine).logit
        };
        pieces.check_logit(row, col, cosine, logit).err()
    })
}

/// The crate README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
