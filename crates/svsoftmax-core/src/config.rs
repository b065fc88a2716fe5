//! The loss configuration: scale, hard-example weight, margin, indicator, reduction.

use crate::error::Result;
use crate::margin::{check, Margin};

/// The indicator `h_k` that re-weights a support vector (a masked negative column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Indicator {
    /// `h_k = exp(s (t - 1) (cos θ_k + 1) I_k)`: the closer the negative, the heavier.
    #[default]
    Adaptive,
    /// `h_k = exp(s (t - 1) I_k)`: every support vector weighs the same.
    Fixed,
}

impl Indicator {
    /// The indicator's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Adaptive => "adaptive",
            Self::Fixed => "fixed",
        }
    }
}

/// How the per-row losses become the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The mean over the rows that are not ignored; 0 when every row is ignored.
    #[default]
    Mean,
    /// The sum over the rows.
    Sum,
    /// No reduction: the per-row losses are the result, and a backward pass takes one
    /// upstream gradient per row.
    None,
}

impl Reduction {
    /// The reduction's name in reports and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Sum => "sum",
            Self::None => "none",
        }
    }
}

/// Which derivative the angular and combined margins pass back to the target cosine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AngularGradient {
    /// The exact derivative of the target score.
    #[default]
    Exact,
    /// The straight-through derivative: the margin's derivative is taken as 1, as
    /// insightface's training code does.
    StraightThrough,
}

/// The conventions in which public code states the hard-example weight `t`.
///
/// | convention | parameter | relation to the paper's `t` | default there |
/// |---|---|---|---|
/// | [`TConvention::Paper`] | `t` | `t` | 1.2 |
/// | [`TConvention::OfficialPytorch`] | `t` in the authors' PyTorch code | `t - 1` | 0.2 (= 1.2) |
/// | [`TConvention::FaceXZoo`] | `mv_weight` in FaceX-Zoo | `t` | 1.12 (= 1.12) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TConvention {
    /// The paper's `t >= 1`, which this library uses.
    Paper,
    /// The authors' PyTorch code, whose `t` is the paper's `t - 1`.
    OfficialPytorch,
    /// FaceX-Zoo's `mv_weight`, which is the paper's `t`.
    FaceXZoo,
}

impl TConvention {
    /// The paper's `t` for a value stated in this convention.
    pub fn to_paper(self, value: f64) -> f64 {
        match self {
            Self::Paper | Self::FaceXZoo => value,
            Self::OfficialPytorch => value + 1.0,
        }
    }

    /// The value in this convention for the paper's `t`.
    pub fn from_paper(self, t: f64) -> f64 {
        match self {
            Self::Paper | Self::FaceXZoo => t,
            Self::OfficialPytorch => t - 1.0,
        }
    }
}

/// A validated configuration of the SV-X-Softmax loss.
///
/// For cosines `cos θ_{i,k}` and targets `y_i`, with the target score `f = f(m, cos θ_y)`
/// of the [`Margin`], the support-vector mask `I_k = [f < cos θ_k]` on the non-target
/// columns and the [`Indicator`] `h_k`, the loss of row `i` is
///
/// ```text
/// L_i = -log( e^{s f} / (e^{s f} + Σ_{k≠y} h_k e^{s cos θ_k}) )
/// ```
///
/// that is the softmax cross-entropy over the adjusted logits `z_y = s f` and
/// `z_k = s cos θ_k + log h_k`. With `t = 1` it is the plain margin softmax; with `t = 1`
/// and no margin, the plain softmax cross-entropy of `s cos θ`.
///
/// In PyTorch terms, for the additive margin and the adaptive indicator:
/// `F.cross_entropy(s * where(onehot, c - m, c + (t - 1) * (c + 1) * mask), y)`.
///
/// ```
/// use svsoftmax_core::{Margin, SvSoftmax};
///
/// let loss = SvSoftmax::builder().scale(64.0).margin(Margin::additive(0.35)).t(1.2).build()?;
/// assert_eq!(loss.scale(), 64.0);
/// assert!(SvSoftmax::builder().t(0.9).build().is_err());
/// # Ok::<(), svsoftmax_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SvSoftmax {
    scale: f64,
    t: f64,
    margin: Margin,
    indicator: Indicator,
    reduction: Reduction,
    angular_gradient: AngularGradient,
}

