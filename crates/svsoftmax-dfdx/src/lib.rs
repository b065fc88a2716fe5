//! The SV-X-Softmax loss family inside dfdx's autodiff, on [`Cpu`] and (with the `cuda`
//! feature) on `Cuda`, with the cosine classifier head it is trained with.
//!
//! [`SvSoftmaxLoss`] takes a `(rows, classes)` tensor of cosines and the targets as class
//! indices and returns a tensor on the cosines' tape: `.backward()` on it sends the
//! gradient into whatever produced the cosines, typically a [`CosineHead`]. Two
//! implementations compute the same loss: [`Implementation::Composed`] from dfdx's own
//! operations, on every device, and [`Implementation::Fused`], one pass of the ndarray
//! engine's kernel with a backward operation of its own, on `Cpu`. [`Implementation::Auto`]
//! picks the faster one on each device (measured in the README).
//!
//! For row `i` with target `y`, the loss is the softmax cross-entropy over the adjusted
//! logits `z_y = s f(m, c_y)` and `z_k = s c_k + I_k log h_k`, where the support-vector mask
//! `I_k` is 1 iff `f(m, c_y) < c_k`; see `svsoftmax_core` for the margins and indicators.
//!
//! ```
//! use dfdx::prelude::*;
//! use svsoftmax_core::{SvSoftmax, Targets};
//! use svsoftmax_dfdx::SvSoftmaxLoss;
//!
//! let dev: Cpu = Default::default();
//! let cosines = dev.tensor_from_vec(vec![0.5f32, 0.6, -0.2, 0.1, 0.9, 0.3], (2, 3));
//! let targets = Targets::new(&[0, 1]);
//! // SV-AM-Softmax with s = 32, m = 0.35, t = 1.2.
//! let loss = SvSoftmaxLoss::new(SvSoftmax::sv_am(32.0, 0.35, 1.2)?);
//!
//! let value = loss.loss(cosines.leaky_trace(), &targets)?;
//! assert!(value.array() > 0.0);
//! let grads = value.backward();
//! assert_eq!(grads.get(&cosines).as_vec().len(), 6);
//! # Ok::<(), svsoftmax_core::Error>(())
//! ```
#![warn(missing_docs)]

mod composed;
mod device;
mod engine;
mod fused;
mod head;

use std::sync::Arc;

use dfdx::prelude::*;
use svsoftmax_core::{Reduction, Result, RowDiagnostics, SvSoftmax, Targets};

pub use device::{DfdxFloat, LossDevice};
pub use engine::{cpu_engines, DfdxEngine};
pub use head::{builders, CosineHead};

/// Which computation of the loss to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Implementation {
    /// The faster implementation on the tensor's device: fused on `Cpu`, composed elsewhere.
    #[default]
    Auto,
    /// dfdx's own tensor operations, differentiated by dfdx: every device.
    Composed,
    /// One pass of the core's scalar pieces with a backward operation of its own: `Cpu`.
    Fused,
}

impl Implementation {
    /// The implementation's name in reports and engine names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Composed => "composed",
            Self::Fused => "fused",
        }
    }
}

/// A configured SV-X-Softmax loss over dfdx tensors.
///
/// Shapes: cosines `(rows, classes)` with runtime or const dimensions, any strides; one
/// target per row (ignored rows contribute 0 and receive no gradient, and their cosines are
/// never read). PyTorch analogue of the plain case (`t = 1`, no margin):
/// `F.cross_entropy(s * cosines, targets, reduction=...)`.
///
/// Clones share the fused implementation's buffers, which are kept between calls.
#[derive(Debug, Clone)]
pub struct SvSoftmaxLoss {
    config: SvSoftmax,
    implementation: Implementation,
    buffers: Arc<fused::Buffers>,
}

/// The per-row losses on the tape, and what a row tells about training.
#[doc(hidden)]
pub struct Rows<B: Dim, E: Dtype, D: Storage<E>, T> {
    losses: Tensor<(B,), E, D, T>,
    /// `f(m, c_y)` per row; unspecified on ignored rows.
    target_scores: Vec<f64>,
    /// Support vectors per row, where the implementation counted them.
    support_vectors: Option<Vec<usize>>,
}

