//! The scalar pieces of the loss, written once over [`Real`] so that every engine evaluates
//! the same formulas: the target score and its derivative, the support-vector mask, the
//! log-indicator and its derivative, and the check of one input cosine.
//!
//! An engine builds a [`Pieces`] once per call and applies it element by element:
//!
//! ```
//! use svsoftmax_core::{scalar::Pieces, Margin, SvSoftmax};
//!
//! let config = SvSoftmax::builder().scale(32.0).margin(Margin::additive(0.35)).build()?;
//! let pieces = Pieces::<f32>::new(&config)?;
//! let target = pieces.target_logit(0.5);
//! let negative = pieces.negative_logit(target.score, 0.6);
//! assert!(negative.masked); // 0.5 - 0.35 < 0.6
//! assert!((target.logit - 32.0 * 0.15).abs() < 1e-5);
//! # Ok::<(), svsoftmax_core::Error>(())
//! ```

use crate::config::{AngularGradient, Indicator, SvSoftmax};
use crate::error::{Error, Result};
use crate::margin::{BeyondPi, Margin};
use crate::real::Real;

/// How far past ±1 a cosine may lie, for the margins that take an arccos, and still be
/// accepted (and clamped to ±1).
///
/// A cosine of two unit vectors computed in f32 carries a rounding error of at most about
/// `n · 2⁻²⁴` for embeddings of dimension `n` (the classic dot-product bound), plus the
/// error of the normalisation; `1e-4` covers that bound up to `n ≈ 1600` while still
/// rejecting values, such as 1.01, that no rounding explains.
pub const COSINE_TOLERANCE: f64 = 1e-4;

/// The smallest angle, from 0 or from π, at which the derivative of an angular or combined
/// target score is evaluated.
///
/// `d cos(θ + m) / d cos θ = sin(θ + m) / sin θ` diverges as `θ → 0` or `θ → π`. The
/// derivative is evaluated with `sin θ` no smaller than `sin 2⁻¹²` (the combined margin: at
/// the angle clamped to `[2⁻¹², π - 2⁻¹²]`), which caps it near `sin m · 4096`, about
/// 2000
/// for `m = 0.5`. `2⁻¹²` is exact in both float types and lies below the smallest non-zero
/// angle that f32 resolves next to ±1 (about `3.5e-4`), so in f32 the cap acts on cosines of
/// exactly ±1 only, and f32 and f64 agree there. In f64 it also acts within about `3e-8` of
/// ±1, where the slope is capped rather than exact.
pub const MIN_ANGLE: f64 = 1.0 / 4096.0;

/// A value with its derivative with respect to one cosine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Valued<F> {
    /// The value.
    pub value: F,
    /// Its derivative with respect to the cosine it was computed from.
    pub derivative: F,
}

/// The target score `f(m, cos θ_y)` of a [`Margin`], ready to evaluate in `F`.
#[derive(Debug, Clone, Copy)]
pub struct TargetRule<F> {
    kind: RuleKind<F>,
    straight_through: bool,
}

#[derive(Debug, Clone, Copy)]
enum RuleKind<F> {
    Plain,
    Additive {
        m: F,
    },
    /// `cos(θ + m) - m3`: the angular margin, and the combined one when `m1 = 1`.
    Angular {
        cos_m: F,
        sin_m: F,
        m3: F,
        fallback_shift: F,
        beyond_pi: BeyondPi,
    },
    Multiplicative {
        m: u32,
        lambda: F,
    },
    Combined {
        m1: F,
        m2: F,
        m3: F,
        fallback_shift: F,
        beyond_pi: BeyondPi,
    },
}

