//! The cosine classifier head: L2-normalized embeddings times L2-normalized class weights.

use dfdx::nn::modules::{ModuleVisitor, TensorCollection, TensorOptions};
use dfdx::nn::{BuildModule, BuildOnDevice, Module, NonMutableModule};
use dfdx::prelude::*;
use num_traits::Float;
use rand_distr::StandardNormal;

/// The head's builder types, in dfdx's `build_module` style.
pub mod builders {
    /// Builds a [`super::CosineHead`] from `IN`-dimensional embeddings to `OUT` classes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct CosineHead<const IN: usize, const OUT: usize>;
}

/// `cos θ_ik = <x_i / |x_i|, w_k / |w_k|>`: the `(rows, classes)` cosines between each
/// embedding and each class weight, the input of the SV-X-Softmax losses.
///
/// Shapes: embeddings `(rows, IN)`, weight `(OUT, IN)` (one row per class), cosines
/// `(rows, OUT)`. dfdx differentiates the whole head, so gradients reach the embeddings and
/// the weights. A row whose norm is below [`CosineHead::MIN_NORM`] is divided by that
/// instead, so that a zero embedding or class weight gives zero cosines and finite
/// gradients rather than NaN. PyTorch analogue:
/// `F.normalize(x) @ F.normalize(w).T`.
///
/// ```
/// use dfdx::prelude::*;
/// use svsoftmax_dfdx::builders::CosineHead;
///
/// let dev: Cpu = Default::default();
/// let head = dev.build_module::<CosineHead<4, 3>, f32>();
/// let embeddings: Tensor<Rank2<2, 4>, f32, _> = dev.sample_normal();
/// let cosines = head.forward(embeddings);
/// assert!(cosines.as_vec().iter().all(|c| c.abs() <= 1.0 + 1e-6));
/// ```
#[derive(Debug, Clone)]
pub struct CosineHead<const IN: usize, const OUT: usize, E: Dtype, D: Storage<E>> {
    /// One row per class; only its direction matters.
    pub weight: Tensor<Rank2<OUT, IN>, E, D>,
}

impl<const IN: usize, const OUT: usize, E: Dtype, D: Storage<E>> CosineHead<IN, OUT, E, D> {
    /// The norm below which a row is divided by this instead of by its norm.
    pub const MIN_NORM: f64 = 1e-12;
}

impl<const IN: usize, const OUT: usize, E: Dtype, D: Device<E>> BuildOnDevice<D, E>
    for builders::CosineHead<IN, OUT>
where
    CosineHead<IN, OUT, E, D>: BuildModule<D, E>,
{
    type Built = CosineHead<IN, OUT, E, D>;
}

impl<const IN: usize, const OUT: usize, E: Dtype, D: Storage<E>> NonMutableModule
    for CosineHead<IN, OUT, E, D>
{
}

impl<const IN: usize, const OUT: usize, E, D> TensorCollection<E, D> for CosineHead<IN, OUT, E, D>
where
    E: Dtype + Float,
    D: Device<E>,
    StandardNormal: rand_distr::Distribution<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = CosineHead<IN, OUT, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            Self::tensor(
                "weight",
                |head| &head.weight,
                |head| &mut head.weight,
                // Directions uniform on the sphere: the scale of a normal draw is irrelevant
                // once the rows are normalized.
                TensorOptions::reset_with(|weight| weight.try_fill_with_distr(StandardNormal)),
            ),
            |weight| CosineHead { weight },
        )
    }
}

impl<B, const IN: usize, const OUT: usize, E, D, T> Module<Tensor<(B, Const<IN>), E, D, T>>
    for CosineHead<IN, OUT, E, D>
where
    B: Dim,
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D> + Merge<T>,
{
    type Output = Tensor<(B, Const<OUT>), E, D, T>;
    type Error = D::Err;

    fn try_forward(
        &self,
        embeddings: Tensor<(B, Const<IN>), E, D, T>,
    ) -> Result<Self::Output, D::Err> {
        let embeddings = normalize_rows(embeddings, Self::MIN_NORM)?;
        let weight = normalize_rows(self.weight.retaped::<T>(), Self::MIN_NORM)?;
        embeddings.try_matmul(weight.try_permute()?)
    }
}

/// A `(rows, columns)` tensor on tape `T`.
type Matrix<R, C, E, D, T> = Tensor<(R, C), E, D, T>;

/// Every row divided by `max(|row|, min_norm)`. The floor is applied to the squared norm
/// before the square root, so that a zero row meets neither `sqrt`'s infinite slope at 0
/// nor a `0 · ∞` in the backward pass.
fn normalize_rows<R, C, E, D, T>(
    rows: Tensor<(R, C), E, D, T>,
    min_norm: f64,
) -> Result<Matrix<R, C, E, D, T>, D::Err>
where
    R: Dim,
    C: Dim,
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D> + Merge<T>,
{
    let shape = *rows.shape();
    let (values, tape) = rows.split_tape();
    let squared_norms = values
        .clone()
        .put_tape(tape)
        .try_square()?
        .try_sum::<(R,), _>()?;
    let inverse_norms = squared_norms
        .try_clamp(min_norm * min_norm, f64::MAX)?
        .try_sqrt()?
        .try_recip()?;
    values
        .retaped::<T>()
        .try_mul(inverse_norms.try_broadcast_like::<_, Axis<1>>(&shape)?)
}
