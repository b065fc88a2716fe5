//! The fused row kernel: one row of cosines in, its loss, diagnostics and (optionally) its
//! gradient out.
//!
//! **The bounded path**, taken whenever the row's cosines lie in `[-1, 1]` (always, for the
//! margins that clamp them), needs no maximum: every adjusted logit is at most
//! [`Pieces::logit_bound`] `B`, so `exp(z_k - B)` cannot overflow. Per element, forward +
//! backward reads the cosine once and the gradient buffer once, and writes the gradient
//! twice:
//!
//! 1. `bounded`: reads `c_k`; forms the adjusted logit with the mask and the indicator
//!    applied on the fly, writes `e_k · dz_k/dc_k` with `e_k = exp(z_k - B)` into the
//!    gradient buffer, and sums `e_k`; it also counts the support vectors, checks every
//!    input and keeps the largest `|c_k|`. Forward only writes nothing.
//! 2. `scale_in_place`: reads the buffer, scales it by `1 / Σe` and then by `weight` (so
//!    that only a gradient that truly overflows does), and keeps the largest entry.
//!
//! Pass 1 runs once over memory; pass 2 finds the row (400 KB for 100 000 f32 columns) in
//! L2. The reference point `B` costs nothing in accuracy as long as the row's largest term
//! is not too far below it: if `Σe < FastExp::SMALLEST_SAFE_SUM`, terms below `e^-23` of the
//! largest could have underflowed, and the row is redone on the exact path. So is a row
//! with a cosine past ±1 (possible for the margins that do not clamp), and every row of an
//! element type too narrow to hold the unscaled terms (f16).
//!
//! **The exact path** processes the row in blocks of `block_len` columns that fit L1:
//! `scan` finds a block's maximum, `store_exponentials` (or `sum_exponentials`, forward
//! only) writes `exp(z_k - block max)` while the block is in L1, the blocks' sums merge
//! into the row's log-sum-exp, and `rescale` turns the buffer into the gradient. It reads
//! each cosine three times.
//!
//! On both paths the target column is handled apart, so each loop is flat and LLVM
//! vectorizes it; the reductions keep `LANES` partial results so that the vectorizer is
//! free to hold them in vector registers.

use multiversion::multiversion;
use num_traits::{Float, One, Zero};
use svsoftmax_core::scalar::{Pieces, TargetLogit};
use svsoftmax_core::Real;

use crate::element::Element;
use crate::exp::FastExp;

/// Partial results per reduction: 16 f32 fill one AVX-512 register, and two AVX2 ones.
const LANES: usize = 16;

/// The most blocks a row is cut into; longer rows get longer blocks.
const MAX_BLOCKS: usize = 256;

/// What the kernel reports about one row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowStats<F> {
    pub loss: F,
    pub target_score: F,
    pub target_prob: F,
    pub support_vectors: usize,
    /// The largest magnitude written into the gradient (0 without a backward pass): not
    /// finite if the gradient overflowed.
    pub max_grad: F,
}

/// The instruction set the kernel runs with on this machine, best first; the same list
/// as the `multiversion` targets of the kernel.
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

/// One row: `None` when an input is rejected or the target's logit overflows, for the
/// caller to name the culprit with the scalar checks; otherwise the row's statistics, and
/// with `backward` the row's gradient times `weight` written into it.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+avx+fma+sse4.2+sse4.1+ssse3+sse3",
    "x86_64+avx2+avx+fma+sse4.2+sse4.1+ssse3+sse3",
))]
pub(crate) fn row<E: Element>(
    pieces: &Pieces<E::Real>,
    cosines: &[E],
    target: usize,
    backward: Option<(&mut [E], E::Real)>,
) -> Option<RowStats<E::Real>> {
    // The fused multiply-add is one instruction where the clone has it, a call elsewhere.
    if multiversion::target::target_cfg_f!(target_feature = "fma") {
        row_with::<E, true>(pieces, cosines, target, backward)
    } else {
        row_with::<E, false>(pieces, cosines, target, backward)
    }
}

