//! Test support shared by the engines' tests and the xtask: seeded random cases for every
//! variant of the loss, and the comparison of an engine with the f64 reference at a
//! tolerance derived from the engine's float type and the case's logits and slopes.
#![warn(missing_docs)]

use proptest::prelude::*;
use svsoftmax_core::reference::{self, Reference, RowBreakdown};
use svsoftmax_core::scalar::Pieces;
use svsoftmax_core::{
    AngularGradient, BeyondPi, CosineMatrix, Engine, Indicator, Margin, Reduction, SvSoftmax,
    Targets, Upstream,
};

/// Widths around a 16-lane kernel's main loop and tail, and around 2048-column blocks.
pub const WIDTHS: [usize; 17] = [
    2, 3, 7, 15, 16, 17, 31, 32, 33, 47, 64, 65, 100, 257, 2047, 2048, 2049,
];

/// The gap every cosine keeps from its row's target score, so that rounding to f32 (which
/// moves a score by ~1e-6 at worst next to ±1) cannot flip the mask.
pub const MASK_GAP: f64 = 1e-3;

/// One random case: a configuration, a batch of cosines, targets and per-row upstream
/// gradients (used with `Reduction::None`; the others take a scalar 0.75).
#[derive(Debug, Clone)]
pub struct Case {
    /// The configuration.
    pub config: SvSoftmax,
    /// The number of columns.
    pub n_classes: usize,
    /// The cosines, row-major.
    pub cosines: Vec<f64>,
    /// One target per row, `None` for an ignored row.
    pub targets: Vec<Option<usize>>,
    /// One upstream gradient per row.
    pub upstream: Vec<f64>,
}

impl Case {
    /// The cosines as a matrix.
    pub fn matrix(&self) -> CosineMatrix<'_> {
        CosineMatrix::new(&self.cosines, self.targets.len(), self.n_classes)
            .expect("a case holds whole rows")
    }

    /// The targets.
    pub fn targets(&self) -> Targets {
        Targets::with_ignored(self.targets.clone())
    }

    /// The upstream gradient that fits the case's reduction.
    pub fn upstream(&self) -> Upstream<'_> {
        match self.config.reduction() {
            Reduction::None => Upstream::Rows(&self.upstream),
            Reduction::Mean | Reduction::Sum => Upstream::Scalar(0.75),
        }
    }
}

/// One margin of every kind and option, named.
pub fn margins() -> Vec<(String, Margin)> {
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
    margins
}

/// One family of cases: a margin, an indicator, the angular gradient and the range of
/// the cosines.
#[derive(Debug, Clone)]
pub struct Variant {
    /// `margin/indicator`, with a suffix for the options that are not the default.
    pub name: String,
    /// The margin.
    pub margin: Margin,
    /// The indicator.
    pub indicator: Indicator,
    /// The derivative of the angular margins.
    pub gradient: AngularGradient,
    /// What the cosines range over.
    pub cosines: Cosines,
}

impl Variant {
    /// Seeded cases of this variant, with the scale up to 64 (8 for wide inputs).
    pub fn cases(&self) -> BoxedStrategy<Case> {
        let max_scale = match self.cosines {
            Cosines::Unit => 64.0,
            Cosines::Wide => 8.0,
        };
        cases(
            vec![self.margin],
            vec![self.indicator],
            vec![self.gradient],
            max_scale,
            self.cosines,
        )
    }
}

/// Every margin with both indicators; the angular margins with the straight-through
/// gradient too; and the margins without an arccos on inputs past ±1, which take an
/// engine's exact path.
pub fn variants() -> Vec<Variant> {
    let mut variants = Vec::new();
    for (name, margin) in margins() {
        for indicator in [Indicator::Adaptive, Indicator::Fixed] {
            let variant = |suffix: &str, gradient, cosines| Variant {
                name: format!("{name}/{}{suffix}", indicator.name()),
                margin,
                indicator,
                gradient,
                cosines,
            };
            variants.push(variant("", AngularGradient::Exact, Cosines::Unit));
            if matches!(margin, Margin::Angular { .. } | Margin::Combined { .. }) {
                variants.push(variant(
                    "/straight",
                    AngularGradient::StraightThrough,
                    Cosines::Unit,
                ));
            }
            if !margin.takes_arccos() {
                variants.push(variant("/wide", AngularGradient::Exact, Cosines::Wide));
            }
        }
    }
    variants
}

/// What the cosines of a case range over.
#[derive(Debug, Clone, Copy)]
pub enum Cosines {
    /// `[-1, 1]`, with a tenth of exact ±1.
    Unit,
    /// `[-3, 6]`, as the notebook feeds: only for the margins without an arccos.
    Wide,
}

