//! The semantics the loss must keep, each pinned by a value derived by hand, by the
//! notebook, or by JAX in float64 (`golden/jax/compute.py`).

mod common;

use common::{
    config, evaluate, every_margin, matrix, Tolerance, F64_DIFFERENTIAL, F64_FORMULA, GIVEN_DIGITS,
};
use svsoftmax_core::{
    reference, AngularGradient, BeyondPi, CosineMatrix, Indicator, Margin, Reduction, SvSoftmax,
    TConvention, Targets, Upstream,
};

fn loss(config: &SvSoftmax, rows: &[&[f64]], targets: &[usize]) -> f64 {
    evaluate(config, rows, targets).forward.loss
}

/// `-log softmax(z)_y` computed the naive way, as an independent check on small logits.
fn naive_cross_entropy(logits: &[f64], target: usize) -> f64 {
    let denominator: f64 = logits.iter().map(|z| z.exp()).sum();
    -(logits[target].exp() / denominator).ln()
}

#[test]
fn mask_is_strict_and_never_on_the_target() {
    // f = 0.5 with no margin: column 1 ties (not masked), column 2 is above, 3 below.
    let rows = reference::breakdown(
        &SvSoftmax::default(),
        CosineMatrix::new(&[0.5, 0.5, 0.6, 0.4], 1, 4).unwrap(),
        &Targets::new(&[0]),
    )
    .unwrap();
    assert_eq!(rows[0].as_ref().unwrap().mask, [false, false, true, false]);

    // With a margin the target score drops below the target's own cosine; the target
    // column still carries no mask and no indicator.
    let am = config(32.0, 1.2, Margin::additive(0.35), Indicator::Adaptive);
    let rows = reference::breakdown(
        &am,
        CosineMatrix::new(&[0.5, 0.6], 1, 2).unwrap(),
        &Targets::new(&[0]),
    )
    .unwrap();
    let row = rows[0].as_ref().unwrap();
    assert_eq!(row.mask, [false, true]);
    assert_eq!(row.log_indicators[0], 0.0);
    F64_FORMULA.assert_close(row.logits[0], 32.0 * 0.15, "target logit s (c_y - m)");
}

#[test]
// The expected value is written as derived (log 2 to six digits), not as `LN_2`, so that it
// stays a number a reader can check against the derivation.
#[allow(clippy::approx_constant)]
fn tie_at_the_mask_boundary_is_not_a_support_vector() {
    // f = 0.75 - 0.25 = 0.5 = cos_1 exactly in f64, so I_1 = 0 and the row is
    // log(e^16 + e^16 + e^-8) - 16 = log 2 + log(1 + e^-24 / 2) = 0.693147 (hand derivation).
    let am = config(32.0, 1.2, Margin::additive(0.25), Indicator::Adaptive);
    let evaluation = evaluate(&am, &[&[0.75, 0.5, -0.25]], &[0]);
    GIVEN_DIGITS.assert_close(evaluation.forward.loss, 0.693147, "loss at the tie");
    assert_eq!(
        evaluation.forward.diagnostics[0].unwrap().support_vectors,
        0
    );
}

#[test]
fn values_derived_by_hand() {
    // Row [[0.5, 0.6, -0.2]], target 0, s = 32: the only support vector is column 1.
    // Adaptive: z = [16, 19.2 + 32·0.2·1.6, -6.4] = [16, 29.44, -6.4],
    // so L = 13.44 + log(1 + e^-13.44 + e^-35.84).
    // Fixed: z_1 = 19.2 + 6.4 = 25.6, L = 9.6 + log(1 + e^-9.6 + ...).
    let row: &[&[f64]] = &[&[0.5, 0.6, -0.2]];
    let cases = [
        (
            config(32.0, 1.2, Margin::None, Indicator::Adaptive),
            13.440001,
        ),
        (config(32.0, 1.2, Margin::None, Indicator::Fixed), 9.600068),
        (
            config(32.0, 1.0, Margin::None, Indicator::Adaptive),
            3.239953,
        ),
        (
            config(32.0, 1.2, Margin::additive(0.35), Indicator::Adaptive),
            24.64,
        ),
        (
            config(32.0, 1.2, Margin::additive(0.35), Indicator::Fixed),
            20.80,
        ),
    ];
    for (config, expected) in cases {
        GIVEN_DIGITS.assert_close(loss(&config, row, &[0]), expected, &format!("{config:?}"));
    }

    // [[0, 1]], target 0, s = 64, t = 1.2: z = [0, 64 + 64·0.2·2] = [0, 89.6] and with
    // m = 0.35, z_0 = -22.4. Forming e^89.6 in f32 overflows, which the log domain avoids.
    let wide: &[&[f64]] = &[&[0.0, 1.0]];
    let plain = config(64.0, 1.2, Margin::None, Indicator::Adaptive);
    let am = config(64.0, 1.2, Margin::additive(0.35), Indicator::Adaptive);
    GIVEN_DIGITS.assert_close(loss(&plain, wide, &[0]), 89.6, "s = 64 without margin");
    GIVEN_DIGITS.assert_close(loss(&am, wide, &[0]), 112.0, "s = 64 with m = 0.35");
}

