//! The per-shard row kernels: one row's partial sum of exponentials over this shard's
//! non-target columns (pass 1, which also stores the unscaled gradient terms), and the
//! scaling of those terms into the gradient once every shard's partial is merged (pass 2).
//!
//! The target column stays out of the partials: every rank knows the row's target logit
//! `z_y = s f` once `f` is shared, so the loss is formed from `z_y` and the merged sum of
//! the others, `O`, as `log(1 + O e^{-z_y})`, free of the cancellation in `lse - z_y`.
//!
//! **Pass 1, bounded**: when the shard's cosines lie in `[-1, 1]` (always, for the margins
//! that clamp them) every adjusted logit is at most [`Pieces::logit_bound`] `B`, so the
//! terms `exp(z_k - B)` need no maximum and the cosines are read once. The partial's
//! reference point is then `B` rather than the maximum; the merge only needs each
//! reference to lie at or above the shard's logits. A sum below
//! [`FastExp::SMALLEST_SAFE_SUM`] may have lost terms to underflow, and the row is redone
//! **exactly**: a pass for the shard's maximum, then the exponentials from it.
//!
//! **Pass 2** multiplies each stored `exp(z_k - ref) · dz_k/dc_k` by
//! `weight · exp(ref - lse)`. The cosines are not read again; the gradient buffer is read
//! and written once more, because the merge stands between the two passes (in one
//! process the row would still be in cache).

use multiversion::multiversion;
use num_traits::{Float, One, Zero};
use svsoftmax_core::scalar::Pieces;
use svsoftmax_core::Real;
use svsoftmax_ndarray::{Element, FastExp};

/// Partial results per reduction, so that the vectorizer may keep them in one register.
const LANES: usize = 16;

/// What pass 1 learns of one row on this shard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scan {
    /// `Σ exp(z_k - reference)` over the shard's non-target columns.
    Partial {
        reference: f64,
        sum: f64,
        support_vectors: usize,
    },
    /// The first of the shard's columns (local index) whose cosine the loss rejects.
    Rejected { col: usize },
}

/// The first column of `cosines` that the loss rejects.
pub(crate) fn first_rejected<E: Element>(pieces: &Pieces<E::Real>, cosines: &[E]) -> Option<usize> {
    cosines
        .iter()
        .position(|value| !pieces.accepts(value.load()))
}

/// Pass 1 over one row: `score` is the row's target score `f`, `target` the local index of
/// the target column if this shard owns it. With `grad`, writes `exp(z_k - ref) · dz_k/dc_k`
/// into the non-target entries (the target's entry is left alone).
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+avx+fma+sse4.2+sse4.1+ssse3+sse3",
    "x86_64+avx2+avx+fma+sse4.2+sse4.1+ssse3+sse3",
))]
pub(crate) fn scan_row<E: Element>(
    pieces: &Pieces<E::Real>,
    score: E::Real,
    cosines: &[E],
    target: Option<usize>,
    grad: Option<&mut [E]>,
) -> Scan {
    // A fused multiply-add is one instruction where the clone has it, a call elsewhere.
    if multiversion::target::target_cfg_f!(target_feature = "fma") {
        scan_with::<E, true>(pieces, score, cosines, target, grad)
    } else {
        scan_with::<E, false>(pieces, score, cosines, target, grad)
    }
}

/// The row without its target column: the columns before it and after it.
fn sides<T>(row: &[T], target: Option<usize>) -> (&[T], &[T]) {
    match target {
        Some(target) => (&row[..target], &row[target + 1..]),
        None => (row, &[]),
    }
}

fn sides_mut<T>(row: &mut [T], target: Option<usize>) -> (&mut [T], &mut [T]) {
    match target {
        Some(target) => {
            let (left, rest) = row.split_at_mut(target);
            (left, &mut rest[1..])
        }
        None => (row, &mut []),
    }
}

#[inline(always)]
fn scan_with<E: Element, const FMA: bool>(
    pieces: &Pieces<E::Real>,
    score: E::Real,
    cosines: &[E],
    target: Option<usize>,
    mut grad: Option<&mut [E]>,
) -> Scan {
    let (left, right) = sides(cosines, target);
    if left.is_empty() && right.is_empty() {
        return Scan::Partial {
            reference: f64::NEG_INFINITY,
            sum: 0.0,
            support_vectors: 0,
        };
    }
    let bound = pieces.logit_bound();
    let passes = match grad.as_deref_mut() {
        Some(grad) => {
            let (grad_left, grad_right) = sides_mut(grad, target);
            [
                bounded::<E, FMA, true>(pieces, score, bound, left, grad_left),
                bounded::<E, FMA, true>(pieces, score, bound, right, grad_right),
            ]
        }
        None => [
            bounded::<E, FMA, false>(pieces, score, bound, left, &mut []),
            bounded::<E, FMA, false>(pieces, score, bound, right, &mut []),
        ],
    };
    if passes.iter().any(|pass| pass.rejections > E::Real::zero()) {
        let col = first_rejected(pieces, cosines).expect("a pass counted a rejection");
        return Scan::Rejected { col };
    }
    let sum = passes[0].sum + passes[1].sum;
    let unit = pieces.clamps_cosines() || passes.iter().all(|pass| pass.max_abs <= E::Real::one());
    if E::WIDE_RANGE && unit && sum >= E::Real::SMALLEST_SAFE_SUM {
        return Scan::Partial {
            reference: bound.to_f64(),
            sum: sum.to_f64(),
            support_vectors: (passes[0].support_vectors + passes[1].support_vectors).to_f64()
                as usize,
        };
    }
    exact::<E, FMA>(
        pieces,
        score,
        [left, right],
        grad.map(|grad| sides_mut(grad, target)),
    )
}

