//! The SV-X-Softmax loss family with the classes split across MPI processes (model
//! parallelism, as in PartialFC): each rank holds the columns `[start, end)` of the cosines
//! for the whole batch and gets back the loss and its own slice of the gradient.
//!
//! A rank that does not own a row's target column cannot compute the row's target score
//! `f`, yet its support-vector mask `f < cos θ_k` depends on it. One step therefore makes
//! these collectives, each over O(batch) numbers whatever the number of classes:
//!
//! 1. an all-gather of a fixed header per rank (column range, shapes, fingerprints of the
//!    inputs every rank must pass alike), checked on every rank before any math;
//! 2. an all-reduce (maximum) of the target scores: the owner of a row's target
//!    contributes `f`, every other rank `-∞`;
//! 3. an all-reduce of the row partials `(reference, Σ exp(z_k - reference))` with a
//!    user-defined operator, the core's associative [`RowPartial::merge`]; each row's
//!    first rejected input travels with it;
//! 4. with the gradient, an all-reduce (maximum) of one number: the first row whose
//!    gradient overflowed anywhere.
//!
//! Then every rank computes every row's loss, `L = log(1 + O e^{-z_y})` with `O` the merged
//! sum over the non-target columns, and its own slice of the gradient, locally.
//!
//! ```no_run
//! use ndarray::Array2;
//! use svsoftmax_core::{Forward, SvSoftmax, Targets, Upstream};
//! use svsoftmax_mpi::ColumnShard;
//!
//! let universe = mpi::initialize().expect("MPI initializes once");
//! let world = universe.world();
//! let n_classes = 1000;
//! // This rank's share of the classes: an even split of 0..1000 over the ranks.
//! let mut shard = ColumnShard::even(&world, n_classes);
//! let columns = shard.columns();
//!
//! // The cosines of the whole batch against this rank's classes; targets are global.
//! let cosines = Array2::<f32>::from_elem((4, columns.len()), 0.1);
//! let targets = Targets::new(&[0, 1, 500, 999]);
//! let config = SvSoftmax::sv_am(64.0, 0.35, 1.2)?;
//!
//! let mut grad = Array2::<f32>::zeros(cosines.dim());
//! let mut out = Forward::default();
//! shard.forward_backward_into(
//!     &config,
//!     cosines.view(),
//!     &targets,
//!     Upstream::default(),
//!     grad.view_mut(),
//!     &mut out,
//! )?;
//! // Every rank holds the same loss; `grad` is this rank's columns of the gradient.
//! println!("loss {}", out.loss);
//! # Ok::<(), svsoftmax_core::Error>(())
//! ```
//!
//! Errors are the core's [`Error`]s, the same value on every rank: a bad input on one rank
//! fails the step on all of them, never leaves one waiting in a collective (see
//! [`ColumnShard::forward_backward_into`]).
//!
//! [`RowPartial::merge`]: svsoftmax_core::shard::RowPartial::merge
//! [`Error`]: svsoftmax_core::Error
#![warn(missing_docs)]

extern crate self as svsoftmax_mpi;

#[cfg(test)]
mod check;
mod kernel;
mod protocol;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod threads;
mod wire;

use std::ops::Range;

use mpi::traits::Communicator;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use num_traits::Zero;
use svsoftmax_core::{Forward, Result, SvSoftmax, Targets, Upstream};
use svsoftmax_ndarray::Element;

use protocol::{Backward, Block, Buffers};
use wire::Transport;

/// One rank's share of the classes, with the buffers its steps reuse.
///
/// Every rank of the communicator makes the same calls in the same order, with the same
/// configuration, targets and upstream gradient, its own column range and its own block
/// of cosines. MPI calls are made from the calling thread only.
#[derive(Debug)]
pub struct ColumnShard<'c, C> {
    comm: &'c C,
    columns: Range<usize>,
    buffers: Buffers,
}

impl<'c, C: Communicator> ColumnShard<'c, C> {
    /// This rank's shard of the classes `columns`; the ranges of all ranks must tile
    /// `0..n_classes` in rank order, which every step checks.
    pub fn new(comm: &'c C, columns: Range<usize>) -> Self {
        Self {
            comm,
            columns,
            buffers: Buffers::default(),
        }
    }

    /// This rank's share of an even split of `n_classes` over the communicator (see
    /// [`even_columns`]).
    pub fn even(comm: &'c C, n_classes: usize) -> Self {
        let (n_ranks, rank) = (Transport::size(comm), Transport::rank(comm));
        Self::new(comm, even_columns(n_classes, n_ranks, rank))
    }

    /// The classes this rank holds.
    pub fn columns(&self) -> Range<usize> {
        self.columns.clone()
    }

    /// The loss, the per-row losses and the diagnostics, the same on every rank.
    ///
    /// `cosines` is `(n_rows, end - start)`: the whole batch against this rank's classes,
    /// any strides (a non-contiguous view is copied once). Collective: see
    /// [`ColumnShard::forward_backward_into`].
    ///
    /// # Errors
    /// As [`ColumnShard::forward_backward_into`], without the gradient's.
    pub fn forward_into<E: Element>(
        &mut self,
        config: &SvSoftmax,
        cosines: ArrayView2<'_, E>,
        targets: &Targets,
        out: &mut Forward,
    ) -> Result<()> {
        let columns = self.columns.clone();
        evaluate(
            self.comm,
            &mut self.buffers,
            columns,
            config,
            cosines,
            targets,
            None,
            out,
        )
    }