#[test]
fn gradient_of_a_support_vector() {
    // dL/dc_k = p_k (s + d log h_k / dc_k): s t p_k adaptive, s p_k fixed. With
    // p_1 = 1 / (1 + e^-13.44 + e^-35.84) and 1 / (1 + e^-9.6 + e^-32) (hand derivation).
    let row: &[&[f64]] = &[&[0.5, 0.6, -0.2]];
    let adaptive = evaluate(
        &config(32.0, 1.2, Margin::None, Indicator::Adaptive),
        row,
        &[0],
    );
    let fixed = evaluate(
        &config(32.0, 1.2, Margin::None, Indicator::Fixed),
        row,
        &[0],
    );
    GIVEN_DIGITS.assert_close(adaptive.grad_cosines[1], 38.399944, "adaptive s t p_k");
    GIVEN_DIGITS.assert_close(fixed.grad_cosines[1], 31.997833, "fixed s p_k");

    // The gradient of a softmax cross-entropy sums to zero over the row when every slope is
    // s; here column 1's slope is s t, so the row sums to s (t - 1) p_1.
    let sum: f64 = adaptive.grad_cosines.iter().sum();
    let p_1 = adaptive.grad_cosines[1] / (32.0 * 1.2);
    F64_FORMULA.assert_close(sum, 32.0 * 0.2 * p_1, "row sum of the gradient");
}

#[test]
fn t_of_one_is_the_margin_softmax() {
    let row: &[f64] = &[0.3, 0.45, -0.7, 0.1, 0.42];
    let margins = [
        (Margin::None, 0.3),
        (Margin::additive(0.2), 0.1),
        (Margin::angular(0.5), (0.3f64.acos() + 0.5).cos()),
        (
            Margin::combined(1.0, 0.3, 0.1),
            (0.3f64.acos() + 0.3).cos() - 0.1,
        ),
    ];
    let tolerance = Tolerance::new(1e-13, 1e-13, "naive f64 softmax of logits below 20");
    for (margin, target_score) in margins {
        for indicator in [Indicator::Adaptive, Indicator::Fixed] {
            let sv = config(10.0, 1.0, margin, indicator);
            let mut logits: Vec<f64> = row.iter().map(|c| 10.0 * c).collect();
            logits[0] = 10.0 * target_score;
            tolerance.assert_close(
                loss(&sv, &[row], &[0]),
                naive_cross_entropy(&logits, 0),
                &format!("{margin:?} {indicator:?}"),
            );
        }
    }
}

