//! The engine against the core's f64 reference, for every margin kind, both indicators,
//! every reduction, ignored rows, both dtypes, and the shapes and layouts where a
//! vectorized kernel goes wrong: K = 2, odd K, K around the lane width (16) and its
//! multiples, B = 1, transposed and strided views.

use ndarray::{s, Array2, ArrayView2, ShapeBuilder};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use svsoftmax_core::{
    reference, AngularGradient, CosineMatrix, Engine, Indicator, Margin, Reduction, SvSoftmax,
    Targets, Upstream,
};
use svsoftmax_ndarray::NdarrayEngine;
use svsoftmax_testkit::{cases, Case, Cosines, Errors};

/// Compares the engine with the reference through the workspace's test kit, which derives
/// the tolerance from the engine's float type and the case (see `svsoftmax_testkit::compare`).
fn compare(engine: &dyn Engine, case: &Case) -> Result<(), TestCaseError> {
    let mut errors = Errors::default();
    svsoftmax_testkit::compare(engine, case, &mut errors).map_err(|why| {
        TestCaseError::fail(format!(
            "{why}\n{case:?}\nreproduce: cargo test -p svsoftmax-ndarray --test differential"
        ))
    })
}

/// A seeded runner: `PROPTEST_CASES` changes the number of cases and `SVSOFTMAX_SEED` the
/// seed, to explore beyond the fixed default that CI runs.
fn runner(cases: u32) -> TestRunner {
    let number = |name: &str| std::env::var(name).ok().and_then(|n| n.parse().ok());
    TestRunner::new(Config {
        cases: number("PROPTEST_CASES").map_or(cases, |n: u64| n as u32),
        rng_seed: RngSeed::Fixed(number("SVSOFTMAX_SEED").unwrap_or(0xd1ff_0001)),
        failure_persistence: None,
        ..Config::default()
    })
}

fn every_margin() -> Vec<Margin> {
    svsoftmax_testkit::margins()
        .into_iter()
        .map(|(_, margin)| margin)
        .collect()
}

fn both_indicators() -> Vec<Indicator> {
    vec![Indicator::Adaptive, Indicator::Fixed]
}

fn both_gradients() -> Vec<AngularGradient> {
    vec![AngularGradient::Exact, AngularGradient::StraightThrough]
}

/// Runs `case` through `engine` as a one-case property.
fn check_case(engine: &dyn Engine, case: Case) {
    TestRunner::default()
        .run(&Just(case), |case| compare(engine, &case))
        .unwrap();
}

fn row_case(config: &SvSoftmax, rows: &[&[f64]], targets: &[usize]) -> Case {
    Case {
        config: *config,
        n_classes: rows[0].len(),
        cosines: rows.concat(),
        targets: targets.iter().copied().map(Some).collect(),
        upstream: vec![1.0; rows.len()],
    }
}

#[test]
fn f64_engine_matches_the_reference() {
    let engine = NdarrayEngine::<f64>::new();
    let strategy = cases(
        every_margin(),
        both_indicators(),
        both_gradients(),
        64.0,
        Cosines::Unit,
    );
    runner(300)
        .run(&strategy, |case| compare(&engine, &case))
        .unwrap();
}

#[test]
fn f32_engine_matches_the_reference() {
    let engine = NdarrayEngine::<f32>::new();
    let strategy = cases(
        every_margin(),
        both_indicators(),
        both_gradients(),
        64.0,
        Cosines::Unit,
    );
    runner(300)
        .run(&strategy, |case| compare(&engine, &case))
        .unwrap();
}

#[test]
fn both_engines_match_the_reference_beyond_unit_cosines() {
    // Inputs that are not cosines, for the margins that accept them: the exact path.
    let margins = vec![Margin::None, Margin::additive(0.35)];
    let strategy = cases(
        margins,
        both_indicators(),
        both_gradients(),
        8.0,
        Cosines::Wide,
    );
    let engines: [&dyn Engine; 2] = [&NdarrayEngine::<f32>::new(), &NdarrayEngine::<f64>::new()];
    for engine in engines {
        runner(150)
            .run(&strategy, |case| compare(engine, &case))
            .unwrap();
    }
}

