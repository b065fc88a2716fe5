//! Shapes and layouts: const and runtime dimensions, permuted and broadcast cosines, the
//! diagnostics, and the extreme inputs f32 must survive (s = 64, t = 1.5, cosines of ±1).

use dfdx::prelude::*;
use svsoftmax_core::{reference, CosineMatrix, Margin, SvSoftmax, Targets, Upstream};
use svsoftmax_dfdx::{Implementation, SvSoftmaxLoss};

const IMPLEMENTATIONS: [Implementation; 2] = [Implementation::Composed, Implementation::Fused];

fn sample(n_rows: usize, n_classes: usize) -> Vec<f64> {
    (0..n_rows * n_classes)
        .map(|i| ((i * 37 + 11) % 97) as f64 / 48.5 - 1.0)
        .collect()
}

fn config() -> SvSoftmax {
    SvSoftmax::sv_am(30.0, 0.3, 1.3).unwrap()
}

/// f64 through the same formulas on values below ~100: 1e-12 relative and absolute.
fn close(a: f64, e: f64) -> bool {
    (a - e).abs() <= 1e-12 * (1.0 + e.abs())
}

fn reference_of(cosines: &[f64], n_rows: usize, targets: &Targets) -> (f64, Vec<f64>) {
    let matrix = CosineMatrix::new(cosines, n_rows, cosines.len() / n_rows).unwrap();
    let evaluation =
        reference::forward_backward(&config(), matrix, targets, Upstream::default()).unwrap();
    (evaluation.forward.loss, evaluation.grad_cosines)
}

#[test]
fn const_and_runtime_shapes_agree() {
    let dev: Cpu = Default::default();
    let data = sample(3, 5);
    let targets = Targets::new(&[4, 0, 2]);
    let (expected, expected_grad) = reference_of(&data, 3, &targets);
    for implementation in IMPLEMENTATIONS {
        let loss = SvSoftmaxLoss::new(config()).with_implementation(implementation);
        let fixed: Tensor<Rank2<3, 5>, f64, _> = dev.tensor(data.clone());
        let runtime = dev.tensor_from_vec(data.clone(), (3, 5));
        let mixed: Tensor<(usize, Const<5>), f64, _> =
            dev.tensor_from_vec(data.clone(), (3, Const));

        let value = loss.loss(fixed.leaky_trace(), &targets).unwrap();
        assert!(close(value.array(), expected), "{implementation:?}");
        let grad = value.backward().get(&fixed).as_vec();
        assert!(grad.iter().zip(&expected_grad).all(|(a, e)| close(*a, *e)));

        let value = loss.loss(runtime.leaky_trace(), &targets).unwrap();
        assert!(close(value.array(), expected), "{implementation:?}");
        let value = loss.loss(mixed.leaky_trace(), &targets).unwrap();
        assert!(close(value.array(), expected), "{implementation:?}");
    }
}

#[test]
fn permuted_cosines_get_a_permuted_gradient() {
    let dev: Cpu = Default::default();
    let (n_rows, n_classes) = (4, 7);
    let data = sample(n_rows, n_classes);
    let targets = Targets::new(&[6, 0, 3, 1]);
    let (expected, expected_grad) = reference_of(&data, n_rows, &targets);
    // The same matrix stored column by column, then viewed row by row.
    let transposed: Vec<f64> = (0..n_classes * n_rows)
        .map(|i| data[(i % n_rows) * n_classes + i / n_rows])
        .collect();
    for implementation in IMPLEMENTATIONS {
        let loss = SvSoftmaxLoss::new(config()).with_implementation(implementation);
        let stored = dev.tensor_from_vec(transposed.clone(), (n_classes, n_rows));
        let cosines = stored.leaky_trace().permute::<_, Axes2<1, 0>>();
        let value = loss.loss(cosines, &targets).unwrap();
        assert!(close(value.array(), expected), "{implementation:?}");
        let grad = value.backward().get(&stored).as_vec();
        for (i, g) in grad.iter().enumerate() {
            let e = expected_grad[(i % n_rows) * n_classes + i / n_rows];
            assert!(close(*g, e), "{implementation:?} at {i}: {g} vs {e}");
        }
    }
}