/// The bounded path (see the module's documentation); `None` when the row must take the
/// exact path instead, which overwrites whatever this wrote.
#[inline(always)]
fn bounded_row<E: Element, const FMA: bool>(
    pieces: &Pieces<E::Real>,
    cosines: &[E],
    target: usize,
    target_logit: TargetLogit<E::Real>,
    backward: &mut Option<(&mut [E], E::Real)>,
) -> Option<RowStats<E::Real>> {
    let score = target_logit.score;
    let bound = pieces.logit_bound();
    let (left, rest) = cosines.split_at(target);
    let right = &rest[1..];
    let (sides, weight) = match backward {
        Some((grad, weight)) => {
            let (grad_left, grad_rest) = grad.split_at_mut(target);
            let sides = [
                bounded::<E, FMA, true>(pieces, score, bound, left, grad_left),
                bounded::<E, FMA, true>(pieces, score, bound, right, &mut grad_rest[1..]),
            ];
            (sides, Some(*weight))
        }
        None => {
            let sides = [
                bounded::<E, FMA, false>(pieces, score, bound, left, &mut []),
                bounded::<E, FMA, false>(pieces, score, bound, right, &mut []),
            ];
            (sides, None)
        }
    };
    // The bound holds for cosines in [-1, 1], the target's included; only the margins that
    // do not clamp can see others. A narrow element type (f16) cannot hold the unscaled
    // terms, which lie far below 1.
    let unit = |value: E::Real| value.abs() <= E::Real::one();
    let in_range = E::WIDE_RANGE
        && sides.iter().all(|side| side.accepted)
        && (pieces.clamps_cosines()
            || (unit(cosines[target].load()) && sides.iter().all(|side| unit(side.max_abs))));
    let others = sides[0].sum + sides[1].sum;
    let target_exp = (target_logit.logit - bound).exp();
    let sum = others + target_exp;
    if !in_range || sum < E::Real::SMALLEST_SAFE_SUM {
        return None;
    }

    // A well-classified row (others < e_y) takes L = log(1 + others / e_y), free of the
    // cancellation in log Σe - log e_y; any other has L >= log 2 and takes the difference,
    // which does not need e_y itself, a subnormal float when the target lies ~87 below B.
    let loss = if others < target_exp {
        (others / target_exp).ln_1p()
    } else {
        (bound - target_logit.logit) + sum.ln()
    };
    let mut max_grad = E::Real::zero();
    if let (Some((grad, _)), Some(weight)) = (backward.as_mut(), weight) {
        let (grad_left, grad_rest) = grad.split_at_mut(target);
        let (grad_target, grad_right) = grad_rest.split_first_mut().expect("target in row");
        let inverse_sum = sum.recip();
        max_grad = scale_in_place(inverse_sum, weight, grad_left).max(scale_in_place(
            inverse_sum,
            weight,
            grad_right,
        ));
        // p_y - 1 = -others / sum, without the cancellation of forming p_y first.
        let target_grad = -(others / sum) * weight * target_logit.slope;
        *grad_target = E::store(target_grad);
        max_grad = max_grad.max(target_grad.abs());
    }
    Some(RowStats {
        loss,
        target_score: score,
        // p_y = exp(-L) holds whatever the size of e_y, which may have underflowed.
        target_prob: (-loss).exp(),
        support_vectors: sides[0].support_vectors + sides[1].support_vectors,
        max_grad,
    })
}

/// What the bounded pass learns about one side of a row.
struct Bounded<F> {
    sum: F,
    max_abs: F,
    support_vectors: usize,
    accepted: bool,
}

/// Pass 1 of the bounded path over one side of a row; with `STORE`, writes
/// `exp(z_k - bound) · dz_k/dc_k` into `grad`.
#[inline(always)]
fn bounded<E: Element, const FMA: bool, const STORE: bool>(
    pieces: &Pieces<E::Real>,
    score: E::Real,
    bound: E::Real,
    cosines: &[E],
    grad: &mut [E],
) -> Bounded<E::Real> {
    let zero = E::Real::zero();
    let mut sum = [zero; LANES];
    let mut max_abs = [zero; LANES];
    // Support vectors count 1 and rejected inputs REJECTED, so one sum tells both.
    let mut counts = [zero; LANES];
    let chunks = cosines.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut grad_chunks = grad.chunks_exact_mut(LANES);
    for chunk in chunks {
        prefetch(chunk);
        let mut exps = [zero; LANES];
        for lane in 0..LANES {
            let term = bounded_term::<E, FMA>(pieces, score, bound, chunk[lane]);
            sum[lane] = sum[lane] + term.exp;
            max_abs[lane] = larger(max_abs[lane], term.abs);
            counts[lane] = counts[lane] + term.count;
            exps[lane] = term.exp * term.slope;
        }
        if STORE {
            let grad_chunk = grad_chunks.next().expect("grad has the row's length");
            prefetch(grad_chunk);
            for lane in 0..LANES {
                grad_chunk[lane] = E::store(exps[lane]);
            }
        }
    }
    for (lane, &value) in tail.iter().enumerate() {
        let term = bounded_term::<E, FMA>(pieces, score, bound, value);
        sum[lane] = sum[lane] + term.exp;
        max_abs[lane] = larger(max_abs[lane], term.abs);
        counts[lane] = counts[lane] + term.count;
        if STORE {
            let offset = cosines.len() - tail.len() + lane;
            grad[offset] = E::store(term.exp * term.slope);
        }
    }
    let count: f64 = counts.iter().map(|&count| count.to_f64()).sum();
    Bounded {
        sum: sum.iter().fold(zero, |total, &part| total + part),
        max_abs: max_abs.iter().copied().fold(zero, larger),
        support_vectors: count as usize,
        accepted: count < REJECTED,
    }
}

