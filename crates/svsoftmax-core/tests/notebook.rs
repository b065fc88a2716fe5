//! The original notebook (`shared/notebook/sv-softmax-math.md`, TensorFlow in float32) as
//! golden data: `golden/notebook.json` holds its inputs and every array and number it
//! printed; each is asserted against what the f64 reference computes, and each cell's
//! computation is snapshotted as a table under `golden/snapshots/`.

mod common;

use common::Tolerance;
use serde::Deserialize;
use svsoftmax_core::reference::{self, RowBreakdown};
use svsoftmax_core::{CosineMatrix, Margin, SvSoftmax, Targets};

/// The notebook ran in float32 and printed 8 significant digits. Each printed value
/// carries its rounding to 8 digits (5e-8 relative), the float32 rounding of the inputs
/// (2.1 and -2.1 are not exact) and of a few exp/sum/divide steps (a few ulps of 6e-8),
/// the cancellation in `t - 1` formed in float32 from 1.2 (0.20000005, 2.4e-7 relative,
/// which the largest exponent, 1.4, turns into ~3e-7 on h), and, for the losses, the
/// notebook's `+ 1e-9` inside the log, which moves -log p by up to 1e-9 / p ≈ 1.4e-6 on
/// its least likely target (p ≈ 7e-4) and so the mean by ~5e-7.
/// 1e-6 relative covers all of it; 1e-9 absolute covers the entries near 1e-4.
const FLOAT32_NOTEBOOK: Tolerance = Tolerance::new(
    1e-9,
    1e-6,
    "float32 TensorFlow printed to 8 digits, with the notebook's 1e-9 epsilons",
);

#[derive(Deserialize)]
struct Notebook {
    scale: f64,
    cosines: Vec<Vec<f64>>,
    one_hot: Vec<Vec<f64>>,
    binary_mask: Vec<Vec<u8>>,
    h_t1_2: Vec<Vec<f64>>,
    h_t1_0: Vec<Vec<f64>>,
    softmax_t1_2: Vec<Vec<f64>>,
    softmax_t1_0: Vec<Vec<f64>>,
    pure_softmax: Vec<Vec<f64>>,
    max_abs_error_ours_vs_tf_softmax: f64,
    losses: Losses,
}

#[derive(Deserialize)]
struct Losses {
    sv_softmax_fraction_t1_2: f64,
    sv_softmax_fraction_t1_0: f64,
    tf_softmax_cross_entropy_t1_0: f64,
    sv_softmax_log_domain_t1_2: f64,
    sv_softmax_log_domain_t1_0: f64,
    sv_am_m0_35_t1_2: f64,
    sv_am_m0_35_t1_0: f64,
}

fn notebook() -> Notebook {
    serde_json::from_str(include_str!("../../../golden/notebook.json")).unwrap()
}

impl Notebook {
    fn config(&self, t: f64, margin: Margin) -> SvSoftmax {
        SvSoftmax::builder()
            .scale(self.scale)
            .t(t)
            .margin(margin)
            .build()
            .unwrap()
    }

    fn targets(&self) -> Targets {
        Targets::from_one_hot(&self.one_hot.concat(), self.one_hot[0].len()).unwrap()
    }

    fn rows(&self, config: &SvSoftmax) -> Vec<RowBreakdown> {
        let data = self.cosines.concat();
        let cosines = CosineMatrix::new(&data, self.cosines.len(), self.cosines[0].len()).unwrap();
        let rows = reference::breakdown(config, cosines, &self.targets()).unwrap();
        rows.into_iter().map(Option::unwrap).collect()
    }

    fn mean_loss(&self, t: f64, margin: Margin) -> f64 {
        let rows = self.rows(&self.config(t, margin));
        rows.iter().map(RowBreakdown::loss).sum::<f64>() / rows.len() as f64
    }
}

/// The notebook's "softmax": `e^{s c_j} / Σ_k h_k e^{s c_k}`, h only in the denominator.
fn notebook_softmax(row: &RowBreakdown, scale: f64) -> Vec<f64> {
    row.cosines
        .iter()
        .map(|c| (scale * c - row.log_sum_exp).exp())
        .collect()
}

fn table(title: &str, rows: &[Vec<f64>]) -> String {
    let mut text = format!("{title}\n");
    for (i, row) in rows.iter().enumerate() {
        let cells: String = row.iter().map(|v| format!(" {v:>15.8e}")).collect();
        text += &format!("row {i}:{cells}\n");
    }
    text
}

fn assert_arrays(actual: &[Vec<f64>], printed: &[Vec<f64>], what: &str) {
    for (i, (a, p)) in actual.iter().zip(printed).enumerate() {
        FLOAT32_NOTEBOOK.assert_all_close(a, p, &format!("{what} row {i}"));
    }
}