/// What the bounded pass learns of one side of a row.
struct Bounded<F> {
    sum: F,
    max_abs: F,
    support_vectors: F,
    rejections: F,
}

/// The bounded pass over one side of a row; with `STORE`, writes
/// `exp(z_k - bound) · dz_k/dc_k` into `grad`. Counts are kept as floats so that every
/// lane's work is the same arithmetic (exact up to 2^24 per lane in f32).
#[inline(always)]
fn bounded<E: Element, const FMA: bool, const STORE: bool>(
    pieces: &Pieces<E::Real>,
    score: E::Real,
    bound: E::Real,
    cosines: &[E],
    grad: &mut [E],
) -> Bounded<E::Real> {
    let zero = E::Real::zero();
    let mut lanes = [[zero; LANES]; 4];
    let mut fold = |lane: usize, value: E| {
        let raw = value.load();
        let logit = pieces.negative_logit(score, pieces.clamp_cosine(raw));
        let exp = (logit.logit - bound).fast_exp::<FMA>();
        let [sum, max_abs, masked, rejected] = &mut lanes;
        sum[lane] = sum[lane] + exp;
        max_abs[lane] = if raw.abs() > max_abs[lane] {
            raw.abs()
        } else {
            max_abs[lane]
        };
        masked[lane] = masked[lane] + if logit.masked { E::Real::one() } else { zero };
        rejected[lane] = rejected[lane]
            + if pieces.accepts(raw) {
                zero
            } else {
                E::Real::one()
            };
        exp * logit.slope
    };
    let chunks = cosines.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut grad_chunks = grad.chunks_exact_mut(LANES);
    for chunk in chunks {
        let mut terms = [zero; LANES];
        for lane in 0..LANES {
            terms[lane] = fold(lane, chunk[lane]);
        }
        if STORE {
            let slots = grad_chunks
                .next()
                .expect("the gradient has the row's length");
            for lane in 0..LANES {
                slots[lane] = E::store(terms[lane]);
            }
        }
    }
    let tail_start = cosines.len() - tail.len();
    for (lane, &value) in tail.iter().enumerate() {
        let term = fold(lane, value);
        if STORE {
            grad[tail_start + lane] = E::store(term);
        }
    }
    let total = |lane: &[E::Real; LANES]| lane.iter().fold(zero, |total, &part| total + part);
    // A NaN input makes its lane's maximum NaN-free (the comparison fails) but counts as a
    // rejection, which is what the caller looks at first.
    let [sum, max_abs, masked, rejected] = &lanes;
    Bounded {
        sum: total(sum),
        max_abs: max_abs.iter().copied().fold(zero, |a, b| a.max(b)),
        support_vectors: total(masked),
        rejections: total(rejected),
    }
}

/// The exact pass over the sides of a row whose cosines are all accepted: their maximum
/// logit first, then the exponentials from it (stored with their slopes with `grad`).
fn exact<E: Element, const FMA: bool>(
    pieces: &Pieces<E::Real>,
    score: E::Real,
    sides: [&[E]; 2],
    mut grad: Option<(&mut [E], &mut [E])>,
) -> Scan {
    let logit = |value: &E| pieces.negative_logit(score, pieces.clamp_cosine(value.load()));
    let max = sides
        .iter()
        .flat_map(|side| side.iter())
        .map(|value| logit(value).logit)
        .fold(E::Real::neg_infinity(), |a, b| a.max(b));

    let mut sum = E::Real::zero();
    let mut support_vectors = 0;
    for (index, side) in sides.iter().enumerate() {
        let mut slots = grad.as_mut().map(|(left, right)| match index {
            0 => &mut **left,
            _ => &mut **right,
        });
        for (col, value) in side.iter().enumerate() {
            let negative = logit(value);
            let exp = (negative.logit - max).fast_exp::<FMA>();
            sum = sum + exp;
            support_vectors += usize::from(negative.masked);
            if let Some(slots) = slots.as_deref_mut() {
                slots[col] = E::store(exp * negative.slope);
            }
        }
    }
    Scan::Partial {
        reference: max.to_f64(),
        sum: sum.to_f64(),
        support_vectors,
    }
}

