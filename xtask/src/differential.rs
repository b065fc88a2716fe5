//! The cross-engine differential check: seeded random cases for every variant run on every
//! engine and dtype, each compared with the f64 reference, reported as a table.
//!
//! Cases keep every cosine `MASK_GAP` away from its row's target score, so that rounding
//! cannot flip the mask; dedicated tie rows check that every engine makes the same mask
//! where the score equals a cosine exactly.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use svsoftmax_core::reference::{self, Reference};
use svsoftmax_core::scalar::Pieces;
use svsoftmax_core::{
    BeyondPi, CosineMatrix, Engine, Indicator, Margin, Reduction, SvSoftmax, Targets, Upstream,
};
use svsoftmax_ndarray::NdarrayEngine;

/// The gap every cosine keeps from its row's target score (f32 moves a score by ~1e-6).
const MASK_GAP: f64 = 1e-3;

/// Widths around the ndarray kernel's 16 lanes and its 2048-column blocks.
const WIDTHS: [usize; 16] = [
    2, 3, 7, 15, 16, 17, 31, 32, 33, 64, 65, 100, 257, 2047, 2048, 2049,
];

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Line {
    pub engine: String,
    pub variant: String,
    pub cases: usize,
    pub max_abs: f64,
    pub max_rel: f64,
    pub failures: Vec<String>,
}

pub(crate) fn variants() -> Vec<(String, Margin, Indicator)> {
    let mut margins = vec![
        ("none".to_owned(), Margin::None),
        ("additive".to_owned(), Margin::additive(0.35)),
        ("multiplicative".to_owned(), Margin::multiplicative(4)),
        (
            "multiplicative-lambda".to_owned(),
            Margin::Multiplicative { m: 3, lambda: 2.0 },
        ),
    ];
    for beyond_pi in [BeyondPi::Clip, BeyondPi::Fallback, BeyondPi::Easy] {
        let name = beyond_pi.name();
        margins.push((
            format!("angular-{name}"),
            Margin::Angular { m: 0.5, beyond_pi },
        ));
        let combined = Margin::Combined {
            m1: 1.2,
            m2: 0.3,
            m3: 0.1,
            beyond_pi,
        };
        margins.push((format!("combined-{name}"), combined));
    }
    let mut variants = Vec::new();
    for (name, margin) in margins {
        for indicator in [Indicator::Adaptive, Indicator::Fixed] {
            variants.push((format!("{name}/{}", indicator.name()), margin, indicator));
        }
    }
    variants
}

/// The engines compared with the reference, and the float unit of each.
fn engines() -> Vec<(Box<dyn Engine>, f64)> {
    vec![
        (Box::new(NdarrayEngine::<f32>::new()), 2f64.powi(-24)),
        (Box::new(NdarrayEngine::<f64>::new()), f64::EPSILON),
    ]
}

#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub config: SvSoftmax,
    pub n_classes: usize,
    pub cosines: Vec<f64>,
    pub targets: Vec<Option<usize>>,
    pub upstream: Vec<f64>,
}

pub(crate) fn strategy(margin: Margin, indicator: Indicator) -> impl Strategy<Value = Case> {
    let reductions = vec![Reduction::Mean, Reduction::Sum, Reduction::None];
    let widths = prop_oneof![proptest::sample::select(WIDTHS.to_vec()), 2usize..300];
    (
        proptest::sample::select(reductions),
        1.0..=64.0f64,
        1.0..=1.5f64,
        1usize..=5,
        widths,
    )
        .prop_flat_map(move |(reduction, scale, t, n_rows, n_classes)| {
            let config = SvSoftmax::builder()
                .scale(scale)
                .t(t)
                .margin(margin)
                .indicator(indicator)
                .reduction(reduction)
                .build()
                .expect("the variants are valid");
            let cosine =
                prop_oneof![9 => -1.0..=1.0f64, 1 => proptest::sample::select(vec![-1.0, 1.0])];
            (
                Just(config),
                Just(n_classes),
                proptest::collection::vec(cosine, n_rows * n_classes),
                proptest::collection::vec(proptest::option::weighted(0.9, 0..n_classes), n_rows),
                proptest::collection::vec(-2.0..2.0f64, n_rows),
            )
        })
        .prop_map(|(config, n_classes, mut cosines, targets, upstream)| {
            keep_off_the_boundary(&config, n_classes, &mut cosines, &targets);
            Case {
                config,
                n_classes,
                cosines,
                targets,
                upstream,
            }
        })
}

