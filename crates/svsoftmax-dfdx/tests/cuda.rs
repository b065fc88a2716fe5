//! The composed implementation on `Cuda` against the same on `Cpu`, for a machine with a
//! GPU and a CUDA toolkit: `cargo test -p svsoftmax-dfdx --features cuda --test cuda`.
//! Without the feature this file is empty; with `cuda,ci-check` it is type-checked only.
#![cfg(feature = "cuda")]

use dfdx::prelude::*;
use svsoftmax_core::{Error, Margin, SvSoftmax, Targets};
use svsoftmax_dfdx::{DfdxFloat, Implementation, LossDevice, SvSoftmaxLoss};

fn sample<E: DfdxFloat>(n_rows: usize, n_classes: usize) -> Vec<E> {
    (0..n_rows * n_classes)
        .map(|i| E::round_from(((i * 37 + 11) % 97) as f64 / 48.5 - 1.0))
        .collect()
}

/// The loss and its gradient on `dev`, as f64.
fn loss_and_grad<E: DfdxFloat, D: LossDevice<E>>(
    dev: &D,
    loss: &SvSoftmaxLoss,
    data: Vec<E>,
    shape: (usize, usize),
    targets: &Targets,
) -> (f64, Vec<f64>) {
    let cosines = dev.tensor_from_vec(data, shape);
    let value = loss
        .loss(cosines.leaky_trace(), targets)
        .expect("valid inputs");
    let scalar = value.as_vec()[0].widen();
    let grad = value.backward().get(&cosines).as_vec();
    (scalar, grad.into_iter().map(DfdxFloat::widen).collect())
}

fn compare<E: DfdxFloat>(unit: f64)
where
    Cpu: LossDevice<E>,
    Cuda: LossDevice<E>,
{
    let (cpu, cuda) = (Cpu::default(), Cuda::default());
    let shape = (6, 333);
    let targets = Targets::with_ignored(vec![Some(0), Some(332), None, Some(17), Some(5), None]);
    let margins = svsoftmax_testkit::margins()
        .into_iter()
        .map(|(_, margin)| margin);
    for margin in margins.chain([Margin::None]) {
        let config = SvSoftmax::builder()
            .scale(64.0)
            .t(1.5)
            .margin(margin)
            .build()
            .unwrap();
        let loss = SvSoftmaxLoss::new(config).with_implementation(Implementation::Composed);
        let data = sample::<E>(shape.0, shape.1);
        let (expected, expected_grad) = loss_and_grad(&cpu, &loss, data.clone(), shape, &targets);
        let (got, grad) = loss_and_grad(&cuda, &loss, data, shape, &targets);
        // The same operations on two devices differ by the order of their sums and by the
        // devices' exp and log: a few hundred units of E on logits up to s (2t - 1) = 128.
        let tolerance = |e: f64| 512.0 * unit * (1.0 + 128.0) * (1.0 + e.abs());
        assert!(
            (got - expected).abs() <= tolerance(expected),
            "{margin:?}: {got} vs {expected}"
        );
        for (g, e) in grad.iter().zip(&expected_grad) {
            assert!((g - e).abs() <= tolerance(*e), "{margin:?}: {g} vs {e}");
        }
    }
}

#[test]
fn composed_on_cuda_matches_cpu_in_f32() {
    compare::<f32>(f64::from(f32::EPSILON));
}

#[test]
fn composed_on_cuda_matches_cpu_in_f64() {
    compare::<f64>(f64::EPSILON);
}

#[test]
fn fused_on_cuda_is_unsupported() {
    let cuda = Cuda::default();
    let cosines = cuda.tensor_from_vec(sample::<f32>(2, 3), (2, 3));
    let loss = SvSoftmaxLoss::new(SvSoftmax::sv_am(32.0, 0.35, 1.2).unwrap())
        .with_implementation(Implementation::Fused);
    let error = loss.loss(cosines, &Targets::new(&[0, 2])).unwrap_err();
    assert!(
        matches!(error, Error::Unsupported { device: "Cuda", .. }),
        "{error}"
    );
}