impl<F: Real> TargetRule<F> {
    /// The rule of `margin`; `gradient` applies to the angular and combined margins.
    pub fn new(margin: Margin, gradient: AngularGradient) -> Self {
        let f = F::from_f64;
        let angular = |m: f64, m3: f64, beyond_pi| RuleKind::Angular {
            cos_m: f(m.cos()),
            sin_m: f(m.sin()),
            m3: f(m3),
            fallback_shift: f(m * m.sin()),
            beyond_pi,
        };
        let kind = match margin {
            Margin::None => RuleKind::Plain,
            Margin::Additive { m } => RuleKind::Additive { m: f(m) },
            Margin::Angular { m, beyond_pi } => angular(m, 0.0, beyond_pi),
            Margin::Multiplicative { m, lambda } => RuleKind::Multiplicative {
                m,
                lambda: f(lambda),
            },
            // The angular form avoids the arccos, so `Combined { m1: 1, .. }` computes
            // exactly what `Angular` does (and `cos(acos c)` never stands in for `c`).
            Margin::Combined {
                m1: 1.0,
                m2,
                m3,
                beyond_pi,
            } => angular(m2, m3, beyond_pi),
            Margin::Combined {
                m1,
                m2,
                m3,
                beyond_pi,
            } => {
                let threshold = (std::f64::consts::PI - m2) / m1;
                RuleKind::Combined {
                    m1: f(m1),
                    m2: f(m2),
                    m3: f(m3),
                    fallback_shift: f((m2 * m2.sin()).max(1.0 + threshold.cos())),
                    beyond_pi,
                }
            }
        };
        Self {
            kind,
            straight_through: gradient == AngularGradient::StraightThrough,
        }
    }

    /// The target score of the target cosine and its derivative.
    ///
    /// For the margins that take an arccos, the cosine is clamped to `[-1, 1]` first and the
    /// derivative is the one at the clamped point.
    #[inline]
    pub fn score(&self, cos_y: F) -> Valued<F> {
        match self.kind {
            RuleKind::Plain => identity(cos_y),
            RuleKind::Additive { m } => identity(cos_y - m),
            RuleKind::Angular {
                cos_m,
                sin_m,
                m3,
                fallback_shift,
                beyond_pi,
            } => {
                let c = clamp_unit(cos_y);
                // θ + m > π exactly when cos θ < cos(π - m) = -cos m.
                let beyond = c < -cos_m;
                let scored = match beyond_pi {
                    BeyondPi::Easy if c <= F::zero() => identity(c),
                    BeyondPi::Clip if beyond => constant(-F::one() - m3),
                    BeyondPi::Fallback if beyond => identity(c - fallback_shift - m3),
                    _ => {
                        let scored = angular(c, cos_m, sin_m);
                        Valued {
                            value: scored.value - m3,
                            derivative: scored.derivative,
                        }
                    }
                };
                self.straighten(scored)
            }
            RuleKind::Multiplicative { m, lambda } => multiplicative(clamp_unit(cos_y), m, lambda),
            RuleKind::Combined {
                m1,
                m2,
                m3,
                fallback_shift,
                beyond_pi,
            } => {
                let c = clamp_unit(cos_y);
                let theta = c.acos();
                let phi = m1 * theta + m2;
                let beyond = phi > F::PI();
                let scored = match beyond_pi {
                    BeyondPi::Easy if c <= F::zero() => identity(c),
                    BeyondPi::Clip if beyond => constant(-F::one() - m3),
                    BeyondPi::Fallback if beyond => identity(c - fallback_shift - m3),
                    _ => {
                        let theta = clamp_angle(theta);
                        let derivative = m1 * (m1 * theta + m2).sin() / theta.sin();
                        Valued {
                            value: phi.cos() - m3,
                            derivative,
                        }
                    }
                };
                self.straighten(scored)
            }
        }
    }

    fn straighten(&self, scored: Valued<F>) -> Valued<F> {
        if self.straight_through {
            identity(scored.value)
        } else {
            scored
        }
    }
}

/// An upper bound of `|f'(c)|` over `[-1, 1]`: 1 for the margins without an arccos and the
/// straight-through gradient; `1 + 1 / sin 2⁻¹²` for the angular margin (its capped
/// `sin(θ + m) / sin θ`), `m1` times that for the combined one; `m²` for the multiplicative
/// one (`|T_m'| <= m²`, and blending with `λ c` only lowers it). The scale times this must
/// be finite, or a target's gradient could overflow where every input is fine.
fn steepest_target_slope(margin: Margin, gradient: AngularGradient) -> f64 {
    let capped = 1.0 + 1.0 / MIN_ANGLE.sin();
    match margin {
        Margin::None | Margin::Additive { .. } => 1.0,
        Margin::Angular { .. } | Margin::Combined { .. }
            if gradient == AngularGradient::StraightThrough =>
        {
            1.0
        }
        Margin::Angular { .. } => capped,
        Margin::Combined { m1, .. } => capped * m1.max(1.0),
        Margin::Multiplicative { m, .. } => f64::from(m) * f64::from(m),
    }
}