impl Default for SvSoftmax {
    /// SV-Softmax with `s = 32`, `t = 1.2`, no margin, the adaptive indicator, the mean.
    fn default() -> Self {
        Self {
            scale: 32.0,
            t: 1.2,
            margin: Margin::None,
            indicator: Indicator::Adaptive,
            reduction: Reduction::Mean,
            angular_gradient: AngularGradient::Exact,
        }
    }
}

impl SvSoftmax {
    /// A builder that starts from the defaults of [`SvSoftmax::default`].
    pub fn builder() -> SvSoftmaxBuilder {
        SvSoftmaxBuilder {
            config: Self::default(),
        }
    }

    /// SV-AM-Softmax, the common case: additive margin `m`, scale `s`, weight `t`, and the
    /// other settings at their defaults.
    ///
    /// # Errors
    /// [`crate::Error::Hyperparameter`] when a value is out of its domain.
    pub fn sv_am(scale: f64, m: f64, t: f64) -> Result<Self> {
        Self::builder()
            .scale(scale)
            .margin(Margin::additive(m))
            .t(t)
            .build()
    }

    /// The scale `s`.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The hard-example weight `t`, in the paper's convention.
    pub fn t(&self) -> f64 {
        self.t
    }

    /// The margin.
    pub fn margin(&self) -> Margin {
        self.margin
    }

    /// The indicator.
    pub fn indicator(&self) -> Indicator {
        self.indicator
    }

    /// The reduction.
    pub fn reduction(&self) -> Reduction {
        self.reduction
    }

    /// The derivative the angular and combined margins pass back.
    pub fn angular_gradient(&self) -> AngularGradient {
        self.angular_gradient
    }

    /// A copy with another reduction; the other settings are already validated.
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }
}

/// Builds a validated [`SvSoftmax`].
#[derive(Debug, Clone)]
pub struct SvSoftmaxBuilder {
    config: SvSoftmax,
}

impl SvSoftmaxBuilder {
    /// The scale `s > 0` (default 32).
    pub fn scale(mut self, scale: f64) -> Self {
        self.config.scale = scale;
        self
    }

    /// The hard-example weight `t >= 1` in the paper's convention (default 1.2).
    pub fn t(mut self, t: f64) -> Self {
        self.config.t = t;
        self
    }

    /// The hard-example weight stated in another [`TConvention`].
    pub fn t_in(self, convention: TConvention, value: f64) -> Self {
        self.t(convention.to_paper(value))
    }

    /// The margin (default none).
    pub fn margin(mut self, margin: Margin) -> Self {
        self.config.margin = margin;
        self
    }

    /// The indicator (default adaptive).
    pub fn indicator(mut self, indicator: Indicator) -> Self {
        self.config.indicator = indicator;
        self
    }

    /// The reduction (default mean).
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.config.reduction = reduction;
        self
    }

    /// The derivative of the angular and combined margins (default exact).
    pub fn angular_gradient(mut self, angular_gradient: AngularGradient) -> Self {
        self.config.angular_gradient = angular_gradient;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// [`crate::Error::Hyperparameter`] naming the first value out of its domain.
    pub fn build(self) -> Result<SvSoftmax> {
        let SvSoftmax {
            scale, t, margin, ..
        } = self.config;
        check("scale", "a finite value > 0", scale, scale > 0.0)?;
        check(
            "t",
            "a finite value >= 1 (the paper's convention)",
            t,
            t >= 1.0,
        )?;
        margin.validate()?;
        Ok(self.config)
    }
}
