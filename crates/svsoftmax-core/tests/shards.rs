//! The loss over column shards equals the unsharded reference, for any split of the
//! columns: shards with no target column, shards of one column, any merge order.

mod common;

use common::{every_margin, Tolerance};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use svsoftmax_core::shard::{self, RowPartial, TargetScore};
use svsoftmax_core::{reference, CosineMatrix, Indicator, Reduction, SvSoftmax, Targets, Upstream};

/// The sharded evaluation of `data` (row-major, `n_classes` wide) cut at `cuts`: the row
/// losses and the gradient, reassembled.
fn sharded(
    config: &SvSoftmax,
    data: &[f64],
    n_classes: usize,
    targets: &Targets,
    cuts: &[usize],
) -> (Vec<f64>, Vec<f64>) {
    let n_rows = targets.len();
    let bounds: Vec<(usize, usize)> = std::iter::once(0)
        .chain(cuts.iter().copied())
        .zip(cuts.iter().copied().chain(std::iter::once(n_classes)))
        .filter(|(start, end)| start < end)
        .collect();
    let shard_data: Vec<Vec<f64>> = bounds
        .iter()
        .map(|&(start, end)| {
            (0..n_rows)
                .flat_map(|row| data[row * n_classes + start..row * n_classes + end].to_vec())
                .collect()
        })
        .collect();
    let matrix =
        |i: usize| CosineMatrix::new(&shard_data[i], n_rows, bounds[i].1 - bounds[i].0).unwrap();

    // Step 1, merged in shard order.
    let scores: Vec<Option<TargetScore>> = (0..bounds.len())
        .map(|i| shard::target_scores(config, matrix(i), bounds[i].0, targets).unwrap())
        .reduce(|a, b| shard::merge_target_scores(&a, &b))
        .unwrap();
    // Step 2, merged in reverse order, to lean on the merge's associativity.
    let merged: Vec<RowPartial> = (0..bounds.len())
        .rev()
        .map(|i| shard::partials(config, matrix(i), bounds[i].0, targets, &scores).unwrap())
        .reduce(|a, b| a.iter().zip(&b).map(|(x, y)| x.merge(*y)).collect())
        .unwrap();
    // Step 3.
    let n_active = targets.n_active();
    let weights: Vec<f64> = (0..n_rows)
        .map(|row| {
            let weight = Upstream::Scalar(1.0).row_weight(config.reduction(), n_active, row);
            if targets.get(row).is_some() {
                weight
            } else {
                0.0
            }
        })
        .collect();
    let mut grad = vec![0.0; n_rows * n_classes];
    for (i, &(start, end)) in bounds.iter().enumerate() {
        let slice = shard::gradient(
            config,
            matrix(i),
            start,
            targets,
            &scores,
            &merged,
            &weights,
        )
        .unwrap();
        for row in 0..n_rows {
            grad[row * n_classes + start..row * n_classes + end]
                .copy_from_slice(&slice[row * (end - start)..(row + 1) * (end - start)]);
        }
    }
    let losses = (0..n_rows)
        .map(|row| scores[row].map_or(0.0, |score| shard::row_loss(&score, &merged[row])))
        .collect();
    (losses, grad)
}

/// Reordered sums of at most a dozen f64 terms against the reference's order.
const SHARDED: Tolerance = Tolerance::new(1e-12, 1e-12, "the same terms merged in another order");

#[test]
fn a_shard_without_the_target_still_masks() {
    // The row [[0.5, 0.1, -0.2, 0.6]], target 0, s = 32, m = 0.35, t = 1.2 split into
    // columns {0, 1} and {2, 3}: the right loss is 24.64 (hand derivation: z_3 = 19.2 +
    // 6.4 · 1.6 = 29.44 against z_0 = 4.8), not the 14.40 of a shard that drops the mask.
    let config = SvSoftmax::sv_am(32.0, 0.35, 1.2).unwrap();
    let targets = Targets::new(&[0]);
    let (losses, _) = sharded(&config, &[0.5, 0.1, -0.2, 0.6], 4, &targets, &[2]);
    common::GIVEN_DIGITS.assert_close(losses[0], 24.64, "sharded loss");
}

/// A batch of one to four rows of 2 to 12 columns, targets with ignored rows, and up to
/// three cut points between columns.
fn split_batch() -> impl Strategy<Value = (Vec<f64>, usize, Vec<Option<usize>>, Vec<usize>)> {
    (1usize..=4, 2usize..=12).prop_flat_map(|(n_rows, n_classes)| {
        (
            proptest::collection::vec(-1.0..=1.0f64, n_rows * n_classes),
            Just(n_classes),
            proptest::collection::vec(proptest::option::weighted(0.85, 0..n_classes), n_rows),
            proptest::collection::btree_set(1..n_classes, 0..n_classes.min(4))
                .prop_map(|cuts| cuts.into_iter().collect()),
        )
    })
}

fn configs() -> impl Strategy<Value = SvSoftmax> {
    let reductions = vec![Reduction::Mean, Reduction::Sum, Reduction::None];
    (
        proptest::sample::select(every_margin()),
        proptest::sample::select(vec![Indicator::Adaptive, Indicator::Fixed]),
        proptest::sample::select(reductions),
        1.0..64.0f64,
        1.0..1.5f64,
    )
        .prop_map(|(margin, indicator, reduction, scale, t)| {
            SvSoftmax::builder()
                .scale(scale)
                .t(t)
                .margin(margin)
                .indicator(indicator)
                .reduction(reduction)
                .build()
                .unwrap()
        })
}

proptest! {
    #![proptest_config(Config {
        cases: common::cases(256),
        rng_seed: RngSeed::Fixed(common::seed(0x5a4d_0001)),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn any_split_gives_the_unsharded_loss_and_gradient(
        (data, n_classes, targets, cuts) in split_batch(),
        config in configs(),
    ) {
        let targets = Targets::with_ignored(targets);
        let matrix = CosineMatrix::new(&data, targets.len(), n_classes).unwrap();
        let expected =
            reference::forward_backward(&config, matrix, &targets, Upstream::default()).unwrap();
        let (losses, grad) = sharded(&config, &data, n_classes, &targets, &cuts);
        SHARDED.assert_all_close(&losses, &expected.forward.row_losses, "row losses");
        // The angular slopes reach s / sin 2^-12 next to ±1.
        let slope = config.scale() * (1.0 + 4096.0);
        let gradient = Tolerance::new(1e-12 * slope, 1e-11, "reordered sums, steepest slope");
        gradient.assert_all_close(&grad, &expected.grad_cosines, "gradient");
    }
}