fn constant<F: Real>(value: F) -> Valued<F> {
    Valued {
        value,
        derivative: F::zero(),
    }
}

fn identity<F: Real>(value: F) -> Valued<F> {
    Valued {
        value,
        derivative: F::one(),
    }
}

fn clamp_unit<F: Real>(c: F) -> F {
    c.max(-F::one()).min(F::one())
}

fn clamp_angle<F: Real>(theta: F) -> F {
    let min = F::from_f64(MIN_ANGLE);
    theta.max(min).min(F::PI() - min)
}

/// `cos(θ + m) = c cos m - sin θ sin m`, which avoids the arccos and keeps full accuracy
/// next to ±1; `sin θ = sqrt((1 - c)(1 + c))` for the same reason.
fn angular<F: Real>(c: F, cos_m: F, sin_m: F) -> Valued<F> {
    let sin_theta = ((F::one() - c) * (F::one() + c)).sqrt();
    let sin_floor = F::from_f64(MIN_ANGLE.sin());
    let derivative = cos_m + c * sin_m / sin_theta.max(sin_floor);
    Valued {
        value: c * cos_m - sin_theta * sin_m,
        derivative,
    }
}

/// SphereFace's `ψ(θ) = (-1)^k cos(mθ) - 2k`, blended with `λ cos θ`. `cos(mθ)` is the
/// Chebyshev polynomial `T_m(c)` and its derivative `m U_{m-1}(c)` is a polynomial too, so
/// the derivative is finite at ±1 without any clamp.
fn multiplicative<F: Real>(c: F, m: u32, lambda: F) -> Valued<F> {
    let m_f = F::from_f64(f64::from(m));
    let sector = (m_f * c.acos() / F::PI())
        .floor()
        .min(m_f - F::one())
        .max(F::zero());
    let sign = if (sector.to_f64() as u32).is_multiple_of(2) {
        F::one()
    } else {
        -F::one()
    };
    let (t_m, u_m_minus_1) = chebyshev(c, m);

    let two = F::one() + F::one();
    let psi = sign * t_m - two * sector;
    let psi_derivative = sign * m_f * u_m_minus_1;
    let one_plus_lambda = F::one() + lambda;
    Valued {
        value: (lambda * c + psi) / one_plus_lambda,
        derivative: (lambda + psi_derivative) / one_plus_lambda,
    }
}

/// `(T_m(c), U_{m-1}(c))` by the three-term recurrences, `m >= 1`.
fn chebyshev<F: Real>(c: F, m: u32) -> (F, F) {
    let two_c = c + c;
    let (mut t_prev, mut t) = (F::one(), c);
    let (mut u_prev, mut u) = (F::zero(), F::one());
    for _ in 1..m {
        (t_prev, t) = (t, two_c * t - t_prev);
        (u_prev, u) = (u, two_c * u - u_prev);
    }
    (t, u)
}

/// The logarithm of the indicator `h_k` on a support vector, and its derivative.
///
/// Adaptive: `log h_k = s (t - 1) (cos θ_k + 1)`, derivative `s (t - 1)`. Fixed:
/// `log h_k = s (t - 1)`, derivative 0. On a column outside the mask `log h_k = 0`.
#[derive(Debug, Clone, Copy)]
pub struct LogIndicator<F> {
    weight: F,
    adaptive: bool,
}

impl<F: Real> LogIndicator<F> {
    /// The indicator of `config`.
    pub fn new(config: &SvSoftmax) -> Self {
        Self {
            weight: F::from_f64(config.scale() * (config.t() - 1.0)),
            adaptive: config.indicator() == Indicator::Adaptive,
        }
    }

    /// `log h_k` of a support vector with cosine `cos_k`.
    #[inline]
    pub fn value(&self, cos_k: F) -> F {
        if self.adaptive {
            self.weight * (cos_k + F::one())
        } else {
            self.weight
        }
    }

    /// `d log h_k / d cos_k` on a support vector.
    #[inline]
    pub fn derivative(&self) -> F {
        if self.adaptive {
            self.weight
        } else {
            F::zero()
        }
    }
}

/// The support-vector mask: a non-target column is a support vector iff the target score
/// is strictly below its cosine. A tie is not a support vector.
#[inline]
pub fn is_support_vector<F: Real>(target_score: F, cos_k: F) -> bool {
    target_score < cos_k
}

