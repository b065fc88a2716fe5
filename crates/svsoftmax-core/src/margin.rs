//! The margin applied to the target cosine, and its validation.

use std::f64::consts::FRAC_PI_2;

use crate::error::{Error, Result};

/// What the angular and combined margins do once the margined angle passes π.
///
/// `cos(θ + m)` rises again for `θ > π - m`, so a plain formula would reward the hardest
/// rows for moving away from their class. Peers disagree on the cure, and the choice
/// changes which negatives the support-vector mask selects, so it is an explicit option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BeyondPi {
    /// Clip the margined angle at π: the target score is `-1` (minus `m3` for the combined
    /// margin) there, and its derivative is zero.
    Clip,
    /// Replace the formula by the line `cos θ - m sin m` past the threshold, as insightface
    /// and pytorch-metric-learning do. For the combined margin the line is
    /// `cos θ - δ - m3` with `δ = max(m2 sin m2, 1 + cos θ_t)` at the threshold angle
    /// `θ_t = (π - m2) / m1`: `m2 sin m2` as for the angular margin when `m1 = 1`, and
    /// larger where that would let the score jump up at the threshold.
    ///
    /// This is the default: the score keeps decreasing with the angle and keeps a unit
    /// derivative, so the hardest rows still get a gradient, and numbers match the code
    /// most users port from.
    #[default]
    Fallback,
    /// "Easy margin": apply the margin only where `cos θ > 0`, and use `cos θ` elsewhere.
    Easy,
}

impl BeyondPi {
    /// The option's name in reports and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Clip => "clip",
            Self::Fallback => "fallback",
            Self::Easy => "easy",
        }
    }
}

/// The margin `f(m, cos θ_y)` that turns the target cosine into the target score.
///
/// | variant | loss | target score `f` |
/// |---|---|---|
/// | [`Margin::None`] | SV-Softmax | `cos θ_y` |
/// | [`Margin::Additive`] | SV-AM (CosFace) | `cos θ_y - m` |
/// | [`Margin::Angular`] | SV-Arc (ArcFace) | `cos(θ_y + m)` |
/// | [`Margin::Multiplicative`] | SV-A (SphereFace) | `(λ cos θ_y + ψ(θ_y)) / (1 + λ)` |
/// | [`Margin::Combined`] | insightface's combined margin | `cos(m1 θ_y + m2) - m3` |
///
/// with `ψ(θ) = (-1)^k cos(m θ) - 2k` for `θ ∈ [kπ/m, (k+1)π/m]`. The variants' fields are
/// public so that a margin can be matched on; [`crate::SvSoftmax`]'s builder validates them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Margin {
    /// No margin: `f = cos θ_y`.
    #[default]
    None,
    /// Additive cosine margin: `f = cos θ_y - m`, `m ≥ 0`.
    Additive {
        /// The margin subtracted from the target cosine.
        m: f64,
    },
    /// Additive angular margin: `f = cos(θ_y + m)`, `0 ≤ m ≤ π/2`.
    Angular {
        /// The angle added to the target angle, in radians.
        m: f64,
        /// What happens once `θ_y + m` passes π.
        beyond_pi: BeyondPi,
    },
    /// Multiplicative angular margin: `f = (λ cos θ_y + ψ(θ_y)) / (1 + λ)`, integer
    /// `1 ≤ m ≤ 32`.
    Multiplicative {
        /// The angle multiplier.
        m: u32,
        /// The blend weight `λ ≥ 0` of the plain cosine; 0 is the pure `ψ`.
        lambda: f64,
    },
    /// Combined margin: `f = cos(m1 θ_y + m2) - m3`, with `0 < m1 ≤ 16`, `0 ≤ m2 ≤ π/2`
    /// and `m3 ≥ 0`.
    Combined {
        /// The angle multiplier.
        m1: f64,
        /// The angle added, in radians.
        m2: f64,
        /// The cosine subtracted.
        m3: f64,
        /// What happens once `m1 θ_y + m2` passes π.
        beyond_pi: BeyondPi,
    },
}

