//! The reference math in f64, written to be obviously right rather than fast: every row is
//! laid out column by column ([`RowBreakdown`]) and the loss, the gradient and the
//! diagnostics are read off that table.
//!
//! ```
//! use svsoftmax_core::{reference, CosineMatrix, SvSoftmax, Targets};
//!
//! // The adaptive SV-Softmax value of a row whose second column is a support vector.
//! let config = SvSoftmax::builder().scale(32.0).t(1.2).build()?;
//! let cosines = CosineMatrix::new(&[0.5, 0.6, -0.2], 1, 3)?;
//! let forward = reference::forward(&config, cosines, &Targets::new(&[0]))?;
//! assert!((forward.loss - 13.440001).abs() < 1e-6);
//! # Ok::<(), svsoftmax_core::Error>(())
//! ```

use crate::config::SvSoftmax;
use crate::engine::{Engine, Evaluation, Forward, RowDiagnostics, Upstream};
use crate::error::{Error, Result};
use crate::matrix::CosineMatrix;
use crate::scalar::Pieces;
use crate::targets::Targets;

/// One row of the loss, column by column.
#[derive(Debug, Clone, PartialEq)]
pub struct RowBreakdown {
    /// The target class.
    pub target: usize,
    /// The target score `f`.
    pub target_score: f64,
    /// The cosines the loss used (clamped to ±1 for the margins that take an arccos).
    pub cosines: Vec<f64>,
    /// The support-vector mask `I_k` (false on the target column).
    pub mask: Vec<bool>,
    /// `log h_k`: 0 outside the mask and on the target column.
    pub log_indicators: Vec<f64>,
    /// The adjusted logits `z_k`.
    pub logits: Vec<f64>,
    /// `d z_k / d cos θ_k`.
    pub slopes: Vec<f64>,
    /// `log Σ_k exp z_k`, computed from the row maximum.
    pub log_sum_exp: f64,
}

impl RowBreakdown {
    fn new(pieces: &Pieces<f64>, row: usize, cosines: &[f64], target: usize) -> Result<Self> {
        let cosines = cosines
            .iter()
            .enumerate()
            .map(|(col, &value)| pieces.check_cosine(row, col, value))
            .collect::<Result<Vec<_>>>()?;

        let target_logit = pieces.target_logit(cosines[target]);
        let negatives: Vec<_> = cosines
            .iter()
            .map(|&cos_k| pieces.negative_logit(target_logit.score, cos_k))
            .collect();

        let is_target = |col: usize| col == target;
        let mask: Vec<bool> = (0..cosines.len())
            .map(|k| !is_target(k) && negatives[k].masked)
            .collect();
        let logits: Vec<f64> = (0..cosines.len())
            .map(|k| {
                if is_target(k) {
                    target_logit.logit
                } else {
                    negatives[k].logit
                }
            })
            .collect();
        let slopes = (0..cosines.len())
            .map(|k| {
                if is_target(k) {
                    target_logit.slope
                } else {
                    negatives[k].slope
                }
            })
            .collect();
        let log_indicators = (0..cosines.len())
            .map(|k| {
                if mask[k] {
                    logits[k] - pieces.scale() * cosines[k]
                } else {
                    0.0
                }
            })
            .collect();
        for (col, (&cosine, &logit)) in cosines.iter().zip(&logits).enumerate() {
            pieces.check_logit(row, col, cosine, logit)?;
        }

        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_sum_exp = max + logits.iter().map(|&z| (z - max).exp()).sum::<f64>().ln();
        Ok(Self {
            target,
            target_score: target_logit.score,
            cosines,
            mask,
            log_indicators,
            logits,
            slopes,
            log_sum_exp,
        })
    }

    /// `L = log Σ_k exp z_k - z_y`.
    pub fn loss(&self) -> f64 {
        self.log_sum_exp - self.logits[self.target]
    }

    /// The softmax of the adjusted logits.
    pub fn probabilities(&self) -> Vec<f64> {
        // Normalized by the sum rather than as `exp(z - log_sum_exp)`: once the largest
        // logit passes ~1e16, `max + ln Σ` rounds to `max`, and two columns tied at the top
        // would each get probability 1.
        let max = self.logits.iter().fold(f64::NEG_INFINITY, |m, &z| m.max(z));
        let shifted: Vec<f64> = self.logits.iter().map(|&z| (z - max).exp()).collect();
        let sum: f64 = shifted.iter().sum();
        shifted.iter().map(|e| e / sum).collect()
    }

    /// The number of support vectors.
    pub fn support_vectors(&self) -> usize {
        self.mask.iter().filter(|&&masked| masked).count()
    }

    /// `weight · dL/d cos θ_k = weight · (p_k - [k = y]) · d z_k / d cos θ_k`, with
    /// `p_y - 1` formed as `-Σ_{k≠y} p_k`, which keeps its digits when `p_y` is near 1.
    pub fn gradient(&self, weight: f64) -> Vec<f64> {
        let probabilities = self.probabilities();
        let others: f64 = (0..probabilities.len())
            .filter(|&k| k != self.target)
            .map(|k| probabilities[k])
            .sum();
        (0..self.logits.len())
            .map(|k| {
                let residual = if k == self.target {
                    -others
                } else {
                    probabilities[k]
                };
                weight * residual * self.slopes[k]
            })
            .collect()
    }

