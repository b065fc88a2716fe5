//! The reference's analytic gradient against central finite differences of its own loss,
//! for every margin kind, indicator and reduction, at seeded random points.
//!
//! The loss jumps where a column crosses the mask boundary and kinks where the target
//! score changes branch, so a coordinate is skipped when its two probes see different
//! masks or different target-score slopes. The test counts what it skips and fails if it
//! checks too little.

mod common;

use common::{every_margin, Tolerance};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use svsoftmax_core::scalar::Pieces;
use svsoftmax_core::{
    reference, CosineMatrix, Indicator, Margin, Reduction, SvSoftmax, Targets, Upstream,
};

const STEP: f64 = 1e-6;

/// Central differences with step h have a truncation error of h² |L'''| / 6: with s ≤ 32
/// the third derivative of a log-sum-exp is at most ~s³ ≈ 3e4, so about 5e-9; the
/// rounding error is ε |L| / h ≈ 2.2e-16 · 60 / 1e-6 ≈ 1.3e-8. 1e-6 absolute plus 1e-6
/// relative is two orders above both.
const FD: Tolerance = Tolerance::new(1e-6, 1e-6, "central differences with h = 1e-6, s <= 32");

#[derive(Debug, Clone)]
struct Case {
    config: SvSoftmax,
    n_classes: usize,
    cosines: Vec<f64>,
    targets: Vec<Option<usize>>,
    upstream: Vec<f64>,
}

fn case() -> impl Strategy<Value = Case> {
    let margins = every_margin();
    let reductions = [Reduction::Mean, Reduction::Sum, Reduction::None];
    (
        proptest::sample::select(margins),
        proptest::sample::select(vec![Indicator::Adaptive, Indicator::Fixed]),
        proptest::sample::select(reductions.to_vec()),
        1.0..32.0f64,
        1.0..1.5f64,
        1usize..4,
        2usize..8,
    )
        .prop_flat_map(
            |(margin, indicator, reduction, scale, t, n_rows, n_classes)| {
                let config = SvSoftmax::builder()
                    .scale(scale)
                    .t(t)
                    .margin(margin)
                    .indicator(indicator)
                    .reduction(reduction)
                    .build()
                    .unwrap();
                // ±0.98 keeps the angular slopes, which grow like 1 / sin³θ, moderate.
                let cosines = proptest::collection::vec(-0.98..0.98f64, n_rows * n_classes);
                let targets = proptest::collection::vec(
                    proptest::option::weighted(0.85, 0..n_classes),
                    n_rows,
                );
                let upstream = proptest::collection::vec(-2.0..2.0f64, n_rows);
                (Just(config), Just(n_classes), cosines, targets, upstream)
            },
        )
        .prop_map(|(config, n_classes, cosines, targets, upstream)| Case {
            config,
            n_classes,
            cosines,
            targets,
            upstream,
        })
}

fn loss_at(case: &Case, cosines: &[f64]) -> (f64, Vec<Vec<bool>>) {
    let n_rows = case.targets.len();
    let matrix = CosineMatrix::new(cosines, n_rows, case.n_classes).unwrap();
    let targets = Targets::with_ignored(case.targets.clone());
    let forward = reference::forward(&case.config, matrix, &targets).unwrap();
    let loss = match case.config.reduction() {
        // The vector-Jacobian product is the gradient of Σ_i u_i L_i.
        Reduction::None => forward
            .row_losses
            .iter()
            .zip(&case.upstream)
            .map(|(l, u)| l * u)
            .sum(),
        Reduction::Mean | Reduction::Sum => forward.loss,
    };
    let masks = reference::breakdown(&case.config, matrix, &targets)
        .unwrap()
        .into_iter()
        .map(|row| row.map(|row| row.mask).unwrap_or_default())
        .collect();
    (loss, masks)
}

fn target_slope(config: &SvSoftmax, cos_y: f64) -> f64 {
    Pieces::<f64>::new(config)
        .unwrap()
        .target_logit(cos_y)
        .slope
}

