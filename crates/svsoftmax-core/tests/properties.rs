//! Properties of the reference on seeded random inputs: the formulations the paper and the
//! notebook use agree, the special cases reduce to the plain losses, and nothing
//! overflows at the extremes.

mod common;

use common::{config, every_margin, Tolerance};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use svsoftmax_core::scalar::Pieces;
use svsoftmax_core::{reference, CosineMatrix, Indicator, Margin, Targets};

fn seeded(cases: u32) -> Config {
    Config {
        cases: common::cases(cases),
        rng_seed: RngSeed::Fixed(common::seed(0x5e5f_7a11)),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Rows of cosines in [-1, 1] where exact ±1 and 0 turn up often, with a target each.
fn rows(
    max_rows: usize,
    max_classes: usize,
) -> impl Strategy<Value = (Vec<f64>, usize, Vec<usize>)> {
    (1..=max_rows, 2..=max_classes).prop_flat_map(|(n_rows, n_classes)| {
        let cosine = prop_oneof![
            6 => -1.0..=1.0f64,
            1 => proptest::sample::select(vec![-1.0, 0.0, 1.0]),
        ];
        (
            proptest::collection::vec(cosine, n_rows * n_classes),
            Just(n_classes),
            proptest::collection::vec(0..n_classes, n_rows),
        )
    })
}

fn indicators() -> impl Strategy<Value = Indicator> {
    proptest::sample::select(vec![Indicator::Adaptive, Indicator::Fixed])
}

proptest! {
    #![proptest_config(seeded(512))]

    /// The notebook's fraction form, with h formed explicitly, equals the log-domain loss
    /// wherever the exponentials fit (s <= 8 keeps them below e^20).
    #[test]
    fn fraction_form_equals_log_domain(
        (data, n_classes, targets) in rows(4, 9),
        margin in proptest::sample::select(every_margin()),
        indicator in indicators(),
        scale in 1.0..8.0f64,
        t in 1.0..1.5f64,
    ) {
        let config = config(scale, t, margin, indicator);
        let cosines = CosineMatrix::new(&data, targets.len(), n_classes).unwrap();
        let forward = reference::forward(&config, cosines, &Targets::new(&targets)).unwrap();
        let pieces = Pieces::<f64>::new(&config).unwrap();
        for (i, (row, &y)) in cosines.rows().zip(&targets).enumerate() {
            let f = pieces.target_logit(row[y]).score;
            let h = |c: f64| match (f < c, indicator) {
                (false, _) => 1.0,
                (true, Indicator::Adaptive) => (scale * (t - 1.0) * (c + 1.0)).exp(),
                (true, Indicator::Fixed) => (scale * (t - 1.0)).exp(),
            };
            let negatives: f64 = (0..n_classes)
                .filter(|&k| k != y)
                .map(|k| h(row[k]) * (scale * row[k]).exp())
                .sum();
            let fraction = -((scale * f).exp() / ((scale * f).exp() + negatives)).ln();
            // Both sides are f64 sums of at most 9 exponentials below e^20.
            Tolerance::new(1e-12, 1e-12, "f64 fraction vs log-sum-exp")
                .assert_close(forward.row_losses[i], fraction, "row loss");
        }
    }

    /// With t = 1 and no margin the loss is the softmax cross-entropy of s · cos.
    #[test]
    fn t_one_without_margin_is_softmax_cross_entropy(
        (data, n_classes, targets) in rows(4, 9),
        indicator in indicators(),
        scale in 1.0..64.0f64,
    ) {
        let config = config(scale, 1.0, Margin::None, indicator);
        let cosines = CosineMatrix::new(&data, targets.len(), n_classes).unwrap();
        let forward = reference::forward(&config, cosines, &Targets::new(&targets)).unwrap();
        for (i, (row, &y)) in cosines.rows().zip(&targets).enumerate() {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|c| (scale * (c - max)).exp()).sum();
            let expected = scale * (max - row[y]) + sum.ln();
            // Logits up to 64 in magnitude: a few ulps of 64 is ~1e-14.
            Tolerance::new(1e-12, 1e-12, "f64 cross-entropy, another order")
                .assert_close(forward.row_losses[i], expected, "row loss");
        }
    }

    /// h >= 1, so a larger t never lowers a row's loss.
    #[test]
    fn loss_grows_with_t(
        (data, n_classes, targets) in rows(3, 7),
        margin in proptest::sample::select(every_margin()),
        indicator in indicators(),
        scale in 1.0..64.0f64,
        t in 1.0..1.5f64,
        dt in 0.0..0.5f64,
    ) {
        let cosines = CosineMatrix::new(&data, targets.len(), n_classes).unwrap();
        let targets = Targets::new(&targets);
        let forward = |t| {
            reference::forward(&config(scale, t, margin, indicator), cosines, &targets).unwrap()
        };
        let (low, high) = (forward(t), forward(t + dt));
        for (l, h) in low.row_losses.iter().zip(&high.row_losses) {
            // Equal when no column is masked; the slack is rounding of a loss up to ~300.
            prop_assert!(*h >= *l - 1e-12 * l.abs().max(1.0), "t {t} -> {}: {l} > {h}", t + dt);
        }
    }

    /// The extremes the engines must survive: s up to 64, t up to 1.5, cosines at ±1.
    #[test]
    fn finite_and_consistent_at_the_extremes(
        (data, n_classes, targets) in rows(6, 12),
        margin in proptest::sample::select(every_margin()),
        indicator in indicators(),
        scale in 32.0..=64.0f64,
        t in 1.0..=1.5f64,
    ) {
        let config = config(scale, t, margin, indicator);
        let cosines = CosineMatrix::new(&data, targets.len(), n_classes).unwrap();
        let evaluation = reference::forward_backward(
            &config, cosines, &Targets::new(&targets), Default::default(),
        ).unwrap();
        prop_assert!(evaluation.grad_cosines.iter().all(|g| g.is_finite()));
        let forward = &evaluation.forward;
        for (loss, row) in forward.row_losses.iter().zip(&forward.diagnostics) {
            let row = row.unwrap();
            prop_assert!(loss.is_finite() && *loss >= 0.0, "loss {loss}");
            let p_y = row.target_prob;
            prop_assert!(p_y > 0.0 || *loss > 700.0, "p_y {p_y} at loss {loss}");
            prop_assert!(row.target_prob <= 1.0);
        }
    }

    /// No cosine in [-1, 1] gives a logit above `Pieces::logit_bound`, which kernels use as
    /// the log-sum-exp's reference point.
    #[test]
    fn logits_stay_below_the_bound(
        (data, n_classes, targets) in rows(4, 9),
        margin in proptest::sample::select(every_margin()),
        indicator in indicators(),
        scale in 1.0..=64.0f64,
        t in 1.0..=1.5f64,
    ) {
        let config = config(scale, t, margin, indicator);
        let bound = Pieces::<f64>::new(&config).unwrap().logit_bound();
        let cosines = CosineMatrix::new(&data, targets.len(), n_classes).unwrap();
        for row in reference::breakdown(&config, cosines, &Targets::new(&targets)).unwrap() {
            for &logit in &row.unwrap().logits {
                // The bound is s + log h(1) formed in one order, a logit in another.
                prop_assert!(logit <= bound * (1.0 + 1e-15), "{logit} > {bound}");
            }
        }
    }

    /// The scalar pieces in f32 agree with f64 to f32 rounding: the target score to a few
    /// ulps of its magnitude (up to ~2m - 1 for the multiplicative margin), the slopes to
    /// a relative 1e-3 (the angular slope's 1/sin θ amplifies the rounding of cos θ near ±1).
    #[test]
    fn f32_pieces_agree_with_f64(
        margin in proptest::sample::select(every_margin()),
        cosine in -1.0..=1.0f64,
    ) {
        let config = config(1.0, 1.2, margin, Indicator::Adaptive);
        let wide = Pieces::<f64>::new(&config).unwrap().target_logit(f64::from(cosine as f32));
        let narrow = Pieces::<f32>::new(&config).unwrap().target_logit(cosine as f32);
        Tolerance::new(1e-5, 1e-5, "f32 score, a few ulps of values up to 7")
            .assert_close(f64::from(narrow.score), wide.score, "score");
        // The slope's conditioning is cos θ / sin²θ: rounding of 6e-8 in c becomes up to
        // 6e-8 / sin²θ relative; sin θ >= 0.02 here gives 1.5e-4, and the clamp handles ±1.
        if (1.0 - cosine * cosine).sqrt() > 0.02 {
            Tolerance::new(1e-4, 1e-3, "f32 slope, conditioning 1/sin^2")
                .assert_close(f64::from(narrow.slope), wide.slope, "slope");
        }
    }
}