    /// The row's diagnostics.
    pub fn diagnostics(&self) -> RowDiagnostics {
        RowDiagnostics {
            target_score: self.target_score,
            support_vectors: self.support_vectors(),
            target_prob: (self.logits[self.target] - self.log_sum_exp).exp(),
        }
    }
}

/// Every row laid out column by column; `None` for ignored rows.
///
/// # Errors
/// Shapes that disagree, targets out of range, non-finite cosines, cosines outside
/// `[-1, 1]` for the margins that take an arccos, or logits that overflow f64.
pub fn breakdown(
    config: &SvSoftmax,
    cosines: CosineMatrix<'_>,
    targets: &Targets,
) -> Result<Vec<Option<RowBreakdown>>> {
    targets.check(cosines.n_rows(), cosines.n_classes())?;
    let pieces = Pieces::<f64>::new(config)?;
    cosines
        .rows()
        .zip(targets.as_slice())
        .enumerate()
        .map(|(row, (values, target))| {
            target
                .map(|target| RowBreakdown::new(&pieces, row, values, target))
                .transpose()
        })
        .collect()
}

/// The loss, the per-row losses and the diagnostics.
///
/// # Errors
/// As [`breakdown`].
pub fn forward(
    config: &SvSoftmax,
    cosines: CosineMatrix<'_>,
    targets: &Targets,
) -> Result<Forward> {
    let rows = breakdown(config, cosines, targets)?;
    forward_of(config, &rows)
}

/// The gradient of the reduced loss, times the upstream gradient, with respect to the
/// cosines.
///
/// # Errors
/// As [`breakdown`], and upstream gradients that do not fit the reduction.
pub fn backward(
    config: &SvSoftmax,
    cosines: CosineMatrix<'_>,
    targets: &Targets,
    upstream: Upstream<'_>,
) -> Result<Vec<f64>> {
    forward_backward(config, cosines, targets, upstream).map(|evaluation| evaluation.grad_cosines)
}

/// [`forward`] and [`backward`] together.
///
/// # Errors
/// As [`backward`].
pub fn forward_backward(
    config: &SvSoftmax,
    cosines: CosineMatrix<'_>,
    targets: &Targets,
    upstream: Upstream<'_>,
) -> Result<Evaluation> {
    targets.check(cosines.n_rows(), cosines.n_classes())?;
    upstream.check(config.reduction(), cosines.n_rows())?;
    let rows = breakdown(config, cosines, targets)?;

    let n_active = targets.n_active();
    let zeros = vec![0.0; cosines.n_classes()];
    let grad_cosines: Vec<f64> = rows
        .iter()
        .enumerate()
        .flat_map(|(row, breakdown)| match breakdown {
            Some(breakdown) => {
                breakdown.gradient(upstream.row_weight(config.reduction(), n_active, row))
            }
            None => zeros.clone(),
        })
        .collect();
    let forward = forward_of(config, &rows)?;
    if let Some(i) = grad_cosines.iter().position(|g| !g.is_finite()) {
        return Err(overflow(
            Some(i / cosines.n_classes()),
            "gradient",
            grad_cosines[i],
        ));
    }
    Ok(Evaluation {
        forward,
        grad_cosines,
    })
}

fn overflow(row: Option<usize>, quantity: &'static str, value: f64) -> Error {
    Error::Overflow {
        row,
        quantity,
        value,
        dtype: "f64",
    }
}

fn forward_of(config: &SvSoftmax, rows: &[Option<RowBreakdown>]) -> Result<Forward> {
    let row_losses: Vec<f64> = rows
        .iter()
        .map(|row| row.as_ref().map_or(0.0, RowBreakdown::loss))
        .collect();
    if let Some(row) = row_losses.iter().position(|loss| !loss.is_finite()) {
        return Err(overflow(Some(row), "row loss", row_losses[row]));
    }
    let n_active = rows.iter().filter(|row| row.is_some()).count();
    let loss = config.reduction().reduce(&row_losses, n_active);
    if !loss.is_finite() {
        return Err(overflow(None, "reduced loss", loss));
    }
    Ok(Forward {
        loss,
        row_losses,
        diagnostics: rows
            .iter()
            .map(|row| row.as_ref().map(RowBreakdown::diagnostics))
            .collect(),
    })
}

/// The reference as an [`Engine`], so that it runs beside the others.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reference;

impl Engine for Reference {
    fn name(&self) -> &str {
        "reference"
    }

    fn forward(
        &self,
        config: &SvSoftmax,
        cosines: CosineMatrix<'_>,
        targets: &Targets,
    ) -> Result<Forward> {
        forward(config, cosines, targets)
    }

    fn forward_backward(
        &self,
        config: &SvSoftmax,
        cosines: CosineMatrix<'_>,
        targets: &Targets,
        upstream: Upstream<'_>,
    ) -> Result<Evaluation> {
        forward_backward(config, cosines, targets, upstream)
    }
}
