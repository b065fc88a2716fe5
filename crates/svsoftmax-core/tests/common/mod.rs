//! Helpers shared by the core's integration tests: tolerances with their reasons, and
//! short constructors for one-off cases.
#![allow(dead_code)]

use svsoftmax_core::{
    BeyondPi, CosineMatrix, Evaluation, Indicator, Margin, SvSoftmax, Targets, Upstream,
};

/// A comparison tolerance: `|actual - expected| <= abs + rel · |expected|`, with the reason
/// the numbers were chosen.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
    pub reason: &'static str,
}

impl Tolerance {
    pub const fn new(abs: f64, rel: f64, reason: &'static str) -> Self {
        Self { abs, rel, reason }
    }

    #[track_caller]
    pub fn assert_close(&self, actual: f64, expected: f64, what: &str) {
        assert!(
            approx::relative_eq!(
                actual,
                expected,
                epsilon = self.abs,
                max_relative = self.rel
            ),
            "{what}: got {actual:.17e}, expected {expected:.17e} \
             (abs {:.1e}, rel {:.1e}: {})",
            self.abs,
            self.rel,
            self.reason
        );
    }

    #[track_caller]
    pub fn assert_all_close(&self, actual: &[f64], expected: &[f64], what: &str) {
        assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
        for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            self.assert_close(a, e, &format!("{what}[{i}]"));
        }
    }
}

/// Values derived by hand and written to 6-8 significant digits (0.693147, 3.239953,
/// 13.440001): half a unit of the last written digit is at most 5e-7 absolute for values
/// below 1 and 5e-7 relative above, while the f64 reference itself is exact to ~1e-15.
pub const GIVEN_DIGITS: Tolerance = Tolerance::new(
    5e-7,
    5e-7,
    "expected values are written to 6-8 significant digits",
);

/// The same closed form evaluated in f64 by the test and by the reference in another
/// order of operations: a few ulps on values below ~100.
pub const F64_FORMULA: Tolerance =
    Tolerance::new(1e-12, 1e-12, "one f64 formula, two orders of operations");

/// Two f64 evaluations of the same math in different orders (jax's and ours): a loss or
/// gradient of magnitude up to ~200 accumulates a few ulps per term over a handful of
/// terms; `1e-12` relative leaves two orders of magnitude of room above that, and the
/// absolute part covers entries that are exp(-40)-small on one side and 0 on the other.
pub const F64_DIFFERENTIAL: Tolerance =
    Tolerance::new(1e-12, 1e-12, "f64 vs f64 with another order of operations");

pub fn matrix(rows: &[&[f64]]) -> (Vec<f64>, usize, usize) {
    let n_classes = rows.first().map_or(0, |row| row.len());
    (rows.concat(), rows.len(), n_classes)
}

pub fn evaluate(config: &SvSoftmax, rows: &[&[f64]], targets: &[usize]) -> Evaluation {
    let (data, n_rows, n_classes) = matrix(rows);
    let cosines = CosineMatrix::new(&data, n_rows, n_classes).expect("well-formed matrix");
    svsoftmax_core::reference::forward_backward(
        config,
        cosines,
        &Targets::new(targets),
        Upstream::default(),
    )
    .expect("valid case")
}

/// One margin of every kind, with every option of the angular and combined margins.
pub fn every_margin() -> Vec<Margin> {
    let mut margins = vec![
        Margin::None,
        Margin::additive(0.35),
        Margin::multiplicative(4),
    ];
    margins.push(Margin::Multiplicative { m: 3, lambda: 2.0 });
    for beyond_pi in [BeyondPi::Clip, BeyondPi::Fallback, BeyondPi::Easy] {
        margins.push(Margin::Angular { m: 0.5, beyond_pi });
        margins.push(Margin::Combined {
            m1: 1.1,
            m2: 0.3,
            m3: 0.2,
            beyond_pi,
        });
    }
    margins
}

/// The number of random cases a property runs: `default`, or `PROPTEST_CASES` when set
/// (`cargo xtask verify --quick` sets it low).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// The seed of the random tests: `default`, or `SVSOFTMAX_SEED` when set, to explore beyond
/// the fixed seed that CI runs.
pub fn seed(default: u64) -> u64 {
    std::env::var("SVSOFTMAX_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// A configuration with the reduction and the angular gradient at their defaults.
pub fn config(scale: f64, t: f64, margin: Margin, indicator: Indicator) -> SvSoftmax {
    SvSoftmax::builder()
        .scale(scale)
        .t(t)
        .margin(margin)
        .indicator(indicator)
        .build()
        .unwrap()
}