/// The loss with the diagnostics of every row.
#[derive(Debug, Clone)]
pub struct LossOutput<E: Dtype, D: Storage<E>, T> {
    /// The reduced loss, on the cosines' tape.
    pub loss: Tensor<(), E, D, T>,
    /// One loss per row (0 on ignored rows), read back from the device.
    pub row_losses: Vec<f64>,
    /// One entry per row, `None` on ignored rows.
    pub diagnostics: Vec<Option<RowDiagnostics>>,
}

impl SvSoftmaxLoss {
    /// The loss of `config`, computed by the device's default implementation.
    pub fn new(config: SvSoftmax) -> Self {
        Self {
            config,
            implementation: Implementation::Auto,
            buffers: Arc::default(),
        }
    }

    /// The same loss computed by `implementation`.
    pub fn with_implementation(mut self, implementation: Implementation) -> Self {
        self.implementation = implementation;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &SvSoftmax {
        &self.config
    }

    /// The implementation asked for (before [`Implementation::Auto`] is resolved).
    pub fn implementation(&self) -> Implementation {
        self.implementation
    }

    /// The loss reduced as the configuration says: the mean over rows that are not
    /// ignored, or the sum ([`Reduction::None`] also gives the sum here, as in the core;
    /// [`SvSoftmaxLoss::row_losses`] gives the rows).
    ///
    /// # Errors
    /// The core's errors about the inputs (targets length or range, non-finite or
    /// out-of-range cosines, hyperparameters that do not fit `E`, a loss that overflows),
    /// [`svsoftmax_core::Error::Unsupported`] for the fused implementation off `Cpu`, and
    /// [`svsoftmax_core::Error::Device`] when the device fails.
    pub fn loss<B, K, E, D, T>(
        &self,
        cosines: Tensor<(B, K), E, D, T>,
        targets: &Targets,
    ) -> Result<Tensor<(), E, D, T>>
    where
        B: Dim,
        K: Dim,
        E: DfdxFloat,
        D: LossDevice<E>,
        T: Tape<E, D> + Merge<T>,
    {
        let rows = self.rows(cosines, targets, false)?;
        self.reduce(rows.losses, targets)
    }

    /// One loss per row, 0 on ignored rows, on the cosines' tape.
    ///
    /// # Errors
    /// As [`SvSoftmaxLoss::loss`].
    pub fn row_losses<B, K, E, D, T>(
        &self,
        cosines: Tensor<(B, K), E, D, T>,
        targets: &Targets,
    ) -> Result<Tensor<(B,), E, D, T>>
    where
        B: Dim,
        K: Dim,
        E: DfdxFloat,
        D: LossDevice<E>,
        T: Tape<E, D> + Merge<T>,
    {
        let rows = self.rows(cosines, targets, false)?;
        check_row_losses::<E>(&host(&rows.losses))?;
        Ok(rows.losses)
    }

    /// The reduced loss with every row's loss and diagnostics (the target score, the
    /// number of support vectors, the target's probability).
    ///
    /// # Errors
    /// As [`SvSoftmaxLoss::loss`].
    pub fn forward<B, K, E, D, T>(
        &self,
        cosines: Tensor<(B, K), E, D, T>,
        targets: &Targets,
    ) -> Result<LossOutput<E, D, T>>
    where
        B: Dim,
        K: Dim,
        E: DfdxFloat,
        D: LossDevice<E>,
        T: Tape<E, D> + Merge<T>,
    {
        let rows = self.rows(cosines, targets, true)?;
        let row_losses: Vec<f64> = host(&rows.losses).iter().map(|l| l.widen()).collect();
        let support_vectors = rows.support_vectors.unwrap_or_default();
        let diagnostics = targets
            .as_slice()
            .iter()
            .enumerate()
            .map(|(row, target)| {
                target.map(|_| RowDiagnostics {
                    target_score: rows.target_scores[row],
                    support_vectors: support_vectors.get(row).copied().unwrap_or(0),
                    target_prob: (-row_losses[row]).exp(),
                })
            })
            .collect();
        let loss = self.reduce(rows.losses, targets)?;
        Ok(LossOutput {
            loss,
            row_losses,
            diagnostics,
        })
    }

    fn rows<B, K, E, D, T>(
        &self,
        cosines: Tensor<(B, K), E, D, T>,
        targets: &Targets,
        count_support_vectors: bool,
    ) -> Result<Rows<B, E, D, T>>
    where
        B: Dim,
        K: Dim,
        E: DfdxFloat,
        D: LossDevice<E>,
        T: Tape<E, D> + Merge<T>,
    {
        let implementation = match self.implementation {
            Implementation::Auto => D::DEFAULT,
            other => other,
        };
        match implementation {
            Implementation::Fused => {
                D::fused_row_losses(&self.buffers, &self.config, cosines, targets).unwrap_or_else(
                    || {
                        Err(svsoftmax_core::Error::Unsupported {
                            requested: Implementation::Fused.name(),
                            device: D::NAME,
                            available: "composed, auto",
                        })
                    },
                )
            }
            _ => composed::row_losses(&self.config, cosines, targets, count_support_vectors),
        }
    }

    /// The reduction on the device: the mean divides each row first, as the core does, so
    /// that it is finite whenever the rows are.
    fn reduce<B, E, D, T>(
        &self,
        losses: Tensor<(B,), E, D, T>,
        targets: &Targets,
    ) -> Result<Tensor<(), E, D, T>>
    where
        B: Dim,
        E: DfdxFloat,
        D: LossDevice<E>,
        T: Tape<E, D> + Merge<T>,
    {
        if losses.shape().0.size() == 0 {
            // dfdx's reductions index their input's first element; an empty batch sums to 0.
            let (losses, tape) = losses.split_tape();
            let zero = losses
                .device()
                .try_zeros()
                .map_err(device::device_error("the loss"))?;
            return Ok(zero.put_tape(tape));
        }
        check_row_losses::<E>(&losses.as_vec())?;
        let n_active = targets.n_active();
        let weight = match self.config.reduction() {
            Reduction::Mean if n_active > 0 => 1.0 / n_active as f64,
            Reduction::Mean => 0.0,
            Reduction::Sum | Reduction::None => 1.0,
        };
        let loss = if weight == 1.0 {
            losses.sum::<(), _>()
        } else {
            (losses * E::round_from(weight)).sum::<(), _>()
        };
        let value = loss.as_vec()[0];
        if !value.is_finite() {
            return Err(svsoftmax_core::Error::Overflow {
                row: None,
                quantity: "reduced loss",
                value: value.widen(),
                dtype: E::dtype(),
            });
        }
        Ok(loss)
    }
}

/// A tensor's values on the host; dfdx 0.13's `as_vec` indexes past the end of an empty one.
pub(crate) fn host<S: Shape, E: Dtype, D: Storage<E>, T>(tensor: &Tensor<S, E, D, T>) -> Vec<E> {
    if tensor.shape().num_elements() == 0 {
        Vec::new()
    } else {
        tensor.as_vec()
    }
}

/// The rows of an empty batch: no loss, and a gradient (empty) for the cosines, so that
/// `grads.get(&cosines)` finds one as for any other batch.
pub(crate) fn empty_rows<B, K, E, D, T>(
    cosines: Tensor<(B, K), E, D, T>,
) -> Result<Rows<B, E, D, T>>
where
    B: Dim,
    K: Dim,
    E: DfdxFloat,
    D: LossDevice<E>,
    T: Tape<E, D>,
{
    let rows = cosines.shape().0;
    let (cosines, mut tape) = cosines.split_tape();
    let ghost = cosines.ghost();
    tape.add_backward_op(move |grads| grads.try_alloc_for(&ghost));
    let losses = cosines
        .device()
        .try_zeros_like(&(rows,))
        .map_err(device::device_error("the row losses"))?;
    Ok(Rows {
        losses: losses.put_tape(tape),
        target_scores: Vec::new(),
        support_vectors: Some(Vec::new()),
    })
}

fn check_row_losses<E: DfdxFloat>(losses: &[E]) -> Result<()> {
    match losses.iter().position(|loss| !loss.is_finite()) {
        Some(row) => Err(svsoftmax_core::Error::Overflow {
            row: Some(row),
            quantity: "row loss",
            value: losses[row].widen(),
            dtype: E::dtype(),
        }),
        None => Ok(()),
    }
}

/// The crate README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
