//! Symbolic verification: for one small case per variant, the row loss is written out as an
//! expression of the cosines (the mask, the multiplicative margin's sector and the branch of
//! the angular margins fixed at their values for that case), differentiated symbolically by
//! `exmex`, and evaluated; loss and gradient must match the reference's. The expression and
//! its derivatives are snapshotted in `golden/symbolic/`, so a reviewer sees the formula
//! change when the math changes.

mod common;

use common::Tolerance;
use exmex::prelude::*;
use exmex::DeepEx;
use svsoftmax_core::{
    reference, BeyondPi, CosineMatrix, Indicator, Margin, Reduction, SvSoftmax, Targets, Upstream,
};

struct Variant {
    name: &'static str,
    config: SvSoftmax,
    cosines: [f64; 3],
    /// The target score of `c0`, the target, in exmex syntax (θ = acos(c0)).
    score: String,
}

/// Plain decimal text of a constant, which exmex parses as a number.
fn num(value: f64) -> String {
    format!("{value:?}")
}

fn variants() -> Vec<Variant> {
    let build = |scale: f64, t: f64, margin: Margin, indicator: Indicator| {
        SvSoftmax::builder()
            .scale(scale)
            .t(t)
            .margin(margin)
            .indicator(indicator)
            .reduction(Reduction::Sum)
            .build()
            .unwrap()
    };
    let adaptive = Indicator::Adaptive;
    vec![
        Variant {
            name: "none",
            config: build(32.0, 1.2, Margin::None, adaptive),
            cosines: [0.5, 0.6, -0.2],
            score: "c0".to_owned(),
        },
        Variant {
            name: "additive",
            config: build(32.0, 1.2, Margin::additive(0.35), adaptive),
            cosines: [0.5, 0.6, -0.2],
            score: format!("(c0-{})", num(0.35)),
        },
        Variant {
            name: "additive-fixed",
            config: build(20.0, 1.25, Margin::additive(0.3), Indicator::Fixed),
            cosines: [0.7, 0.1, 0.65],
            score: format!("(c0-{})", num(0.3)),
        },
        Variant {
            name: "angular",
            config: build(
                16.0,
                1.3,
                Margin::Angular {
                    m: 0.5,
                    beyond_pi: BeyondPi::Fallback,
                },
                adaptive,
            ),
            cosines: [0.3, 0.8, -0.1],
            score: format!("cos(acos(c0)+{})", num(0.5)),
        },
        Variant {
            // θ = acos(0.6) = 0.927 lies in [π/4, π/2): sector k = 1, ψ = -cos(4θ) - 2.
            name: "multiplicative",
            config: build(16.0, 1.2, Margin::multiplicative(4), adaptive),
            cosines: [0.6, 0.7, -0.3],
            score: format!("(-cos({}*acos(c0))-{})", num(4.0), num(2.0)),
        },
        Variant {
            // θ = acos(-0.2) = 1.772 lies in [π/3, 2π/3): k = 1, blended with λ = 2.
            name: "multiplicative-lambda",
            config: build(
                8.0,
                1.4,
                Margin::Multiplicative { m: 3, lambda: 2.0 },
                adaptive,
            ),
            cosines: [-0.2, 0.9, -0.95],
            score: format!(
                "(({}*c0+(-cos({}*acos(c0))-{}))/{})",
                num(2.0),
                num(3.0),
                num(2.0),
                num(3.0)
            ),
        },
        Variant {
            // θ = acos(-0.95) = 2.82 > π - 0.5: the linear fallback c - m sin m.
            name: "angular-fallback-past-pi",
            config: build(16.0, 1.3, Margin::angular(0.5), adaptive),
            cosines: [-0.95, -0.97, 0.1],
            score: format!("(c0-{})", num(0.5 * 0.5f64.sin())),
        },
        Variant {
            // cos θ <= 0 under the easy margin: the plain cosine.
            name: "angular-easy-negative",
            config: build(
                16.0,
                1.3,
                Margin::Angular {
                    m: 0.5,
                    beyond_pi: BeyondPi::Easy,
                },
                adaptive,
            ),
            cosines: [-0.3, -0.2, 0.1],
            score: "c0".to_owned(),
        },
        Variant {
            name: "combined",
            config: build(30.0, 1.2, Margin::combined(1.2, 0.3, 0.1), adaptive),
            cosines: [0.4, 0.5, -0.6],
            score: format!("(cos({}*acos(c0)+{})-{})", num(1.2), num(0.3), num(0.1)),
        },
    ]
}

