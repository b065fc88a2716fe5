//! The engine against the core's f64 reference, for every margin kind, both indicators,
//! every reduction, ignored rows, both dtypes, and the shapes and layouts where a
//! vectorized kernel goes wrong: K = 2, odd K, K around the lane width (16) and its
//! multiples, B = 1, transposed and strided views.

use ndarray::{s, Array2, ArrayView2, ShapeBuilder};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use svsoftmax_core::{
    reference, BeyondPi, CosineMatrix, Engine, Indicator, Margin, Reduction, SvSoftmax, Targets,
    Upstream,
};
use svsoftmax_ndarray::NdarrayEngine;

/// A relative and absolute tolerance with its reason.
#[derive(Debug, Clone, Copy)]
struct Tolerance {
    abs: f64,
    rel: f64,
}

impl Tolerance {
    fn close(&self, actual: f64, expected: f64) -> bool {
        approx::relative_eq!(
            actual,
            expected,
            epsilon = self.abs,
            max_relative = self.rel
        )
    }
}

/// f64 engine vs f64 reference: the same formulas with another order of summation and an
/// exp within 1 ulp of std's; losses reach ~300 and sums run over up to ~300 terms, so
/// the errors are a few hundred ulps at worst, 1e-13 relative.
fn f64_tolerance(config: &SvSoftmax) -> (Tolerance, Tolerance) {
    let scale = config.scale() * config.t();
    (
        Tolerance {
            abs: 1e-12 * scale,
            rel: 1e-12,
        },
        Tolerance {
            abs: 1e-12 * scale,
            rel: 1e-11,
        },
    )
}

/// f32 engine vs f64 reference. Rounding a cosine to f32 moves it by up to 2^-24 ≈ 6e-8,
/// and its logit by that times the slope, at most s t (96 at s = 64, t = 1.5); each logit
/// also carries the f32 rounding of its own magnitude (≤ 2 s t), and the exponential one
/// ulp. The loss is 1-Lipschitz in each logit's deviation from the log-sum-exp, so it moves
/// by about 4 · 2 s t · 6e-8 ≈ 5e-5 at s t = 96; a probability p_k by p_k times that, and
/// its gradient entry p_k · slope by at most (s t)² · 4 · 6e-8 in absolute terms. The
/// bounds below are those with a factor 4 of room.
fn f32_tolerance(config: &SvSoftmax) -> (Tolerance, Tolerance) {
    let scale = config.scale() * config.t();
    let unit = 6e-8 * 4.0 * 4.0;
    (
        Tolerance {
            abs: unit * 2.0 * scale,
            rel: 1e-5,
        },
        Tolerance {
            abs: unit * scale * scale,
            rel: 1e-4,
        },
    )
}

#[derive(Debug, Clone)]
struct Case {
    config: SvSoftmax,
    n_classes: usize,
    cosines: Vec<f64>,
    targets: Vec<Option<usize>>,
    upstream: Vec<f64>,
}

fn every_margin() -> Vec<Margin> {
    let mut margins = vec![
        Margin::None,
        Margin::additive(0.35),
        Margin::multiplicative(4),
        Margin::Multiplicative { m: 3, lambda: 2.0 },
    ];
    for beyond_pi in [BeyondPi::Clip, BeyondPi::Fallback, BeyondPi::Easy] {
        margins.push(Margin::Angular { m: 0.5, beyond_pi });
        margins.push(Margin::Combined {
            m1: 1.1,
            m2: 0.3,
            m3: 0.2,
            beyond_pi,
        });
    }
    margins
}

/// Widths where a 16-lane kernel's main loop and tail meet, and where the exact path's
/// 2048-column blocks do.
const WIDTHS: [usize; 17] = [
    2, 3, 7, 15, 16, 17, 31, 32, 33, 47, 64, 65, 100, 257, 2047, 2048, 2049,
];

