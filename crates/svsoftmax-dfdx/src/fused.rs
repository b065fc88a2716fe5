//! The fused implementation on [`Cpu`]: one pass of the ndarray engine's kernel (the core's
//! scalar pieces, vectorized) forms the per-row losses and their gradient together, and a
//! backward operation of ours on dfdx's tape scales that gradient by the upstream one.
//!
//! dfdx 0.13 lends no view of a tensor's storage outside itself, so the cosines are copied
//! into a buffer of ours first (one `memcpy`); the kernel then reads them once. The gradient
//! of each row's loss is kept until the backward pass, where row `i` adds `u_i` times it to
//! the cosines' gradient: rows are independent, so that is the gradient of any weighting
//! of the row losses, the mean and the sum included.

use std::sync::{Arc, Mutex};

use dfdx::prelude::*;
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;
use svsoftmax_core::{Forward, Reduction, Result, SvSoftmax, Targets, Upstream};

use crate::device::{device_error, DfdxFloat};
use crate::Rows;

/// Buffers the size of the cosines, kept between steps: a fresh one costs a page fault per
/// 4 KiB on its first write, which at these sizes takes longer than the kernel itself.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Buffers {
    pub(crate) f32: Pool<f32>,
    pub(crate) f64: Pool<f64>,
}

/// The spare buffers of one float type; at most [`Pool::KEPT`] are kept.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Pool<E>(Mutex<Vec<Vec<E>>>);

impl<E: DfdxFloat> Pool<E> {
    /// Two: the copy of the cosines and the gradient of the step in flight.
    const KEPT: usize = 2;

    /// A buffer of `len` values whose contents are stale: the callers overwrite all of it.
    fn take(&self, len: usize) -> Vec<E> {
        let spare = self.0.lock().map(|mut spare| spare.pop()).unwrap_or(None);
        let mut buffer = spare.unwrap_or_default();
        buffer.resize(len, E::zero());
        buffer
    }

    fn give(&self, buffer: Vec<E>) {
        if let Ok(mut spare) = self.0.lock() {
            if spare.len() < Self::KEPT {
                spare.push(buffer);
            }
        }
    }
}

pub(crate) fn row_losses<B, K, E, T>(
    buffers: &Arc<Buffers>,
    config: &SvSoftmax,
    cosines: Tensor<(B, K), E, Cpu, T>,
    targets: &Targets,
) -> Result<Rows<B, E, Cpu, T>>
where
    B: Dim,
    K: Dim,
    E: DfdxFloat,
    Cpu: Device<E>,
    T: Tape<E, Cpu>,
{
    let (rows, classes) = *cosines.shape();
    let (n_rows, n_classes) = (rows.size(), classes.size());
    targets.check(n_rows, n_classes)?;
    // Free for a row-major tensor; a permuted or broadcast one is laid out row-major first,
    // on the tape, so that the copy below and the gradient line up with it.
    let cosines = cosines
        .try_contiguous()
        .map_err(device_error("the row-major layout of the cosines"))?;
    let (cosines, mut tape) = cosines.split_tape();

    let pool = E::pool(buffers);
    let mut copy = pool.take(n_rows * n_classes);
    cosines.copy_into(&mut copy);
    let values = ArrayView2::from_shape((n_rows, n_classes), &copy)
        .expect("the buffer holds n_rows x n_classes values");
    // The gradient of each row's own loss: reduction none with a unit upstream gradient.
    let per_row = config.with_reduction(Reduction::None);
    let mut forward = Forward::default();
    let grad_rows = if T::OWNS_TAPE {
        let mut grad = pool.take(n_rows * n_classes);
        svsoftmax_ndarray::forward_backward_into(
            &per_row,
            values,
            targets,
            Upstream::Scalar(1.0),
            ArrayViewMut2::from_shape((n_rows, n_classes), &mut grad)
                .expect("the buffer holds n_rows x n_classes values"),
            &mut forward,
        )
        .inspect_err(|_| pool.give(std::mem::take(&mut copy)))?;
        Some(grad)
    } else {
        svsoftmax_ndarray::forward_into(&per_row, values, targets, &mut forward)
            .inspect_err(|_| pool.give(std::mem::take(&mut copy)))?;
        None
    };
    pool.give(copy);

    let losses: Vec<E> = forward
        .row_losses
        .iter()
        .map(|&loss| E::round_from(loss))
        .collect();
    let losses = cosines
        .device()
        .try_tensor_from_vec(losses, (rows,))
        .map_err(device_error("the row losses"))?;
    if let Some(grad_rows) = grad_rows {
        let cosines_ghost = cosines.ghost();
        let losses_ghost = losses.ghost();
        let buffers = Arc::clone(buffers);
        tape.add_backward_op(move |grads| {
            let upstream = E::cpu_slice(grads.get_or_alloc_mut(&losses_ghost)?).to_vec();
            let grad_cosines = E::cpu_slice(grads.get_or_alloc_mut(&cosines_ghost)?);
            accumulate(grad_cosines, &grad_rows, &upstream, n_classes);
            E::pool(&buffers).give(grad_rows);
            Ok(())
        });
    }

    Ok(Rows {
        losses: losses.put_tape(tape),
        target_scores: diagnostic(&forward, |d| d.target_score),
        support_vectors: Some(
            forward
                .diagnostics
                .iter()
                .map(|d| d.map_or(0, |d| d.support_vectors))
                .collect(),
        ),
    })
}

fn diagnostic(
    forward: &Forward,
    field: impl Fn(&svsoftmax_core::RowDiagnostics) -> f64,
) -> Vec<f64> {
    forward
        .diagnostics
        .iter()
        .map(|d| d.as_ref().map_or(f64::NAN, &field))
        .collect()
}

/// `grad_cosines[i, :] += upstream[i] * grad_rows[i, :]`; rows whose upstream gradient is
/// zero (ignored rows, a zero weight) are skipped. Split across rayon's threads in blocks of
/// rows of at least [`svsoftmax_ndarray::PARALLEL_THRESHOLD`] values, the size below which
/// the ndarray engine measured one thread to be as fast.
fn accumulate<E: DfdxFloat>(grad_cosines: &mut [E], grad_rows: &[E], upstream: &[E], n: usize) {
    let block = svsoftmax_ndarray::PARALLEL_THRESHOLD.div_ceil(n).max(1) * n;
    grad_cosines
        .par_chunks_mut(block)
        .zip(grad_rows.par_chunks(block))
        .zip(upstream.par_chunks(block / n))
        .for_each(|((grad, rows), upstream)| {
            let rows = grad.chunks_exact_mut(n).zip(rows.chunks_exact(n));
            for ((grad, row), &weight) in rows.zip(upstream) {
                if weight != E::zero() {
                    for (g, &r) in grad.iter_mut().zip(row) {
                        *g += weight * r;
                    }
                }
            }
        });
}
