//! The benchmark's composed baseline computes the same loss: a speed comparison is only
//! meaningful between two correct implementations.

#[path = "../benches/composed/mod.rs"]
mod composed;

use ndarray::Array2;
use svsoftmax_core::{reference, CosineMatrix, Margin, SvSoftmax, Targets, Upstream};

#[test]
fn composed_baseline_matches_the_reference() {
    let cosines = Array2::from_shape_fn((7, 33), |(i, k)| {
        ((i * 13 + k * 29) % 61) as f32 / 30.5 - 1.0
    });
    let targets: Vec<usize> = (0..7).map(|i| (i * 5) % 33).collect();
    for margin in [Margin::None, Margin::additive(0.35), Margin::angular(0.5)] {
        let config = SvSoftmax::builder()
            .scale(64.0)
            .t(1.2)
            .margin(margin)
            .build()
            .unwrap();
        let (loss, grad) = composed::forward_backward(&config, cosines.view(), &targets);
        let forward_only = composed::forward(&config, cosines.view(), &targets);

        let wide: Vec<f64> = cosines.iter().map(|&c| f64::from(c)).collect();
        let matrix = CosineMatrix::new(&wide, 7, 33).unwrap();
        let expected = reference::forward_backward(
            &config,
            matrix,
            &Targets::new(&targets),
            Upstream::default(),
        )
        .unwrap();
        // f32 with s t = 77: the loss to ~1e-5 relative, the gradient to ~1e-4 of its scale.
        let close = |a: f64, e: f64, scale: f64| (a - e).abs() <= 1e-5 * e.abs() + 1e-4 * scale;
        assert!(
            close(f64::from(loss), expected.forward.loss, 1.0),
            "{margin:?}: loss"
        );
        assert!(
            close(f64::from(forward_only), expected.forward.loss, 1.0),
            "{margin:?}: forward"
        );
        for (a, e) in grad.iter().zip(&expected.grad_cosines) {
            assert!(
                close(f64::from(*a), *e, 77.0 / 7.0),
                "{margin:?}: grad {a} vs {e}"
            );
        }
    }
}