/// The gap every cosine keeps from its row's target score, so that f32 rounding cannot
/// flip the mask: the target score moves by ~1e-6 in f32 at worst near ±1.
const MASK_GAP: f64 = 1e-3;

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::sample::select(every_margin()),
        proptest::sample::select(vec![Indicator::Adaptive, Indicator::Fixed]),
        proptest::sample::select(vec![Reduction::Mean, Reduction::Sum, Reduction::None]),
        1.0..=64.0f64,
        1.0..=1.5f64,
        1usize..=5,
        prop_oneof![proptest::sample::select(WIDTHS.to_vec()), 2usize..300],
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
                let cosine = prop_oneof![
                    8 => -1.0..=1.0f64,
                    1 => proptest::sample::select(vec![-1.0, 1.0]),
                ];
                (
                    Just(config),
                    Just(n_classes),
                    proptest::collection::vec(cosine, n_rows * n_classes),
                    proptest::collection::vec(
                        proptest::option::weighted(0.9, 0..n_classes),
                        n_rows,
                    ),
                    proptest::collection::vec(-2.0..2.0f64, n_rows),
                )
            },
        )
        .prop_map(|(config, n_classes, mut cosines, targets, upstream)| {
            keep_off_the_boundary(&config, n_classes, &mut cosines, &targets);
            Case {
                config,
                n_classes,
                cosines,
                targets,
                upstream,
            }
        })
}

/// Moves every non-target cosine within `MASK_GAP` of its row's target score away from it.
fn keep_off_the_boundary(
    config: &SvSoftmax,
    n_classes: usize,
    cosines: &mut [f64],
    targets: &[Option<usize>],
) {
    let pieces = svsoftmax_core::scalar::Pieces::<f64>::new(config).unwrap();
    for (row, target) in targets.iter().enumerate() {
        let Some(target) = *target else { continue };
        let values = &mut cosines[row * n_classes..][..n_classes];
        let score = pieces.target_logit(values[target]).score;
        for (k, value) in values.iter_mut().enumerate() {
            if k != target && (*value - score).abs() < MASK_GAP {
                let away = if score > 0.0 {
                    score - 2.0 * MASK_GAP
                } else {
                    score + 2.0 * MASK_GAP
                };
                *value = away.clamp(-1.0, 1.0);
            }
        }
    }
}

/// Inputs that are not cosines (the notebook feeds values up to 6), for the margins that
/// accept them: they take the kernel's exact path.
fn unbounded_case() -> impl Strategy<Value = Case> {
    (
        proptest::sample::select(vec![Margin::None, Margin::additive(0.35)]),
        proptest::sample::select(vec![Indicator::Adaptive, Indicator::Fixed]),
        proptest::sample::select(vec![Reduction::Mean, Reduction::Sum, Reduction::None]),
        1.0..=8.0f64,
        1.0..=1.5f64,
        1usize..=4,
        prop_oneof![proptest::sample::select(WIDTHS.to_vec()), 2usize..300],
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
                (
                    Just(config),
                    Just(n_classes),
                    proptest::collection::vec(-3.0..=6.0f64, n_rows * n_classes),
                    proptest::collection::vec(
                        proptest::option::weighted(0.9, 0..n_classes),
                        n_rows,
                    ),
                    proptest::collection::vec(-2.0..2.0f64, n_rows),
                )
            },
        )
        .prop_map(|(config, n_classes, mut cosines, targets, upstream)| {
            keep_off_the_boundary(&config, n_classes, &mut cosines, &targets);
            Case {
                config,
                n_classes,
                cosines,
                targets,
                upstream,
            }
        })
}

fn upstream(case: &Case) -> Upstream<'_> {
    match case.config.reduction() {
        Reduction::None => Upstream::Rows(&case.upstream),
        Reduction::Mean | Reduction::Sum => Upstream::Scalar(0.75),
    }
}