#[test]
fn notebook_fraction_form_agrees_with_the_log_domain() {
    // The notebook's first form: -log(e^{s f} / (e^{s f} + Σ_{k≠y} h_k e^{s c_k})), with h
    // formed explicitly. It is exact wherever e^{s c} does not overflow (s = 4 here).
    let rows: [&[f64]; 3] = [
        &[0.2, 0.5, -0.1, 0.35],
        &[0.9, 0.1, 0.95, -0.6],
        &[-0.4, 0.3, 0.2, 0.1],
    ];
    let targets = [0, 2, 1];
    let tolerance = Tolerance::new(1e-13, 1e-12, "f64 fraction of moderate exponentials");
    for m in [0.0, 0.1, 0.3] {
        for (t, indicator) in [
            (1.0, Indicator::Adaptive),
            (1.3, Indicator::Adaptive),
            (1.3, Indicator::Fixed),
        ] {
            let sv = config(4.0, t, Margin::additive(m), indicator);
            let fraction: f64 = rows
                .iter()
                .zip(targets)
                .map(|(row, y)| {
                    let f = row[y] - m;
                    let h = |c: f64| match (f < c, indicator) {
                        (false, _) => 1.0,
                        (true, Indicator::Adaptive) => (4.0 * (t - 1.0) * (c + 1.0)).exp(),
                        (true, Indicator::Fixed) => (4.0 * (t - 1.0)).exp(),
                    };
                    let negatives: f64 = (0..row.len())
                        .filter(|&k| k != y)
                        .map(|k| h(row[k]) * (4.0 * row[k]).exp())
                        .sum();
                    -((4.0 * f).exp() / ((4.0 * f).exp() + negatives)).ln()
                })
                .sum::<f64>()
                / 3.0;
            tolerance.assert_close(
                loss(&sv, &rows, &targets),
                fraction,
                &format!("m {m} t {t}"),
            );
        }
    }
}

struct JaxCase {
    name: &'static str,
    config: SvSoftmax,
    rows: Vec<&'static [f64]>,
    targets: Vec<usize>,
}

fn jax_cases() -> Vec<JaxCase> {
    let build = |scale: f64, t: f64, margin: Margin| config(scale, t, margin, Indicator::Adaptive);
    let angular = |beyond_pi| Margin::Angular { m: 0.5, beyond_pi };
    let combined = |m1, m2, m3, beyond_pi| Margin::Combined {
        m1,
        m2,
        m3,
        beyond_pi,
    };
    let beyond: Vec<&'static [f64]> = vec![&[-0.95, -0.97, 0.1, -0.99]];
    let basic: Vec<&'static [f64]> = vec![&[0.3, 0.8, -0.1, 0.25]];
    let sphere: Vec<&'static [f64]> = vec![&[0.6, 0.7, -0.3, 0.1], &[-0.4, 0.2, 0.5, -0.9]];
    let case = |name, config, rows: &Vec<&'static [f64]>, targets: &[usize]| JaxCase {
        name,
        config,
        rows: rows.clone(),
        targets: targets.to_vec(),
    };
    vec![
        case(
            "angular-basic",
            build(32.0, 1.2, angular(BeyondPi::Clip)),
            &basic,
            &[0],
        ),
        case(
            "angular-clip",
            build(16.0, 1.3, angular(BeyondPi::Clip)),
            &beyond,
            &[0],
        ),
        case(
            "angular-fallback",
            build(16.0, 1.3, angular(BeyondPi::Fallback)),
            &beyond,
            &[0],
        ),
        case(
            "angular-easy",
            build(16.0, 1.3, angular(BeyondPi::Easy)),
            &beyond,
            &[0],
        ),
        case(
            "angular-easy-positive",
            build(32.0, 1.2, angular(BeyondPi::Easy)),
            &basic,
            &[0],
        ),
        case(
            "multiplicative-4",
            build(16.0, 1.2, Margin::multiplicative(4)),
            &sphere,
            &[0, 3],
        ),
        case(
            "multiplicative-4-lambda5",
            build(16.0, 1.2, Margin::Multiplicative { m: 4, lambda: 5.0 }),
            &sphere,
            &[0, 3],
        ),
        case(
            "multiplicative-3-row",
            build(8.0, 1.4, Margin::multiplicative(3)),
            &vec![&[-0.2, 0.9, -0.95]],
            &[0],
        ),
        case(
            "combined",
            build(30.0, 1.2, combined(0.9, 0.4, 0.15, BeyondPi::Fallback)),
            &vec![&[0.4, 0.5, -0.6], &[0.9, 0.95, 0.1]],
            &[0, 0],
        ),
        case(
            "combined-beyond-fallback",
            build(10.0, 1.1, combined(1.0, 0.5, 0.1, BeyondPi::Fallback)),
            &vec![&[-0.9, -0.95, 0.2]],
            &[0],
        ),
        case(
            "combined-beyond-clip",
            build(10.0, 1.1, combined(1.0, 0.5, 0.1, BeyondPi::Clip)),
            &vec![&[-0.9, -0.95, 0.2]],
            &[0],
        ),
        case(
            "fixed-am",
            config(20.0, 1.25, Margin::additive(0.3), Indicator::Fixed),
            &vec![&[0.2, 0.5, 0.1, -0.3], &[0.7, 0.1, 0.65, 0.2]],
            &[2, 0],
        ),
        case(
            "am-s64-t15",
            build(64.0, 1.5, Margin::additive(0.35)),
            &vec![&[1.0, -1.0, 0.99, 0.5], &[-1.0, 1.0, 0.3, 0.2]],
            &[1, 0],
        ),
        case(
            "plain-softmax-check",
            build(10.0, 1.0, Margin::None),
            &vec![&[0.1, 0.2, 0.3]],
            &[2],
        ),
    ]
}

