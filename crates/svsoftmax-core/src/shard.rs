//! The loss over column shards: each shard holds the columns `[first, first + width)` of
//! the cosines for the whole batch, and the targets are global class indices.
//!
//! A shard that does not own a row's target column cannot compute that row's target score
//! `f`, yet its mask depends on it, so a step takes three exchanges of O(batch) numbers:
//!
//! 1. [`target_scores`]: the shard that owns a row's target computes `f` and `s f`; the
//!    shards' results merge with [`merge_target_scores`] (exactly one shard answers a row).
//! 2. [`partials`]: with every row's `f`, each shard folds its columns' adjusted logits into
//!    a [`RowPartial`] (running maximum, sum of exponentials, support-vector count); the
//!    partials merge with [`RowPartial::merge`], which is associative and commutative, so
//!    any reduction tree gives the row's log-sum-exp.
//! 3. [`gradient`]: with the merged log-sum-exp, each shard computes its own slice of the
//!    row losses' gradient, and the owner of the target computes the loss.
//!
//! The functions are the f64 reference's math on a slice of columns; engines that shard
//! across processes move only `f`, the partials and the log-sum-exp between them.

use crate::config::SvSoftmax;
use crate::error::{Error, Result};
use crate::matrix::CosineMatrix;
use crate::scalar::{Pieces, TargetLogit};
use crate::targets::Targets;

/// A row's target score `f`, logit `s f` and slope, from the shard that owns the target
/// column.
pub type TargetScore = TargetLogit<f64>;

/// What one shard knows of a row's log-sum-exp: the maximum of its adjusted logits and the
/// sum of their exponentials relative to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowPartial {
    /// The reference point of `sum`: the largest adjusted logit seen (or any bound at or
    /// above them that a shard prefers to use), `-∞` for none.
    pub max: f64,
    /// `Σ exp(z_k - max)` over the columns seen.
    pub sum: f64,
    /// How many of the columns seen are support vectors.
    pub support_vectors: usize,
}

impl RowPartial {
    /// The partial of no column.
    pub const EMPTY: Self = Self {
        max: f64::NEG_INFINITY,
        sum: 0.0,
        support_vectors: 0,
    };

    /// Folds `other` in: associative and commutative, with [`RowPartial::EMPTY`] as identity.
    pub fn merge(self, other: Self) -> Self {
        let max = self.max.max(other.max);
        let scaled = |partial: Self| {
            if partial.sum == 0.0 {
                0.0
            } else {
                partial.sum * (partial.max - max).exp()
            }
        };
        Self {
            max,
            sum: scaled(self) + scaled(other),
            support_vectors: self.support_vectors + other.support_vectors,
        }
    }

    /// `log Σ exp z_k` over every column merged in.
    pub fn log_sum_exp(&self) -> f64 {
        self.max + self.sum.ln()
    }
}

fn check_rows(cosines: &CosineMatrix<'_>, targets: &Targets) -> Result<()> {
    if targets.len() == cosines.n_rows() {
        Ok(())
    } else {
        Err(Error::TargetsLength {
            n_rows: cosines.n_rows(),
            n_targets: targets.len(),
        })
    }
}

fn owned(target: Option<usize>, first: usize, width: usize) -> Option<usize> {
    target
        .filter(|&class| (first..first + width).contains(&class))
        .map(|class| class - first)
}

/// Step 1: the target scores of the rows whose target column this shard owns.
///
/// # Errors
/// The targets' length, and the checks of the owned target cosines.
pub fn target_scores(
    config: &SvSoftmax,
    cosines: CosineMatrix<'_>,
    first: usize,
    targets: &Targets,
) -> Result<Vec<Option<TargetScore>>> {
    check_rows(&cosines, targets)?;
    let pieces = Pieces::<f64>::new(config)?;
    let width = cosines.n_classes();
    targets
        .as_slice()
        .iter()
        .enumerate()
        .map(|(row, &target)| {
            let Some(local) = owned(target, first, width) else {
                return Ok(None);
            };
            let cosine = pieces.check_cosine(row, first + local, cosines.row(row)[local])?;
            let logit = pieces.target_logit(cosine);
            pieces.check_logit(row, first + local, cosine, logit.logit)?;
            Ok(Some(TargetScore {
                score: logit.score,
                logit: logit.logit,
                slope: logit.slope,
            }))
        })
        .collect()
}

