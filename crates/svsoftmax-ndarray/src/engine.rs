//! The engine contract of the core, implemented on this crate's kernel.

use std::marker::PhantomData;

use ndarray::ArrayView2;
use svsoftmax_core::{
    CosineMatrix, Engine, Evaluation, Forward, Real, Result, SvSoftmax, Targets, Upstream,
};

use crate::element::Element;

/// This crate's kernel behind the core's [`Engine`] contract, computing in `E`.
///
/// The contract's f64 inputs are rounded to `E` and the results widened back, so that the
/// same case runs here and on the reference.
#[derive(Debug, Clone)]
pub struct NdarrayEngine<E> {
    name: String,
    element: PhantomData<E>,
}

impl<E: Element> NdarrayEngine<E> {
    /// The engine for element type `E`, named `ndarray-<type>`.
    pub fn new() -> Self {
        Self {
            name: format!("ndarray-{}", E::NAME),
            element: PhantomData,
        }
    }
}

impl<E: Element> Default for NdarrayEngine<E> {
    fn default() -> Self {
        Self::new()
    }
}

fn narrow<E: Element>(cosines: CosineMatrix<'_>) -> ndarray::Array2<E> {
    let data = cosines
        .as_slice()
        .iter()
        .map(|&value| E::store(E::Real::from_f64(value)))
        .collect();
    ndarray::Array2::from_shape_vec((cosines.n_rows(), cosines.n_classes()), data)
        .expect("the matrix has n_rows x n_classes values")
}

impl<E: Element> Engine for NdarrayEngine<E> {
    fn name(&self) -> &str {
        &self.name
    }

    fn forward(
        &self,
        config: &SvSoftmax,
        cosines: CosineMatrix<'_>,
        targets: &Targets,
    ) -> Result<Forward> {
        let narrowed = narrow::<E>(cosines);
        crate::forward(config, narrowed.view(), targets)
            .map_err(|error| error.after_narrowing(cosines, E::NAME))
    }

    fn forward_backward(
        &self,
        config: &SvSoftmax,
        cosines: CosineMatrix<'_>,
        targets: &Targets,
        upstream: Upstream<'_>,
    ) -> Result<Evaluation> {
        let narrowed: ndarray::Array2<E> = narrow(cosines);
        let view: ArrayView2<'_, E> = narrowed.view();
        let (forward, grad) = crate::forward_backward(config, view, targets, upstream)
            .map_err(|error| error.after_narrowing(cosines, E::NAME))?;
        let grad_cosines = grad.iter().map(|value| value.load().to_f64()).collect();
        Ok(Evaluation {
            forward,
            grad_cosines,
        })
    }
}