    /// The forward pass, and this rank's columns of the gradient of the reduced loss (times
    /// `upstream`) with respect to the cosines, written into `grad` (the shape of
    /// `cosines`).
    ///
    /// For a row with target `y`, target score `f` and adjusted logits `z_k` over all
    /// classes, `L = log Σ_k e^{z_k} - s f`, as in the single-process engines; only the
    /// summation is split. Per step each rank contributes [`payload_bytes`] to the
    /// collectives.
    ///
    /// # Errors
    /// The same [`Error`] on every rank, checked in this order:
    /// - [`Error::ShardMismatch`] when a rank's configuration, targets, upstream gradient,
    ///   element type or call (forward or forward and backward) differs from rank 0's;
    /// - [`Error::ShardColumns`] when the ranges do not tile `0..n_classes` in rank order,
    ///   [`Error::ShardWidth`] when a rank's cosines are not as wide as its range;
    /// - the targets' errors against the global number of classes, then
    ///   [`Error::GradShape`] and the upstream gradient's errors;
    /// - the first rejected input (non-finite or out-of-range cosine, overflowing logit) in
    ///   row-major order over the global columns, as the single-process engines name it;
    /// - [`Error::Overflow`] of a row loss, the gradient or the reduced loss.
    ///
    /// On error, `grad` holds unspecified values.
    ///
    /// [`Error`]: svsoftmax_core::Error
    /// [`Error::ShardMismatch`]: svsoftmax_core::Error::ShardMismatch
    /// [`Error::ShardColumns`]: svsoftmax_core::Error::ShardColumns
    /// [`Error::ShardWidth`]: svsoftmax_core::Error::ShardWidth
    /// [`Error::GradShape`]: svsoftmax_core::Error::GradShape
    /// [`Error::Overflow`]: svsoftmax_core::Error::Overflow
    #[allow(clippy::too_many_arguments)]
    pub fn forward_backward_into<E: Element>(
        &mut self,
        config: &SvSoftmax,
        cosines: ArrayView2<'_, E>,
        targets: &Targets,
        upstream: Upstream<'_>,
        grad: ArrayViewMut2<'_, E>,
        out: &mut Forward,
    ) -> Result<()> {
        let columns = self.columns.clone();
        let backward = Some((upstream, grad));
        evaluate(
            self.comm,
            &mut self.buffers,
            columns,
            config,
            cosines,
            targets,
            backward,
            out,
        )
    }
}

/// The `index`-th of `n_shards` nearly equal ranges that tile `0..n_classes`: the first
/// `n_classes % n_shards` ranges hold one class more. Empty when `index >= n_shards`.
///
/// ```
/// assert_eq!(svsoftmax_mpi::even_columns(10, 3, 0), 0..4);
/// assert_eq!(svsoftmax_mpi::even_columns(10, 3, 2), 7..10);
/// ```
pub fn even_columns(n_classes: usize, n_shards: usize, index: usize) -> Range<usize> {
    if index >= n_shards {
        return n_classes..n_classes;
    }
    let (base, extra) = (n_classes / n_shards, n_classes % n_shards);
    let start = index * base + index.min(extra);
    start..start + base + usize::from(index < extra)
}

/// The bytes each rank contributes to the collectives of one step of `n_rows` rows:
/// `8 · 12` for the header, `8 · n_rows` for the target scores, `32 · n_rows` for the row
/// partials (maximum, sum, support vectors, error key), and with the gradient `8` for the
/// overflow check; a failing step adds an 8-byte broadcast.
///
/// What the network carries is this payload times the factor of the algorithm MPI picks:
/// about `2 (p - 1) / p` for a ring all-reduce over `p` ranks, `log2 p` for recursive
/// doubling, and `p - 1` headers for the all-gather.
///
/// ```
/// assert_eq!(svsoftmax_mpi::payload_bytes(512, true), 96 + 40 * 512 + 8);
/// ```
pub fn payload_bytes(n_rows: usize, backward: bool) -> usize {
    let header = 8 * wire::field::LEN;
    let scores = 8 * n_rows;
    let partials = std::mem::size_of::<wire::WirePartial>() * n_rows;
    header + scores + partials + if backward { 8 } else { 0 }
}

/// The step over any transport, from ndarray views: the layout handling of the public
/// methods, shared with the unit tests' in-process transport.
#[allow(clippy::too_many_arguments)]
fn evaluate<T: Transport, E: Element>(
    transport: &T,
    buffers: &mut Buffers,
    columns: Range<usize>,
    config: &SvSoftmax,
    cosines: ArrayView2<'_, E>,
    targets: &Targets,
    backward: Option<(Upstream<'_>, ArrayViewMut2<'_, E>)>,
    out: &mut Forward,
) -> Result<()> {
    let (n_rows, width) = cosines.dim();
    let cosines = cosines.as_standard_layout();
    let block = Block {
        columns,
        cosines: cosines.as_slice().expect("standard layout is contiguous"),
        shape: [n_rows, width],
    };
    let Some((upstream, mut grad)) = backward else {
        return protocol::run(transport, buffers, config, block, targets, None, out);
    };
    let (grad_rows, grad_cols) = grad.dim();
    let grad_shape = [grad_rows, grad_cols];
    if let Some(slice) = grad.as_slice_mut() {
        let backward = Backward {
            upstream,
            grad: slice,
            grad_shape,
        };
        return protocol::run(
            transport,
            buffers,
            config,
            block,
            targets,
            Some(backward),
            out,
        );
    }
    let mut contiguous = Array2::from_elem(grad.dim(), E::store(Zero::zero()));
    let backward = Backward {
        upstream,
        grad: contiguous
            .as_slice_mut()
            .expect("new arrays are contiguous"),
        grad_shape,
    };
    protocol::run(
        transport,
        buffers,
        config,
        block,
        targets,
        Some(backward),
        out,
    )?;
    grad.assign(&contiguous);
    Ok(())
}

/// The crate README's examples, compiled as doctests (not run: they need `mpirun`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