/// Merges two shards' target scores row by row.
///
/// # Panics
/// When the two have different lengths, or both answer a row: shards must not overlap.
pub fn merge_target_scores(
    a: &[Option<TargetScore>],
    b: &[Option<TargetScore>],
) -> Vec<Option<TargetScore>> {
    assert_eq!(a.len(), b.len(), "target scores of different batches");
    a.iter()
        .zip(b)
        .map(|(a, b)| match (a, b) {
            (Some(_), Some(_)) => panic!("two shards own the same target column"),
            (Some(score), None) | (None, Some(score)) => Some(*score),
            (None, None) => None,
        })
        .collect()
}

/// Step 2: this shard's partial log-sum-exp of every row, given every active row's target
/// score; ignored rows (and rows whose target no shard owns yet) give [`RowPartial::EMPTY`].
///
/// # Errors
/// Shapes, and the checks of the shard's cosines and logits.
pub fn partials(
    config: &SvSoftmax,
    cosines: CosineMatrix<'_>,
    first: usize,
    targets: &Targets,
    scores: &[Option<TargetScore>],
) -> Result<Vec<RowPartial>> {
    check_rows(&cosines, targets)?;
    let pieces = Pieces::<f64>::new(config)?;
    let width = cosines.n_classes();
    (0..cosines.n_rows())
        .map(|row| {
            let (Some(_), Some(score)) = (targets.get(row), scores[row]) else {
                return Ok(RowPartial::EMPTY);
            };
            let local_target = owned(targets.get(row), first, width);
            let mut partial = RowPartial::EMPTY;
            for (local, &value) in cosines.row(row).iter().enumerate() {
                let (col, cosine) = (
                    first + local,
                    pieces.check_cosine(row, first + local, value)?,
                );
                let (logit, masked) = if Some(local) == local_target {
                    (score.logit, false)
                } else {
                    let negative = pieces.negative_logit(score.score, cosine);
                    (negative.logit, negative.masked)
                };
                pieces.check_logit(row, col, cosine, logit)?;
                let column = RowPartial {
                    max: logit,
                    sum: 1.0,
                    support_vectors: usize::from(masked),
                };
                partial = partial.merge(column);
            }
            Ok(partial)
        })
        .collect()
}

/// Step 3: this shard's slice of `Σ_i weight_i · dL_i / d cos`, row-major, given the
/// merged partials; `weights` holds one upstream factor per row (see
/// [`crate::Upstream::row_weight`]), 0 for ignored rows.
///
/// # Errors
/// Shapes, and the checks of the shard's cosines.
pub fn gradient(
    config: &SvSoftmax,
    cosines: CosineMatrix<'_>,
    first: usize,
    targets: &Targets,
    scores: &[Option<TargetScore>],
    merged: &[RowPartial],
    weights: &[f64],
) -> Result<Vec<f64>> {
    check_rows(&cosines, targets)?;
    let pieces = Pieces::<f64>::new(config)?;
    let width = cosines.n_classes();
    let mut grad = vec![0.0; cosines.n_rows() * width];
    for row in 0..cosines.n_rows() {
        let (Some(_), Some(score)) = (targets.get(row), scores[row]) else {
            continue;
        };
        let log_sum_exp = merged[row].log_sum_exp();
        let local_target = owned(targets.get(row), first, width);
        for (local, &value) in cosines.row(row).iter().enumerate() {
            let cosine = pieces.check_cosine(row, first + local, value)?;
            let entry = if Some(local) == local_target {
                // p_y - 1 = -(1 - p_y), with p_y from the merged log-sum-exp.
                let p_y = (score.logit - log_sum_exp).exp();
                (p_y - 1.0) * score.slope
            } else {
                let negative = pieces.negative_logit(score.score, cosine);
                (negative.logit - log_sum_exp).exp() * negative.slope
            };
            grad[row * width + local] = weights[row] * entry;
        }
    }
    Ok(grad)
}

/// A row's loss from its target score and merged partial: `log Σ exp z_k - z_y`.
pub fn row_loss(score: &TargetScore, merged: &RowPartial) -> f64 {
    merged.log_sum_exp() - score.logit
}
