//! The five losses compared: the plain and margin softmax, and their support-vector forms.

use svsoftmax_core::{Margin, SvSoftmax};

/// The additive margin of AM-Softmax and SV-AM-Softmax, CosFace's usual value.
pub const ADDITIVE_MARGIN: f64 = 0.35;
/// The angular margin of SV-Arc-Softmax, ArcFace's usual value (radians, about 28.6°).
pub const ANGULAR_MARGIN: f64 = 0.5;
/// The paper's hard-example weight for the support-vector losses.
pub const SV_T: f64 = 1.2;

/// One loss of the comparison.
#[derive(Debug, Clone, Copy)]
pub struct LossSpec {
    /// Its name in the table and the plot.
    pub name: &'static str,
    /// The configuration the model is trained with.
    pub config: SvSoftmax,
}

impl LossSpec {
    /// The margin and `t`, as the table shows them (the scale is shared).
    pub fn parameters(&self) -> String {
        let t = self.config.t();
        match self.config.margin() {
            Margin::Additive { m } => format!("m = {m}, t = {t}"),
            Margin::Angular { m, .. } => format!("m = {m} rad, t = {t}"),
            // The comparison uses no other margin.
            _ => format!("t = {t}"),
        }
    }
}

/// Plain softmax, AM-Softmax, SV-Softmax, SV-AM-Softmax and SV-Arc-Softmax, all at `scale`.
///
/// With `t = 1` the support vectors carry no extra weight, so the first two are the plain
/// and the additive-margin softmax cross-entropy over `scale * cosines`.
///
/// # Errors
/// [`svsoftmax_core::Error::Hyperparameter`] if `scale` is not finite and positive.
pub fn losses(scale: f64) -> Result<Vec<LossSpec>, svsoftmax_core::Error> {
    let table = [
        ("softmax", Margin::None, 1.0),
        ("AM-Softmax", Margin::additive(ADDITIVE_MARGIN), 1.0),
        ("SV-Softmax", Margin::None, SV_T),
        ("SV-AM-Softmax", Margin::additive(ADDITIVE_MARGIN), SV_T),
        ("SV-Arc-Softmax", Margin::angular(ANGULAR_MARGIN), SV_T),
    ];
    table
        .into_iter()
        .map(|(name, margin, t)| {
            let config = SvSoftmax::builder()
                .scale(scale)
                .margin(margin)
                .t(t)
                .build()?;
            Ok(LossSpec { name, config })
        })
        .collect()
}
