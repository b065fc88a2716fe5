//! The cosine head with the loss: gradients into the embeddings and the class weights
//! against central finite differences of the f64 reference composed with a host-side head,
//! the zero-norm guard, and a small model that trains.

use dfdx::optim::{Adam, AdamConfig};
use dfdx::prelude::*;
use svsoftmax_core::{reference, CosineMatrix, Indicator, SvSoftmax, Targets};
use svsoftmax_dfdx::{builders, CosineHead, Implementation, SvSoftmaxLoss};

const IN: usize = 4;
const CLASSES: usize = 5;
const ROWS: usize = 3;
const TARGETS: [usize; ROWS] = [1, 4, 0];

/// Deterministic values in [-1, 1) that are far from any special structure.
fn values(n: usize, seed: u64) -> Vec<f64> {
    (0..n as u64)
        .map(|i| {
            let x = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed.wrapping_mul(0xbf58_476d);
            (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

/// The head on the host, written from its definition: rows divided by their norms, then
/// every embedding against every class weight.
fn host_cosines(embeddings: &[f64], weight: &[f64]) -> Vec<f64> {
    let unit = |row: &[f64]| {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        row.iter().map(|v| v / norm).collect::<Vec<_>>()
    };
    let xs: Vec<_> = embeddings.chunks(IN).map(unit).collect();
    let ws: Vec<_> = weight.chunks(IN).map(unit).collect();
    xs.iter()
        .flat_map(|x| {
            ws.iter()
                .map(move |w| x.iter().zip(w).map(|(a, b)| a * b).sum())
        })
        .collect()
}

fn host_loss(config: &SvSoftmax, embeddings: &[f64], weight: &[f64]) -> f64 {
    let cosines = host_cosines(embeddings, weight);
    let matrix = CosineMatrix::new(&cosines, ROWS, CLASSES).unwrap();
    reference::forward(config, matrix, &Targets::new(&TARGETS))
        .unwrap()
        .loss
}

/// The smallest distance between a row's target score and a non-target cosine: finite
/// differences are only meaningful where no step crosses the mask boundary.
fn mask_gap(config: &SvSoftmax, embeddings: &[f64], weight: &[f64]) -> f64 {
    let cosines = host_cosines(embeddings, weight);
    let matrix = CosineMatrix::new(&cosines, ROWS, CLASSES).unwrap();
    let rows = reference::breakdown(config, matrix, &Targets::new(&TARGETS)).unwrap();
    rows.iter()
        .flatten()
        .flat_map(|row| {
            row.cosines
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != row.target)
                .map(|(_, c)| (c - row.target_score).abs())
        })
        .fold(f64::INFINITY, f64::min)
}

/// dfdx's gradients of the loss with respect to the embeddings and the class weights.
fn dfdx_gradients(
    loss: &SvSoftmaxLoss,
    embeddings: &[f64],
    weight: &[f64],
) -> (f64, Vec<f64>, Vec<f64>) {
    let dev: Cpu = Default::default();
    let mut head = dev.build_module::<builders::CosineHead<IN, CLASSES>, f64>();
    head.weight.copy_from(weight);
    let x: Tensor<Rank2<ROWS, IN>, f64, _> = dev.tensor(embeddings.to_vec());
    let cosines = head.forward(x.leaky_trace());
    let value = loss.loss(cosines, &Targets::new(&TARGETS)).unwrap();
    let scalar = value.array();
    let grads = value.backward();
    (
        scalar,
        grads.get(&x).as_vec(),
        grads.get(&head.weight).as_vec(),
    )
}

fn central_difference(f: impl Fn(&[f64]) -> f64, at: &[f64], i: usize, h: f64) -> f64 {
    let (mut plus, mut minus) = (at.to_vec(), at.to_vec());
    plus[i] += h;
    minus[i] -= h;
    (f(&plus) - f(&minus)) / (2.0 * h)
}

#[test]
fn head_gradients_match_finite_differences_for_every_margin() {
    let embeddings = values(ROWS * IN, 1);
    let weight = values(CLASSES * IN, 2);
    // h = 1e-6 on inputs of size ~1: the truncation error is ~h² |f'''| ≈ 1e-10 s³-scaled
    // terms of the smooth part, and the rounding error ~ε |f| / h ≈ 1e-9 for losses ~10;
    // 1e-6 absolute plus 1e-6 relative sits well above both and far below a wrong term
    // (s = 8 makes every gradient entry O(1)).
    let h = 1e-6;
    let tolerance = |expected: f64| 1e-6 + 1e-6 * expected.abs();
    for (name, margin) in svsoftmax_testkit::margins() {
        for indicator in [Indicator::Adaptive, Indicator::Fixed] {
            let config = SvSoftmax::builder()
                .scale(8.0)
                .t(1.3)
                .margin(margin)
                .indicator(indicator)
                .build()
                .unwrap();
            let gap = mask_gap(&config, &embeddings, &weight);
            assert!(
                gap > 1e-3,
                "{name}: the fixed point lies {gap:e} from the mask boundary"
            );
            for implementation in [Implementation::Composed, Implementation::Fused] {
                let loss = SvSoftmaxLoss::new(config).with_implementation(implementation);
                let (value, grad_x, grad_w) = dfdx_gradients(&loss, &embeddings, &weight);
                let expected_value = host_loss(&config, &embeddings, &weight);
                assert!((value - expected_value).abs() <= tolerance(expected_value));

                for (i, grad) in grad_x.iter().enumerate() {
                    let fd =
                        central_difference(|x| host_loss(&config, x, &weight), &embeddings, i, h);
                    assert!(
                        (grad - fd).abs() <= tolerance(fd),
                        "{name} {indicator:?} {implementation:?}: d/dx[{i}] {grad} vs {fd}"
                    );
                }
                for (i, grad) in grad_w.iter().enumerate() {
                    let fd =
                        central_difference(|w| host_loss(&config, &embeddings, w), &weight, i, h);
                    assert!(
                        (grad - fd).abs() <= tolerance(fd),
                        "{name} {indicator:?} {implementation:?}: d/dw[{i}] {grad} vs {fd}"
                    );
                }
            }
        }
    }
}

#[test]
fn f32_head_gradients_follow_the_f64_ones() {
    let embeddings = values(ROWS * IN, 1);
    let weight = values(CLASSES * IN, 2);
    let config = SvSoftmax::sv_am(32.0, 0.35, 1.2).unwrap();
    let dev: Cpu = Default::default();
    for implementation in [Implementation::Composed, Implementation::Fused] {
        let loss = SvSoftmaxLoss::new(config).with_implementation(implementation);
        let (_, grad_x, grad_w) = dfdx_gradients(&loss, &embeddings, &weight);

        let mut head = dev.build_module::<builders::CosineHead<IN, CLASSES>, f32>();
        let weight32: Vec<f32> = weight.iter().map(|&v| v as f32).collect();
        head.weight.copy_from(&weight32);
        let x: Tensor<Rank2<ROWS, IN>, f32, _> =
            dev.tensor(embeddings.iter().map(|&v| v as f32).collect::<Vec<_>>());
        let value = loss
            .loss(head.forward(x.leaky_trace()), &Targets::new(&TARGETS))
            .unwrap();
        let grads = value.backward();
        // f32 rounds the normalized rows and the cosines to ~6e-8; through logits of size
        // s = 32 and slopes up to s t ≈ 38 that is ~1e-4 on gradients of size ~10:
        // 1e-3 absolute plus 1e-4 relative.
        let pairs = [
            (grads.get(&x).as_vec(), grad_x),
            (grads.get(&head.weight).as_vec(), grad_w),
        ];
        for (single, double) in pairs {
            for (s, d) in single.iter().zip(&double) {
                assert!(
                    (f64::from(*s) - d).abs() <= 1e-3 + 1e-4 * d.abs(),
                    "{s} vs {d}"
                );
            }
        }
    }
}

#[test]
fn zero_rows_give_zero_cosines_and_finite_gradients() {
    let dev: Cpu = Default::default();
    let mut head = dev.build_module::<builders::CosineHead<IN, CLASSES>, f64>();
    let mut weight = values(CLASSES * IN, 3);
    weight[..IN].fill(0.0);
    head.weight.copy_from(&weight);
    let mut embeddings = values(ROWS * IN, 4);
    embeddings[IN..2 * IN].fill(0.0);
    let x: Tensor<Rank2<ROWS, IN>, f64, _> = dev.tensor(embeddings);

    let cosines = head.forward(x.leaky_trace());
    let values_out = cosines.retaped::<NoneTape>().as_vec();
    assert!(values_out[CLASSES..2 * CLASSES].iter().all(|&c| c == 0.0));
    assert!(values_out.chunks(CLASSES).all(|row| row[0] == 0.0));

    let loss = SvSoftmaxLoss::new(SvSoftmax::sv_am(32.0, 0.35, 1.2).unwrap());
    let grads = loss
        .loss(cosines, &Targets::new(&TARGETS))
        .unwrap()
        .backward();
    let all_finite = |g: Vec<f64>| g.iter().all(|v| v.is_finite());
    assert!(all_finite(grads.get(&x).as_vec()));
    assert!(all_finite(grads.get(&head.weight).as_vec()));
}

type Model = (
    Linear<8, 16>,
    ReLU,
    Linear<16, 8>,
    builders::CosineHead<8, 4>,
);

/// Four well-separated clusters of sixteen points in eight dimensions.
fn clusters(dev: &Cpu) -> (Tensor<Rank2<64, 8>, f32, Cpu>, Vec<usize>) {
    let centers = values(4 * 8, 5);
    let noise = values(64 * 8, 6);
    let points: Vec<f32> = (0..64 * 8)
        .map(|i| (3.0 * centers[(i / 8 / 16) * 8 + i % 8] + 0.3 * noise[i]) as f32)
        .collect();
    (dev.tensor(points), (0..64).map(|i| i / 16).collect())
}

#[test]
fn a_model_with_the_head_trains_on_a_separable_problem() {
    for implementation in [Implementation::Composed, Implementation::Fused] {
        let dev = Cpu::seed_from_u64(7);
        let mut model = dev.build_module::<Model, f32>();
        let mut grads = model.alloc_grads();
        let mut opt = Adam::new(
            &model,
            AdamConfig {
                lr: 1e-2,
                ..Default::default()
            },
        );
        let (points, labels) = clusters(&dev);
        let targets = Targets::new(&labels);
        let loss = SvSoftmaxLoss::new(SvSoftmax::sv_am(16.0, 0.35, 1.2).unwrap())
            .with_implementation(implementation);

        let mut history = Vec::new();
        for _ in 0..60 {
            let cosines = model.forward(points.trace(grads));
            let value = loss.loss(cosines, &targets).unwrap();
            history.push(value.array());
            grads = value.backward();
            opt.update(&mut model, &grads).unwrap();
            model.zero_grads(&mut grads);
        }
        let cosines = model.forward(points.clone()).as_vec();
        let correct = cosines
            .chunks(4)
            .zip(&labels)
            .filter(|(row, &label)| {
                row.iter()
                    .enumerate()
                    .all(|(k, &c)| k == label || c < row[label])
            })
            .count();
        // A falling loss, not a positive one: the last step must be well under a fifth of
        // the first, and every point on its own class.
        let (first, last) = (history[0], *history.last().unwrap());
        assert!(
            last < 0.2 * first,
            "{implementation:?}: loss {first} -> {last}"
        );
        assert_eq!(
            correct, 64,
            "{implementation:?}: {correct} of 64 points right"
        );
    }
}

#[test]
fn the_head_is_generic_over_batch_dimensions() {
    let dev: Cpu = Default::default();
    let head: CosineHead<IN, CLASSES, f32, Cpu> =
        dev.build_module::<builders::CosineHead<IN, CLASSES>, f32>();
    let x: Tensor<(usize, Const<IN>), f32, _> = dev.sample_normal_like(&(7, Const));
    assert_eq!(head.forward(x).shape().0, 7);
}