fn compare(
    engine: &dyn Engine,
    case: &Case,
    tolerances: (Tolerance, Tolerance),
) -> Result<(), TestCaseError> {
    let (loss_tol, mut grad_tol) = tolerances;
    let n_rows = case.targets.len();
    let cosines = CosineMatrix::new(&case.cosines, n_rows, case.n_classes).unwrap();
    let targets = Targets::with_ignored(case.targets.clone());

    // A gradient entry is (p_k - [k = y]) · slope_k · weight: an error of a few ulps of the
    // log-sum-exp in p_k (the reference's own rounding included) is multiplied by the slope,
    // which the angular margins make as steep as s / sin 2^-12 next to ±1. So the absolute
    // part also covers 16 ulps of the largest logit times the steepest slope.
    let rows = reference::breakdown(&case.config, cosines, &targets).unwrap();
    let largest = |pick: fn(&reference::RowBreakdown) -> &Vec<f64>| {
        rows.iter()
            .flatten()
            .flat_map(pick)
            .fold(0.0f64, |m, v| m.max(v.abs()))
    };
    let (max_logit, max_slope) = (largest(|row| &row.logits), largest(|row| &row.slopes));
    let unit = if engine.name().ends_with("f32") {
        2f64.powi(-24)
    } else {
        f64::EPSILON
    };
    let weight = 2.0; // the upstream gradients are at most 2 in magnitude
    grad_tol.abs = grad_tol
        .abs
        .max(16.0 * unit * (1.0 + max_logit) * max_slope * weight);
    let expected =
        reference::forward_backward(&case.config, cosines, &targets, upstream(case)).unwrap();
    let actual = engine
        .forward_backward(&case.config, cosines, &targets, upstream(case))
        .unwrap();
    let reproduce = "cargo test -p svsoftmax-ndarray --test differential";

    prop_assert!(
        loss_tol.close(actual.forward.loss, expected.forward.loss),
        "{}: loss {} vs reference {} ({reproduce})",
        engine.name(),
        actual.forward.loss,
        expected.forward.loss
    );
    for (row, (a, e)) in actual
        .forward
        .row_losses
        .iter()
        .zip(&expected.forward.row_losses)
        .enumerate()
    {
        prop_assert!(
            loss_tol.close(*a, *e),
            "{}: row {row} loss {a} vs {e}",
            engine.name()
        );
    }
    for (row, (a, e)) in actual
        .forward
        .diagnostics
        .iter()
        .zip(&expected.forward.diagnostics)
        .enumerate()
    {
        match (a, e) {
            (Some(a), Some(e)) => {
                prop_assert_eq!(a.support_vectors, e.support_vectors, "row {}", row);
                prop_assert!(
                    loss_tol.close(a.target_score, e.target_score),
                    "row {row} score"
                );
                prop_assert!(
                    grad_tol.close(a.target_prob, e.target_prob),
                    "row {row} p_y"
                );
            }
            (None, None) => {}
            _ => prop_assert!(false, "row {row}: ignored in one engine only"),
        }
    }
    for (i, (a, e)) in actual
        .grad_cosines
        .iter()
        .zip(&expected.grad_cosines)
        .enumerate()
    {
        let (row, col) = (i / case.n_classes, i % case.n_classes);
        prop_assert!(
            grad_tol.close(*a, *e),
            "{}: grad ({row}, {col}) {a} vs reference {e} ({reproduce})",
            engine.name()
        );
    }
    Ok(())
}

