//! Bad input gets the core's typed errors, with the reference's messages, from both
//! implementations in both float types, and never a dfdx panic.

use dfdx::prelude::*;
use svsoftmax_core::{reference::Reference, CosineMatrix, Engine, Margin, Reduction, SvSoftmax};
use svsoftmax_core::{Error, Targets, Upstream};
use svsoftmax_dfdx::{cpu_engines, DfdxEngine, Implementation, SvSoftmaxLoss};
use svsoftmax_ndarray::NdarrayEngine;

struct Bad {
    name: &'static str,
    config: SvSoftmax,
    cosines: Vec<f64>,
    n_rows: usize,
    targets: Targets,
    upstream: Upstream<'static>,
}

fn bad_inputs() -> Vec<Bad> {
    let sv_am = SvSoftmax::sv_am(32.0, 0.35, 1.2).unwrap();
    let arc = SvSoftmax::builder()
        .margin(Margin::angular(0.5))
        .build()
        .unwrap();
    let none = sv_am.with_reduction(Reduction::None);
    let base = vec![0.5, 0.1, -0.2, 0.6, 0.3, -0.9];
    let with = |i: usize, value: f64| {
        let mut cosines = base.clone();
        cosines[i] = value;
        cosines
    };
    let bad = |name, config, cosines, targets: &[usize]| Bad {
        name,
        config,
        cosines,
        n_rows: 2,
        targets: Targets::new(targets),
        upstream: Upstream::default(),
    };
    vec![
        bad("targets length", sv_am, base.clone(), &[0, 1, 2]),
        bad("target out of range", sv_am, base.clone(), &[0, 3]),
        bad("NaN cosine", sv_am, with(4, f64::NAN), &[0, 1]),
        bad(
            "infinite cosine",
            sv_am,
            with(1, f64::NEG_INFINITY),
            &[0, 1],
        ),
        bad("cosine past 1 for arccos", arc, with(5, -1.5), &[0, 1]),
        bad(
            "two bad cosines: the first wins",
            arc,
            with(2, 7.0)
                .iter()
                .enumerate()
                .map(|(i, &v)| if i == 4 { f64::NAN } else { v })
                .collect(),
            &[0, 1],
        ),
        bad("logit overflow", sv_am, with(3, 1e307), &[0, 1]),
        Bad {
            upstream: Upstream::Rows(&[1.0]),
            ..bad("upstream length", none, base.clone(), &[0, 1])
        },
        Bad {
            upstream: Upstream::Scalar(f64::NAN),
            ..bad("upstream NaN", sv_am, base.clone(), &[0, 1])
        },
        Bad {
            upstream: Upstream::Rows(&[1.0, 2.0]),
            ..bad("upstream rows for a mean", sv_am, base.clone(), &[0, 1])
        },
    ]
}

/// The f64 engines give the reference's messages; the f32 ones those of the ndarray f32
/// engine, whose messages name f32 and whose range ends at f32's.
#[test]
fn errors_match_the_reference() {
    for bad in bad_inputs() {
        let n_classes = bad.cosines.len() / bad.n_rows;
        let matrix = CosineMatrix::new(&bad.cosines, bad.n_rows, n_classes).unwrap();
        let message = |engine: &dyn Engine| {
            engine
                .forward_backward(&bad.config, matrix, &bad.targets, bad.upstream)
                .expect_err(bad.name)
                .to_string()
        };
        let f64_message = message(&Reference);
        let f32_message = message(&NdarrayEngine::<f32>::new());
        for engine in cpu_engines() {
            let got = message(engine.as_ref());
            let want = if engine.name().ends_with("f32") {
                &f32_message
            } else {
                &f64_message
            };
            assert_eq!(&got, want, "{}: {}", bad.name, engine.name());
        }
    }
}