/// Pass 2 over one row: multiplies the stored non-target terms by `factor · weight`, where
/// `factor = exp(ref - lse)`, and returns the largest magnitude written (not finite if the
/// gradient overflowed).
///
/// A stored term is at most the steepest slope, and `term · factor <= slope` (each
/// `exp(z_k - lse) <= 1`), so only a gradient that truly overflows does. A result that
/// would be subnormal is written as 0: producing one costs a microcode assist of about a
/// hundred cycles on x86, and such an entry is zero to every optimizer.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+avx+fma+sse4.2+sse4.1+ssse3+sse3",
    "x86_64+avx2+avx+fma+sse4.2+sse4.1+ssse3+sse3",
))]
pub(crate) fn scale_row<E: Element>(
    grad: &mut [E],
    target: Option<usize>,
    factor: E::Real,
    weight: E::Real,
) -> E::Real {
    let shrink = weight.abs().min(E::Real::one());
    let smallest = E::Real::min_positive_value() / (factor * shrink);
    let scale = |slot: &mut E| {
        let term = slot.load();
        let kept = if term.abs() >= smallest {
            term
        } else {
            E::Real::zero()
        };
        let scaled = kept * factor * weight;
        *slot = E::store(scaled);
        scaled.abs()
    };
    let (left, right) = sides_mut(grad, target);
    let mut largest = [E::Real::zero(); LANES];
    for side in [left, right] {
        let mut chunks = side.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for lane in 0..LANES {
                let written = scale(&mut chunk[lane]);
                largest[lane] = if written > largest[lane] {
                    written
                } else {
                    largest[lane]
                };
            }
        }
        for slot in chunks.into_remainder() {
            largest[0] = largest[0].max(scale(slot));
        }
    }
    // `max` would drop a NaN, which finite terms and factors cannot produce; ∞ stays.
    largest
        .iter()
        .copied()
        .fold(E::Real::zero(), |a, b| a.max(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use svsoftmax_core::{Margin, SvSoftmax};

    fn pieces<F: Real>(config: &SvSoftmax) -> Pieces<F> {
        Pieces::new(config).unwrap()
    }

    /// `Σ exp(z_k - ref)` over the non-target columns, in f64 from the core's pieces.
    fn direct(config: &SvSoftmax, score: f64, cosines: &[f64], target: Option<usize>) -> f64 {
        let pieces = pieces::<f64>(config);
        let (left, right) = sides(cosines, target);
        left.iter()
            .chain(right)
            .map(|&c| {
                pieces
                    .negative_logit(score, pieces.clamp_cosine(c))
                    .logit
                    .exp()
            })
            .sum()
    }

    fn log_sum(scan: Scan) -> f64 {
        match scan {
            Scan::Partial { reference, sum, .. } => reference + sum.ln(),
            Scan::Rejected { col } => panic!("rejected column {col}"),
        }
    }

    #[test]
    fn bounded_and_exact_passes_give_the_direct_sum() {
        // s = 64 with t = 1.5 puts B = 64 + 2 · 32 = 128: a row of cosines near -1 sums to
        // about e^-192 relative to it, far below the safe sum, so it takes the exact pass.
        let config = SvSoftmax::builder()
            .scale(64.0)
            .t(1.5)
            .margin(Margin::additive(0.35));
        let config = config.build().unwrap();
        let pieces = pieces::<f64>(&config);
        for (cosines, target) in [
            (vec![0.3, -0.2, 0.9, 1.0, -1.0, 0.1], Some(2)),
            (vec![-0.99; 40], None),
            (vec![0.5, -0.5, 0.25], Some(0)),
        ] {
            let expected = direct(&config, 0.2, &cosines, target).ln();
            let got = log_sum(scan_row(&pieces, 0.2, &cosines, target, None));
            // Sums of at most 40 terms, each within 1 ulp (FastExp): 1e-13 relative.
            assert!(
                (got - expected).abs() <= 1e-13 * expected.abs(),
                "{got} vs {expected}"
            );
        }
    }

    #[test]
    fn a_row_of_only_the_target_is_empty() {
        let config = SvSoftmax::default();
        let scan = scan_row(&pieces::<f32>(&config), 0.5f32, &[0.5f32], Some(0), None);
        assert_eq!(
            scan,
            Scan::Partial {
                reference: f64::NEG_INFINITY,
                sum: 0.0,
                support_vectors: 0
            }
        );
    }

    #[test]
    fn a_rejected_cosine_is_named_by_its_column() {
        let config = SvSoftmax::builder()
            .margin(Margin::angular(0.5))
            .build()
            .unwrap();
        let cosines = [0.1f32, 0.2, 0.3, f32::NAN, 1.5, 0.0];
        let scan = scan_row(&pieces::<f32>(&config), 0.1f32, &cosines, Some(1), None);
        assert_eq!(scan, Scan::Rejected { col: 3 });
    }
}
