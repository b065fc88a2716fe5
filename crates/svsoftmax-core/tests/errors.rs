//! Every way an input is rejected, reached through the public API, with the message a user
//! reads snapshotted so that a reviewer sees any change of wording.

use svsoftmax_core::scalar::Pieces;
use svsoftmax_core::{
    reference, BeyondPi, CosineMatrix, Error, Margin, Reduction, SvSoftmax, Targets, Upstream,
};

fn build(builder: svsoftmax_core::SvSoftmaxBuilder) -> Error {
    builder.build().expect_err("the configuration is invalid")
}

fn margin(margin: Margin) -> Error {
    build(SvSoftmax::builder().margin(margin))
}

fn forward(config: &SvSoftmax, data: &[f64], n_rows: usize, targets: &Targets) -> Error {
    let cosines = CosineMatrix::new(data, n_rows, data.len() / n_rows.max(1)).unwrap();
    reference::forward(config, cosines, targets).expect_err("the input is invalid")
}

fn backward(config: &SvSoftmax, upstream: Upstream<'_>) -> Error {
    let cosines = CosineMatrix::new(&[0.1, 0.2, 0.3, 0.4], 2, 2).unwrap();
    reference::backward(config, cosines, &Targets::new(&[0, 1]), upstream)
        .expect_err("the upstream gradient is invalid")
}

fn cases() -> Vec<(&'static str, Error)> {
    let default = SvSoftmax::default();
    let angular = SvSoftmax::builder()
        .margin(Margin::angular(0.5))
        .build()
        .unwrap();
    let none = default.with_reduction(Reduction::None);
    // z_y = 1e308 (-0.4 - 1.3) and z_1 = 0.44e308 are finite; their difference is not.
    let huge_margin = SvSoftmax::builder()
        .scale(1e308)
        .t(1.0)
        .margin(Margin::additive(1.3))
        .build()
        .unwrap();
    let additive_zero = SvSoftmax::builder()
        .scale(64.0)
        .margin(Margin::additive(0.0))
        .build()
        .unwrap();
    let huge_sum = SvSoftmax::builder()
        .scale(1e307)
        .t(1.0)
        .reduction(Reduction::Sum)
        .build()
        .unwrap();
    let huge_f32 = SvSoftmax::builder().scale(1e39).build().unwrap();
    vec![
        ("scale zero", build(SvSoftmax::builder().scale(0.0))),
        ("scale NaN", build(SvSoftmax::builder().scale(f64::NAN))),
        ("t below one", build(SvSoftmax::builder().t(0.9))),
        ("t infinite", build(SvSoftmax::builder().t(f64::INFINITY))),
        ("additive m negative", margin(Margin::additive(-0.1))),
        ("angular m past pi", margin(Margin::angular(4.0))),
        ("multiplicative m zero", margin(Margin::multiplicative(0))),
        (
            "multiplicative lambda",
            margin(Margin::Multiplicative { m: 4, lambda: -1.0 }),
        ),
        ("combined m1", margin(Margin::combined(0.0, 0.3, 0.2))),
        (
            "combined m2",
            margin(Margin::Combined {
                m1: 1.0,
                m2: -0.5,
                m3: 0.0,
                beyond_pi: BeyondPi::Clip,
            }),
        ),
        (
            "combined m3",
            margin(Margin::combined(1.0, 0.3, f64::INFINITY)),
        ),
        (
            "buffer length",
            CosineMatrix::new(&[0.1, 0.2, 0.3], 2, 2).unwrap_err(),
        ),
        (
            "one class",
            forward(&default, &[0.1, 0.2], 2, &Targets::new(&[0, 0])),
        ),
        (
            "targets length",
            forward(&default, &[0.1, 0.2, 0.3, 0.4], 2, &Targets::new(&[0])),
        ),
        (
            "target out of range",
            forward(&default, &[0.1, 0.2, 0.3, 0.4], 2, &Targets::new(&[0, 2])),
        ),
        (
            "negative target",
            Targets::from_signed(&[1, -3], -100).unwrap_err(),
        ),
        (
            "one-hot two ones",
            Targets::from_one_hot(&[0.0, 1.0, 1.0, 1.0], 2).unwrap_err(),
        ),
        (
            "one-hot no one",
            Targets::from_one_hot(&[1.0, 0.0, 0.0, 0.0], 2).unwrap_err(),
        ),
        (
            "one-hot stray value",
            Targets::from_one_hot(&[0.5, 1.0], 2).unwrap_err(),
        ),
        (
            "one-hot ragged",
            Targets::from_one_hot(&[0.0, 1.0, 0.0], 2).unwrap_err(),
        ),
        (
            "one-hot one class",
            Targets::from_one_hot(&[1.0], 1).unwrap_err(),
        ),
        (
            "cosine NaN",
            forward(
                &default,
                &[0.1, f64::NAN, 0.3, 0.4],
                2,
                &Targets::new(&[0, 1]),
            ),
        ),
        (
            "cosine 1.5 with an arccos",
            forward(&angular, &[0.1, 0.2, 1.5, 0.4], 2, &Targets::new(&[0, 1])),
        ),
        (
            "logit overflow",
            forward(&default, &[0.1, 1e308], 1, &Targets::new(&[0])),
        ),
        (
            "upstream per row with a mean",
            backward(&default, Upstream::Rows(&[1.0, 1.0])),
        ),
        ("upstream length", backward(&none, Upstream::Rows(&[1.0]))),
        (
            "upstream NaN",
            backward(&none, Upstream::Rows(&[1.0, f64::NAN])),
        ),
        (
            "upstream scalar infinite",
            backward(&default, Upstream::Scalar(f64::INFINITY)),
        ),
        (
            "gradient buffer shape",
            Error::GradShape {
                expected: [2, 3],
                got: [3, 2],
            },
        ),
        (
            "finite input beyond f32",
            Error::Unrepresentable {
                row: 0,
                col: 1,
                value: 1e300,
                dtype: "f32",
            },
        ),
        (
            "device failure",
            Error::Device {
                operation: "the fused loss's copy of the cosines",
                message: "OutOfMemory".to_string(),
            },
        ),
        (
            "implementation the device lacks",
            Error::Unsupported {
                requested: "fused",
                device: "Cuda",
                available: "composed, auto",
            },
        ),
        ("angular m past pi/2", margin(Margin::angular(2.0))),
        ("multiplicative m 33", margin(Margin::multiplicative(33))),
        ("combined m1 17", margin(Margin::combined(17.0, 0.3, 0.2))),
        (
            "logit overflow from a huge cosine",
            forward(&additive_zero, &[-2e306, 2e306], 1, &Targets::new(&[0])),
        ),
        (
            "row loss overflow",
            forward(&huge_margin, &[-0.4, 0.44], 1, &Targets::new(&[0])),
        ),
        (
            "reduced loss overflow",
            forward(
                &huge_sum,
                &[-1.0, 1.0].repeat(10),
                10,
                &Targets::new(&[0; 10]),
            ),
        ),
        (
            "gradient overflow",
            backward(&default, Upstream::Scalar(1e308)),
        ),
        ("scale past f32", Pieces::<f32>::new(&huge_f32).unwrap_err()),
        (
            "target slope past f32",
            Pieces::<f32>::new(
                &SvSoftmax::builder()
                    .scale(1e36)
                    .t(1.0)
                    .margin(Margin::angular(0.5))
                    .build()
                    .unwrap(),
            )
            .unwrap_err(),
        ),
        (
            "column shards with a gap",
            Error::ShardColumns {
                rank: 1,
                expected_start: 4,
                start: 5,
                end: 9,
            },
        ),
        (
            "shard width",
            Error::ShardWidth {
                rank: 2,
                start: 4,
                end: 9,
                got: 4,
            },
        ),
        (
            "targets differ across ranks",
            Error::ShardMismatch {
                rank: 3,
                what: "targets",
            },
        ),
    ]
}

