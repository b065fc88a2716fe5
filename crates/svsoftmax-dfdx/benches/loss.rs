//! Forward + backward of SV-AM-Softmax (s = 64, m = 0.35, t = 1.2, f32) through dfdx's tape,
//! composed and fused, beside the ndarray engine's fused kernel on the same cosines. Run
//! with `cargo bench -p svsoftmax-dfdx`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dfdx::prelude::*;
use ndarray::Array2;
use svsoftmax_core::{Forward, SvSoftmax, Targets, Upstream};
use svsoftmax_dfdx::{Implementation, SvSoftmaxLoss};

const SHAPES: [(usize, usize); 2] = [(256, 10_000), (512, 100_000)];

/// The ndarray benchmark's inputs: cosines over [-0.5, 0.9] in a varied pattern and spread
/// targets, a realistic mix of support vectors and easy negatives.
fn inputs(n_rows: usize, n_classes: usize) -> (Vec<f32>, Vec<usize>) {
    let cosines = (0..n_rows * n_classes)
        .map(|i| {
            let (row, col) = ((i / n_classes) as u64, (i % n_classes) as u64);
            let hash = (row * 2_654_435_761 + col * 40_503) % 10_007;
            -0.5 + 1.4 * hash as f32 / 10_007.0
        })
        .collect();
    let targets = (0..n_rows).map(|row| (row * 7_919) % n_classes).collect();
    (cosines, targets)
}

fn bench(c: &mut Criterion) {
    let config = SvSoftmax::sv_am(64.0, 0.35, 1.2).expect("valid configuration");
    let dev: Cpu = Default::default();
    // A training loop reuses dfdx's buffers through its allocation cache.
    dev.enable_cache();
    for (n_rows, n_classes) in SHAPES {
        let (values, target_list) = inputs(n_rows, n_classes);
        let targets = Targets::new(&target_list);
        let shape = format!("{n_rows}x{n_classes}");
        let mut group = c.benchmark_group("fwd_bwd");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(if n_classes > 10_000 { 20 } else { 5 }))
            .throughput(Throughput::Elements((n_rows * n_classes) as u64));

        let cosines = dev.tensor_from_vec(values.clone(), (n_rows, n_classes));
        for implementation in [Implementation::Fused, Implementation::Composed] {
            let loss = SvSoftmaxLoss::new(config).with_implementation(implementation);
            let id = BenchmarkId::new(format!("dfdx-{}", implementation.name()), &shape);
            group.bench_function(id, |b| {
                b.iter(|| {
                    let value = loss.loss(cosines.leaky_trace(), &targets).expect("valid");
                    let grads = value.backward();
                    black_box(grads);
                })
            });
        }

        let array = Array2::from_shape_vec((n_rows, n_classes), values).expect("shape");
        let mut grad = Array2::<f32>::zeros((n_rows, n_classes));
        let mut out = Forward::default();
        group.bench_function(BenchmarkId::new("ndarray-fused", &shape), |b| {
            b.iter(|| {
                svsoftmax_ndarray::forward_backward_into(
                    &config,
                    array.view(),
                    &targets,
                    Upstream::default(),
                    grad.view_mut(),
                    &mut out,
                )
                .expect("valid inputs");
                black_box(out.loss)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