fn keep_off_the_boundary(
    config: &SvSoftmax,
    n_classes: usize,
    cosines: &mut [f64],
    targets: &[Option<usize>],
) {
    let pieces = Pieces::<f64>::new(config).expect("f64 holds every valid configuration");
    for (row, target) in targets.iter().enumerate() {
        let Some(target) = *target else { continue };
        let values = &mut cosines[row * n_classes..][..n_classes];
        let score = pieces.target_logit(values[target]).score;
        for (k, value) in values.iter_mut().enumerate() {
            if k != target && (*value - score).abs() < MASK_GAP {
                let away = if score > 0.0 {
                    score - 2.0 * MASK_GAP
                } else {
                    score + 2.0 * MASK_GAP
                };
                *value = away.clamp(-1.0, 1.0);
            }
        }
    }
}

/// Runs `cases` cases per variant from `seed` and returns one line per engine and variant.
pub fn run(seed: u64, cases: usize) -> Vec<Line> {
    let engines = engines();
    let mut lines = Vec::new();
    for (variant_index, (variant, margin, indicator)) in variants().into_iter().enumerate() {
        let mut runner = TestRunner::new(Config {
            rng_seed: RngSeed::Fixed(seed.wrapping_add(variant_index as u64)),
            ..Config::default()
        });
        let drawn: Vec<Case> = (0..cases)
            .map(|_| {
                strategy(margin, indicator)
                    .new_tree(&mut runner)
                    .expect("no rejections")
                    .current()
            })
            .collect();
        for (engine, unit) in &engines {
            let mut line = Line {
                engine: engine.name().to_owned(),
                variant: variant.clone(),
                cases: drawn.len(),
                max_abs: 0.0,
                max_rel: 0.0,
                failures: Vec::new(),
            };
            for (index, case) in drawn.iter().enumerate() {
                if let Err(why) = compare(engine.as_ref(), *unit, case, &mut line) {
                    line.failures.push(format!("case {index}: {why}"));
                }
            }
            lines.push(line);
        }
    }
    lines.extend(ties(&engines));
    lines
}

pub(crate) fn upstream(case: &Case) -> Upstream<'_> {
    match case.config.reduction() {
        Reduction::None => Upstream::Rows(&case.upstream),
        Reduction::Mean | Reduction::Sum => Upstream::Scalar(0.75),
    }
}

