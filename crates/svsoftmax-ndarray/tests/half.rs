//! f16 and bf16 inputs, computed in f32: at s = 64 an f16 exponential would overflow once
//! s · cos > 11, so these cases only pass if nothing is formed in the narrow type.
#![cfg(feature = "half")]

use half::{bf16, f16};
use ndarray::Array2;
use svsoftmax_core::{reference, CosineMatrix, Margin, SvSoftmax, Targets, Upstream};
use svsoftmax_ndarray::Element;

fn check<E: Element<Real = f32>>(relative: f64) {
    let config = SvSoftmax::builder()
        .scale(64.0)
        .t(1.5)
        .margin(Margin::additive(0.35))
        .build()
        .unwrap();
    let n_classes = 37;
    let values = Array2::from_shape_fn((5, n_classes), |(i, k)| {
        ((i * 11 + k * 7) % 41) as f32 / 20.5 - 1.0
    });
    let narrow = values.mapv(E::store);
    let targets = Targets::new(&[0, 5, 17, 36, 20]);
    let (forward, grad) =
        svsoftmax_ndarray::forward_backward(&config, narrow.view(), &targets, Upstream::default())
            .unwrap();

    // The reference sees the same rounded inputs, so only the arithmetic differs: f32 inside,
    // and the gradient rounded to the narrow type on the way out (2^-11 for f16, 2^-8 for
    // bf16, relative).
    let wide: Vec<f64> = narrow
        .iter()
        .map(|&value| f64::from(value.load()))
        .collect();
    let matrix = CosineMatrix::new(&wide, 5, n_classes).unwrap();
    let expected =
        reference::forward_backward(&config, matrix, &targets, Upstream::default()).unwrap();
    assert!(forward.loss.is_finite());
    assert!((forward.loss - expected.forward.loss).abs() <= 1e-4 * expected.forward.loss.abs());
    let scale = expected
        .grad_cosines
        .iter()
        .fold(0.0f64, |m, g| m.max(g.abs()));
    for (a, e) in grad.iter().zip(&expected.grad_cosines) {
        let a = f64::from(a.load());
        assert!(
            (a - e).abs() <= relative * e.abs() + 1e-4 * scale,
            "{a} vs {e}"
        );
    }
}

#[test]
fn f16_at_s64_t15() {
    check::<f16>(2.0f64.powi(-10));
}

#[test]
fn bf16_at_s64_t15() {
    check::<bf16>(2.0f64.powi(-7));
}

#[test]
fn f16_keeps_the_gradients_of_easy_negatives() {
    // s = 64, t = 1, a row of zeros: every non-target probability is 1/8 and its gradient
    // s / 8 = 8. A kernel that parked exp(z - bound) in the f16 buffer lost them to zero.
    let config = SvSoftmax::builder().scale(64.0).t(1.0).build().unwrap();
    let cosines = Array2::from_elem((1, 8), f16::from_f32(0.0));
    let (_, grad) = svsoftmax_ndarray::forward_backward(
        &config,
        cosines.view(),
        &Targets::new(&[3]),
        Upstream::default(),
    )
    .unwrap();
    for (k, value) in grad.iter().enumerate() {
        let expected = if k == 3 { -56.0 } else { 8.0 };
        assert!(
            (f64::from(value.to_f32()) - expected).abs() <= 1e-2,
            "column {k}: {value}"
        );
    }
}
