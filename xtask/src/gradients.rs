//! Central finite differences of every f64 engine's loss against its own analytic gradient.
//!
//! The loss jumps where a column crosses the mask boundary and kinks where the target score
//! changes branch, so a coordinate is skipped when its two probes see different support-
//! vector counts or different target-score slopes; the report counts the skips, and a run
//! that checks too little fails.

use svsoftmax_core::reference::Reference;
use svsoftmax_core::scalar::Pieces;
use svsoftmax_core::{AngularGradient, CosineMatrix, Engine, Reduction, Targets};
use svsoftmax_dfdx::{DfdxEngine, Implementation};
use svsoftmax_ndarray::NdarrayEngine;
use svsoftmax_testkit::Case;

use crate::differential;

const STEP: f64 = 1e-6;

/// One line of the report.
pub struct Line {
    pub engine: String,
    pub checked: usize,
    pub skipped: usize,
    pub max_error: f64,
    pub failures: Vec<String>,
}

/// Checks `cases` cases per variant on the reference and on the ndarray engine in f64.
pub fn run(seed: u64, cases: usize) -> Vec<Line> {
    let engines: [Box<dyn Engine>; 4] = [
        Box::new(Reference),
        Box::new(NdarrayEngine::<f64>::new()),
        Box::new(DfdxEngine::<f64>::new(Implementation::Composed)),
        Box::new(DfdxEngine::<f64>::new(Implementation::Fused)),
    ];
    let mut drawn = Vec::new();
    for (_, cases) in differential::draw(seed, cases) {
        for mut case in cases {
            // The straight-through gradient is not the loss's derivative, by design.
            if case.config.angular_gradient() == AngularGradient::StraightThrough {
                continue;
            }
            // Finite differences need modest slopes: s up to 16 keeps the third derivative
            // of the log-sum-exp below 16^3, cosines inside ±0.98 keep the angular slopes
            // moderate (inputs past ±1, for the margins that accept them, stay as they are:
            // they exercise an engine's exact path), and short rows keep the run quick.
            let wide = case.cosines.iter().any(|c| c.abs() > 1.0);
            let limit = if wide { f64::INFINITY } else { 0.98 };
            let n_classes = case.n_classes.min(40);
            case.cosines = case
                .cosines
                .chunks(case.n_classes)
                .flat_map(|row| row[..n_classes].iter().map(|c| c.clamp(-limit, limit)))
                .collect();
            case.targets = case
                .targets
                .iter()
                .map(|t| t.map(|t| t % n_classes))
                .collect();
            case.n_classes = n_classes;
            case.config = rebuilt(&case, case.config.scale().min(16.0));
            drawn.push(case);
        }
    }
    engines
        .iter()
        .map(|engine| check_engine(engine.as_ref(), &drawn))
        .collect()
}

fn rebuilt(case: &Case, scale: f64) -> svsoftmax_core::SvSoftmax {
    let config = case.config;
    svsoftmax_core::SvSoftmax::builder()
        .scale(scale)
        .t(config.t())
        .margin(config.margin())
        .indicator(config.indicator())
        .reduction(config.reduction())
        .angular_gradient(config.angular_gradient())
        .build()
        .expect("a smaller scale stays valid")
}

/// The loss a scalar upstream or the per-row upstream differentiates, and the rows' masks.
fn loss_at(
    engine: &dyn Engine,
    case: &Case,
    cosines: &[f64],
) -> Result<(f64, Vec<Option<usize>>), String> {
    let matrix = CosineMatrix::new(cosines, case.targets.len(), case.n_classes)
        .map_err(|e| e.to_string())?;
    let targets = Targets::with_ignored(case.targets.clone());
    let forward = engine
        .forward(&case.config, matrix, &targets)
        .map_err(|e| e.to_string())?;
    let loss = match case.config.reduction() {
        Reduction::None => forward
            .row_losses
            .iter()
            .zip(&case.upstream)
            .map(|(l, u)| l * u)
            .sum(),
        // The differential cases send 0.75 as the scalar upstream.
        Reduction::Mean | Reduction::Sum => 0.75 * forward.loss,
    };
    Ok((
        loss,
        forward
            .diagnostics
            .iter()
            .map(|d| d.map(|d| d.support_vectors))
            .collect(),
    ))
}