fn runner(cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(0xd1ff_0001),
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn f64_engine_matches_the_reference() {
    let engine = NdarrayEngine::<f64>::new();
    runner(300)
        .run(&case(), |case| {
            compare(&engine, &case, f64_tolerance(&case.config))
        })
        .unwrap();
}

#[test]
fn f64_engine_matches_the_reference_beyond_unit_cosines() {
    let engine = NdarrayEngine::<f64>::new();
    runner(150)
        .run(&unbounded_case(), |case| {
            compare(&engine, &case, f64_tolerance(&case.config))
        })
        .unwrap();
}

#[test]
fn f32_engine_matches_the_reference_beyond_unit_cosines() {
    // Logits reach 6 s t instead of s t: the f32 bounds grow by that factor.
    let engine = NdarrayEngine::<f32>::new();
    runner(150)
        .run(&unbounded_case(), |case| {
            let (loss, grad) = f32_tolerance(&case.config);
            let wider = |tolerance: Tolerance| Tolerance {
                abs: tolerance.abs * 6.0,
                rel: tolerance.rel * 6.0,
            };
            compare(&engine, &case, (wider(loss), wider(grad)))
        })
        .unwrap();
}

#[test]
fn rows_far_below_the_logit_bound_take_the_exact_path_correctly() {
    // A row of -1s has every logit far below the bound s (2t - 1): ~190 below at s = 64,
    // t = 1.5, past what f32's exponential represents, and ~1500 below at s = 512, past
    // f64's. The kernel must notice and fall back, or the row's sum would underflow to 0.
    let mut data = vec![-1.0; 3 * 40];
    data[40 + 7] = -0.999;
    data[80 + 39] = -0.98;
    let cosines = CosineMatrix::new(&data, 3, 40).unwrap();
    let targets = Targets::new(&[0, 3, 39]);
    let config = |scale| {
        SvSoftmax::builder()
            .scale(scale)
            .t(1.5)
            .margin(Margin::additive(0.35))
            .build()
            .unwrap()
    };
    let (narrow, wide) = (config(64.0), config(512.0));
    let cases: [(&dyn Engine, &SvSoftmax, (Tolerance, Tolerance)); 2] = [
        (
            &NdarrayEngine::<f32>::new(),
            &narrow,
            f32_tolerance(&narrow),
        ),
        (&NdarrayEngine::<f64>::new(), &wide, f64_tolerance(&wide)),
    ];
    for (engine, config, (loss_tol, grad_tol)) in cases {
        let expected =
            reference::forward_backward(config, cosines, &targets, Upstream::default()).unwrap();
        let actual = engine
            .forward_backward(config, cosines, &targets, Upstream::default())
            .unwrap();
        for (a, e) in actual
            .forward
            .row_losses
            .iter()
            .zip(&expected.forward.row_losses)
        {
            assert!(loss_tol.close(*a, *e), "{}: loss {a} vs {e}", engine.name());
        }
        for (a, e) in actual.grad_cosines.iter().zip(&expected.grad_cosines) {
            assert!(grad_tol.close(*a, *e), "{}: grad {a} vs {e}", engine.name());
        }
    }
}

#[test]
fn f32_engine_matches_the_reference() {
    let engine = NdarrayEngine::<f32>::new();
    runner(300)
        .run(&case(), |case| {
            compare(&engine, &case, f32_tolerance(&case.config))
        })
        .unwrap();
}

fn sample(n_rows: usize, n_classes: usize) -> (Array2<f64>, Targets) {
    let cosines = Array2::from_shape_fn((n_rows, n_classes), |(i, k)| {
        ((i * 31 + k * 17) % 97) as f64 / 48.5 - 1.0
    });
    let targets = Targets::new(&(0..n_rows).map(|i| (i * 7) % n_classes).collect::<Vec<_>>());
    (cosines, targets)
}

fn reference_of(
    config: &SvSoftmax,
    cosines: ArrayView2<'_, f64>,
    targets: &Targets,
) -> (f64, Vec<f64>) {
    let owned = cosines.as_standard_layout().to_owned();
    let matrix =
        CosineMatrix::new(owned.as_slice().unwrap(), owned.nrows(), owned.ncols()).unwrap();
    let evaluation =
        reference::forward_backward(config, matrix, targets, Upstream::default()).unwrap();
    (evaluation.forward.loss, evaluation.grad_cosines)
}

#[test]
fn strided_and_transposed_views() {
    let config = SvSoftmax::sv_am(30.0, 0.3, 1.3).unwrap();
    let (cosines, targets) = sample(9, 40);
    let (expected_loss, expected_grad) = reference_of(&config, cosines.view(), &targets);
    let tolerance = Tolerance {
        abs: 1e-12,
        rel: 1e-12,
    };

    // The same values behind three layouts: contiguous, transposed storage (column-major),
    // and every other column of a wider array.
    let column_major = {
        let mut array = Array2::zeros((9, 40).f());
        array.assign(&cosines);
        array
    };
    let mut wide = Array2::zeros((9, 80));
    wide.slice_mut(s![.., ..;2]).assign(&cosines);
    let views = [
        cosines.view(),
        column_major.view(),
        wide.slice(s![.., ..;2]),
    ];

    for (i, view) in views.into_iter().enumerate() {
        // A strided gradient buffer too: every other column of a wider array.
        let mut grad_store = Array2::<f64>::zeros((9, 80));
        let mut out = svsoftmax_core::Forward {
            loss: 0.0,
            row_losses: vec![],
            diagnostics: vec![],
        };
        svsoftmax_ndarray::forward_backward_into(
            &config,
            view,
            &targets,
            Upstream::default(),
            grad_store.slice_mut(s![.., 1..;2]),
            &mut out,
        )
        .unwrap();
        assert!(tolerance.close(out.loss, expected_loss), "layout {i}: loss");
        let grad: Vec<f64> = grad_store.slice(s![.., 1..;2]).iter().copied().collect();
        for (k, (a, e)) in grad.iter().zip(&expected_grad).enumerate() {
            assert!(tolerance.close(*a, *e), "layout {i}, entry {k}: {a} vs {e}");
        }
        assert!(
            grad_store.slice(s![.., ..;2]).iter().all(|&g| g == 0.0),
            "wrote outside the view"
        );
    }
}

#[test]
fn large_batches_split_across_threads_agree_with_one_thread() {
    // Above the parallel threshold the rows are split in halves; every row's result must be
    // the one the sequential loop gives, to the bit.
    let config = SvSoftmax::sv_am(64.0, 0.35, 1.2).unwrap();
    let (cosines, targets) = sample(300, 700);
    let cosines = cosines.mapv(|c| c as f32);
    let (forward, grad) =
        svsoftmax_ndarray::forward_backward(&config, cosines.view(), &targets, Upstream::default())
            .unwrap();
    for row in [0, 1, 149, 150, 299] {
        let single = cosines.slice(s![row..row + 1, ..]);
        let single_targets = Targets::new(&[targets.get(row).unwrap()]);
        let sum_config = config.with_reduction(Reduction::Sum);
        let (one, one_grad) = svsoftmax_ndarray::forward_backward(
            &sum_config,
            single,
            &single_targets,
            Upstream::Scalar(1.0 / 300.0),
        )
        .unwrap();
        assert_eq!(forward.row_losses[row], one.row_losses[0], "row {row}");
        assert_eq!(grad.row(row), one_grad.row(0), "row {row}");
    }
}

#[test]
fn ties_give_the_same_mask_in_every_dtype() {
    // 0.75 - 0.25 = 0.5 exactly in f32 and f64, so column 1 ties with the target score.
    let config = SvSoftmax::builder()
        .scale(32.0)
        .margin(Margin::additive(0.25))
        .build()
        .unwrap();
    let data = [0.75, 0.5, -0.25, 0.5, 0.75, 0.5000001];
    let cosines = CosineMatrix::new(&data, 2, 3).unwrap();
    let targets = Targets::new(&[0, 1]);
    let expected = reference::forward(&config, cosines, &targets).unwrap();
    let engines: [&dyn Engine; 2] = [&NdarrayEngine::<f32>::new(), &NdarrayEngine::<f64>::new()];
    for engine in engines {
        let actual = engine.forward(&config, cosines, &targets).unwrap();
        for (a, e) in actual.diagnostics.iter().zip(&expected.diagnostics) {
            assert_eq!(
                a.unwrap().support_vectors,
                e.unwrap().support_vectors,
                "{}",
                engine.name()
            );
        }
    }
}

#[test]
fn stable_at_s64_t15_with_cosines_of_exactly_one() {
    let config = SvSoftmax::builder()
        .scale(64.0)
        .t(1.5)
        .margin(Margin::additive(0.35))
        .build()
        .unwrap();
    let data: Vec<f64> = (0..4 * 33)
        .map(|i| if i % 3 == 0 { 1.0 } else { -1.0 })
        .collect();
    let cosines = CosineMatrix::new(&data, 4, 33).unwrap();
    let targets = Targets::new(&[0, 1, 2, 3]);
    let expected =
        reference::forward_backward(&config, cosines, &targets, Upstream::default()).unwrap();
    let actual = NdarrayEngine::<f32>::new()
        .forward_backward(&config, cosines, &targets, Upstream::default())
        .unwrap();
    let (loss_tol, grad_tol) = f32_tolerance(&config);
    assert!(actual.forward.loss.is_finite());
    assert!(loss_tol.close(actual.forward.loss, expected.forward.loss));
    for (a, e) in actual.grad_cosines.iter().zip(&expected.grad_cosines) {
        assert!(a.is_finite() && grad_tol.close(*a, *e), "{a} vs {e}");
    }
}

#[test]
fn errors_match_the_reference() {
    let default = SvSoftmax::default();
    let angular = SvSoftmax::builder()
        .margin(Margin::angular(0.5))
        .build()
        .unwrap();
    // (configuration, cosines, rows, targets)
    type ErrorCase<'a> = (&'a SvSoftmax, Vec<f64>, usize, Vec<Option<usize>>);
    let cases: Vec<ErrorCase> = vec![
        (
            &default,
            vec![0.1, f64::NAN, 0.3, 0.4],
            2,
            vec![Some(0), Some(1)],
        ),
        (
            &default,
            vec![0.1, 0.2, 0.3, f64::INFINITY],
            2,
            vec![Some(0), Some(1)],
        ),
        (
            &angular,
            vec![0.1, 0.2, 1.5, 0.4],
            2,
            vec![Some(0), Some(1)],
        ),
        (
            &angular,
            vec![0.1, 0.2, 0.3, -1.25],
            2,
            vec![Some(0), Some(0)],
        ),
        (
            &default,
            vec![0.1, 0.2, 0.3, 0.4],
            2,
            vec![Some(0), Some(2)],
        ),
        (&default, vec![0.1, 0.2, 0.3, 0.4], 2, vec![Some(0)]),
        (&default, vec![0.1, 0.2, 0.3, 0.4], 4, vec![Some(0)]),
    ];
    let engines: [&dyn Engine; 2] = [&NdarrayEngine::<f32>::new(), &NdarrayEngine::<f64>::new()];
    for (config, data, n_rows, targets) in &cases {
        let cosines = CosineMatrix::new(data, *n_rows, data.len() / n_rows).unwrap();
        let targets = Targets::with_ignored(targets.clone());
        let expected = reference::forward(config, cosines, &targets)
            .unwrap_err()
            .to_string();
        for engine in engines {
            let actual = engine
                .forward(config, cosines, &targets)
                .unwrap_err()
                .to_string();
            let expected = expected.replace("in f64", &format!("in {}", &engine.name()[8..]));
            assert_eq!(actual, expected, "{}", engine.name());
        }
    }

    // A gradient buffer of the wrong shape.
    let cosines = ndarray::array![[0.1f32, 0.2], [0.3, 0.4]];
    let mut grad = Array2::<f32>::zeros((2, 3));
    let mut out = svsoftmax_core::Forward {
        loss: 0.0,
        row_losses: vec![],
        diagnostics: vec![],
    };
    let error = svsoftmax_ndarray::forward_backward_into(
        &default,
        cosines.view(),
        &Targets::new(&[0, 1]),
        Upstream::default(),
        grad.view_mut(),
        &mut out,
    )
    .unwrap_err();
    assert_eq!(
        error,
        svsoftmax_core::Error::GradShape {
            expected: [2, 2],
            got: [2, 3]
        }
    );
}