#[derive(serde::Deserialize)]
struct JaxValue {
    name: String,
    loss: f64,
    row_losses: Vec<f64>,
    grad_cosines: Vec<Vec<f64>>,
    mask: Vec<Vec<u8>>,
    target_scores: Vec<f64>,
}

#[test]
fn every_margin_matches_jax_in_float64() {
    let text = include_str!("../../../golden/jax/values.json");
    let values: Vec<JaxValue> = serde_json::from_str(text).unwrap();
    let cases = jax_cases();
    assert_eq!(values.len(), cases.len(), "one JAX value per case");
    for (case, value) in cases.iter().zip(&values) {
        assert_eq!(case.name, value.name);
        let evaluation = evaluate(&case.config, &case.rows, &case.targets);
        let what = case.name;
        F64_DIFFERENTIAL.assert_close(evaluation.forward.loss, value.loss, what);
        F64_DIFFERENTIAL.assert_all_close(&evaluation.forward.row_losses, &value.row_losses, what);
        F64_DIFFERENTIAL.assert_all_close(
            &evaluation.grad_cosines,
            &value.grad_cosines.concat(),
            what,
        );

        let (data, n_rows, n_classes) = matrix(&case.rows);
        let rows = reference::breakdown(
            &case.config,
            CosineMatrix::new(&data, n_rows, n_classes).unwrap(),
            &Targets::new(&case.targets),
        )
        .unwrap();
        for ((row, mask), score) in rows.iter().zip(&value.mask).zip(&value.target_scores) {
            let row = row.as_ref().unwrap();
            let expected: Vec<bool> = mask.iter().map(|&bit| bit == 1).collect();
            assert_eq!(row.mask, expected, "{what}: mask");
            F64_DIFFERENTIAL.assert_close(row.target_score, *score, what);
        }
    }
}

#[test]
fn reductions_and_ignored_rows() {
    let sv = config(16.0, 1.2, Margin::additive(0.2), Indicator::Adaptive);
    let data = [0.3, 0.5, -0.2, 0.9, 0.1, 0.4, -0.5, 0.0, 0.2];
    let cosines = CosineMatrix::new(&data, 3, 3).unwrap();
    let all = Targets::new(&[0, 0, 2]);
    let some = Targets::with_ignored(vec![Some(0), None, Some(2)]);
    let exact = Tolerance::new(
        1e-14,
        1e-14,
        "the same f64 terms summed in another grouping",
    );

    let per_row = reference::forward(&sv.with_reduction(Reduction::None), cosines, &all).unwrap();
    let sum = reference::forward(&sv.with_reduction(Reduction::Sum), cosines, &all).unwrap();
    let mean = reference::forward(&sv, cosines, &all).unwrap();
    exact.assert_close(sum.loss, per_row.row_losses.iter().sum(), "sum");
    exact.assert_close(mean.loss, sum.loss / 3.0, "mean");
    exact.assert_close(per_row.loss, sum.loss, "none reports the sum");

    // An ignored row contributes nothing, and the mean divides by the active rows only.
    let ignored = reference::forward_backward(&sv, cosines, &some, Upstream::default()).unwrap();
    assert_eq!(ignored.forward.row_losses[1], 0.0);
    assert!(ignored.forward.diagnostics[1].is_none());
    assert!(ignored.grad_cosines[3..6].iter().all(|&g| g == 0.0));
    let expected = (per_row.row_losses[0] + per_row.row_losses[2]) / 2.0;
    exact.assert_close(ignored.forward.loss, expected, "mean over active rows");

    // A vector-Jacobian product is the per-row upstream times each row's gradient.
    let upstream = [2.0, -0.5, 3.0];
    let none = sv.with_reduction(Reduction::None);
    let vjp = reference::backward(&none, cosines, &all, Upstream::Rows(&upstream)).unwrap();
    let unit = reference::backward(&none, cosines, &all, Upstream::Scalar(1.0)).unwrap();
    for (i, (&g, &u)) in vjp.iter().zip(&unit).enumerate() {
        exact.assert_close(g, upstream[i / 3] * u, &format!("vjp[{i}]"));
    }
}