/// Compares one case; the tolerance follows the dtype and the case's logits and slopes.
fn compare(engine: &dyn Engine, unit: f64, case: &Case, line: &mut Line) -> Result<(), String> {
    let n_rows = case.targets.len();
    let cosines =
        CosineMatrix::new(&case.cosines, n_rows, case.n_classes).map_err(|e| e.to_string())?;
    let targets = Targets::with_ignored(case.targets.clone());
    let expected = Reference
        .forward_backward(&case.config, cosines, &targets, upstream(case))
        .map_err(|e| e.to_string())?;
    let actual = engine
        .forward_backward(&case.config, cosines, &targets, upstream(case))
        .map_err(|e| e.to_string())?;

    // The engine's rounding (its dtype's unit, a few hundred ulps over a row's sums) moves a
    // logit by up to 2 s t units when the cosine is rounded; an entry of the gradient moves by
    // that times its slope, which the angular margins make as steep as s / sin 2^-12.
    let rows = reference::breakdown(&case.config, cosines, &targets).map_err(|e| e.to_string())?;
    let largest = |pick: fn(&reference::RowBreakdown) -> &Vec<f64>| {
        rows.iter()
            .flatten()
            .flat_map(pick)
            .fold(0.0f64, |m, v| m.max(v.abs()))
    };
    let (max_logit, max_slope) = (largest(|row| &row.logits), largest(|row| &row.slopes));
    let scale = case.config.scale() * case.config.t();
    let room = if unit > 1e-10 { 4.0 * 4.0 * 2.0 } else { 1e4 };
    let loss_abs = room * unit * (1.0 + scale + max_logit);
    let grad_abs = room * unit * (1.0 + scale + max_logit) * max_slope * 2.0;
    let rel = room * unit * 10.0;

    let mut check = |what: &str, a: f64, e: f64, abs: f64| -> Result<(), String> {
        let error = (a - e).abs();
        line.max_abs = line.max_abs.max(error);
        if e.abs() > abs {
            line.max_rel = line.max_rel.max(error / e.abs());
        }
        if error <= abs + rel * e.abs() {
            Ok(())
        } else {
            Err(format!(
                "{what}: {a} vs reference {e} (tolerance {abs:.1e} + {rel:.1e} rel)"
            ))
        }
    };
    check("loss", actual.forward.loss, expected.forward.loss, loss_abs)?;
    for (row, (a, e)) in actual
        .forward
        .row_losses
        .iter()
        .zip(&expected.forward.row_losses)
        .enumerate()
    {
        check(&format!("row {row} loss"), *a, *e, loss_abs)?;
    }
    for (i, (a, e)) in actual
        .grad_cosines
        .iter()
        .zip(&expected.grad_cosines)
        .enumerate()
    {
        check(
            &format!("grad ({}, {})", i / case.n_classes, i % case.n_classes),
            *a,
            *e,
            grad_abs,
        )?;
    }
    for (row, (a, e)) in actual
        .forward
        .diagnostics
        .iter()
        .zip(&expected.forward.diagnostics)
        .enumerate()
    {
        let (a, e) = (a.map(|d| d.support_vectors), e.map(|d| d.support_vectors));
        if a != e {
            return Err(format!(
                "row {row}: support vectors {a:?} vs reference {e:?}"
            ));
        }
    }
    Ok(())
}

/// Rows whose target score equals a cosine exactly in every dtype: the masks must agree.
fn ties(engines: &[(Box<dyn Engine>, f64)]) -> Vec<Line> {
    // 0.75 - 0.25 = 0.5 and 0.625 - 0.25 = 0.375 exactly in f32 and f64.
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
    let expected = reference::forward(&config, cosines, &targets).expect("valid");
    engines
        .iter()
        .map(|(engine, _)| {
            let mut failures = Vec::new();
            match engine.forward(&config, cosines, &targets) {
                Ok(actual)
                    if actual.diagnostics == expected.diagnostics
                        || same_masks(&actual, &expected) => {}
                Ok(actual) => failures.push(format!(
                    "masks {:?} vs {:?}",
                    actual.diagnostics, expected.diagnostics
                )),
                Err(error) => failures.push(error.to_string()),
            }
            Line {
                engine: engine.name().to_owned(),
                variant: "ties/additive".to_owned(),
                cases: 1,
                max_abs: 0.0,
                max_rel: 0.0,
                failures,
            }
        })
        .collect()
}

fn same_masks(a: &svsoftmax_core::Forward, b: &svsoftmax_core::Forward) -> bool {
    let counts = |f: &svsoftmax_core::Forward| -> Vec<Option<usize>> {
        f.diagnostics
            .iter()
            .map(|d| d.map(|d| d.support_vectors))
            .collect()
    };
    counts(a) == counts(b)
}

/// Prints the table and the failures; returns whether every line passed.
pub fn report(lines: &[Line], seed: u64, cases: usize) -> bool {
    println!(
        "{:<14} {:<32} {:>6} {:>10} {:>10}  result",
        "engine", "variant", "cases", "max abs", "max rel"
    );
    for line in lines {
        let verdict = if line.failures.is_empty() {
            "pass"
        } else {
            "FAIL"
        };
        println!(
            "{:<14} {:<32} {:>6} {:>10.2e} {:>10.2e}  {verdict}",
            line.engine, line.variant, line.cases, line.max_abs, line.max_rel
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