#[test]
fn error_messages() {
    let listing: String = cases()
        .iter()
        .map(|(case, error)| format!("{case}:\n    {error}\n"))
        .collect();
    insta::assert_snapshot!(listing);
}

#[test]
fn messages_follow_the_house_style() {
    for (case, error) in cases() {
        let message = error.to_string();
        let first = message.chars().next().unwrap();
        assert!(first.is_lowercase(), "{case}: starts upper-case: {message}");
        assert!(
            !message.ends_with('.'),
            "{case}: ends with a period: {message}"
        );
        assert!(
            message.contains("expected"),
            "{case}: says nothing expected: {message}"
        );
        assert!(
            message.contains("got"),
            "{case}: says nothing given: {message}"
        );
    }
}

#[test]
fn values_within_rounding_of_one_are_accepted() {
    let angular = SvSoftmax::builder()
        .margin(Margin::angular(0.5))
        .build()
        .unwrap();
    let cosines = CosineMatrix::new(&[1.00005, -1.00005], 1, 2).unwrap();
    assert!(reference::forward(&angular, cosines, &Targets::new(&[0])).is_ok());
    let cosines = CosineMatrix::new(&[1.0002, 0.0], 1, 2).unwrap();
    assert!(reference::forward(&angular, cosines, &Targets::new(&[0])).is_err());

    // Without an arccos the cosines may be any finite value (the notebook feeds up to 6).
    let cosines = CosineMatrix::new(&[6.0, -2.1], 1, 2).unwrap();
    assert!(reference::forward(&SvSoftmax::default(), cosines, &Targets::new(&[0])).is_ok());
}