/// The row loss `ln(Σ exp z_k) - z_y` as text, with the case's mask.
fn loss_text(variant: &Variant, mask: &[bool]) -> String {
    let config = &variant.config;
    let (s, w) = (config.scale(), config.scale() * (config.t() - 1.0));
    let target = format!("{}*{}", num(s), variant.score);
    let negative = |k: usize| match (mask[k], config.indicator()) {
        (false, _) => format!("{}*c{k}", num(s)),
        (true, Indicator::Adaptive) => format!("({}*c{k}+{}*(c{k}+1))", num(s), num(w)),
        (true, Indicator::Fixed) => format!("({}*c{k}+{})", num(s), num(w)),
    };
    format!(
        "ln(exp({target})+exp({})+exp({}))-{target}",
        negative(1),
        negative(2)
    )
}

#[test]
fn symbolic_derivatives_match_the_reference() {
    let mut report = String::from("variant                  loss error   max gradient error\n");
    for variant in variants() {
        let cosines = CosineMatrix::new(&variant.cosines, 1, 3).unwrap();
        let targets = Targets::new(&[0]);
        let rows = reference::breakdown(&variant.config, cosines, &targets).unwrap();
        let row = rows[0].as_ref().unwrap();
        let expected =
            reference::forward_backward(&variant.config, cosines, &targets, Upstream::default())
                .unwrap();

        let text = loss_text(&variant, &row.mask);
        // `DeepEx`, not exmex's default `FlatEx`: FlatEx 0.21 evaluates `exp(a*x+b*x+b)`
        // inside a longer sum wrongly (checked against hand-computed values while writing
        // this test), DeepEx right.
        let expression = DeepEx::<f64>::parse(&text).unwrap();
        assert_eq!(
            expression.var_names(),
            ["c0", "c1", "c2"],
            "{}",
            variant.name
        );
        // exmex evaluates the same closed form in another order: a few ulps of terms near 30.
        let tolerance = Tolerance::new(1e-10, 1e-10, "the same formula evaluated by exmex");
        let loss = expression.eval(&variant.cosines).unwrap();
        tolerance.assert_close(loss, expected.forward.loss, variant.name);

        let mut snapshot = format!(
            "cosines {:?}, target 0, scale {}, t {}, mask {:?}\nloss = {}\n",
            variant.cosines,
            variant.config.scale(),
            variant.config.t(),
            row.mask,
            expression.unparse()
        );
        let mut worst = 0.0f64;
        for k in 0..3 {
            let derivative = expression.clone().partial(k).unwrap();
            let value = derivative.eval(&variant.cosines).unwrap();
            tolerance.assert_close(
                value,
                expected.grad_cosines[k],
                &format!("{} d/dc{k}", variant.name),
            );
            worst = worst.max((value - expected.grad_cosines[k]).abs());
            snapshot += &format!("dloss/dc{k} = {}\n", derivative.unparse());
        }
        report += &format!(
            "{:<24} {:>10.2e}   {:>10.2e}\n",
            variant.name,
            (loss - expected.forward.loss).abs(),
            worst
        );
        insta::with_settings!({
            snapshot_path => "../../../golden/symbolic",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(variant.name, snapshot);
        });
    }
    println!("{report}");
}