#[test]
fn broadcast_cosines_sum_the_gradient_over_rows() {
    let dev: Cpu = Default::default();
    let row = sample(1, 6);
    let targets = Targets::new(&[2, 5, 0]);
    let repeated = row.repeat(3);
    let (expected, expected_grad) = reference_of(&repeated, 3, &targets);
    for implementation in IMPLEMENTATIONS {
        let loss = SvSoftmaxLoss::new(config()).with_implementation(implementation);
        let shared = dev.tensor_from_vec(row.clone(), (6,));
        let cosines = shared.leaky_trace().broadcast_like::<_, Axis<0>>(&(3, 6));
        let value = loss.loss(cosines, &targets).unwrap();
        assert!(close(value.array(), expected), "{implementation:?}");
        let grad = value.backward().get(&shared).as_vec();
        for (k, g) in grad.iter().enumerate() {
            let e: f64 = (0..3).map(|i| expected_grad[i * 6 + k]).sum();
            assert!(close(*g, e), "{implementation:?} at {k}: {g} vs {e}");
        }
    }
}

#[test]
fn diagnostics_match_the_reference() {
    let dev: Cpu = Default::default();
    let data = sample(4, 9);
    let targets = Targets::with_ignored(vec![Some(3), None, Some(8), Some(0)]);
    let matrix = CosineMatrix::new(&data, 4, 9).unwrap();
    let expected = reference::forward(&config(), matrix, &targets).unwrap();
    for implementation in IMPLEMENTATIONS {
        let loss = SvSoftmaxLoss::new(config()).with_implementation(implementation);
        let output = loss
            .forward(dev.tensor_from_vec(data.clone(), (4, 9)), &targets)
            .unwrap();
        assert!(close(output.loss.array(), expected.loss));
        for (row, (got, want)) in output
            .diagnostics
            .iter()
            .zip(&expected.diagnostics)
            .enumerate()
        {
            match (got, want) {
                (Some(got), Some(want)) => {
                    assert_eq!(got.support_vectors, want.support_vectors, "row {row}");
                    assert!(close(got.target_score, want.target_score), "row {row}");
                    assert!(close(got.target_prob, want.target_prob), "row {row}");
                }
                (None, None) => {}
                _ => panic!("{implementation:?}: row {row} is ignored in one result only"),
            }
        }
        for (got, want) in output.row_losses.iter().zip(&expected.row_losses) {
            assert!(close(*got, *want));
        }
    }
}