#[test]
fn all_rows_ignored_give_zero_under_every_reduction() {
    let data = [0.3, 0.5, -0.2, 0.9];
    let cosines = CosineMatrix::new(&data, 2, 2).unwrap();
    let targets = Targets::with_ignored(vec![None, None]);
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let sv = SvSoftmax::builder().reduction(reduction).build().unwrap();
        let evaluation =
            reference::forward_backward(&sv, cosines, &targets, Upstream::Scalar(1.0)).unwrap();
        assert_eq!(evaluation.forward.loss, 0.0, "{reduction:?}");
        assert!(
            evaluation.grad_cosines.iter().all(|&g| g == 0.0),
            "{reduction:?}"
        );
    }
}

#[test]
fn finite_at_s64_t15_with_cosines_of_exactly_one() {
    // Every row wrong (the target at -1, a negative at +1), every row right, and rows of
    // nothing but ±1: the loss reaches ~300 but stays finite, and so does every gradient.
    let rows: [&[f64]; 4] = [
        &[-1.0, 1.0, 0.2],
        &[1.0, -1.0, -1.0],
        &[1.0, 1.0, 1.0],
        &[-1.0, -1.0, -1.0],
    ];
    for margin in every_margin() {
        for indicator in [Indicator::Adaptive, Indicator::Fixed] {
            for gradient in [AngularGradient::Exact, AngularGradient::StraightThrough] {
                let sv = SvSoftmax::builder()
                    .scale(64.0)
                    .t(1.5)
                    .margin(margin)
                    .indicator(indicator)
                    .angular_gradient(gradient)
                    .build()
                    .unwrap();
                let evaluation = evaluate(&sv, &rows, &[0, 0, 1, 2]);
                let what = format!("{margin:?} {indicator:?} {gradient:?}");
                assert!(
                    evaluation.forward.row_losses.iter().all(|l| l.is_finite()),
                    "{what}"
                );
                assert!(
                    evaluation.grad_cosines.iter().all(|g| g.is_finite()),
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn angular_gradient_is_capped_next_to_one() {
    // d cos(θ + m)/d cos θ = sin(θ + m)/sin θ diverges at θ = 0; at cos = 1 exactly it is
    // evaluated at θ = 2^-12, so the slope is about sin(2^-12 + m) / sin(2^-12).
    let sv = SvSoftmax::builder()
        .scale(1.0)
        .margin(Margin::angular(0.5))
        .build()
        .unwrap();
    let at_one = svsoftmax_core::scalar::Pieces::<f64>::new(&sv)
        .unwrap()
        .target_logit(1.0);
    let theta = 1.0f64 / 4096.0;
    let cap = (theta + 0.5).sin() / theta.sin();
    Tolerance::new(0.0, 1e-6, "cap evaluated with sin vs the angle form").assert_close(
        at_one.slope,
        cap,
        "slope at cos = 1",
    );
    F64_FORMULA.assert_close(at_one.score, 0.5f64.cos(), "score at cos = 1");

    // f32 agrees, because 2^-12 is below the smallest angle f32 resolves next to 1.
    let at_one_f32 = svsoftmax_core::scalar::Pieces::<f32>::new(&sv)
        .unwrap()
        .target_logit(1.0);
    Tolerance::new(0.0, 1e-5, "f32 rounding of a slope near 2000").assert_close(
        f64::from(at_one_f32.slope),
        cap,
        "f32 slope at cos = 1",
    );
}

#[test]
fn rounding_past_one_is_clamped_for_arccos_margins() {
    let sv = SvSoftmax::builder()
        .margin(Margin::angular(0.5))
        .build()
        .unwrap();
    let past = evaluate(&sv, &[&[1.0000001, 0.2, -0.3]], &[0]);
    let at = evaluate(&sv, &[&[1.0, 0.2, -0.3]], &[0]);
    assert_eq!(past.forward.loss, at.forward.loss);
    assert_eq!(past.grad_cosines, at.grad_cosines);
    assert!(past.grad_cosines.iter().all(|g| g.is_finite()));
}

#[test]
fn straight_through_takes_the_margin_slope_as_one() {
    // With the margin's derivative taken as 1, dL/dc_y = s (p_y - 1) as for the additive
    // margin, while the loss itself is unchanged.
    let exact = SvSoftmax::builder()
        .scale(16.0)
        .margin(Margin::angular(0.5))
        .build()
        .unwrap();
    let straight = SvSoftmax::builder()
        .scale(16.0)
        .margin(Margin::angular(0.5))
        .angular_gradient(AngularGradient::StraightThrough)
        .build()
        .unwrap();
    let rows: &[&[f64]] = &[&[0.6, 0.1, 0.55]];
    let a = evaluate(&exact, rows, &[0]);
    let b = evaluate(&straight, rows, &[0]);
    assert_eq!(a.forward.loss, b.forward.loss);
    let p_y = b.forward.diagnostics[0].unwrap().target_prob;
    F64_FORMULA.assert_close(b.grad_cosines[0], 16.0 * (p_y - 1.0), "straight-through");
    assert_ne!(a.grad_cosines[0], b.grad_cosines[0]);
}

#[test]
fn multiplicative_score_is_sphereface_psi() {
    // ψ(θ) = (-1)^k cos(mθ) - 2k on θ ∈ [kπ/m, (k+1)π/m], straight from the definition.
    let tolerance = Tolerance::new(1e-12, 1e-12, "Chebyshev recurrence vs cos(m acos c)");
    for m in 1..=5u32 {
        let sv = SvSoftmax::builder()
            .margin(Margin::multiplicative(m))
            .build()
            .unwrap();
        let pieces = svsoftmax_core::scalar::Pieces::<f64>::new(&sv).unwrap();
        for i in 0..=200 {
            let c = -1.0 + f64::from(i) / 100.0;
            let theta = c.acos();
            let k = (f64::from(m) * theta / std::f64::consts::PI)
                .floor()
                .min(f64::from(m - 1));
            let psi = (-1f64).powi(k as i32) * (f64::from(m) * theta).cos() - 2.0 * k;
            let score = pieces.target_logit(c).score;
            tolerance.assert_close(score, psi, &format!("m {m}, c {c}"));
        }
    }
}

#[test]
fn diagnostics_report_the_row() {
    let sv = config(32.0, 1.2, Margin::additive(0.35), Indicator::Adaptive);
    let evaluation = evaluate(&sv, &[&[0.5, 0.6, -0.2, 0.2]], &[0]);
    let row = evaluation.forward.diagnostics[0].unwrap();
    F64_FORMULA.assert_close(row.target_score, 0.15, "f = 0.5 - 0.35");
    assert_eq!(row.support_vectors, 2, "0.6 and 0.2 lie above f = 0.15");
    F64_FORMULA.assert_close(
        row.target_prob,
        (-evaluation.forward.row_losses[0]).exp(),
        "p_y = exp(-L)",
    );
}

#[test]
fn t_conventions_convert_to_the_paper() {
    assert_eq!(TConvention::OfficialPytorch.to_paper(0.2), 1.2);
    assert_eq!(TConvention::OfficialPytorch.from_paper(1.2), 1.2 - 1.0);
    assert_eq!(TConvention::FaceXZoo.to_paper(1.12), 1.12);
    assert_eq!(TConvention::Paper.to_paper(1.2), 1.2);
    let ported = SvSoftmax::builder()
        .t_in(TConvention::OfficialPytorch, 0.5)
        .build()
        .unwrap();
    assert_eq!(ported.t(), 1.5);
    assert!(SvSoftmax::builder()
        .t_in(TConvention::OfficialPytorch, -0.1)
        .build()
        .is_err());
}

#[test]
fn one_hot_rows_convert_to_indices() {
    let targets = Targets::from_one_hot(&[0.0, 1.0, 0.0, 1.0, 0.0, 0.0], 3).unwrap();
    assert_eq!(targets, Targets::new(&[1, 0]));
    let targets = Targets::from_one_hot(&[0.0f32, 0.0, 1.0], 3).unwrap();
    assert_eq!(targets, Targets::new(&[2]));
}

#[test]
fn the_mean_divides_before_it_sums() {
    // Ten rows of 2e307 each: their sum overflows f64, their mean does not.
    let sv = SvSoftmax::builder().scale(1e307).t(1.0).build().unwrap();
    let rows: Vec<&[f64]> = vec![&[-1.0, 1.0]; 10];
    let loss = evaluate(&sv, &rows, &[0; 10]).forward.loss;
    F64_FORMULA.assert_close(loss, 2e307, "mean of ten rows of s (c_1 - c_0)");
}

#[test]
fn combined_with_unit_multiplier_is_the_angular_margin() {
    // cos(1·θ + m) - 0 is cos(θ + m): the two must give identical scores and masks, including
    // m = 0 where the score is the cosine itself, so a tie stays a tie.
    for m in [0.0, 0.03, 0.5, 1.2] {
        for beyond_pi in [BeyondPi::Clip, BeyondPi::Fallback, BeyondPi::Easy] {
            let angular = SvSoftmax::builder()
                .margin(Margin::Angular { m, beyond_pi })
                .build()
                .unwrap();
            let combined = SvSoftmax::builder()
                .margin(Margin::Combined {
                    m1: 1.0,
                    m2: m,
                    m3: 0.0,
                    beyond_pi,
                })
                .build()
                .unwrap();
            for i in 0..=400 {
                let c = -1.0 + f64::from(i) / 200.0;
                let rows: &[&[f64]] = &[&[c, c, 0.3]];
                assert_eq!(
                    evaluate(&angular, rows, &[0]),
                    evaluate(&combined, rows, &[0]),
                    "m {m} c {c}"
                );
            }
        }
    }
    let plain = SvSoftmax::builder()
        .margin(Margin::combined(1.0, 0.0, 0.0))
        .build()
        .unwrap();
    let tie = evaluate(&plain, &[&[-0.9621999999999999, -0.9621999999999999]], &[0]);
    assert_eq!(tie.forward.diagnostics[0].unwrap().support_vectors, 0);
}

#[test]
fn fallback_scores_never_rise_with_the_angle() {
    // The target score must fall (weakly) as the angle grows, across the threshold too:
    // otherwise the hardest rows would be rewarded for moving away from their class.
    let margins = [
        Margin::angular(0.5),
        Margin::angular(std::f64::consts::FRAC_PI_2),
        Margin::combined(1.35, 0.0, 0.0),
        Margin::combined(2.0, 0.3, 0.1),
        Margin::combined(0.9, 0.4, 0.15),
    ];
    for margin in margins {
        let sv = SvSoftmax::builder()
            .scale(1.0)
            .margin(margin)
            .build()
            .unwrap();
        let pieces = svsoftmax_core::scalar::Pieces::<f64>::new(&sv).unwrap();
        let mut previous = f64::INFINITY;
        for i in 0..=20_000 {
            let theta = std::f64::consts::PI * f64::from(i) / 20_000.0;
            let score = pieces.target_logit(theta.cos()).score;
            assert!(
                score <= previous + 1e-12,
                "{margin:?}: rises at θ = {theta}: {previous} -> {score}"
            );
            previous = score;
        }
    }
}

#[test]
fn probabilities_sum_to_one_when_the_top_logits_are_huge() {
    // Fixed indicator with t = 1e30: columns 1 and 3 are support vectors whose logits
    // 2 c + 2e30 both round to 2e30, where `max + ln Σ` rounds to `max`; the softmax must
    // still share the mass between the tied columns rather than give each all of it.
    let config = SvSoftmax::builder()
        .scale(2.0)
        .t(1e30)
        .margin(Margin::additive(0.35))
        .indicator(Indicator::Fixed)
        .build()
        .unwrap();
    let cosines = [0.0309, 0.7938, -0.4433, 0.3196, -0.9175];
    let matrix = CosineMatrix::new(&cosines, 1, 5).unwrap();
    let rows = reference::breakdown(&config, matrix, &Targets::new(&[0])).unwrap();
    let probabilities = rows[0].as_ref().unwrap().probabilities();
    // Two tied columns of probability 1/2 each, the rest e^(-1e30) = 0: exact in f64.
    assert_eq!(probabilities, vec![0.0, 0.5, 0.0, 0.5, 0.0]);
}
