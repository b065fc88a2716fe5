//! The sharded loss over real MPI ranks: `svsoftmax-mpi-check` under
//! `mpirun -np N` for N = 1 to 4, which compares every rank's result with the
//! single-process engine and fails the job on any difference.

use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

/// The flags of every launch, kept here and copied into the crate's README. As root (CI,
/// containers) Open MPI refuses to start without `--allow-run-as-root`; on a 2-core machine
/// 3 and 4 ranks need `--oversubscribe`; and the shared-memory transport's single-copy
/// mechanism (CMA) is switched off because containers commonly forbid the
/// `process_vm_readv` it relies on, and messages of O(batch) gain nothing from it.
const LAUNCH: &[&str] = &[
    "--allow-run-as-root",
    "--oversubscribe",
    "--mca",
    "btl_vader_single_copy_mechanism",
    "none",
];

/// One job at a time: the harness runs tests in parallel, and 4 + 3 + 2 + 1 processes on
/// two cores would only slow each other down.
static ONE_JOB: Mutex<()> = Mutex::new(());

fn check_on(n_ranks: usize) {
    let _job = ONE_JOB
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let started = Instant::now();
    let output = Command::new("mpirun")
        .args(LAUNCH)
        .args(["-np", &n_ranks.to_string()])
        .arg(env!("CARGO_BIN_EXE_svsoftmax-mpi-check"))
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run mpirun ({error}): the MPI tests need Open MPI's launcher; install \
                 Debian's openmpi-bin and libopenmpi-dev (CI's .ci/run does)"
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "{n_ranks} ranks in {:.1?}:\n{stdout}{stderr}",
        started.elapsed()
    );
    assert!(
        output.status.success(),
        "mpirun -np {n_ranks} failed: {}",
        output.status
    );
    let summary = format!("svsoftmax-mpi-check on {n_ranks} ranks: ");
    let line = stdout
        .lines()
        .find(|line| line.starts_with(&summary))
        .unwrap_or_else(|| panic!("no summary from rank 0 of {n_ranks}"));
    assert!(line.ends_with(" 0 failed"), "{line}");
}

#[test]
fn one_rank() {
    check_on(1);
}

#[test]
fn two_ranks() {
    check_on(2);
}

#[test]
fn three_ranks() {
    check_on(3);
}

#[test]
fn four_ranks() {
    check_on(4);
}
