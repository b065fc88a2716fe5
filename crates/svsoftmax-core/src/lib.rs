//! The core of svsoftmax: the configuration of the SV-X-Softmax loss family, the scalar
//! pieces every engine evaluates, the contract engines implement, and the reference math
//! in f64 that every engine is tested against.
//!
//! The loss of a row with cosines `cos θ_k`, target `y`, scale `s`, hard-example weight
//! `t` and margin `f(m, ·)` is the softmax cross-entropy over the adjusted logits
//! `z_y = s f(m, cos θ_y)` and `z_k = s cos θ_k + I_k log h_k`, where the support-vector
//! mask `I_k = [f(m, cos θ_y) < cos θ_k]` selects the negatives the margin does not yet
//! separate and the indicator `h_k` weighs them up. See [`SvSoftmax`].
//!
//! ```
//! use svsoftmax_core::{reference, CosineMatrix, SvSoftmax, Targets, Upstream};
//!
//! let config = SvSoftmax::sv_am(32.0, 0.35, 1.2)?;
//! let cosines = CosineMatrix::new(&[0.5, 0.6, -0.2], 1, 3)?;
//! let targets = Targets::new(&[0]);
//! let evaluation = reference::forward_backward(&config, cosines, &targets, Upstream::default())?;
//! assert!((evaluation.forward.loss - 24.64).abs() < 1e-9);
//! assert_eq!(evaluation.grad_cosines.len(), 3);
//! # Ok::<(), svsoftmax_core::Error>(())
//! ```
#![warn(missing_docs)]

mod config;
mod engine;
mod error;
mod margin;
mod matrix;
mod real;
pub mod reference;
pub mod scalar;
pub mod shard;
mod targets;

pub use config::{AngularGradient, Indicator, Reduction, SvSoftmax, SvSoftmaxBuilder, TConvention};
pub use engine::{Engine, Evaluation, Forward, RowDiagnostics, Upstream};
pub use error::{Error, Result};
pub use margin::{BeyondPi, Margin};
pub use matrix::CosineMatrix;
pub use real::Real;
pub use targets::Targets;

/// The workspace README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
