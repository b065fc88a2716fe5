//! The float types that the scalar pieces are generic over.

use std::fmt::{Debug, Display};

use num_traits::{Float, FloatConst};

/// A float type an engine computes in: `f32` or `f64`.
///
/// The scalar pieces of the loss are written once over this trait so that every engine
/// evaluates the same formulas in its own precision. The trait is sealed: the tolerances
/// and constants of this crate are stated for these two types only.
pub trait Real:
    Float + FloatConst + Debug + Display + Default + Send + Sync + 'static + sealed::Sealed
{
    /// The type's name as the error messages and reports spell it.
    const NAME: &'static str;

    /// Converts from `f64`, rounding to nearest.
    fn from_f64(value: f64) -> Self;

    /// Converts to `f64` exactly.
    fn to_f64(self) -> f64;
}

impl Real for f32 {
    const NAME: &'static str = "f32";

    #[inline]
    fn from_f64(value: f64) -> Self {
        value as f32
    }

    #[inline]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Real for f64 {
    const NAME: &'static str = "f64";

    #[inline]
    fn from_f64(value: f64) -> Self {
        value
    }

    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}
