//! The float types and devices the loss runs on, and which implementations each offers.

use std::sync::Arc;

use dfdx::prelude::*;
use svsoftmax_core::{Error, Real, Result, SvSoftmax, Targets};

use crate::fused::Buffers;
use crate::Implementation;

/// A float type of the loss: `f32` or `f64`.
pub trait DfdxFloat: Dtype + Real + svsoftmax_ndarray::Element<Real = Self> {
    /// Bits of the mantissa, the hidden one included.
    const MANTISSA_DIGITS: u32;

    /// A column index, exact when it is below `2^MANTISSA_DIGITS`.
    fn from_usize_exact(value: usize) -> Self;

    /// Rounds an f64 to nearest (the core's [`Real::from_f64`], named apart from
    /// `num_traits`' fallible one).
    #[inline]
    fn round_from(value: f64) -> Self {
        <Self as Real>::from_f64(value)
    }

    /// Widens to f64, exactly.
    #[inline]
    fn widen(self) -> f64 {
        <Self as Real>::to_f64(self)
    }

    /// A `Cpu` buffer of this type as a slice (generic code cannot see through dfdx's
    /// storage type on its own).
    #[doc(hidden)]
    fn cpu_slice(buffer: &mut <Cpu as Storage<Self>>::Vec) -> &mut [Self];

    /// The fused implementation's reusable buffers of this type.
    #[doc(hidden)]
    fn pool(buffers: &Buffers) -> &crate::fused::Pool<Self>;

    /// The type's name in messages.
    #[inline]
    fn dtype() -> &'static str {
        <Self as Real>::NAME
    }
}

impl DfdxFloat for f32 {
    const MANTISSA_DIGITS: u32 = f32::MANTISSA_DIGITS;

    fn from_usize_exact(value: usize) -> Self {
        value as f32
    }

    fn cpu_slice(buffer: &mut <Cpu as Storage<Self>>::Vec) -> &mut [Self] {
        buffer
    }

    fn pool(buffers: &Buffers) -> &crate::fused::Pool<Self> {
        &buffers.f32
    }
}

impl DfdxFloat for f64 {
    const MANTISSA_DIGITS: u32 = f64::MANTISSA_DIGITS;

    fn from_usize_exact(value: usize) -> Self {
        value as f64
    }

    fn cpu_slice(buffer: &mut <Cpu as Storage<Self>>::Vec) -> &mut [Self] {
        buffer
    }

    fn pool(buffers: &Buffers) -> &crate::fused::Pool<Self> {
        &buffers.f64
    }
}

/// A dfdx device the loss runs on: [`Cpu`] offers both implementations, other devices the
/// composed one.
pub trait LossDevice<E: DfdxFloat>: Device<E> + TensorFromVec<bool> {
    /// The device's name in error messages.
    const NAME: &'static str;

    /// What [`Implementation::Auto`] picks on this device (measured: see the README).
    const DEFAULT: Implementation;

    /// The fused implementation's per-row losses, or `None` where the device has none.
    #[doc(hidden)]
    fn fused_row_losses<B: Dim, K: Dim, T: Tape<E, Self>>(
        buffers: &Arc<Buffers>,
        config: &SvSoftmax,
        cosines: Tensor<(B, K), E, Self, T>,
        targets: &Targets,
    ) -> Option<Result<crate::Rows<B, E, Self, T>>>;
}

impl<E: DfdxFloat> LossDevice<E> for Cpu
where
    Cpu: Device<E> + TensorFromVec<bool>,
{
    const NAME: &'static str = "Cpu";
    const DEFAULT: Implementation = Implementation::Fused;

    fn fused_row_losses<B: Dim, K: Dim, T: Tape<E, Self>>(
        buffers: &Arc<Buffers>,
        config: &SvSoftmax,
        cosines: Tensor<(B, K), E, Self, T>,
        targets: &Targets,
    ) -> Option<Result<crate::Rows<B, E, Self, T>>> {
        Some(crate::fused::row_losses(buffers, config, cosines, targets))
    }
}

#[cfg(feature = "cuda")]
impl<E: DfdxFloat> LossDevice<E> for Cuda
where
    Cuda: Device<E> + TensorFromVec<bool>,
{
    const NAME: &'static str = "Cuda";
    const DEFAULT: Implementation = Implementation::Composed;

    fn fused_row_losses<B: Dim, K: Dim, T: Tape<E, Self>>(
        _buffers: &Arc<Buffers>,
        _config: &SvSoftmax,
        _cosines: Tensor<(B, K), E, Self, T>,
        _targets: &Targets,
    ) -> Option<Result<crate::Rows<B, E, Self, T>>> {
        None
    }
}

/// Maps a device's error into the core's, naming the step that failed.
pub(crate) fn device_error<Err: std::fmt::Debug>(
    operation: &'static str,
) -> impl FnOnce(Err) -> Error {
    move |error| Error::Device {
        operation,
        message: format!("{error:?}"),
    }
}