#[test]
fn ignored_rows_are_not_read_and_get_zero_gradient() {
    let config = SvSoftmax::sv_am(16.0, 0.2, 1.2).unwrap();
    let cosines = ndarray::array![[0.3f32, 0.6, 0.1], [f32::NAN, 9.0, 0.0], [0.2, -0.4, 0.5]];
    let targets = Targets::with_ignored(vec![Some(0), None, Some(2)]);
    let (forward, grad) =
        svsoftmax_ndarray::forward_backward(&config, cosines.view(), &targets, Upstream::default())
            .unwrap();
    assert!(grad.row(1).iter().all(|&g| g == 0.0));
    assert_eq!(forward.row_losses[1], 0.0);
    assert!(forward.loss.is_finite());
}

/// One row of f64 data through an engine and the reference, compared at `tolerances`.
fn check_row(
    engine: &dyn Engine,
    config: &SvSoftmax,
    row: &[f64],
    target: usize,
    tolerances: (Tolerance, Tolerance),
) {
    let case = Case {
        config: *config,
        n_classes: row.len(),
        cosines: row.to_vec(),
        targets: vec![Some(target)],
        upstream: vec![1.0],
    };
    let mut runner = TestRunner::default();
    runner
        .run(&Just(case), |case| compare(engine, &case, tolerances))
        .unwrap();
}

