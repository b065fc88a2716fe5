//! `cargo xtask`: the workspace's verification, run by maintainers before they accept a
//! change to the math and by CI. It orchestrates cargo and holds no math of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

mod differential;
mod eval;
mod gradients;

#[derive(Parser)]
#[command(about = "Verification tasks of the svsoftmax workspace")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Format, lint, test, and check the golden snapshots, cheapest first.
    Verify {
        /// Fewer random cases, for a quick local run.
        #[arg(long)]
        quick: bool,
        /// Stop at the first failing stage instead of running them all.
        #[arg(long)]
        fail_fast: bool,
    },
    /// Run the cross-engine differential check and print its table.
    Differential {
        /// The seed of the random cases.
        #[arg(long, default_value_t = DIFFERENTIAL_SEED)]
        seed: u64,
        /// Cases per variant.
        #[arg(long, default_value_t = DIFFERENTIAL_CASES)]
        cases: usize,
    },
    /// Check every f64 engine's gradient against central finite differences.
    Gradients {
        /// The seed of the random cases.
        #[arg(long, default_value_t = DIFFERENTIAL_SEED)]
        seed: u64,
        /// Cases per variant.
        #[arg(long, default_value_t = GRADIENT_CASES)]
        cases: usize,
    },
    /// Evaluate a JSON list of cases on one engine and write the results as JSON.
    Eval {
        /// reference, ndarray-f32, ndarray-f64, dfdx-cpu-f32, dfdx-cpu-f64 or dfdx-cuda-f32.
        #[arg(long)]
        engine: String,
        /// The cases file.
        #[arg(long)]
        cases: PathBuf,
        /// Where to write the results; standard output without it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The differential check's defaults: what `verify` runs, and `--quick` a tenth of it.
const DIFFERENTIAL_SEED: u64 = 0x5f5f_d1ff;
const DIFFERENTIAL_CASES: usize = 60;
const GRADIENT_CASES: usize = 10;

/// What a stage runs: a cargo command, or a check in this process.
enum Action {
    Differential {
        cases: usize,
    },
    Gradients {
        cases: usize,
    },
    Cargo {
        args: &'static [&'static str],
        env: Vec<(&'static str, String)>,
    },
    NoPendingSnapshots,
}

struct Stage {
    name: &'static str,
    action: Action,
    /// What to tell the user when the stage fails.
    hint: &'static str,
}

const SNAPSHOT_HINT: &str =
    "a snapshot is missing or changed: review it with `cargo insta review` \
    (from `cargo install cargo-insta`), or accept it with `INSTA_UPDATE=always cargo test -p \
    svsoftmax-core` and read `git diff golden/ crates/*/tests/snapshots/` before committing";

fn stages(quick: bool) -> Vec<Stage> {
    // Snapshots are never written during verification: a missing or changed one fails.
    let check_snapshots = || {
        let mut env = vec![
            ("INSTA_UPDATE", "no".to_owned()),
            ("INSTA_FORCE_PASS", "0".to_owned()),
        ];
        if quick {
            env.push(("PROPTEST_CASES", "32".to_owned()));
        }
        env
    };
    vec![
        Stage {
            name: "fmt",
            action: Action::Cargo {
                args: &["fmt", "--all", "--", "--check"],
                env: vec![],
            },
            hint: "run `cargo fmt --all`",
        },
        Stage {
            name: "clippy",
            action: Action::Cargo {
                args: &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
                env: vec![],
            },
            hint: "fix the lints above",
        },
        Stage {
            name: "tests",
            action: Action::Cargo {
                args: &["test", "--workspace", "--no-fail-fast"],
                env: check_snapshots(),
            },
            hint: "a failing test prints its case above (every random test has a fixed seed, \
                so rerunning the same command reproduces it); a failing snapshot assertion \
                means a snapshot is missing or changed, see the golden snapshots stage",
        },
        Stage {
            name: "ndarray half feature",
            action: Action::Cargo {
                args: &[
                    "test",
                    "-p",
                    "svsoftmax-ndarray",
                    "--features",
                    "half",
                    "--test",
                    "half",
                ],
                env: check_snapshots(),
            },
            hint: "the f16 / bf16 path of the ndarray engine fails its tests above",
        },
        Stage {
            name: "ndarray without rayon",
            action: Action::Cargo {
                args: &[
                    "clippy",
                    "-p",
                    "svsoftmax-ndarray",
                    "--no-default-features",
                    "--lib",
                    "--",
                    "-D",
                    "warnings",
                ],
                env: vec![],
            },
            hint: "the ndarray engine must build, free of warnings, without its `rayon` feature",
        },
        Stage {
            name: "dfdx cuda check",
            action: Action::Cargo {
                // dfdx's `ci-check` type-checks the Cuda device without nvcc or a GPU.
                args: &[
                    "clippy",
                    "-p",
                    "svsoftmax-dfdx",
                    "--features",
                    "cuda,ci-check",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
                env: vec![],
            },
            hint: "the dfdx engine's Cuda path must type-check (and be free of warnings) with \
                `--features cuda,ci-check`",
        },
        Stage {
            name: "differential report",
            action: Action::Differential {
                cases: if quick {
                    DIFFERENTIAL_CASES / 10
                } else {
                    DIFFERENTIAL_CASES
                },
            },
            hint: "an engine disagrees with the reference: the table and the command above \
                reproduce it",
        },
        Stage {
            name: "finite differences",
            action: Action::Gradients {
                cases: if quick {
                    GRADIENT_CASES / 5
                } else {
                    GRADIENT_CASES
                },
            },
            hint: "an f64 engine's gradient disagrees with its own finite differences: the \
                table and the command above reproduce it",
        },
        Stage {
            name: "symbolic",
            action: Action::Cargo {
                // `--nocapture` shows the test's table of errors per variant.
                args: &[
                    "test",
                    "--workspace",
                    "--test",
                    "symbolic",
                    "--",
                    "--nocapture",
                ],
                env: check_snapshots(),
            },
            hint: "a symbolic derivative disagrees with the reference, or a formula snapshot in \
                golden/symbolic/ changed (review it as the golden snapshots below)",
        },
        Stage {
            name: "golden snapshots",
            action: Action::Cargo {
                // `--workspace` reuses the build of the tests stage.
                args: &[
                    "test",
                    "--workspace",
                    "--test",
                    "notebook",
                    "--test",
                    "errors",
                ],
                env: check_snapshots(),
            },
            hint: SNAPSHOT_HINT,
        },
        Stage {
            name: "no pending snapshots",
            action: Action::NoPendingSnapshots,
            hint: "delete or review the `.snap.new` files listed above",
        },
    ]
}

struct Outcome {
    name: &'static str,
    passed: bool,
    elapsed: Duration,
}

fn main() -> ExitCode {
    match Cli::parse().task {
        Task::Verify { quick, fail_fast } => verify(quick, fail_fast),
        Task::Differential { seed, cases } => {
            let lines = differential::run(seed, cases);
            if differential::report(&lines, seed, cases) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Task::Gradients { seed, cases } => {
            let lines = gradients::run(seed, cases);
            if gradients::report(&lines, seed, cases) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Task::Eval { engine, cases, out } => match run_eval(&engine, &cases, out.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_eval(engine: &str, cases: &Path, out: Option<&Path>) -> Result<(), String> {
    let engine = eval::engine(engine)?;
    let text = std::fs::read_to_string(cases)
        .map_err(|error| format!("cannot read {}: {error}", cases.display()))?;
    let cases: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| format!("{} is not JSON: {error}", cases.display()))?;
    let results = eval::evaluate_all(engine.as_ref(), &cases)?;
    let text = serde_json::to_string_pretty(&results).expect("JSON values serialize");
    match out {
        Some(path) => std::fs::write(path, text + "\n")
            .map_err(|error| format!("cannot write {}: {error}", path.display())),
        None => {
            use std::io::Write;
            // A closed pipe (`| head`) is the reader's choice, not an error of ours.
            match writeln!(std::io::stdout().lock(), "{text}") {
                Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(format!("cannot write the results: {error}"))
                }
                _ => Ok(()),
            }
        }
    }
}

fn verify(quick: bool, fail_fast: bool) -> ExitCode {
    let root = workspace_root();
    let mut outcomes = Vec::new();
    for stage in stages(quick) {
        println!("\n==> {}", stage.name);
        let start = Instant::now();
        let passed = run(&stage.action, &root);
        let elapsed = start.elapsed();
        let verdict = if passed { "ok" } else { "FAILED" };
        println!(
            "==> {}: {verdict} in {:.1} s",
            stage.name,
            elapsed.as_secs_f64()
        );
        if !passed {
            println!("    hint: {}", stage.hint);
        }
        outcomes.push(Outcome {
            name: stage.name,
            passed,
            elapsed,
        });
        if !passed && fail_fast {
            break;
        }
    }
    summarize(&outcomes)
}

fn summarize(outcomes: &[Outcome]) -> ExitCode {
    println!("\nverify summary");
    println!("{:<24} {:>8} {:>10}", "stage", "result", "seconds");
    for outcome in outcomes {
        let verdict = if outcome.passed { "ok" } else { "FAILED" };
        println!(
            "{:<24} {verdict:>8} {:>10.1}",
            outcome.name,
            outcome.elapsed.as_secs_f64()
        );
    }
    let failed = outcomes.iter().filter(|outcome| !outcome.passed).count();
    let total: f64 = outcomes
        .iter()
        .map(|outcome| outcome.elapsed.as_secs_f64())
        .sum();
    println!("{:<24} {:>8} {total:>10.1}", "total", "");
    // The last line is the plain "N passed, N failed" that CI logs are read for.
    println!(
        "verify: {} passed, {failed} failed",
        outcomes.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(action: &Action, root: &Path) -> bool {
    match action {
        Action::Cargo { args, env } => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let status = Command::new(cargo)
                .args(*args)
                .envs(env.iter().map(|(key, value)| (key, value)))
                .current_dir(root)
                .status();
            match status {
                Ok(status) => status.success(),
                Err(error) => {
                    println!("could not start cargo: {error}");
                    false
                }
            }
        }
        Action::Differential { cases } => {
            let lines = differential::run(DIFFERENTIAL_SEED, *cases);
            differential::report(&lines, DIFFERENTIAL_SEED, *cases)
        }
        Action::Gradients { cases } => {
            let lines = gradients::run(DIFFERENTIAL_SEED, *cases);
            gradients::report(&lines, DIFFERENTIAL_SEED, *cases)
        }
        Action::NoPendingSnapshots => {
            let pending: Vec<PathBuf> = ["golden", "crates"]
                .iter()
                .flat_map(|dir| pending_snapshots(&root.join(dir)))
                .collect();
            for path in &pending {
                println!("pending snapshot: {}", path.display());
            }
            pending.is_empty()
        }
    }
}

/// `.snap.new` files under `dir`: insta writes them when a snapshot changes outside CI, and
/// one left behind means a change nobody reviewed.
fn pending_snapshots(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                pending_snapshots(&path)
            } else if path.to_string_lossy().ends_with(".snap.new") {
                vec![path]
            } else {
                Vec::new()
            }
        })
        .collect()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_owned()
}