/// Asks for the cache line `PREFETCH_BYTES` ahead of `chunk`.
///
/// The bounded pass is the only one that reads the cosines from memory, and it does little
/// enough work per cache line that the hardware prefetcher alone leaves it waiting on
/// memory (forward only ran at a third of the copy's bandwidth without this).
#[inline(always)]
fn prefetch<T>(chunk: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // Only an address is formed, never dereferenced: prefetching past the end of the
        // row is harmless.
        let ahead = chunk.as_ptr().cast::<i8>().wrapping_add(PREFETCH_BYTES);
        // SAFETY: SSE, the intrinsic's one requirement, is part of the x86_64 baseline, and
        // a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = chunk;
}

/// How far ahead the bounded pass prefetches.
const PREFETCH_BYTES: usize = 4096;

/// The weight of a rejected input in the bounded pass's count: above any row's support
/// vectors (a lane counts at most n / LANES of them), and exact in f32 for a few rejections.
const REJECTED: f64 = 16_777_216.0 / 4.0;

struct BoundedTerm<F> {
    exp: F,
    slope: F,
    abs: F,
    count: F,
}

#[inline(always)]
fn bounded_term<E: Element, const FMA: bool>(
    pieces: &Pieces<E::Real>,
    score: E::Real,
    bound: E::Real,
    value: E,
) -> BoundedTerm<E::Real> {
    let raw = value.load();
    let logit = pieces.negative_logit(score, pieces.clamp_cosine(raw));
    let one = E::Real::one();
    let masked = if logit.masked { one } else { E::Real::zero() };
    BoundedTerm {
        exp: (logit.logit - bound).fast_exp::<FMA>(),
        slope: logit.slope,
        abs: raw.abs(),
        count: if pieces.accepts(raw) {
            masked
        } else {
            E::Real::from_f64(REJECTED)
        },
    }
}

/// Pass 2 of the bounded path: `grad_k = grad_k / Σe · weight`, returning the largest
/// magnitude written.
///
/// Dividing first keeps the intermediate at most the slope (`e_k <= Σe`), so a large
/// `weight` overflows only if the gradient itself does. An entry whose result would be
/// subnormal is zeroed before the multiplies (see `rescale`).
#[inline(always)]
fn scale_in_place<E: Element>(inverse_sum: E::Real, weight: E::Real, grad: &mut [E]) -> E::Real {
    let one = E::Real::one();
    let shrink = if weight.abs() < one {
        weight.abs()
    } else {
        one
    };
    let smallest = E::Real::min_positive_value() / (inverse_sum * shrink);
    let mut largest = [E::Real::zero(); LANES];
    let mut chunks = grad.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for lane in 0..LANES {
            let scaled = scale_one(chunk[lane].load(), smallest, inverse_sum, weight);
            chunk[lane] = E::store(scaled);
            largest[lane] = larger(largest[lane], scaled.abs());
        }
    }
    for slot in chunks.into_remainder() {
        let scaled = scale_one(slot.load(), smallest, inverse_sum, weight);
        *slot = E::store(scaled);
        largest[0] = larger(largest[0], scaled.abs());
    }
    // `larger` would drop a NaN, which the operands here cannot produce; an infinity stays.
    largest.iter().copied().fold(E::Real::zero(), larger)
}

#[inline(always)]
fn scale_one<F: Real>(value: F, smallest: F, inverse_sum: F, weight: F) -> F {
    let value = if value.abs() > smallest {
        value
    } else {
        F::zero()
    };
    value * inverse_sum * weight
}