fn check_engine(engine: &dyn Engine, cases: &[Case]) -> Line {
    let mut line = Line {
        engine: engine.name().to_owned(),
        checked: 0,
        skipped: 0,
        max_error: 0.0,
        failures: Vec::new(),
    };
    for (index, case) in cases.iter().enumerate() {
        if let Err(why) = check_case(engine, case, &mut line) {
            line.failures.push(format!("case {index}: {why}"));
        }
    }
    line
}

fn check_case(engine: &dyn Engine, case: &Case, line: &mut Line) -> Result<(), String> {
    let matrix = CosineMatrix::new(&case.cosines, case.targets.len(), case.n_classes)
        .map_err(|e| e.to_string())?;
    let targets = Targets::with_ignored(case.targets.clone());
    let analytic = engine
        .forward_backward(&case.config, matrix, &targets, case.upstream())
        .map_err(|e| e.to_string())?
        .grad_cosines;
    let pieces = Pieces::<f64>::new(&case.config).map_err(|e| e.to_string())?;
    for i in 0..case.cosines.len() {
        let (row, col) = (i / case.n_classes, i % case.n_classes);
        let mut plus = case.cosines.clone();
        let mut minus = case.cosines.clone();
        plus[i] += STEP;
        minus[i] -= STEP;
        let (loss_plus, masks_plus) = loss_at(engine, case, &plus)?;
        let (loss_minus, masks_minus) = loss_at(engine, case, &minus)?;
        let kink = case.targets[row] == Some(col) && {
            let slope = |c: f64| pieces.target_logit(c).slope;
            let (a, b) = (slope(minus[i]), slope(plus[i]));
            (a - b).abs() > 1e-3 * (1.0 + a.abs())
        };
        if masks_plus[row] != masks_minus[row] || kink {
            line.skipped += 1;
            continue;
        }
        // Truncation h^2 |L'''| / 6 with s t <= 24 is below 1e-8, rounding eps |L| / h below
        // 1e-8 for losses below 50: 1e-6 absolute and relative leave two orders of room.
        let numeric = (loss_plus - loss_minus) / (2.0 * STEP);
        let error = (analytic[i] - numeric).abs();
        line.max_error = line.max_error.max(error);
        line.checked += 1;
        if error > 1e-6 + 1e-6 * numeric.abs() {
            return Err(format!(
                "({row}, {col}): analytic {} vs central difference {numeric}",
                analytic[i]
            ));
        }
    }
    Ok(())
}

/// Prints the table; fails on an error or when more than 1 in 20 coordinates was skipped.
pub fn report(lines: &[Line], seed: u64, cases: usize) -> bool {
    println!(
        "{:<18} {:>8} {:>8} {:>10}  result",
        "engine", "checked", "skipped", "max error"
    );
    let mut ok = true;
    for line in lines {
        let enough = line.checked > 0 && line.skipped * 20 < line.checked;
        let passed = line.failures.is_empty() && enough;
        ok &= passed;
        let verdict = if passed { "pass" } else { "FAIL" };
        println!(
            "{:<18} {:>8} {:>8} {:>10.2e}  {verdict}",
            line.engine, line.checked, line.skipped, line.max_error
        );
        for failure in line.failures.iter().take(3) {
            println!("FAIL {}: {failure}", line.engine);
        }
        if !enough {
            println!(
                "FAIL {}: too few coordinates checked against those skipped",
                line.engine
            );
        }
    }
    if !ok {
        println!("reproduce with: cargo xtask gradients --seed {seed} --cases {cases}");
    }
    ok
}