impl Margin {
    /// The additive cosine margin `cos θ_y - m`.
    pub fn additive(m: f64) -> Self {
        Self::Additive { m }
    }

    /// The additive angular margin `cos(θ_y + m)`, with the default [`BeyondPi`].
    pub fn angular(m: f64) -> Self {
        Self::Angular {
            m,
            beyond_pi: BeyondPi::default(),
        }
    }

    /// The multiplicative margin `ψ(θ_y)` without the blend (`λ = 0`).
    pub fn multiplicative(m: u32) -> Self {
        Self::Multiplicative { m, lambda: 0.0 }
    }

    /// The combined margin `cos(m1 θ_y + m2) - m3`, with the default [`BeyondPi`].
    pub fn combined(m1: f64, m2: f64, m3: f64) -> Self {
        Self::Combined {
            m1,
            m2,
            m3,
            beyond_pi: BeyondPi::default(),
        }
    }

    /// The margin kind's name in reports and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Additive { .. } => "additive",
            Self::Angular { .. } => "angular",
            Self::Multiplicative { .. } => "multiplicative",
            Self::Combined { .. } => "combined",
        }
    }

    /// Whether the target score takes the arccos of the target cosine, which restricts the
    /// cosines to `[-1, 1]`.
    pub fn takes_arccos(&self) -> bool {
        matches!(
            self,
            Self::Angular { .. } | Self::Multiplicative { .. } | Self::Combined { .. }
        )
    }

    /// Checks the margin's parameters against their domains.
    ///
    /// The angles are limited to `[0, π/2]`: past that, the linear fallback no longer lies
    /// below the clipped score at the threshold (the score would jump up with the angle),
    /// and the slope's clamp at small angles could cross π. Margins used in practice are
    /// below 0.6. The multipliers are limited to what SphereFace-style margins use, which
    /// keeps the slope, up to `m²` or `m1 / sin 2⁻¹²`, and the cost of `ψ`, `O(m)`, bounded.
    /// The margin's real parameters, named as in error messages.
    pub(crate) fn parameters(&self) -> Vec<(&'static str, f64)> {
        match *self {
            Self::None => vec![],
            Self::Additive { m } | Self::Angular { m, .. } => vec![("margin m", m)],
            Self::Multiplicative { lambda, .. } => vec![("margin lambda", lambda)],
            Self::Combined { m1, m2, m3, .. } => {
                vec![("margin m1", m1), ("margin m2", m2), ("margin m3", m3)]
            }
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let angle = |name, value: f64| {
            check(
                name,
                "an angle in [0, pi/2]",
                value,
                (0.0..=FRAC_PI_2).contains(&value),
            )
        };
        let non_negative =
            |name, value: f64| check(name, "a finite value >= 0", value, value >= 0.0);
        match *self {
            Self::None => Ok(()),
            Self::Additive { m } => non_negative("margin m", m),
            Self::Angular { m, .. } => angle("margin m", m),
            Self::Multiplicative { m, lambda } => {
                let range = 1..=MAX_MULTIPLIER;
                check(
                    "margin m",
                    "an integer in [1, 32]",
                    f64::from(m),
                    range.contains(&m),
                )?;
                non_negative("margin lambda", lambda)
            }
            Self::Combined { m1, m2, m3, .. } => {
                check(
                    "margin m1",
                    "a value in (0, 16]",
                    m1,
                    m1 > 0.0 && m1 <= MAX_M1,
                )?;
                angle("margin m2", m2)?;
                non_negative("margin m3", m3)
            }
        }
    }
}

/// The largest multiplicative `m`.
const MAX_MULTIPLIER: u32 = 32;

/// The largest combined `m1`.
const MAX_M1: f64 = 16.0;

/// Accepts `got` when it is finite and `ok` holds.
pub(crate) fn check(name: &'static str, expected: &'static str, got: f64, ok: bool) -> Result<()> {
    if got.is_finite() && ok {
        Ok(())
    } else {
        Err(Error::Hyperparameter {
            name,
            expected,
            got,
        })
    }
}
