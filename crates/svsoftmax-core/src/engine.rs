//! The contract every engine implements, and the results it returns.

use crate::config::{Reduction, SvSoftmax};
use crate::error::{Error, Result};
use crate::matrix::CosineMatrix;
use crate::targets::Targets;

/// The gradient flowing into the loss from above.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Upstream<'a> {
    /// One value for the reduced loss; with [`Reduction::None`] it applies to every row,
    /// which differentiates the sum of the row losses scaled by it.
    Scalar(f64),
    /// One value per row, for [`Reduction::None`] only: the vector-Jacobian product.
    Rows(&'a [f64]),
}

impl Default for Upstream<'_> {
    /// The unit gradient: `backward` returns the gradient of the loss itself.
    fn default() -> Self {
        Self::Scalar(1.0)
    }
}

impl Upstream<'_> {
    /// Checks the upstream gradient against the reduction and the number of rows.
    ///
    /// # Errors
    /// [`Error::UpstreamForReduction`], [`Error::UpstreamLength`] or
    /// [`Error::NonFiniteUpstream`].
    pub fn check(&self, reduction: Reduction, n_rows: usize) -> Result<()> {
        match *self {
            Self::Scalar(value) if !value.is_finite() => {
                Err(Error::NonFiniteUpstream { row: None, value })
            }
            Self::Scalar(_) => Ok(()),
            Self::Rows(_) if reduction != Reduction::None => Err(Error::UpstreamForReduction {
                reduction: reduction.name(),
            }),
            Self::Rows(rows) if rows.len() != n_rows => Err(Error::UpstreamLength {
                n_rows,
                got: rows.len(),
            }),
            Self::Rows(rows) => match rows.iter().position(|value| !value.is_finite()) {
                Some(row) => Err(Error::NonFiniteUpstream {
                    row: Some(row),
                    value: rows[row],
                }),
                None => Ok(()),
            },
        }
    }

    /// The factor by which row `row`'s loss gradient is multiplied, given the reduction
    /// and the number of rows that are not ignored. Call [`Upstream::check`] first.
    #[inline]
    pub fn row_weight(&self, reduction: Reduction, n_active: usize, row: usize) -> f64 {
        let upstream = match *self {
            Self::Scalar(value) => value,
            Self::Rows(rows) => rows[row],
        };
        match reduction {
            Reduction::Mean if n_active > 0 => upstream / n_active as f64,
            Reduction::Mean => 0.0,
            Reduction::Sum | Reduction::None => upstream,
        }
    }
}

impl Reduction {
    /// Reduces per-row losses (0 on ignored rows) over `n_active` rows that are not
    /// ignored. [`Reduction::None`] gives the sum, which is what a scalar upstream
    /// gradient differentiates. The mean divides each term first, so that it is finite
    /// whenever the row losses are.
    pub fn reduce(self, row_losses: &[f64], n_active: usize) -> f64 {
        match self {
            Self::Mean if n_active > 0 => {
                let n = n_active as f64;
                row_losses.iter().map(|loss| loss / n).sum()
            }
            Self::Mean => 0.0,
            Self::Sum | Self::None => row_losses.iter().sum(),
        }
    }
}

/// What a row tells about the state of training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowDiagnostics {
    /// The target score `f(m, cos θ_y)`.
    pub target_score: f64,
    /// How many non-target columns the mask selects.
    pub support_vectors: usize,
    /// The softmax probability of the target over the adjusted logits.
    pub target_prob: f64,
}

/// The result of a forward pass. `Forward::default()` is an empty result for an engine to
/// fill and reuse.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Forward {
    /// The reduced loss; for [`Reduction::None`], the sum of the row losses.
    pub loss: f64,
    /// One loss per row, 0 on ignored rows.
    pub row_losses: Vec<f64>,
    /// One entry per row, `None` on ignored rows.
    pub diagnostics: Vec<Option<RowDiagnostics>>,
}

/// The result of a forward and backward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The forward pass.
    pub forward: Forward,
    /// The gradient of the reduced loss (times the upstream gradient) with respect to the
    /// cosines, row-major like them.
    pub grad_cosines: Vec<f64>,
}

/// The contract every engine crate implements, so that one case runs on every engine and
/// float type and the results compare directly.
///
/// The contract speaks f64 row-major buffers whatever the engine computes in: an f32
/// engine rounds the cosines to f32 on the way in and widens its results on the way out,
/// and that rounding is part of what a comparison's tolerance covers. Engines offer their
/// own native API beside it; this trait is the common denominator.
pub trait Engine {
    /// The engine's name in reports: `reference`, `ndarray-f32`, ...
    fn name(&self) -> &str;

    /// The loss, the per-row losses and the per-row diagnostics.
    ///
    /// # Errors
    /// Any [`Error`] about the inputs.
    fn forward(
        &self,
        config: &SvSoftmax,
        cosines: CosineMatrix<'_>,
        targets: &Targets,
    ) -> Result<Forward>;

    /// The forward pass and the gradient with respect to the cosines.
    ///
    /// # Errors
    /// Any [`Error`] about the inputs or the upstream gradient.
    fn forward_backward(
        &self,
        config: &SvSoftmax,
        cosines: CosineMatrix<'_>,
        targets: &Targets,
        upstream: Upstream<'_>,
    ) -> Result<Evaluation>;
}
