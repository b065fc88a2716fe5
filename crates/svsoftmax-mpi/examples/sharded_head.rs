//! A training step of a cosine classifier head whose classes are sharded across MPI ranks:
//! each rank owns the weights of its classes, computes their cosines with the (replicated)
//! embeddings, and gets the loss and its slice of the gradient from `ColumnShard`; it then
//! updates its own weights, and all ranks sum their parts of the embeddings' gradient with
//! one all-reduce. Launch it with
//!
//! ```sh
//! cargo build --release -p svsoftmax-mpi --example sharded_head
//! mpirun -np 2 target/release/examples/sharded_head
//! ```
//!
//! (as root add `--allow-run-as-root`, and `--oversubscribe` for more ranks than cores).
//! In a real model the embeddings come from a backbone that would take their gradient;
//! here they are trained directly, so that the example stands alone.

use mpi::collective::SystemOperation;
use mpi::traits::{Communicator, CommunicatorCollectives};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use svsoftmax_core::{Forward, SvSoftmax, Targets, Upstream};
use svsoftmax_mpi::ColumnShard;

const N_CLASSES: usize = 1_000;
const DIM: usize = 64;
const BATCH: usize = 128;
const STEPS: usize = 20;
const LEARNING_RATE: f32 = 0.5;

fn main() -> Result<(), svsoftmax_core::Error> {
    let universe = mpi::initialize().expect("MPI is initialized once");
    let world = universe.world();
    let mut shard = ColumnShard::even(&world, N_CLASSES);
    let columns = shard.columns();

    // This rank's weights, one column per class it owns; drawn from the class index so
    // that the model is the same however it is split.
    let mut weights = Array2::from_shape_fn((DIM, columns.len()), |(d, local)| {
        noise((columns.start + local) as u64 * DIM as u64 + d as u64)
    });
    // The embeddings and targets are the same on every rank.
    let mut embeddings = Array2::from_shape_fn((BATCH, DIM), |(row, d)| {
        noise(1 << 40 | (row * DIM + d) as u64)
    });
    let targets: Vec<usize> = (0..BATCH).map(|row| (row * 7_919) % N_CLASSES).collect();
    let targets = Targets::new(&targets);
    let config = SvSoftmax::sv_am(32.0, 0.35, 1.2)?;

    let mut grad_cosines = Array2::<f32>::zeros((BATCH, columns.len()));
    let mut out = Forward::default();
    for step in 0..STEPS {
        // Forward: cosines between unit embeddings and unit class weights.
        let (unit_embeddings, embedding_norms) = normalize_rows(embeddings.view());
        let (unit_weights_t, weight_norms) = normalize_rows(weights.t());
        let cosines = unit_embeddings.dot(&unit_weights_t.t());
        shard.forward_backward_into(
            &config,
            cosines.view(),
            &targets,
            Upstream::default(),
            grad_cosines.view_mut(),
            &mut out,
        )?;
        if world.rank() == 0 {
            println!("step {step:2}: loss {:.4}", out.loss);
        }

        // Backward through the cosines: this rank's classes give its weights' gradient in
        // full, and its share of the embeddings' gradient, which the ranks sum.
        let grad_unit_weights_t = grad_cosines.t().dot(&unit_embeddings);
        let partial = grad_cosines.dot(&unit_weights_t);
        let mut grad_unit_embeddings = Array2::<f32>::zeros(partial.dim());
        world.all_reduce_into(
            partial.as_slice().expect("a new array is contiguous"),
            grad_unit_embeddings
                .as_slice_mut()
                .expect("a new array is contiguous"),
            SystemOperation::sum(),
        );

        // Backward through the normalizations, then plain SGD.
        let grad_weights_t =
            through_normalization(unit_weights_t.view(), &weight_norms, grad_unit_weights_t);
        let grad_embeddings = through_normalization(
            unit_embeddings.view(),
            &embedding_norms,
            grad_unit_embeddings,
        );
        weights.scaled_add(-LEARNING_RATE, &grad_weights_t.t());
        embeddings.scaled_add(-LEARNING_RATE, &grad_embeddings);
    }
    Ok(())
}

/// The rows of `matrix` divided by their norms, and the norms.
fn normalize_rows(matrix: ArrayView2<'_, f32>) -> (Array2<f32>, Array1<f32>) {
    let norms = matrix.map_axis(Axis(1), |row| row.dot(&row).sqrt().max(f32::MIN_POSITIVE));
    let unit = &matrix / &norms.view().insert_axis(Axis(1));
    (unit, norms)
}

/// The gradient with respect to `v` of a loss whose gradient with respect to `v / |v|` is
/// `grad`, row by row: `(g - u (u · g)) / |v|` with `u = v / |v|`.
fn through_normalization(
    unit: ArrayView2<'_, f32>,
    norms: &Array1<f32>,
    grad: Array2<f32>,
) -> Array2<f32> {
    let along = (&unit * &grad).sum_axis(Axis(1)).insert_axis(Axis(1));
    (&grad - &(&unit * &along)) / norms.view().insert_axis(Axis(1))
}

/// A value in [-1, 1) from a 64-bit hash of `seed` (SplitMix64's finalizer).
fn noise(seed: u64) -> f32 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}
