//! `svsoftmax-mpi-check`: the sharded loss over this MPI job's ranks against the
//! single-process engine, for every case of the self-check and every bad input; run it
//! under `mpirun` with any number of ranks. It prints a summary on rank 0, each failure on
//! the rank that saw it, and exits non-zero if any rank failed.

use std::process::ExitCode;

use mpi::collective::SystemOperation;
use mpi::traits::{Communicator, CommunicatorCollectives};
use ndarray::Array2;
use num_traits::Zero;
use svsoftmax_core::Forward;
use svsoftmax_mpi::ColumnShard;
use svsoftmax_ndarray::Element;

// The cases and comparisons the crate's unit tests run over threads.
#[allow(dead_code)]
#[path = "../check.rs"]
mod check;

use check::{BadInput, Case, Tolerance};

const SEED: u64 = 0x5eed_0107;

fn main() -> ExitCode {
    let Some(universe) = mpi::initialize() else {
        eprintln!("svsoftmax-mpi-check: MPI was initialized before");
        return ExitCode::FAILURE;
    };
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);

    let mut outcomes = Vec::new();
    for case in check::cases(size, SEED + size as u64) {
        outcomes.push((
            format!("{} (f64)", case.name),
            sharded::<f64, _>(&world, &case),
        ));
        outcomes.push((
            format!("{} (f32)", case.name),
            sharded::<f32, _>(&world, &case),
        ));
    }
    for bad in check::bad_inputs(size, SEED) {
        outcomes.push((bad.name.to_string(), rejected(&world, &bad)));
    }

    let mut failed = 0;
    for (name, outcome) in &outcomes {
        // A case fails if it failed on any rank.
        let mine = u64::from(outcome.is_err());
        let mut any = 0u64;
        world.all_reduce_into(&mine, &mut any, SystemOperation::max());
        if let Err(message) = outcome {
            eprintln!("rank {rank}: {name}: {message}");
        }
        failed += any;
    }
    if rank == 0 {
        let passed = outcomes.len() as u64 - failed;
        println!("svsoftmax-mpi-check on {size} ranks: {passed} passed, {failed} failed");
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// This rank's shard of `case` through MPI, against the single-process engine.
fn sharded<E: Element, C: Communicator>(world: &C, case: &Case) -> Result<(), String> {
    let rank = world.rank() as usize;
    let block = case.block::<E>(rank);
    let mut grad = Array2::from_elem(block.dim(), E::store(Zero::zero()));
    let mut out = Forward::default();
    let mut shard = ColumnShard::new(world, case.splits[rank].clone());
    shard
        .forward_backward_into(
            &case.config,
            block.view(),
            &case.targets,
            case.upstream(),
            grad.view_mut(),
            &mut out,
        )
        .map_err(|error| format!("unexpected error: {error}"))?;

    // Every rank must hold the very same loss.
    let mut losses = vec![0u64; world.size() as usize];
    world.all_gather_into(&out.loss.to_bits(), &mut losses[..]);
    if losses.iter().any(|&bits| bits != losses[0]) {
        return Err(format!("the ranks' losses differ: {losses:?}"));
    }
    let (expected, expected_grad) = check::single_process::<E>(case).map_err(|e| e.to_string())?;
    let tolerance = Tolerance::new::<E::Real>(&case.config, case.cosines.ncols());
    let view = expected_grad.view();
    check::compare(case, rank, &out, grad.view(), &expected, view, tolerance)
}

/// This rank's part of a bad input: the step must fail with the expected error.
fn rejected<C: Communicator>(world: &C, bad: &BadInput) -> Result<(), String> {
    let input = &bad.inputs[world.rank() as usize];
    let block = input.block::<f64>();
    let mut grad = Array2::zeros(input.grad_shape);
    let mut out = Forward::default();
    let mut shard = ColumnShard::new(world, input.columns.clone());
    let result = shard.forward_backward_into(
        &bad.case.config,
        block.view(),
        &input.targets,
        bad.case.upstream(),
        grad.view_mut(),
        &mut out,
    );
    match result {
        Err(error) if error.to_string() == bad.expected => Ok(()),
        Err(error) => Err(format!("error {error}, expected {}", bad.expected)),
        Ok(()) => Err(format!("no error, expected {}", bad.expected)),
    }
}