#[test]
fn targets_whose_term_is_subnormal_below_the_bound() {
    // With s = 64 the bound is s (2t - 1) = 89.6 and a target scored below ~0 puts
    // exp(z_y - B) among f32's subnormals: the loss must not be read from it. (Found by a
    // reviewer: the first version was off by ln 2 here.)
    let f32_engine = NdarrayEngine::<f32>::new();
    let am64 = SvSoftmax::sv_am(64.0, 0.35, 1.2).unwrap();
    for row in [
        &[0.13, 0.5][..],
        &[0.12578966, 0.17117165, -0.66638273, -0.047189973],
    ] {
        check_row(&f32_engine, &am64, row, 0, f32_tolerance(&am64));
    }
    let am400 = SvSoftmax::sv_am(400.0, 0.35, 1.2).unwrap();
    check_row(
        &NdarrayEngine::<f64>::new(),
        &am400,
        &[-0.112, 0.9, -0.3, 0.1],
        0,
        f64_tolerance(&am400),
    );
}

#[test]
fn a_target_past_one_takes_the_exact_path() {
    // Margin none accepts any finite value; a target of 3 lies above the bound for [-1, 1].
    let config = SvSoftmax::builder().scale(64.0).t(1.0).build().unwrap();
    let wider = |(loss, grad): (Tolerance, Tolerance)| {
        let widen = |tolerance: Tolerance| Tolerance {
            abs: tolerance.abs * 3.0,
            rel: tolerance.rel * 3.0,
        };
        (widen(loss), widen(grad))
    };
    check_row(
        &NdarrayEngine::<f32>::new(),
        &config,
        &[3.0, 0.0, 0.1],
        0,
        wider(f32_tolerance(&config)),
    );
    check_row(
        &NdarrayEngine::<f64>::new(),
        &config,
        &[20.0, 0.0, 0.1],
        0,
        f64_tolerance(&config),
    );
}