/// Cases for any of `margins` and `indicators`, every reduction, ignored rows, scale in
/// `[1, max_scale]`, `t` in `[1, 1.5]`, one to five rows of the `WIDTHS` or up to 300
/// columns; every cosine kept `MASK_GAP` off its row's target score.
pub fn cases(
    margins: Vec<Margin>,
    indicators: Vec<Indicator>,
    gradients: Vec<AngularGradient>,
    max_scale: f64,
    cosines: Cosines,
) -> BoxedStrategy<Case> {
    let reductions = vec![Reduction::Mean, Reduction::Sum, Reduction::None];
    let widths = prop_oneof![proptest::sample::select(WIDTHS.to_vec()), 2usize..300];
    (
        proptest::sample::select(margins),
        proptest::sample::select(indicators),
        proptest::sample::select(gradients),
        (
            proptest::sample::select(reductions),
            1.0..=max_scale,
            1.0..=1.5f64,
            1usize..=5,
            widths,
        ),
    )
        .prop_flat_map(
            move |(margin, indicator, gradient, (reduction, scale, t, n_rows, n_classes))| {
                let config = SvSoftmax::builder()
                    .scale(scale)
                    .t(t)
                    .margin(margin)
                    .indicator(indicator)
                    .angular_gradient(gradient)
                    .reduction(reduction)
                    .build()
                    .expect("the test variants are valid");
                let cosine = match cosines {
                    Cosines::Unit => prop_oneof![
                        9 => -1.0..=1.0f64,
                        1 => proptest::sample::select(vec![-1.0, 1.0]),
                    ]
                    .boxed(),
                    Cosines::Wide => (-3.0..=6.0f64).boxed(),
                };
                (
                    Just(config),
                    Just(n_classes),
                    proptest::collection::vec(cosine, n_rows * n_classes),
                    proptest::collection::vec(
                        proptest::option::weighted(0.9, 0..n_classes),
                        n_rows,
                    ),
                    proptest::collection::vec(-2.0..2.0f64, n_rows),
                )
            },
        )
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
        .boxed()
}

/// Moves every non-target cosine within `MASK_GAP` of its row's target score away from it.
pub fn keep_off_the_boundary(
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

/// The largest errors a comparison has seen.
#[derive(Debug, Clone, Copy, Default)]
pub struct Errors {
    /// The largest absolute error.
    pub max_abs: f64,
    /// The largest relative error, over the values above their absolute tolerance.
    pub max_rel: f64,
}

/// The rounding unit of the engine's float type: 2⁻²⁴ for an engine named `*-f32`, f64's
/// epsilon otherwise.
pub fn unit_of(engine: &dyn Engine) -> f64 {
    if engine.name().ends_with("f32") {
        2f64.powi(-24)
    } else {
        f64::EPSILON
    }
}

/// Compares `engine` with the reference on `case`: loss, row losses, gradient and support
/// vectors, recording the largest errors in `errors`.
///
/// The tolerance follows the float type and the case. Rounding a cosine to the engine's
/// type, forming a logit of magnitude up to `max |z|` and its exponential each cost a few
/// units `u` of the type; the loss is 1-Lipschitz in the logits, so its error is a few
/// `u (1 + max |z| + s t)`; a gradient entry, `(p_k - [k = y]) · slope_k · weight`, moves by
/// that times the steepest slope (the angular margins reach `s / sin 2⁻¹²` next to ±1) and
/// the upstream weight (at most 2). `ROOM` times these leaves a margin above the errors seen
/// over tens of thousands of cases.
pub fn compare(engine: &dyn Engine, case: &Case, errors: &mut Errors) -> Result<(), String> {
    const ROOM: f64 = 64.0;
    let (cosines, targets) = (case.matrix(), case.targets());
    let expected = Reference
        .forward_backward(&case.config, cosines, &targets, case.upstream())
        .map_err(|error| format!("the reference rejects the case: {error}"))?;
    let actual = engine
        .forward_backward(&case.config, cosines, &targets, case.upstream())
        .map_err(|error| format!("{} rejects the case: {error}", engine.name()))?;

    let rows = reference::breakdown(&case.config, cosines, &targets).map_err(|e| e.to_string())?;
    let largest = |pick: fn(&RowBreakdown) -> &Vec<f64>| {
        rows.iter()
            .flatten()
            .flat_map(pick)
            .fold(0.0f64, |m, v| m.max(v.abs()))
    };
    let (max_logit, max_slope) = (largest(|row| &row.logits), largest(|row| &row.slopes));
    let unit = ROOM * unit_of(engine);
    let magnitude = 1.0 + max_logit + case.config.scale() * case.config.t();
    let (loss_abs, grad_abs, rel) = (unit * magnitude, unit * magnitude * max_slope * 2.0, unit);

    let mut check = |what: &str, a: f64, e: f64, abs: f64| -> Result<(), String> {
        let error = (a - e).abs();
        errors.max_abs = errors.max_abs.max(error);
        if e.abs() > abs {
            errors.max_rel = errors.max_rel.max(error / e.abs());
        }
        if error <= abs + rel * e.abs() {
            Ok(())
        } else {
            Err(format!(
                "{what}: {a} vs reference {e} (tolerance {abs:.1e} + {rel:.1e} relative)"
            ))
        }
    };
    check("loss", actual.forward.loss, expected.forward.loss, loss_abs)?;
    let losses = actual
        .forward
        .row_losses
        .iter()
        .zip(&expected.forward.row_losses);
    for (row, (a, e)) in losses.enumerate() {
        check(&format!("row {row} loss"), *a, *e, loss_abs)?;
    }
    for (i, (a, e)) in actual
        .grad_cosines
        .iter()
        .zip(&expected.grad_cosines)
        .enumerate()
    {
        let (row, col) = (i / case.n_classes, i % case.n_classes);
        check(&format!("grad ({row}, {col})"), *a, *e, grad_abs)?;
    }
    let diagnostics = actual
        .forward
        .diagnostics
        .iter()
        .zip(&expected.forward.diagnostics);
    for (row, (a, e)) in diagnostics.enumerate() {
        let (a, e) = (a.map(|d| d.support_vectors), e.map(|d| d.support_vectors));
        if a != e {
            return Err(format!(
                "row {row}: support vectors {a:?} vs reference {e:?}"
            ));
        }
    }
    Ok(())
}
