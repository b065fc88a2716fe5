//! The cross-engine differential check: seeded random cases for every variant run on every
//! engine and dtype, each compared with the f64 reference by the test kit's
//! `svsoftmax_testkit::compare`, reported as a table. Dedicated tie rows check that every
//! engine makes the same mask where a target score equals a cosine exactly.

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngSeed, TestRunner};
use svsoftmax_core::{reference, CosineMatrix, Engine, Margin, SvSoftmax, Targets};
use svsoftmax_ndarray::NdarrayEngine;
use svsoftmax_testkit::{Case, Errors};

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Line {
    pub engine: String,
    pub variant: String,
    pub cases: usize,
    pub errors: Errors,
    pub failures: Vec<String>,
}

/// The engines compared with the reference.
fn engines() -> Vec<Box<dyn Engine>> {
    let mut engines: Vec<Box<dyn Engine>> = vec![
        Box::new(NdarrayEngine::<f32>::new()),
        Box::new(NdarrayEngine::<f64>::new()),
    ];
    engines.extend(svsoftmax_dfdx::cpu_engines());
    engines
}

/// `cases` seeded cases of every variant, in the order of `svsoftmax_testkit::variants`.
pub fn draw(seed: u64, cases: usize) -> Vec<(String, Vec<Case>)> {
    svsoftmax_testkit::variants()
        .into_iter()
        .enumerate()
        .map(|(index, variant)| {
            let mut runner = TestRunner::new(Config {
                rng_seed: RngSeed::Fixed(seed.wrapping_add(index as u64)),
                ..Config::default()
            });
            let strategy = variant.cases();
            let drawn = (0..cases)
                .map(|_| {
                    strategy
                        .new_tree(&mut runner)
                        .expect("no rejections")
                        .current()
                })
                .collect();
            (variant.name, drawn)
        })
        .collect()
}

/// Runs `cases` cases per variant from `seed` and returns one line per engine and variant.
pub fn run(seed: u64, cases: usize) -> Vec<Line> {
    let engines = engines();
    let mut lines = Vec::new();
    for (variant, drawn) in draw(seed, cases) {
        for engine in &engines {
            let mut line = Line {
                engine: engine.name().to_owned(),
                variant: variant.clone(),
                cases: drawn.len(),
                errors: Errors::default(),
                failures: Vec::new(),
            };
            for (index, case) in drawn.iter().enumerate() {
                if let Err(why) =
                    svsoftmax_testkit::compare(engine.as_ref(), case, &mut line.errors)
                {
                    line.failures.push(format!("case {index}: {why}"));
                }
            }
            lines.push(line);
        }
    }
    lines.extend(engines.iter().map(|engine| ties(engine.as_ref())));
    lines
}

/// Rows whose target score equals a cosine exactly in f32 and f64 alike (0.75 - 0.25 = 0.5,
/// 0.625 - 0.25 = 0.375): the engine's masks must be the reference's.
fn ties(engine: &dyn Engine) -> Line {
    let config = SvSoftmax::builder()
        .scale(32.0)
        .margin(Margin::additive(0.25))
        .build()
        .expect("valid");
    let data = [
        0.75, 0.5, -0.25, 0.5, 0.375, 0.625, 0.375, 0.1, 0.5, 0.5, 0.5, 0.5,
    ];
    let cosines = CosineMatrix::new(&data, 3, 4).expect("3 x 4");
    let targets = Targets::new(&[0, 2, 1]);
    let counts = |forward: &svsoftmax_core::Forward| -> Vec<Option<usize>> {
        forward
            .diagnostics
            .iter()
            .map(|d| d.map(|d| d.support_vectors))
            .collect()
    };
    let expected = counts(&reference::forward(&config, cosines, &targets).expect("valid"));
    let failures = match engine.forward(&config, cosines, &targets) {
        Ok(actual) if counts(&actual) == expected => vec![],
        Ok(actual) => vec![format!(
            "support vectors {:?} vs {expected:?}",
            counts(&actual)
        )],
        Err(error) => vec![error.to_string()],
    };
    Line {
        engine: engine.name().to_owned(),
        variant: "ties/additive".to_owned(),
        cases: 1,
        errors: Errors::default(),
        failures,
    }
}

/// Prints the table and the failures; returns whether every line passed.
pub fn report(lines: &[Line], seed: u64, cases: usize) -> bool {
    println!("reference: f64 (the baseline every line is compared with)");
    println!(
        "{:<18} {:<32} {:>6} {:>10} {:>10}  result",
        "engine", "variant", "cases", "max abs", "max rel"
    );
    for line in lines {
        let verdict = if line.failures.is_empty() {
            "pass"
        } else {
            "FAIL"
        };
        println!(
            "{:<18} {:<32} {:>6} {:>10.2e} {:>10.2e}  {verdict}",
            line.engine, line.variant, line.cases, line.errors.max_abs, line.errors.max_rel
        );
    }
    let failed: Vec<&Line> = lines
        .iter()
        .filter(|line| !line.failures.is_empty())
        .collect();
    for line in &failed {
        for failure in line.failures.iter().take(3) {
            println!("FAIL {} {}: {failure}", line.engine, line.variant);
        }
    }
    if !failed.is_empty() {
        println!("reproduce with: cargo xtask differential --seed {seed} --cases {cases}");
    }
    failed.is_empty()
}
