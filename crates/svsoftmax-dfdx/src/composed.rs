//! The loss composed from dfdx's own tensor operations, so that it runs on every dfdx device
//! and dfdx differentiates it.
//!
//! Every `(rows, classes)` step is a dfdx operation: the checks are reductions, the mask a
//! comparison, the adjusted logits a `choose` of broadcast constants, the loss a
//! `log_softmax` (which subtracts the row maximum) and a `select` of the target column.
//! Only the target scores, one number per row, are formed on the host by the core's scalar
//! pieces: dfdx has no `acos`, and the margins' fallbacks and clamps are the core's to
//! define. They enter the graph as `(c_y - c_y') s f' + s f`, where `c_y'` is a constant
//! copy of the target cosine: the value is exactly the core's logit and the slope exactly
//! its derivative, which is all a first-order tape needs.

use dfdx::prelude::*;
use svsoftmax_core::scalar::Pieces;
use svsoftmax_core::{Indicator, Result, SvSoftmax, Targets};

use crate::device::{device_error, DfdxFloat, LossDevice};
use crate::Rows;

pub(crate) fn row_losses<B, K, E, D, T>(
    config: &SvSoftmax,
    cosines: Tensor<(B, K), E, D, T>,
    targets: &Targets,
    count_support_vectors: bool,
) -> Result<Rows<B, E, D, T>>
where
    B: Dim,
    K: Dim,
    E: DfdxFloat,
    D: LossDevice<E>,
    T: Tape<E, D> + Merge<T>,
{
    let (rows, classes) = *cosines.shape();
    let shape = (rows, classes);
    let (n_rows, n_classes) = (rows.size(), classes.size());
    targets.check(n_rows, n_classes)?;
    let pieces = Pieces::<E>::new(config)?;
    if n_rows == 0 {
        return crate::empty_rows(cosines);
    }
    let dev = cosines.device().clone();

    // An ignored row's target is any valid column: its loss is weighted by 0.
    let target_columns: Vec<usize> = targets.as_slice().iter().map(|t| t.unwrap_or(0)).collect();
    let class_idx = dev
        .try_tensor_from_vec(target_columns.clone(), (rows,))
        .map_err(device_error("the target indices"))?;
    let active = active_rows(&dev, targets, rows)?;

    // An ignored row is never read: its cosines become zeros before any check or sum sees
    // them, and `choose` sends it no gradient.
    let cosines = match &active {
        Some((active, _)) => {
            let zeros = dev.zeros_like(&()).broadcast_like(&shape);
            active
                .clone()
                .broadcast_like::<_, Axis<1>>(&shape)
                .try_choose(cosines, zeros)
                .map_err(device_error("the masking of ignored rows"))?
        }
        None => cosines,
    };
    let cosines = checked(&pieces, cosines, targets)?;

    let (cosines, tape) = cosines.split_tape();
    let target_cosines = cosines
        .clone()
        .try_select(class_idx.clone())
        .map_err(device_error("the target column"))?
        .as_vec();
    let target_logits: Vec<_> = target_cosines
        .iter()
        .map(|&c| pieces.target_logit(c))
        .collect();
    let scores: Vec<E> = target_logits.iter().map(|logit| logit.score).collect();
    let upload = |values: Vec<E>| {
        dev.try_tensor_from_vec(values, (rows,))
            .map_err(device_error("the target logits"))
    };
    let target_column = upload(target_cosines)?;
    let slopes = upload(target_logits.iter().map(|logit| logit.slope).collect())?;
    let logits = upload(target_logits.iter().map(|logit| logit.logit).collect())?;
    let score_rows = upload(scores.clone())?;

    let target_logit = (cosines.clone().put_tape(tape).select(class_idx.clone()) - target_column)
        * slopes
        + logits;

    let is_target = is_target_column(&dev, &target_columns, shape)?;
    let mask = score_rows
        .broadcast_like::<_, Axis<1>>(&shape)
        .try_lt(&cosines)
        .map_err(device_error("the support-vector mask"))?
        & !is_target.clone();
    let negative_logits = negative_logits(&pieces, config, cosines.retaped::<T>(), &mask, &dev);

    let adjusted = is_target.try_choose(
        target_logit.broadcast_like::<_, Axis<1>>(&shape),
        negative_logits,
    );
    let adjusted = adjusted.map_err(device_error("the adjusted logits"))?;
    let log_probs = adjusted.log_softmax::<Axis<1>>();
    let mut losses = log_probs.select(class_idx).negate();
    if let Some((_, weights)) = active {
        losses = losses * weights;
    }

    let support_vectors = count_support_vectors.then(|| {
        let ones = dev.ones_like(&()).broadcast_like(&shape);
        let zeros = dev.zeros_like(&()).broadcast_like(&shape);
        let counts = mask.choose(ones, zeros).sum::<(B,), _>().as_vec();
        counts.iter().map(|&n| n.widen() as usize).collect()
    });
    Ok(Rows {
        losses,
        target_scores: scores.iter().map(|score| score.widen()).collect(),
        support_vectors,
    })
}

/// The rows that are not ignored, as a mask and as 0/1 weights; `None` when none is.
#[allow(clippy::type_complexity)]
fn active_rows<B: Dim, E: DfdxFloat, D: LossDevice<E>>(
    dev: &D,
    targets: &Targets,
    rows: B,
) -> Result<Option<(Tensor<(B,), bool, D>, Tensor<(B,), E, D>)>> {
    if targets.n_active() == targets.len() {
        return Ok(None);
    }
    let is_active: Vec<bool> = targets.as_slice().iter().map(Option::is_some).collect();
    let weights = is_active
        .iter()
        .map(|&a| if a { E::one() } else { E::zero() })
        .collect();
    let is_active = dev
        .try_tensor_from_vec(is_active, (rows,))
        .map_err(device_error("the ignored-row mask"))?;
    let weights = dev
        .try_tensor_from_vec(weights, (rows,))
        .map_err(device_error("the ignored-row mask"))?;
    Ok(Some((is_active, weights)))
}