#[test]
fn rows_far_below_the_logit_bound_take_the_exact_path_correctly() {
    // A row of -1s has every logit far below the bound s (2t - 1): ~190 below at s = 64,
    // t = 1.5, past what f32's exponential represents, and ~1500 below at s = 512, past
    // f64's. The kernel must notice and fall back, or the row's sum would underflow to 0.
    let mut data = vec![-1.0; 3 * 40];
    data[40 + 7] = -0.999;
    data[80 + 39] = -0.98;
    let rows: Vec<&[f64]> = data.chunks(40).collect();
    let config = |scale| {
        SvSoftmax::builder()
            .scale(scale)
            .t(1.5)
            .margin(Margin::additive(0.35))
            .build()
            .unwrap()
    };
    check_case(
        &NdarrayEngine::<f32>::new(),
        row_case(&config(64.0), &rows, &[0, 3, 39]),
    );
    check_case(
        &NdarrayEngine::<f64>::new(),
        row_case(&config(512.0), &rows, &[0, 3, 39]),
    );
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
    // f64 against the f64 reference on values below ~40: 1e-12 relative and absolute.
    let close = |a: f64, e: f64| (a - e).abs() <= 1e-12 * (1.0 + e.abs());

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
        assert!(close(out.loss, expected_loss), "layout {i}: loss");
        let grad: Vec<f64> = grad_store.slice(s![.., 1..;2]).iter().copied().collect();
        for (k, (a, e)) in grad.iter().zip(&expected_grad).enumerate() {
            assert!(close(*a, *e), "layout {i}, entry {k}: {a} vs {e}");
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
    let rows: Vec<&[f64]> = data.chunks(33).collect();
    check_case(
        &NdarrayEngine::<f32>::new(),
        row_case(&config, &rows, &[0, 1, 2, 3]),
    );
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

#[test]
fn targets_whose_term_is_subnormal_below_the_bound() {
    // With s = 64 the bound is s (2t - 1) = 89.6 and a target scored below ~0 puts
    // exp(z_y - B) among f32's subnormals: the loss must not be read from it. (Found by a
    // reviewer: the first version was off by ln 2 here.)
    let am64 = SvSoftmax::sv_am(64.0, 0.35, 1.2).unwrap();
    for row in [
        &[0.13, 0.5][..],
        &[0.12578966, 0.17117165, -0.66638273, -0.047189973],
    ] {
        check_case(&NdarrayEngine::<f32>::new(), row_case(&am64, &[row], &[0]));
    }
    let am400 = SvSoftmax::sv_am(400.0, 0.35, 1.2).unwrap();
    let row: &[f64] = &[-0.112, 0.9, -0.3, 0.1];
    check_case(&NdarrayEngine::<f64>::new(), row_case(&am400, &[row], &[0]));
}

#[test]
fn a_target_past_one_takes_the_exact_path() {
    // Margin none accepts any finite value; a target of 3 lies above the bound for [-1, 1].
    let config = SvSoftmax::builder().scale(64.0).t(1.0).build().unwrap();
    let (narrow, wide): (&[f64], &[f64]) = (&[3.0, 0.0, 0.1], &[20.0, 0.0, 0.1]);
    check_case(
        &NdarrayEngine::<f32>::new(),
        row_case(&config, &[narrow], &[0]),
    );
    check_case(
        &NdarrayEngine::<f64>::new(),
        row_case(&config, &[wide], &[0]),
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

#[test]
fn finite_inputs_beyond_f32_are_named_as_such() {
    // 1e300 is a fine input for the additive margin in f64, but f32 cannot hold it.
    let config = SvSoftmax::sv_am(32.0, 0.35, 1.2).unwrap();
    let data = [1e300, 0.2];
    let matrix = CosineMatrix::new(&data, 1, 2).unwrap();
    let error = NdarrayEngine::<f32>::new()
        .forward(&config, matrix, &Targets::new(&[1]))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "cosine at row 0, column 0 does not fit f32: expected a magnitude the type can hold, \
         got 1e300"
    );
}