#[inline(always)]
fn row_with<E: Element, const FMA: bool>(
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
    if let Some(stats) = bounded_row::<E, FMA>(pieces, cosines, target, target_logit, &mut backward)
    {
        return Some(stats);
    }
    let block = block_len(cosines.len());

    // Passes 1 and 2, block by block: the negatives' sum, from the target's logit as the
    // first maximum.
    let mut total = RowSum {
        max: target_logit.logit,
        sum: E::Real::zero(),
        support_vectors: 0,
    };
    let mut block_max = [E::Real::zero(); MAX_BLOCKS];
    for ((start, end), slot) in blocks(cosines.len(), target, block).zip(&mut block_max) {
        let values = &cosines[start..end];
        let scanned = scan(pieces, score, values);
        let sum = match backward {
            Some((ref mut grad, _)) => store_exponentials::<E, FMA>(
                pieces,
                score,
                scanned.max,
                values,
                &mut grad[start..end],
            ),
            None => sum_exponentials::<E, FMA>(pieces, score, scanned.max, values),
        };
        total.merge(scanned.max, sum, scanned.support_vectors);
        *slot = scanned.max;
    }
    // A rejected cosine made its block's maximum +∞.
    if !is_finite(total.max) {
        return None;
    }
    let RowSum {
        max,
        sum: others,
        support_vectors,
    } = total;
    let target_exp = (target_logit.logit - max).exp();
    let sum = others + target_exp;
    let log_sum_exp = max + sum.ln();
    // As on the bounded path: log(1 + others / e_y) for a well-classified row, the
    // difference of logarithms otherwise.
    let loss = if others < target_exp {
        (others / target_exp).ln_1p()
    } else {
        log_sum_exp - target_logit.logit
    };

    let mut max_grad = E::Real::zero();
    if let Some((grad, weight)) = backward {
        for ((start, end), &block_max) in blocks(cosines.len(), target, block).zip(&block_max) {
            let factor = weight * (block_max - log_sum_exp).exp();
            let values = &cosines[start..end];
            let written = rescale(pieces, score, factor, values, &mut grad[start..end]);
            max_grad = max_grad.max(written);
        }
        // p_y - 1 = -others / sum, without the cancellation of forming p_y first.
        let target_grad = -(others / sum) * weight * target_logit.slope;
        grad[target] = E::store(target_grad);
        max_grad = max_grad.max(target_grad.abs());
    }

    Some(RowStats {
        loss,
        target_score: score,
        target_prob: (-loss).exp(),
        support_vectors,
        max_grad,
    })
}

/// Columns per block: 2048 f32 (8 KB, 16 KB with the gradient) stay in L1 between passes 1
/// and 2; very long rows use longer blocks so that they need at most `MAX_BLOCKS`.
fn block_len(n_classes: usize) -> usize {
    let needed = n_classes.div_ceil(MAX_BLOCKS - 2);
    needed.max(2048).next_multiple_of(LANES)
}

/// The column ranges of the blocks: the columns before the target and after it, each cut
/// into blocks of `block` columns; at most `MAX_BLOCKS` of them.
fn blocks(n_classes: usize, target: usize, block: usize) -> impl Iterator<Item = (usize, usize)> {
    let cut = move |from: usize, to: usize| {
        (from..to)
            .step_by(block)
            .map(move |start| (start, (start + block).min(to)))
    };
    cut(0, target).chain(cut(target + 1, n_classes))
}

#[inline(always)]
fn is_finite<F: Real>(value: F) -> bool {
    value.abs() <= F::max_value()
}

/// The row's running maximum and `Σ exp(z_k - max)`, merged block by block.
struct RowSum<F> {
    max: F,
    sum: F,
    support_vectors: usize,
}

impl<F: Real> RowSum<F> {
    fn merge(&mut self, block_max: F, block_sum: F, support_vectors: usize) {
        self.support_vectors += support_vectors;
        if !is_finite(block_max) {
            // +∞ marks a rejected input: keep it for the row's check.
            self.max = self.max.max(block_max);
        } else if block_max > self.max {
            self.sum = self.sum * (self.max - block_max).exp() + block_sum;
            self.max = block_max;
        } else {
            self.sum = self.sum + block_sum * (block_max - self.max).exp();
        }
    }
}

struct Scan<F> {
    max: F,
    support_vectors: usize,
}

