//! Both implementations, in f32 and f64, against the core's f64 reference through the
//! workspace's test kit: every margin kind, both indicators, both angular gradients, every
//! reduction, ignored rows and per-row upstream gradients, and inputs past ±1 for the
//! margins that accept them.

use proptest::test_runner::{Config, RngSeed, TestRunner};
use svsoftmax_core::{AngularGradient, Engine, Indicator, Margin};
use svsoftmax_dfdx::cpu_engines;
use svsoftmax_testkit::{cases, Case, Cosines, Errors};

/// The kit derives the tolerance from the engine's float type and the case (see
/// `svsoftmax_testkit::compare`): a few units of `E` times the logits' magnitude.
fn compare(engine: &dyn Engine, case: &Case) -> Result<(), proptest::test_runner::TestCaseError> {
    let mut errors = Errors::default();
    svsoftmax_testkit::compare(engine, case, &mut errors).map_err(|why| {
        proptest::test_runner::TestCaseError::fail(format!(
            "{}: {why}\n{case:?}\nreproduce: cargo test -p svsoftmax-dfdx --test differential",
            engine.name()
        ))
    })
}

/// A seeded runner: `PROPTEST_CASES` and `SVSOFTMAX_SEED` explore beyond what CI runs.
fn runner(cases: u32) -> TestRunner {
    let number = |name: &str| std::env::var(name).ok().and_then(|n| n.parse().ok());
    TestRunner::new(Config {
        cases: number("PROPTEST_CASES").map_or(cases, |n: u64| n as u32),
        rng_seed: RngSeed::Fixed(number("SVSOFTMAX_SEED").unwrap_or(0xdfd0_0001)),
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn every_implementation_matches_the_reference() {
    let margins = svsoftmax_testkit::margins()
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    let strategy = cases(
        margins,
        vec![Indicator::Adaptive, Indicator::Fixed],
        vec![AngularGradient::Exact, AngularGradient::StraightThrough],
        64.0,
        Cosines::Unit,
    );
    for engine in cpu_engines() {
        runner(120)
            .run(&strategy, |case| compare(engine.as_ref(), &case))
            .unwrap();
    }
}

#[test]
fn every_implementation_matches_the_reference_beyond_unit_cosines() {
    let strategy = cases(
        vec![Margin::None, Margin::additive(0.35)],
        vec![Indicator::Adaptive, Indicator::Fixed],
        vec![AngularGradient::Exact],
        8.0,
        Cosines::Wide,
    );
    for engine in cpu_engines() {
        runner(60)
            .run(&strategy, |case| compare(engine.as_ref(), &case))
            .unwrap();
    }
}