/// The target column's adjusted logit `s f`, its slope `s f'` and the score `f` itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetLogit<F> {
    /// The target score `f`, which the mask compares against.
    pub score: F,
    /// `z_y = s f`.
    pub logit: F,
    /// `d z_y / d cos θ_y = s f'`.
    pub slope: F,
}

/// A non-target column's adjusted logit `s cos θ_k + log h_k` and its slope.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NegativeLogit<F> {
    /// `z_k = s cos θ_k + I_k log h_k`.
    pub logit: F,
    /// `d z_k / d cos θ_k = s + I_k d log h_k / d cos θ_k`.
    pub slope: F,
    /// `I_k`.
    pub masked: bool,
}

/// Every scalar piece of one configuration, converted to `F` once.
#[derive(Debug, Clone, Copy)]
pub struct Pieces<F> {
    scale: F,
    target: TargetRule<F>,
    indicator: LogIndicator<F>,
    arccos_margin: Option<&'static str>,
    /// `1 + COSINE_TOLERANCE` for the arccos margins; otherwise the largest magnitude whose
    /// logit `s c + s (t - 1) (c + 1)` is sure to be finite in `F`.
    cosine_limit: F,
    /// `-1` for the arccos margins, `-∞` otherwise.
    cosine_floor: F,
    /// The configured `t`, for error messages.
    t: f64,
}

impl<F: Real> Pieces<F> {
    /// The pieces of `config`, in `F`.
    ///
    /// # Errors
    /// [`Error::Hyperparameter`] when a value that is finite in f64 is not in `F`: the
    /// scale, `s t` (the steepest slope of a support vector) or a margin parameter.
    pub fn new(config: &SvSoftmax) -> Result<Self> {
        let (scale, t) = (config.scale(), config.t());
        for (name, value) in [("scale", scale), ("scale * t", scale * t)] {
            if !F::from_f64(value).is_finite() {
                return Err(Error::Hyperparameter {
                    name,
                    expected: "a value that is finite in the engine's float type",
                    got: value,
                });
            }
        }
        let margin = config.margin();
        let steepest = scale * steepest_target_slope(margin, config.angular_gradient());
        if !F::from_f64(steepest).is_finite() {
            return Err(Error::Hyperparameter {
                name: "scale * steepest target slope",
                expected: "a value that is finite in the engine's float type",
                got: steepest,
            });
        }
        for (name, value) in margin.parameters() {
            if !F::from_f64(value).is_finite() {
                return Err(Error::Hyperparameter {
                    name,
                    expected: "a value that is finite in the engine's float type",
                    got: value,
                });
            }
        }
        let (cosine_limit, cosine_floor) = if margin.takes_arccos() {
            (F::one() + F::from_f64(COSINE_TOLERANCE), -F::one())
        } else {
            // |s c + w (c + 1)| <= (s + w)(|c| + 1) <= 2 (s + w) |c| once |c| >= 1; a
            // factor 2 more keeps the sum of the two terms clear of overflow as well.
            let steepest = scale + scale * (t - 1.0);
            (
                F::max_value() / F::from_f64(4.0) / F::from_f64(steepest.max(1.0)),
                F::neg_infinity(),
            )
        };
        Ok(Self {
            scale: F::from_f64(scale),
            target: TargetRule::new(margin, config.angular_gradient()),
            indicator: LogIndicator::new(config),
            arccos_margin: margin.takes_arccos().then(|| margin.name()),
            cosine_limit,
            cosine_floor,
            t,
        })
    }

    /// The scale `s` in `F`.
    #[inline]
    pub fn scale(&self) -> F {
        self.scale
    }

    /// The largest adjusted logit that any cosine in `[-1, 1]` can produce, target or not:
    /// `s + log h` at `cos θ = 1` (the target's `s f` is at most `s`, since every margin's
    /// score is at most 1). A kernel may use it as the log-sum-exp's reference point in
    /// place of the row maximum, when it knows the row's cosines lie in `[-1, 1]`.
    #[inline]
    pub fn logit_bound(&self) -> F {
        self.scale + self.indicator.value(F::one())
    }

    /// The steepest slope `d z_k / d cos θ_k` of a non-target column: `s` plus the
    /// log-indicator's slope on a support vector.
    #[inline]
    pub fn steepest_negative_slope(&self) -> F {
        self.scale + self.indicator.derivative()
    }