/// Pass 1: the block's maximum adjusted logit and support-vector count. A rejected cosine
/// contributes +∞ to the maximum.
#[inline(always)]
fn scan<E: Element>(pieces: &Pieces<E::Real>, score: E::Real, cosines: &[E]) -> Scan<E::Real> {
    let mut max = [E::Real::neg_infinity(); LANES];
    let mut masked = [E::Real::zero(); LANES];
    let chunks = cosines.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            scan_one(
                pieces,
                score,
                chunk[lane],
                &mut max[lane],
                &mut masked[lane],
            );
        }
    }
    for (lane, &value) in tail.iter().enumerate() {
        scan_one(pieces, score, value, &mut max[lane], &mut masked[lane]);
    }
    // Counts are exact: a lane counts at most a block's length / LANES, far below 2^24.
    Scan {
        max: max.iter().copied().fold(E::Real::neg_infinity(), larger),
        support_vectors: masked.iter().map(|&count| count.to_f64() as usize).sum(),
    }
}

#[inline(always)]
fn scan_one<E: Element>(
    pieces: &Pieces<E::Real>,
    score: E::Real,
    value: E,
    max: &mut E::Real,
    masked: &mut E::Real,
) {
    let raw = value.load();
    let logit = pieces.negative_logit(score, pieces.clamp_cosine(raw));
    let checked = if pieces.accepts(raw) {
        logit.logit
    } else {
        E::Real::infinity()
    };
    *max = larger(*max, checked);
    *masked = *masked
        + if logit.masked {
            E::Real::one()
        } else {
            E::Real::zero()
        };
}

/// `max` as one comparison and select, which vectorizes to a single instruction.
#[inline(always)]
fn larger<F: Real>(a: F, b: F) -> F {
    if b > a {
        b
    } else {
        a
    }
}

/// Pass 2, forward only: `Σ exp(z_k - max)`.
#[inline(always)]
fn sum_exponentials<E: Element, const FMA: bool>(
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
            sum[lane] = sum[lane] + (logit.logit - max).fast_exp::<FMA>();
        }
    }
    for (lane, &value) in tail.iter().enumerate() {
        let logit = pieces.negative_logit(score, pieces.clamp_cosine(value.load()));
        sum[lane] = sum[lane] + (logit.logit - max).fast_exp::<FMA>();
    }
    sum.iter()
        .fold(E::Real::zero(), |total, &part| total + part)
}

/// Pass 2 with a backward pass to follow: writes `exp(z_k - max)` into `grad` and sums it.
#[inline(always)]
fn store_exponentials<E: Element, const FMA: bool>(
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
            let exp = (logit.logit - max).fast_exp::<FMA>();
            grad_chunk[lane] = E::store(exp);
            sum[lane] = sum[lane] + exp;
        }
    }
    let grad_tail = grad_chunks.into_remainder();
    for (lane, (&value, slot)) in tail.iter().zip(grad_tail).enumerate() {
        let logit = pieces.negative_logit(score, pieces.clamp_cosine(value.load()));
        let exp = (logit.logit - max).fast_exp::<FMA>();
        *slot = E::store(exp);
        sum[lane] = sum[lane] + exp;
    }
    sum.iter()
        .fold(E::Real::zero(), |total, &part| total + part)
}

/// Pass 3: `grad_k = e_k · factor · dz_k/dc_k`, with `factor = weight · exp(block max - lse)`.
///
/// An `e_k` whose product would fall below the smallest normal float is zeroed before the
/// multiply: producing a subnormal costs a microcode assist of ~100 cycles on x86, which made
/// a first version of this pass six times slower than the other two together, while such an
/// entry's true value is below 1.2e-38 (f32) and rounds to a zero or subnormal gradient
/// anyway.
#[inline(always)]
fn rescale<E: Element>(
    pieces: &Pieces<E::Real>,
    score: E::Real,
    factor: E::Real,
    cosines: &[E],
    grad: &mut [E],
) -> E::Real {
    let steepest = factor.abs() * pieces.steepest_negative_slope();
    let smallest = E::Real::min_positive_value() / steepest;
    let mut largest = E::Real::zero();
    for (slot, &value) in grad.iter_mut().zip(cosines) {
        let slope = pieces
            .negative_logit(score, pieces.clamp_cosine(value.load()))
            .slope;
        let exp = slot.load();
        let exp = if exp > smallest { exp } else { E::Real::zero() };
        let scaled = exp * (factor * slope);
        *slot = E::store(scaled);
        largest = larger(largest, scaled.abs());
    }
    largest
}
