//! The element types the engine reads and writes, and the float type each computes in.

use svsoftmax_core::Real;

use crate::exp::FastExp;

/// An element of the cosines and of the gradient buffer.
///
/// `f32` and `f64` compute in themselves. With the `half` feature, `half::f16` and
/// `half::bf16` are loaded into f32 and stored back from it: the exponentials, the sums
/// and the gradient's factors are all formed in f32, never in the narrow type, whose
/// `exp` would overflow once `s · cos > 11` (f16).
pub trait Element: Copy + Send + Sync + 'static {
    /// The float type the kernel computes in.
    type Real: Real + FastExp;

    /// The type's name in engine names and reports.
    const NAME: &'static str;

    /// Whether the type spans the compute type's exponent range, so that the kernel may
    /// keep unnormalized exponentials as small as `e^-87` in it (not f16, whose smallest
    /// positive value is 6e-8).
    const WIDE_RANGE: bool = true;

    /// Widens to the compute type.
    fn load(self) -> Self::Real;

    /// Rounds from the compute type.
    fn store(value: Self::Real) -> Self;
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    type Real = f32;

    #[inline(always)]
    fn load(self) -> f32 {
        self
    }

    #[inline(always)]
    fn store(value: f32) -> f32 {
        value
    }
}

impl Element for f64 {
    const NAME: &'static str = "f64";
    type Real = f64;

    #[inline(always)]
    fn load(self) -> f64 {
        self
    }

    #[inline(always)]
    fn store(value: f64) -> f64 {
        value
    }
}

#[cfg(feature = "half")]
impl Element for half::f16 {
    const NAME: &'static str = "f16";
    const WIDE_RANGE: bool = false;
    type Real = f32;

    #[inline(always)]
    fn load(self) -> f32 {
        self.to_f32()
    }

    #[inline(always)]
    fn store(value: f32) -> half::f16 {
        half::f16::from_f32(value)
    }
}

#[cfg(feature = "half")]
impl Element for half::bf16 {
    const NAME: &'static str = "bf16";
    type Real = f32;

    #[inline(always)]
    fn load(self) -> f32 {
        self.to_f32()
    }

    #[inline(always)]
    fn store(value: f32) -> half::bf16 {
        half::bf16::from_f32(value)
    }
}