    /// The target score rule.
    pub fn target_rule(&self) -> &TargetRule<F> {
        &self.target
    }

    /// The log-indicator.
    pub fn indicator(&self) -> &LogIndicator<F> {
        &self.indicator
    }

    /// The target column's logit, from the (checked) target cosine.
    #[inline]
    pub fn target_logit(&self, cos_y: F) -> TargetLogit<F> {
        let score = self.target.score(cos_y);
        TargetLogit {
            score: score.value,
            logit: self.scale * score.value,
            slope: self.scale * score.derivative,
        }
    }

    /// A non-target column's logit, given the row's target score.
    #[inline(always)]
    pub fn negative_logit(&self, target_score: F, cos_k: F) -> NegativeLogit<F> {
        let plain = self.scale * cos_k;
        if is_support_vector(target_score, cos_k) {
            NegativeLogit {
                logit: plain + self.indicator.value(cos_k),
                slope: self.scale + self.indicator.derivative(),
                masked: true,
            }
        } else {
            NegativeLogit {
                logit: plain,
                slope: self.scale,
                masked: false,
            }
        }
    }

    /// Whether the loss clamps the cosines to `[-1, 1]` (the margins that take an arccos).
    #[inline]
    pub fn clamps_cosines(&self) -> bool {
        self.arccos_margin.is_some()
    }

    /// Whether the loss accepts `cos_k`: within `±(1 + COSINE_TOLERANCE)` for the margins that
    /// take an arccos, and otherwise small enough that its logit is finite. One comparison,
    /// so that a vectorized kernel can fold it into its pass and call
    /// [`Pieces::check_cosine`] only to name the culprit; a non-target logit from an accepted
    /// cosine never overflows.
    #[inline(always)]
    pub fn accepts(&self, cos_k: F) -> bool {
        // NaN fails the comparison; so does ±∞ against a finite limit.
        cos_k.abs() <= self.cosine_limit
    }

    /// The cosine the loss uses for an accepted input: clamped to `[-1, 1]` for the
    /// margins that take an arccos, unchanged otherwise. Branch-free.
    #[inline(always)]
    pub fn clamp_cosine(&self, cos_k: F) -> F {
        // Comparisons rather than `max`/`min`, whose NaN rules cost extra instructions in a
        // vector loop; a NaN is rejected by `accepts` whatever this returns.
        let floor = self.cosine_floor;
        let raised = if cos_k > floor { cos_k } else { floor };
        if raised < -floor {
            raised
        } else {
            -floor
        }
    }

    /// Checks one input cosine and returns the value the loss uses.
    ///
    /// # Errors
    /// [`Error::NonFiniteCosine`] for NaN or ±∞; for the margins that take an arccos,
    /// [`Error::CosineOutOfRange`] beyond `±(1 + COSINE_TOLERANCE)` (values within the
    /// tolerance are clamped to ±1); for the others, [`Error::LogitOverflow`] for a
    /// magnitude whose logit could overflow `F`.
    #[inline]
    pub fn check_cosine(&self, row: usize, col: usize, value: F) -> Result<F> {
        if self.accepts(value) {
            return Ok(self.clamp_cosine(value));
        }
        match self.arccos_margin {
            _ if !value.is_finite() => Err(Error::NonFiniteCosine {
                row,
                col,
                value: value.to_f64(),
            }),
            Some(margin) => Err(Error::CosineOutOfRange {
                row,
                col,
                value: value.to_f64(),
                margin,
                tolerance: COSINE_TOLERANCE,
            }),
            None => Err(self.logit_overflow(row, col, value)),
        }
    }

    /// Checks that a logit computed from a finite cosine is finite.
    ///
    /// # Errors
    /// [`Error::LogitOverflow`] when it is not.
    #[inline]
    pub fn check_logit(&self, row: usize, col: usize, cosine: F, logit: F) -> Result<()> {
        if logit.is_finite() {
            Ok(())
        } else {
            Err(self.logit_overflow(row, col, cosine))
        }
    }

    fn logit_overflow(&self, row: usize, col: usize, cosine: F) -> Error {
        Error::LogitOverflow {
            row,
            col,
            cosine: cosine.to_f64(),
            scale: self.scale.to_f64(),
            t: self.t,
            dtype: F::NAME,
        }
    }
}