/// Returns (checked, skipped) coordinates.
fn check_case(case: &Case) -> Result<(usize, usize), TestCaseError> {
    let n_rows = case.targets.len();
    let targets = Targets::with_ignored(case.targets.clone());
    let matrix = CosineMatrix::new(&case.cosines, n_rows, case.n_classes).unwrap();
    let upstream = match case.config.reduction() {
        Reduction::None => Upstream::Rows(&case.upstream),
        Reduction::Mean | Reduction::Sum => Upstream::Scalar(1.0),
    };
    let analytic = reference::backward(&case.config, matrix, &targets, upstream).unwrap();

    let (mut checked, mut skipped) = (0, 0);
    for i in 0..case.cosines.len() {
        let (row, col) = (i / case.n_classes, i % case.n_classes);
        let mut plus = case.cosines.clone();
        let mut minus = case.cosines.clone();
        plus[i] += STEP;
        minus[i] -= STEP;
        let (loss_plus, masks_plus) = loss_at(case, &plus);
        let (loss_minus, masks_minus) = loss_at(case, &minus);

        let on_target = case.targets[row] == Some(col);
        let kink = on_target && {
            let (a, b) = (
                target_slope(&case.config, minus[i]),
                target_slope(&case.config, plus[i]),
            );
            (a - b).abs() > 1e-3 * (1.0 + a.abs())
        };
        if masks_plus[row] != masks_minus[row] || kink {
            skipped += 1;
            continue;
        }
        let numeric = (loss_plus - loss_minus) / (2.0 * STEP);
        let ok = approx::relative_eq!(
            analytic[i],
            numeric,
            epsilon = FD.abs,
            max_relative = FD.rel
        );
        prop_assert!(
            ok,
            "coordinate ({row}, {col}): analytic {} vs central difference {numeric} ({})\n{case:?}",
            analytic[i],
            FD.reason
        );
        checked += 1;
    }
    Ok((checked, skipped))
}

#[test]
fn analytic_gradient_matches_central_differences() {
    let cases = common::cases(400);
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(common::seed(0x5f5f_2026)),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let totals = std::cell::Cell::new((0usize, 0usize));
    runner
        .run(&case(), |case| {
            let (checked, skipped) = check_case(&case)?;
            let (c, s) = totals.get();
            totals.set((c + checked, s + skipped));
            Ok(())
        })
        .unwrap();

    let (checked, skipped) = totals.get();
    eprintln!("finite differences: {checked} coordinates checked, {skipped} skipped at a boundary");
    // A case has 8 coordinates on average, ignored rows aside; probes 2e-6 apart straddle a
    // boundary rarely, so far more skips than checks would mean the skip rule, not the
    // gradient, is deciding the outcome.
    let cases = usize::try_from(cases).unwrap();
    assert!(
        checked >= 4 * cases,
        "only {checked} coordinates checked in {cases} cases"
    );
    assert!(
        skipped * 20 < checked,
        "{skipped} skipped against {checked} checked"
    );
}

#[test]
fn every_margin_kind_is_checked_at_a_fixed_point() {
    // A point well inside every branch for each margin, so each kind is checked at least
    // once whatever the random cases draw.
    for margin in every_margin()
        .into_iter()
        .chain([Margin::combined(0.9, 0.2, 0.1)])
    {
        for target_cosine in [0.45, -0.3, -0.9] {
            let config = SvSoftmax::builder()
                .scale(8.0)
                .t(1.3)
                .margin(margin)
                .build()
                .unwrap();
            let case = Case {
                config,
                n_classes: 4,
                cosines: vec![target_cosine, 0.8, -0.75, 0.15],
                targets: vec![Some(0)],
                upstream: vec![1.0],
            };
            let (checked, _) = check_case(&case).unwrap();
            assert!(
                checked >= 3,
                "{margin:?} at {target_cosine}: {checked} checked"
            );
        }
    }
}

#[test]
fn a_coordinate_at_a_tie_is_skipped() {
    // f = 0.45 - 0.35 = 0.1 equals column 3 (to rounding), so probing column 3, or the
    // target that sets f, moves the row across the mask boundary: those two coordinates are
    // skipped and the other two checked.
    let config = SvSoftmax::builder()
        .scale(8.0)
        .margin(Margin::additive(0.35))
        .build()
        .unwrap();
    let case = Case {
        config,
        n_classes: 4,
        cosines: vec![0.45, 0.8, -0.75, 0.45 - 0.35],
        targets: vec![Some(0)],
        upstream: vec![1.0],
    };
    assert_eq!(check_case(&case).unwrap(), (2, 2));
}