fn snapshot(name: &str, text: String) {
    insta::with_settings!({
        snapshot_path => "../../../golden/snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn cell_binary_mask() {
    let notebook = notebook();
    let rows = notebook.rows(&notebook.config(1.2, Margin::None));
    let mask: Vec<Vec<u8>> = rows
        .iter()
        .map(|row| row.mask.iter().map(|&m| u8::from(m)).collect())
        .collect();
    assert_eq!(mask, notebook.binary_mask);

    let mut text = String::from("binary mask I_k (1 = support vector), targets [1, 2, 0]\n");
    for (i, row) in mask.iter().enumerate() {
        text += &format!("row {i}: {row:?}\n");
    }
    let scores: Vec<String> = rows
        .iter()
        .map(|row| format!("{}", row.target_score))
        .collect();
    text += &format!("target scores f: [{}]\n", scores.join(", "));
    snapshot("notebook_binary_mask", text);
}

#[test]
fn cell_indicator() {
    let notebook = notebook();
    let mut text = String::new();
    for (t, printed) in [(1.2, &notebook.h_t1_2), (1.0, &notebook.h_t1_0)] {
        let rows = notebook.rows(&notebook.config(t, Margin::None));
        let h: Vec<Vec<f64>> = rows
            .iter()
            .map(|row| row.log_indicators.iter().map(|g| g.exp()).collect())
            .collect();
        assert_arrays(&h, printed, &format!("h at t = {t}"));
        text += &table(&format!("h = exp(s (t - 1) (c + 1) I) at t = {t}"), &h);
    }
    snapshot("notebook_indicator", text);
}

#[test]
fn cell_softmax() {
    let notebook = notebook();
    let mut text = String::new();
    for (t, printed) in [(1.2, &notebook.softmax_t1_2), (1.0, &notebook.softmax_t1_0)] {
        let rows = notebook.rows(&notebook.config(t, Margin::None));
        let softmax: Vec<Vec<f64>> = rows
            .iter()
            .map(|row| notebook_softmax(row, notebook.scale))
            .collect();
        assert_arrays(&softmax, printed, &format!("notebook softmax at t = {t}"));
        text += &table(
            &format!("e^(s c) / sum(h e^(s c)) at t = {t} (rows need not sum to 1)"),
            &softmax,
        );
    }

    let rows = notebook.rows(&notebook.config(1.0, Margin::None));
    let pure: Vec<Vec<f64>> = rows.iter().map(RowBreakdown::probabilities).collect();
    assert_arrays(&pure, &notebook.pure_softmax, "tf.nn.softmax");
    text += &table("plain softmax (t = 1, no margin)", &pure);

    // The notebook's own check: its t = 1 form equals TensorFlow's softmax to float32
    // rounding. In f64 the two are the same numbers, so the gap must be far below it.
    let gap = notebook
        .softmax_t1_0
        .concat()
        .iter()
        .zip(notebook.pure_softmax.concat())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    FLOAT32_NOTEBOOK.assert_close(
        gap,
        notebook.max_abs_error_ours_vs_tf_softmax,
        "printed gap",
    );
    snapshot("notebook_softmax", text);
}

#[test]
fn cell_losses() {
    let notebook = notebook();
    let losses = &notebook.losses;
    let am = Margin::additive(0.35);
    let cases = [
        (
            "SV-Softmax, t = 1.2 (fraction form)",
            1.2,
            Margin::None,
            losses.sv_softmax_fraction_t1_2,
        ),
        (
            "SV-Softmax, t = 1.2 (log domain)",
            1.2,
            Margin::None,
            losses.sv_softmax_log_domain_t1_2,
        ),
        (
            "SV-Softmax, t = 1 (fraction form)",
            1.0,
            Margin::None,
            losses.sv_softmax_fraction_t1_0,
        ),
        (
            "SV-Softmax, t = 1 (log domain)",
            1.0,
            Margin::None,
            losses.sv_softmax_log_domain_t1_0,
        ),
        (
            "tf softmax cross-entropy",
            1.0,
            Margin::None,
            losses.tf_softmax_cross_entropy_t1_0,
        ),
        (
            "SV-AM-Softmax, m = 0.35, t = 1.2",
            1.2,
            am,
            losses.sv_am_m0_35_t1_2,
        ),
        (
            "SV-AM-Softmax, m = 0.35, t = 1",
            1.0,
            am,
            losses.sv_am_m0_35_t1_0,
        ),
    ];
    let mut text =
        String::from("mean loss over the 3 rows, s = 1: reference (f64) | notebook (float32)\n");
    for (what, t, margin, printed) in cases {
        let actual = notebook.mean_loss(t, margin);
        FLOAT32_NOTEBOOK.assert_close(actual, printed, what);
        text += &format!("{what:<36} {actual:.10} | {printed}\n");
    }
    snapshot("notebook_losses", text);
}