#[test]
fn f32_specific_errors() {
    let cosines = [0.5, 1e300, -0.2, 0.6];
    let matrix = CosineMatrix::new(&cosines, 2, 2).unwrap();
    let config = SvSoftmax::builder().margin(Margin::None).build().unwrap();
    let huge_scale = SvSoftmax::builder().scale(1e39).build().unwrap();
    let ok = CosineMatrix::new(&[0.5, 0.1], 1, 2).unwrap();
    for implementation in [Implementation::Composed, Implementation::Fused] {
        let engine = DfdxEngine::<f32>::new(implementation);
        let error = engine
            .forward(&config, matrix, &Targets::new(&[0, 1]))
            .unwrap_err();
        assert!(
            matches!(error, Error::Unrepresentable { row: 0, col: 1, .. }),
            "{error}"
        );
        let error = engine
            .forward(&huge_scale, ok, &Targets::new(&[0]))
            .unwrap_err();
        assert!(
            matches!(error, Error::Hyperparameter { name: "scale", .. }),
            "{error}"
        );
    }
}

#[test]
fn tensor_api_rejects_a_targets_rows_mismatch_without_panicking() {
    let dev: Cpu = Default::default();
    let cosines: Tensor<Rank2<2, 3>, f32, _> = dev.tensor([[0.5, 0.1, -0.2], [0.6, 0.3, -0.9]]);
    for implementation in [Implementation::Composed, Implementation::Fused] {
        let loss = SvSoftmaxLoss::new(SvSoftmax::sv_am(32.0, 0.35, 1.2).unwrap())
            .with_implementation(implementation);
        let error = loss
            .loss(cosines.leaky_trace(), &Targets::new(&[0]))
            .unwrap_err();
        assert_eq!(
            error,
            Error::TargetsLength {
                n_rows: 2,
                n_targets: 1
            }
        );
        let error = loss
            .row_losses(cosines.clone(), &Targets::new(&[0, 3]))
            .unwrap_err();
        assert!(
            matches!(error, Error::TargetOutOfRange { row: 1, .. }),
            "{error}"
        );
    }
}

#[test]
fn ignored_rows_are_never_read() {
    let dev: Cpu = Default::default();
    let cosines: Tensor<Rank2<2, 3>, f64, _> =
        dev.tensor([[0.5, 0.1, -0.2], [f64::NAN, f64::INFINITY, 7.0]]);
    let targets = Targets::with_ignored(vec![Some(0), None]);
    let config = SvSoftmax::builder()
        .margin(Margin::angular(0.5))
        .build()
        .unwrap();
    let expected = svsoftmax_core::reference::forward(
        &config,
        CosineMatrix::new(&[0.5, 0.1, -0.2], 1, 3).unwrap(),
        &Targets::new(&[0]),
    )
    .unwrap()
    .loss;
    for implementation in [Implementation::Composed, Implementation::Fused] {
        let loss = SvSoftmaxLoss::new(config).with_implementation(implementation);
        let value = loss.loss(cosines.leaky_trace(), &targets).unwrap();
        // One f64 row through the same formulas: a few ulps of a loss below 100.
        assert!(
            (value.array() - expected).abs() <= 1e-12 * (1.0 + expected),
            "{implementation:?}"
        );
        let grad = value.backward().get(&cosines).as_vec();
        assert_eq!(&grad[3..], &[0.0; 3], "{implementation:?}");
        assert!(
            grad[..3].iter().all(|g| g.is_finite() && *g != 0.0),
            "{implementation:?}"
        );
    }
}

#[test]
fn a_target_slope_past_f32_is_a_hyperparameter_error() {
    // s = 1e36 and s t are finite in f32, but the angular margin's slope, capped near
    // 1 / sin 2^-12 ≈ 4097 next to ±1, times s is not: rejected before any gradient is NaN.
    let dev: Cpu = Default::default();
    let config = SvSoftmax::builder()
        .scale(1e36)
        .t(1.0)
        .margin(Margin::angular(0.5))
        .build()
        .unwrap();
    let cosines = dev.tensor_from_vec(vec![1.0f32, 0.2, -0.3, 0.1, 0.999, -0.5], (2, 3));
    for implementation in [Implementation::Composed, Implementation::Fused] {
        let loss = SvSoftmaxLoss::new(config).with_implementation(implementation);
        let error = loss
            .loss(cosines.leaky_trace(), &Targets::new(&[0, 1]))
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::Hyperparameter {
                    name: "scale * steepest target slope",
                    ..
                }
            ),
            "{implementation:?}: {error}"
        );
    }
}
