//! The loss as a user would write it by hand from composed ndarray operations, following the
//! notebook's data flow: gather the target, compare, select, exp, sum, log, then the
//! gradient in a few more full passes. It is the benchmark's baseline, and a test checks it
//! against the reference so that the comparison is between two correct implementations.

use ndarray::{Array1, Array2, ArrayView2, Axis, Zip};
use svsoftmax_core::scalar::Pieces;
use svsoftmax_core::SvSoftmax;

/// The mean loss and its gradient, for active targets only.
pub fn forward_backward(
    config: &SvSoftmax,
    cosines: ArrayView2<'_, f32>,
    targets: &[usize],
) -> (f32, Array2<f32>) {
    let pieces = Pieces::<f32>::new(config).expect("a benchmark configuration fits f32");
    let (logits, slopes) = adjusted_logits(&pieces, cosines, targets);

    let max = logits.map_axis(Axis(1), |row| row.fold(f32::NEG_INFINITY, |a, &b| a.max(b)));
    let exp = (&logits - &max.view().insert_axis(Axis(1))).mapv(f32::exp);
    let sum = exp.sum_axis(Axis(1));
    let target_logits: Array1<f32> = targets
        .iter()
        .enumerate()
        .map(|(row, &y)| logits[[row, y]])
        .collect();
    let losses = sum.mapv(f32::ln) + &max - &target_logits;
    let n_rows = targets.len() as f32;

    let mut probabilities = &exp / &sum.view().insert_axis(Axis(1));
    for (row, &y) in targets.iter().enumerate() {
        probabilities[[row, y]] -= 1.0;
    }
    let grad = probabilities * &slopes / n_rows;
    (losses.mean().unwrap_or(0.0), grad)
}

/// The mean loss alone.
pub fn forward(config: &SvSoftmax, cosines: ArrayView2<'_, f32>, targets: &[usize]) -> f32 {
    let pieces = Pieces::<f32>::new(config).expect("a benchmark configuration fits f32");
    let (logits, _) = adjusted_logits(&pieces, cosines, targets);
    let max = logits.map_axis(Axis(1), |row| row.fold(f32::NEG_INFINITY, |a, &b| a.max(b)));
    let sum = (&logits - &max.view().insert_axis(Axis(1)))
        .mapv(f32::exp)
        .sum_axis(Axis(1));
    let target_logits: Array1<f32> = targets
        .iter()
        .enumerate()
        .map(|(row, &y)| logits[[row, y]])
        .collect();
    (sum.mapv(f32::ln) + &max - &target_logits)
        .mean()
        .unwrap_or(0.0)
}

/// Gather, compare, select: the adjusted logits and their slopes, each a full array.
fn adjusted_logits(
    pieces: &Pieces<f32>,
    cosines: ArrayView2<'_, f32>,
    targets: &[usize],
) -> (Array2<f32>, Array2<f32>) {
    let target_cosines: Array1<f32> = targets
        .iter()
        .enumerate()
        .map(|(row, &y)| cosines[[row, y]])
        .collect();
    let scored = target_cosines.mapv(|cos_y| pieces.target_logit(cos_y));
    let scores = scored.mapv(|target| target.score);

    let mut mask = Zip::from(&cosines)
        .and_broadcast(scores.view().insert_axis(Axis(1)))
        .map_collect(|&cos_k, &score| score < cos_k);
    for (row, &y) in targets.iter().enumerate() {
        mask[[row, y]] = false;
    }
    let indicator = pieces.indicator();
    let log_h = Zip::from(&cosines)
        .and(&mask)
        .map_collect(|&cos_k, &masked| if masked { indicator.value(cos_k) } else { 0.0 });
    let mut logits = &cosines * pieces.scale() + &log_h;
    let mut slopes = mask.mapv(|masked| {
        if masked {
            pieces.steepest_negative_slope()
        } else {
            pieces.scale()
        }
    });
    for (row, &y) in targets.iter().enumerate() {
        logits[[row, y]] = scored[row].logit;
        slopes[[row, y]] = scored[row].slope;
    }
    (logits, slopes)
}