/// The cosines after the core's checks, clamped to `[-1, 1]` for the margins that take an
/// arccos.
///
/// Three reductions decide on the device whether every cosine is accepted: a finite sum
/// rules out NaN and ±∞ (their sum is not finite), and the extremes must pass the core's
/// range test. Only when that fails is the matrix read on the host, to name the culprit
/// exactly as the reference would; a sum that overflowed from huge but accepted values is
/// a false alarm that this finds nothing in.
fn checked<B: Dim, K: Dim, E: DfdxFloat, D: LossDevice<E>, T: Tape<E, D>>(
    pieces: &Pieces<E>,
    cosines: Tensor<(B, K), E, D, T>,
    targets: &Targets,
) -> Result<Tensor<(B, K), E, D, T>> {
    let values = cosines.retaped::<NoneTape>();
    let sum = values.clone().sum::<(), _>().as_vec()[0];
    let largest = values.clone().max::<(), _>().as_vec()[0];
    let smallest = values.clone().min::<(), _>().as_vec()[0];
    if !(sum.is_finite() && pieces.accepts(largest) && pieces.accepts(smallest)) {
        let n_classes = cosines.shape().1.size();
        let data = values.as_vec();
        for (row, target) in targets.as_slice().iter().enumerate() {
            if target.is_some() {
                let row_values = &data[row * n_classes..(row + 1) * n_classes];
                for (col, &value) in row_values.iter().enumerate() {
                    pieces.check_cosine(row, col, value)?;
                }
            }
        }
    }
    if !pieces.clamps_cosines() || (largest <= E::one() && smallest >= -E::one()) {
        return Ok(cosines);
    }
    // The clamp moves the value but not the gradient, as in the core: a cosine a rounding
    // past ±1 keeps the derivative of the loss at ±1.
    let shift = values.clone().clamp(-1.0, 1.0) - values;
    Ok(cosines + shift)
}

/// The base in which a column index too large for `E`'s mantissa is compared, as two
/// digits that each fit even f32's 24 bits for up to 2^44 columns.
const SPLIT: usize = 1 << 20;

/// Whether each entry is its row's target column, compared on the device against a row of
/// column indices. The indices are exact in `E` up to its mantissa; past that, the index is
/// compared digit by digit in base [`SPLIT`].
fn is_target_column<B: Dim, K: Dim, E: DfdxFloat, D: LossDevice<E>>(
    dev: &D,
    targets: &[usize],
    shape: (B, K),
) -> Result<Tensor<(B, K), bool, D>> {
    let n_classes = shape.1.size();
    let exact = 1usize << E::MANTISSA_DIGITS.min(52);
    let as_float = |values: &mut dyn Iterator<Item = usize>| -> Vec<E> {
        values.map(E::from_usize_exact).collect()
    };

    let compare = |column: Vec<E>, target: Vec<E>| -> Result<Tensor<(B, K), bool, D>> {
        let column = dev
            .try_tensor_from_vec(column, (shape.1,))
            .map_err(device_error("the column indices"))?
            .broadcast_like::<_, Axis<0>>(&shape);
        let target = dev
            .try_tensor_from_vec(target, (shape.0,))
            .map_err(device_error("the column indices"))?
            .broadcast_like::<_, Axis<1>>(&shape);
        column
            .try_eq(&target)
            .map_err(device_error("the target columns"))
    };
    if n_classes <= exact {
        return compare(
            as_float(&mut (0..n_classes)),
            as_float(&mut targets.iter().copied()),
        );
    }
    let low = compare(
        as_float(&mut (0..n_classes).map(|j| j % SPLIT)),
        as_float(&mut targets.iter().map(|j| j % SPLIT)),
    )?;
    let high = compare(
        as_float(&mut (0..n_classes).map(|j| j / SPLIT)),
        as_float(&mut targets.iter().map(|j| j / SPLIT)),
    )?;
    Ok(low & high)
}

/// `s c_k + I_k log h_k` for every column, as `c_k · slope + offset` with the slope and the
/// offset chosen by the mask from broadcast scalars, so that no `(rows, classes)` constant
/// is allocated for them.
fn negative_logits<B: Dim, K: Dim, E: DfdxFloat, D: LossDevice<E>, T: Tape<E, D>>(
    pieces: &Pieces<E>,
    config: &SvSoftmax,
    cosines: Tensor<(B, K), E, D, T>,
    mask: &Tensor<(B, K), bool, D>,
    dev: &D,
) -> Tensor<(B, K), E, D, T> {
    let shape = *cosines.shape();
    let constant = |value: E| dev.tensor(value).broadcast_like(&shape);
    let scale = pieces.scale();
    // On a support vector: adaptive `s c + w (c + 1) = (s + w) c + w`; fixed `s c + w`.
    let weight = pieces.indicator().value(E::zero());
    let offsets = mask.clone().choose(constant(weight), constant(E::zero()));
    match config.indicator() {
        Indicator::Adaptive => {
            let slopes = mask.clone().choose(
                constant(scale + pieces.indicator().derivative()),
                constant(scale),
            );
            cosines * slopes + offsets
        }
        Indicator::Fixed => cosines * scale + offsets,
    }
}