#[test]
fn large_upstream_gradients_overflow_only_when_the_gradient_does() {
    // s = 32, sum, [-1, -1]: the gradient is ±16 times the upstream, so 1e12 gives 1.6e13,
    // finite in f32; 1e37 gives 1.6e38 and 1e38 overflows f32.
    let config = SvSoftmax::builder()
        .scale(32.0)
        .t(1.0)
        .reduction(Reduction::Sum)
        .build()
        .unwrap();
    let cosines = ndarray::array![[-1.0f32, -1.0]];
    let targets = Targets::new(&[0]);
    for upstream in [1e12, 1e37] {
        let (_, grad) = svsoftmax_ndarray::forward_backward(
            &config,
            cosines.view(),
            &targets,
            Upstream::Scalar(upstream),
        )
        .unwrap();
        let expected = 16.0 * upstream;
        assert!(
            (f64::from(grad[[0, 1]]) - expected).abs() <= 1e-5 * expected,
            "{upstream}: {grad}"
        );
    }
    let error = svsoftmax_ndarray::forward_backward(
        &config,
        cosines.view(),
        &targets,
        Upstream::Scalar(1e38),
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("overflow at row 0: expected a finite gradient in f32"),
        "{error}"
    );

    // The reference succeeds here, and so must the engine: p_k is tiny, the product finite.
    let sharp = SvSoftmax::builder()
        .scale(64.0)
        .t(1.0)
        .reduction(Reduction::Sum)
        .build()
        .unwrap();
    let data = [1.0, -1.0, -1.0];
    let matrix = CosineMatrix::new(&data, 1, 3).unwrap();
    let expected = reference::backward(&sharp, matrix, &targets, Upstream::Scalar(1e307)).unwrap();
    let actual = NdarrayEngine::<f64>::new()
        .forward_backward(&sharp, matrix, &targets, Upstream::Scalar(1e307))
        .unwrap();
    for (a, e) in actual.grad_cosines.iter().zip(&expected) {
        assert!((a - e).abs() <= 1e-12 * e.abs(), "{a} vs {e}");
    }
}

#[test]
fn input_errors_come_before_overflow_errors() {
    // Row 0 overflows its gradient, row 1 holds a NaN: the reference names the NaN.
    let config = SvSoftmax::builder()
        .scale(64.0)
        .reduction(Reduction::None)
        .build()
        .unwrap();
    let data = [0.0, 0.5, f64::NAN, 0.1];
    let matrix = CosineMatrix::new(&data, 2, 2).unwrap();
    let targets = Targets::new(&[0, 0]);
    let upstream = [1e307, 1.0];
    let expected =
        reference::backward(&config, matrix, &targets, Upstream::Rows(&upstream)).unwrap_err();
    let actual = NdarrayEngine::<f64>::new()
        .forward_backward(&config, matrix, &targets, Upstream::Rows(&upstream))
        .unwrap_err();
    // NaN != NaN, so the errors compare by their messages.
    assert_eq!(actual.to_string(), expected.to_string());
}

#[test]
fn margin_parameters_must_fit_the_float_type() {
    let config = SvSoftmax::builder()
        .margin(Margin::Multiplicative {
            m: 4,
            lambda: 1e300,
        })
        .build()
        .unwrap();
    let cosines = ndarray::array![[0.5f32, 0.1]];
    let error =
        svsoftmax_ndarray::forward(&config, cosines.view(), &Targets::new(&[0])).unwrap_err();
    assert!(
        error.to_string().starts_with("invalid margin lambda"),
        "{error}"
    );
}