#[test]
fn f32_survives_the_largest_scale_and_weight() {
    let dev: Cpu = Default::default();
    // Every row wrong, every row right, and ties with ±1 on both sides.
    let data = [
        -1.0, 1.0, 1.0, 1.0, //
        1.0, -1.0, -1.0, -1.0, //
        1.0, 1.0, -1.0, 0.65, //
    ];
    let targets = Targets::new(&[0, 0, 3]);
    for margin in [Margin::additive(0.35), Margin::angular(0.5), Margin::None] {
        let config = SvSoftmax::builder()
            .scale(64.0)
            .t(1.5)
            .margin(margin)
            .build()
            .unwrap();
        let matrix = CosineMatrix::new(&data, 3, 4).unwrap();
        let expected =
            reference::forward_backward(&config, matrix, &targets, Upstream::default()).unwrap();
        for implementation in IMPLEMENTATIONS {
            let loss = SvSoftmaxLoss::new(config).with_implementation(implementation);
            let cosines = dev.tensor_from_vec(data.map(|v| v as f32).to_vec(), (3, 4));
            let value = loss.loss(cosines.leaky_trace(), &targets).unwrap();
            let got = f64::from(value.array());
            let grad = value.backward().get(&cosines).as_vec();
            // Logits up to s (2t - 1) = 128 in f32: a few ulps of 128, ~1e-5, on losses
            // up to ~200; the gradient's entries are probabilities times slopes up to
            // s t = 96 (and s / sin 2^-12 for the angular margin at ±1), relative 1e-4.
            assert!(
                (got - expected.forward.loss).abs() <= 1e-4 * (1.0 + expected.forward.loss),
                "{margin:?} {implementation:?}: {got} vs {}",
                expected.forward.loss
            );
            for (g, e) in grad.iter().zip(&expected.grad_cosines) {
                let g = f64::from(*g);
                assert!(
                    g.is_finite() && (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "{g} vs {e}"
                );
            }
        }
    }
}

#[test]
fn batches_split_across_threads_keep_each_row_its_own_weight() {
    // 40 x 1000 cosines span several blocks of the fused backward's split across threads;
    // a different upstream weight per row shows that every row got its own.
    let dev: Cpu = Default::default();
    let (n_rows, n_classes) = (40, 1000);
    let data = sample(n_rows, n_classes);
    let targets = Targets::new(
        &(0..n_rows)
            .map(|i| (i * 37) % n_classes)
            .collect::<Vec<_>>(),
    );
    let weights: Vec<f64> = (0..n_rows).map(|i| 0.5 + i as f64 / 8.0).collect();
    let config = config().with_reduction(svsoftmax_core::Reduction::None);
    let matrix = CosineMatrix::new(&data, n_rows, n_classes).unwrap();
    let expected =
        reference::forward_backward(&config, matrix, &targets, Upstream::Rows(&weights)).unwrap();
    for implementation in IMPLEMENTATIONS {
        let loss = SvSoftmaxLoss::new(config).with_implementation(implementation);
        let cosines = dev.tensor_from_vec(data.clone(), (n_rows, n_classes));
        let rows = loss.row_losses(cosines.leaky_trace(), &targets).unwrap();
        let grads = (rows * dev.tensor_from_vec(weights.clone(), (n_rows,)))
            .sum()
            .backward();
        let grad = grads.get(&cosines).as_vec();
        for (i, (g, e)) in grad.iter().zip(&expected.grad_cosines).enumerate() {
            assert!(close(*g, *e), "{implementation:?} at {i}: {g} vs {e}");
        }
    }
}

#[test]
fn an_empty_batch_has_loss_zero_and_an_empty_gradient() {
    let dev: Cpu = Default::default();
    let targets = Targets::new(&[]);
    for implementation in IMPLEMENTATIONS {
        let loss = SvSoftmaxLoss::new(config()).with_implementation(implementation);
        let cosines = dev.tensor_from_vec(Vec::<f32>::new(), (0, 3));
        let value = loss.loss(cosines.leaky_trace(), &targets).unwrap();
        assert_eq!(value.array(), 0.0, "{implementation:?}");
        // Shapes only: dfdx 0.13's `as_vec` panics on an empty tensor.
        assert_eq!(value.backward().get(&cosines).shape(), &(0, 3));
        let rows = loss.row_losses(cosines.clone(), &targets).unwrap();
        assert_eq!(rows.shape(), &(0,));
        let output = loss.forward(cosines.clone(), &targets).unwrap();
        assert!(output.row_losses.is_empty() && output.diagnostics.is_empty());

        let engine = svsoftmax_dfdx::DfdxEngine::<f64>::new(implementation);
        let matrix = CosineMatrix::new(&[], 0, 3).unwrap();
        let evaluation = svsoftmax_core::Engine::forward_backward(
            &engine,
            &config(),
            matrix,
            &targets,
            Upstream::default(),
        )
        .unwrap();
        assert_eq!(evaluation.forward.loss, 0.0);
        assert!(evaluation.grad_cosines.is_empty());
    }
}
