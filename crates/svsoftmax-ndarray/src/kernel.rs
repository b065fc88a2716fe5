//! The fused row kernel: one row of cosines in, its loss, diagnostics and (optionally) its
//! gradient out, in three flat passes over the row.
//!
//! Per element of a row, forward + backward reads the cosine three times and writes the
//! gradient twice:
//!
//! 1. `scan`: reads `c_k`; forms the adjusted logit and keeps the row maximum, the
//!    support-vector count and whether every input was acceptable.
//! 2. `store_exponentials`: reads `c_k`; writes `e_k = exp(z_k - max)` into the gradient
//!    buffer and sums it. (Forward only: `sum_exponentials`, which writes nothing.)
//! 3. `rescale`: reads `c_k` and `e_k`; writes `e_k / Σe · dz_k/dc_k · weight`.
//!
//! Keeping the exponentials in the gradient buffer means each is computed once. A row of
//! 100 000 f32 cosines and its gradient (800 KB) stay in L2 between the passes, so only the
//! first read of `c_k` and the final write of the gradient reach memory: the traffic of a
//! copy.
//!
//! The target column is handled apart: the row is split at it, and each side is a flat
//! loop that LLVM vectorizes. The reductions (maximum, sum, counts) keep `LANES` partial
//! results so that the vectorizer is free to use them as vector registers.

use multiversion::multiversion;
use num_traits::{Float, One, Zero};
use svsoftmax_core::scalar::Pieces;
use svsoftmax_core::Real;

use crate::element::Element;
use crate::exp::FastExp;

/// Partial results per reduction: 16 f32 fill one AVX-512 register, and two AVX2 ones.
const LANES: usize = 16;

/// What the kernel reports about one row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowStats<F> {
    pub loss: F,
    pub target_score: F,
    pub target_prob: F,
    pub support_vectors: usize,
    /// The largest `|dz_k / dc_k|` of the row, which bounds the gradient's entries.
    pub max_slope: F,
}

/// The instruction set the kernel runs with on this machine, best first; the same list
/// as the `multiversion` targets of [`row`].
pub fn instruction_set() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return "x86_64 AVX-512 (avx512f, avx512bw, avx512vl, avx512dq, fma)";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "x86_64 AVX2 + FMA";
        }
        "x86_64 baseline (SSE2)"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "the target's baseline"
    }
}

/// One row: `None` when an input is rejected or a logit overflows, for the caller to name
/// the culprit with the scalar checks; otherwise the row's statistics, and with `backward`
/// the row's gradient times `weight` written into it.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+avx+fma+sse4.2+sse4.1+ssse3+sse3",
    "x86_64+avx2+avx+fma+sse4.2+sse4.1+ssse3+sse3",
))]
pub(crate) fn row<E: Element>(
    pieces: &Pieces<E::Real>,
    cosines: &[E],
    target: usize,
    mut backward: Option<(&mut [E], E::Real)>,
) -> Option<RowStats<E::Real>> {
    let raw_target = cosines[target].load();
    let target_logit = pieces.target_logit(pieces.clamp_cosine(raw_target));
    if !pieces.accepts(raw_target) || !is_finite(target_logit.logit) {
        return None;
    }
    let score = target_logit.score;
    let (left, rest) = cosines.split_at(target);
    let right = &rest[1..];

    let (scan_left, scan_right) = (scan(pieces, score, left), scan(pieces, score, right));
    if !(scan_left.accepted && scan_right.accepted) {
        return None;
    }
    let max = scan_left.max.max(scan_right.max).max(target_logit.logit);

    let others = match backward {
        Some((ref mut grad, _)) => {
            let (grad_left, grad_rest) = grad.split_at_mut(target);
            store_exponentials(pieces, score, max, left, grad_left)
                + store_exponentials(pieces, score, max, right, &mut grad_rest[1..])
        }
        None => {
            sum_exponentials(pieces, score, max, left) + sum_exponentials(pieces, score, max, right)
        }
    };
    let target_exp = (target_logit.logit - max).fast_exp();
    let sum = others + target_exp;
    // When the target holds the maximum, e_y = 1 and L = log(1 + others) exactly, which
    // ln_1p keeps accurate for a well-classified row.
    let loss = if target_logit.logit >= max {
        others.ln_1p()
    } else {
        (max - target_logit.logit) + sum.ln()
    };

    if let Some((grad, weight)) = backward {
        let factor = weight / sum;
        let (grad_left, grad_rest) = grad.split_at_mut(target);
        let (grad_target, grad_right) = grad_rest.split_first_mut().expect("target in row");
        rescale(pieces, score, factor, left, grad_left);
        rescale(pieces, score, factor, right, grad_right);
        // p_y - 1 = -others / sum, without the cancellation of forming p_y first.
        *grad_target = E::store(-(others / sum) * weight * target_logit.slope);
    }

    Some(RowStats {
        loss,
        target_score: score,
        target_prob: target_exp / sum,
        support_vectors: scan_left.support_vectors + scan_right.support_vectors,
        max_slope: target_logit
            .slope
            .abs()
            .max(pieces.steepest_negative_slope()),
    })
}

