//! The time of one sharded forward + backward step, f32, SV-AM with s = 64, m = 0.35,
//! t = 1.2, with the classes split evenly over the ranks, and on one rank also the
//! single-process ndarray engine over the same cosines. Not part of any test run: at the
//! default 512 x 1 000 000 each rank holds two matrices of 2 GB / ranks.
//!
//! ```sh
//! cargo build --release -p svsoftmax-mpi --example bench_step
//! mpirun -np 1 target/release/examples/bench_step [ROWS CLASSES STEPS]
//! mpirun -np 2 target/release/examples/bench_step [ROWS CLASSES STEPS]
//! ```
//!
//! Each timed step starts after a barrier and lasts until the slowest rank is done; the
//! first two steps are warm-up. Rank 0 prints the median, the fastest and the slowest.

use std::time::Instant;

use mpi::collective::SystemOperation;
use mpi::traits::{Communicator, CommunicatorCollectives};
use ndarray::Array2;
use svsoftmax_core::{Forward, SvSoftmax, Targets, Upstream};
use svsoftmax_mpi::ColumnShard;

const WARMUP: usize = 2;

fn main() -> Result<(), svsoftmax_core::Error> {
    let universe = mpi::initialize().expect("MPI is initialized once");
    let world = universe.world();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|arg| arg.parse().expect("ROWS CLASSES STEPS are whole numbers"))
        .collect();
    let (n_rows, n_classes, steps) = match args[..] {
        [] => (512, 1_000_000, 10),
        [rows, classes, steps] => (rows, classes, steps),
        _ => panic!("usage: bench_step [ROWS CLASSES STEPS]"),
    };

    let mut shard = ColumnShard::even(&world, n_classes);
    let columns = shard.columns();
    // The ndarray benchmark's inputs: cosines spread over [-0.5, 0.9] in a varied pattern of
    // the global column, and spread targets.
    let cosines = Array2::from_shape_fn((n_rows, columns.len()), |(row, local)| {
        let col = (columns.start + local) as u64;
        let hash = (row as u64 * 2_654_435_761 + col * 40_503) % 10_007;
        -0.5 + 1.4 * hash as f32 / 10_007.0
    });
    let targets: Vec<usize> = (0..n_rows).map(|row| (row * 7_919) % n_classes).collect();
    let targets = Targets::new(&targets);
    let config = SvSoftmax::sv_am(64.0, 0.35, 1.2)?;
    let mut grad = Array2::<f32>::zeros(cosines.dim());
    let mut out = Forward::default();

    let sharded = time_steps(&world, steps, || {
        shard.forward_backward_into(
            &config,
            cosines.view(),
            &targets,
            Upstream::default(),
            grad.view_mut(),
            &mut out,
        )
    })?;
    let sharded_forward = time_steps(&world, steps, || {
        shard.forward_into(&config, cosines.view(), &targets, &mut out)
    })?;
    let n_ranks = world.size();
    if world.rank() == 0 {
        println!("{n_rows} x {n_classes} f32, {steps} steps after {WARMUP}");
        report(
            &format!("forward, sharded over {n_ranks} ranks"),
            &sharded_forward,
        );
        report(
            &format!("forward + backward, sharded over {n_ranks} ranks"),
            &sharded,
        );
        println!("  loss {:.6}", out.loss);
        let bytes = svsoftmax_mpi::payload_bytes(n_rows, true);
        println!("  payload each rank contributes per step: {bytes} bytes");
    }
    if n_ranks == 1 {
        let single_forward = time_steps(&world, steps, || {
            svsoftmax_ndarray::forward_into(&config, cosines.view(), &targets, &mut out)
        })?;
        report("forward, single-process ndarray engine", &single_forward);
        let single = time_steps(&world, steps, || {
            svsoftmax_ndarray::forward_backward_into(
                &config,
                cosines.view(),
                &targets,
                Upstream::default(),
                grad.view_mut(),
                &mut out,
            )
        })?;
        report("forward + backward, single-process ndarray engine", &single);
        println!("  loss {:.6}", out.loss);
    }
    Ok(())
}

/// The seconds of each of `steps` timed calls of `step` after the warm-up, as the slowest
/// rank saw them.
fn time_steps<C: Communicator>(
    world: &C,
    steps: usize,
    mut step: impl FnMut() -> Result<(), svsoftmax_core::Error>,
) -> Result<Vec<f64>, svsoftmax_core::Error> {
    let mut seconds = Vec::with_capacity(steps);
    for index in 0..WARMUP + steps {
        world.barrier();
        let started = Instant::now();
        step()?;
        let mine = started.elapsed().as_secs_f64();
        let mut slowest = 0.0;
        world.all_reduce_into(&mine, &mut slowest, SystemOperation::max());
        if index >= WARMUP {
            seconds.push(slowest);
        }
    }
    Ok(seconds)
}

fn report(what: &str, seconds: &[f64]) {
    let mut sorted = seconds.to_vec();
    sorted.sort_by(f64::total_cmp);
    let ms = |seconds: f64| seconds * 1e3;
    println!(
        "{what}: median {:.1} ms, fastest {:.1} ms, slowest {:.1} ms",
        ms(sorted[sorted.len() / 2]),
        ms(sorted[0]),
        ms(sorted[sorted.len() - 1]),
    );
}
