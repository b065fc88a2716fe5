//! The fused kernel against a composed-ndarray implementation of the same loss and against a
//! plain copy of the cosines (the memory floor of forward + backward), f32, SV-AM with
//! s = 64, m = 0.35, t = 1.2. Run with `cargo bench -p svsoftmax-ndarray`.

mod composed;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::Array2;
use svsoftmax_core::{Forward, SvSoftmax, Targets, Upstream};

const SHAPES: [(usize, usize); 2] = [(256, 10_000), (512, 100_000)];

/// Cosines spread over [-0.5, 0.9] with a varied pattern, and spread targets: a realistic
/// mix of support vectors and easy negatives, made without a random-number crate.
fn inputs(n_rows: usize, n_classes: usize) -> (Array2<f32>, Vec<usize>) {
    let cosines = Array2::from_shape_fn((n_rows, n_classes), |(row, col)| {
        let hash = (row as u64 * 2_654_435_761 + col as u64 * 40_503) % 10_007;
        -0.5 + 1.4 * hash as f32 / 10_007.0
    });
    let targets = (0..n_rows).map(|row| (row * 7_919) % n_classes).collect();
    (cosines, targets)
}

fn bench(c: &mut Criterion) {
    let config = SvSoftmax::sv_am(64.0, 0.35, 1.2).expect("valid configuration");
    eprintln!(
        "svsoftmax-ndarray kernel: {}",
        svsoftmax_ndarray::instruction_set()
    );
    for (n_rows, n_classes) in SHAPES {
        let (cosines, target_list) = inputs(n_rows, n_classes);
        let targets = Targets::new(&target_list);
        let shape = format!("{n_rows}x{n_classes}");
        let mut grad = Array2::<f32>::zeros((n_rows, n_classes));
        let mut out = Forward::default();

        let mut group = c.benchmark_group("fwd");
        configure(&mut group, n_rows * n_classes);
        group.bench_function(BenchmarkId::new("fused", &shape), |b| {
            b.iter(|| {
                svsoftmax_ndarray::forward_into(&config, cosines.view(), &targets, &mut out)
                    .expect("valid inputs");
                black_box(out.loss)
            })
        });
        group.bench_function(BenchmarkId::new("composed", &shape), |b| {
            b.iter(|| black_box(composed::forward(&config, cosines.view(), &target_list)))
        });
        group.finish();

        let mut group = c.benchmark_group("fwd_bwd");
        configure(&mut group, n_rows * n_classes);
        group.bench_function(BenchmarkId::new("fused", &shape), |b| {
            b.iter(|| fused_step(&config, &cosines, &targets, &mut grad, &mut out))
        });
        group.bench_function(BenchmarkId::new("composed", &shape), |b| {
            b.iter(|| {
                black_box(composed::forward_backward(
                    &config,
                    cosines.view(),
                    &target_list,
                ))
            })
        });
        group.bench_function(BenchmarkId::new("copy", &shape), |b| {
            // A memcpy of contiguous buffers: the cheapest way to read every cosine once and
            // write every gradient entry once.
            let source = cosines.as_slice().expect("contiguous");
            b.iter(|| {
                grad.as_slice_mut()
                    .expect("contiguous")
                    .copy_from_slice(source);
                black_box(grad[[0, 0]])
            })
        });
        group.bench_function(BenchmarkId::new("copy_threads", &shape), |b| {
            use rayon::prelude::*;
            let source = cosines.as_slice().expect("contiguous");
            b.iter(|| {
                let target = grad.as_slice_mut().expect("contiguous");
                target
                    .par_chunks_mut(1 << 16)
                    .zip(source.par_chunks(1 << 16))
                    .for_each(|(to, from)| to.copy_from_slice(from));
                black_box(grad[[0, 0]])
            })
        });
        group.finish();
    }
}

/// One forward + backward of the fused kernel into reused buffers, as a training step runs.
fn fused_step(
    config: &SvSoftmax,
    cosines: &Array2<f32>,
    targets: &Targets,
    grad: &mut Array2<f32>,
    out: &mut Forward,
) -> f64 {
    svsoftmax_ndarray::forward_backward_into(
        config,
        cosines.view(),
        targets,
        Upstream::default(),
        grad.view_mut(),
        out,
    )
    .expect("valid inputs");
    black_box(out.loss)
}

fn configure(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    n: usize,
) {
    group.throughput(Throughput::Elements(n as u64));
    if n > 10_000_000 {
        // About 10 ms to 2 s an iteration: ten samples keep the whole run to minutes.
        group.sample_size(10).warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(10));
    }
}

/// Forward + backward at sizes around the parallel threshold. Run once as is and once with
/// `RAYON_NUM_THREADS=1`: where the two cross is where splitting starts to pay.
fn threshold(c: &mut Criterion) {
    let config = SvSoftmax::sv_am(64.0, 0.35, 1.2).expect("valid configuration");
    let mut group = c.benchmark_group("threshold");
    for n_elements in [1usize << 14, 1 << 16, 1 << 17, 1 << 18, 1 << 20] {
        let (n_rows, n_classes) = (64, n_elements / 64);
        let (cosines, target_list) = inputs(n_rows, n_classes);
        let targets = Targets::new(&target_list);
        let mut grad = Array2::<f32>::zeros((n_rows, n_classes));
        let mut out = Forward::default();
        group.throughput(Throughput::Elements(n_elements as u64));
        group.bench_function(BenchmarkId::new("fwd_bwd", n_elements), |b| {
            b.iter(|| fused_step(&config, &cosines, &targets, &mut grad, &mut out))
        });
    }
    group.finish();
}

criterion_group!(benches, bench, threshold);
criterion_main!(benches);