#[inline(always)]
fn is_finite<F: Real>(value: F) -> bool {
    value.abs() <= F::max_value()
}

struct Scan<F> {
    max: F,
    support_vectors: usize,
    accepted: bool,
}

/// Pass 1: the maximum adjusted logit, the support-vector count, and whether every cosine
/// was acceptable and every logit finite.
#[inline(always)]
fn scan<E: Element>(pieces: &Pieces<E::Real>, score: E::Real, cosines: &[E]) -> Scan<E::Real> {
    let zero = E::Real::zero();
    let one = E::Real::one();
    let mut max = [E::Real::neg_infinity(); LANES];
    let mut masked = [zero; LANES];
    let mut rejected = [zero; LANES];
    let chunks = cosines.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            let raw = chunk[lane].load();
            let logit = pieces.negative_logit(score, pieces.clamp_cosine(raw));
            let ok = pieces.accepts(raw) & is_finite(logit.logit);
            max[lane] = if logit.logit > max[lane] {
                logit.logit
            } else {
                max[lane]
            };
            masked[lane] = masked[lane] + if logit.masked { one } else { zero };
            rejected[lane] = rejected[lane] + if ok { zero } else { one };
        }
    }
    for (lane, &value) in tail.iter().enumerate() {
        let raw = value.load();
        let logit = pieces.negative_logit(score, pieces.clamp_cosine(raw));
        let ok = pieces.accepts(raw) & is_finite(logit.logit);
        max[lane] = if logit.logit > max[lane] {
            logit.logit
        } else {
            max[lane]
        };
        masked[lane] = masked[lane] + if logit.masked { one } else { zero };
        rejected[lane] = rejected[lane] + if ok { zero } else { one };
    }
    // Counts are exact: a lane counts at most n / LANES, far below 2^24 for any row.
    Scan {
        max: max
            .iter()
            .copied()
            .fold(E::Real::neg_infinity(), E::Real::max),
        support_vectors: masked.iter().map(|&count| count.to_f64() as usize).sum(),
        accepted: rejected.iter().all(|&count| count == zero),
    }
}

/// Pass 2, forward only: `Σ exp(z_k - max)`.
#[inline(always)]
fn sum_exponentials<E: Element>(
    pieces: &Pieces<E::Real>,
    score: E::Real,
    max: E::Real,
    cosines: &[E],
) -> E::Real {
    let mut sum = [E::Real::zero(); LANES];
    let chunks = cosines.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            let logit = pieces.negative_logit(score, pieces.clamp_cosine(chunk[lane].load()));
            sum[lane] = sum[lane] + (logit.logit - max).fast_exp();
        }
    }
    for (lane, &value) in tail.iter().enumerate() {
        let logit = pieces.negative_logit(score, pieces.clamp_cosine(value.load()));
        sum[lane] = sum[lane] + (logit.logit - max).fast_exp();
    }
    sum.iter()
        .fold(E::Real::zero(), |total, &part| total + part)
}

/// Pass 2 with a backward pass to follow: writes `exp(z_k - max)` into `grad` and sums it.
#[inline(always)]
fn store_exponentials<E: Element>(
    pieces: &Pieces<E::Real>,
    score: E::Real,
    max: E::Real,
    cosines: &[E],
    grad: &mut [E],
) -> E::Real {
    let mut sum = [E::Real::zero(); LANES];
    let chunks = cosines.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut grad_chunks = grad.chunks_exact_mut(LANES);
    for (chunk, grad_chunk) in chunks.zip(&mut grad_chunks) {
        for lane in 0..LANES {
            let logit = pieces.negative_logit(score, pieces.clamp_cosine(chunk[lane].load()));
            let exp = (logit.logit - max).fast_exp();
            grad_chunk[lane] = E::store(exp);
            sum[lane] = sum[lane] + exp;
        }
    }
    let grad_tail = grad_chunks.into_remainder();
    for (lane, (&value, slot)) in tail.iter().zip(grad_tail).enumerate() {
        let logit = pieces.negative_logit(score, pieces.clamp_cosine(value.load()));
        let exp = (logit.logit - max).fast_exp();
        *slot = E::store(exp);
        sum[lane] = sum[lane] + exp;
    }
    sum.iter()
        .fold(E::Real::zero(), |total, &part| total + part)
}

/// Pass 3: `grad_k = e_k · factor · dz_k/dc_k`, with `factor = weight / Σe`.
#[inline(always)]
fn rescale<E: Element>(
    pieces: &Pieces<E::Real>,
    score: E::Real,
    factor: E::Real,
    cosines: &[E],
    grad: &mut [E],
) {
    for (slot, &value) in grad.iter_mut().zip(cosines) {
        let slope = pieces
            .negative_logit(score, pieces.clamp_cosine(value.load()))
            .slope;
        *slot = E::store(slot.load() * factor * slope);
    }
}
