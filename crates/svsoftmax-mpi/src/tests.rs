//! The whole protocol over shards on threads: the sharded result equals the single-process
//! engine's for every case of the self-check and every split of 1 to 4 shards, and a bad
//! input gives every shard the same error.

use ndarray::Array2;
use svsoftmax_core::{Forward, Result, SvSoftmax, Targets, Upstream};
use svsoftmax_ndarray::Element;

use crate::check::{self, Case, ShardInput, Tolerance};
use crate::protocol::Buffers;
use crate::threads::{Group, Member};

const SEED: u64 = 0x5eed_0007;

/// Runs one step on every shard, each on its own thread.
fn run_shards<E: Element>(
    config: &SvSoftmax,
    inputs: &[ShardInput],
    upstream: Option<Upstream<'_>>,
) -> Vec<(Result<Forward>, Array2<E>)> {
    let group = Group::new(inputs.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = inputs
            .iter()
            .enumerate()
            .map(|(rank, input)| {
                let group = &group;
                scope.spawn(move || {
                    let member = Member { group, rank };
                    let block = input.block::<E>();
                    let zero = E::store(num_traits::Zero::zero());
                    let mut grad = Array2::from_elem(input.grad_shape, zero);
                    let mut out = Forward::default();
                    let backward = upstream.map(|upstream| (upstream, grad.view_mut()));
                    let result = crate::evaluate(
                        &member,
                        &mut Buffers::default(),
                        input.columns.clone(),
                        config,
                        block.view(),
                        &input.targets,
                        backward,
                        &mut out,
                    );
                    (result.map(|()| out), grad)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    })
}

fn check_case<E: Element>(case: &Case) {
    let results = run_shards::<E>(
        &case.config,
        &check::shard_inputs(case),
        Some(case.upstream()),
    );
    let (expected, expected_grad) = check::single_process::<E>(case).unwrap();
    let n_classes = case.cosines.ncols();
    let tolerance = Tolerance::new::<E::Real>(&case.config, n_classes);
    let first_loss = results[0].0.as_ref().unwrap().loss;
    for (shard, (forward, grad)) in results.iter().enumerate() {
        let forward = forward.as_ref().unwrap();
        // Every shard forms the loss from the same merged numbers.
        assert_eq!(
            forward.loss.to_bits(),
            first_loss.to_bits(),
            "{}",
            case.name
        );
        let compared = check::compare(
            case,
            shard,
            forward,
            grad.view(),
            &expected,
            expected_grad.view(),
            tolerance,
        );
        if let Err(message) = compared {
            panic!(
                "{} ({} shards, shard {shard}, {}): {message}",
                case.name,
                case.splits.len(),
                E::NAME
            );
        }
    }
}

#[test]
fn a_shard_without_the_target_still_masks() {
    // The example: [[0.5, 0.1, -0.2, 0.6]], target 0, s = 32, m = 0.35, t = 1.2,
    // split {0, 1} | {2, 3}. By hand: z_0 = 32 · 0.15 = 4.8, z_1 = 3.2, z_2 = -6.4, and
    // column 3 is a support vector (0.15 < 0.6): z_3 = 19.2 + 6.4 · 1.6 = 29.44, so
    // L = log(e^4.8 + e^3.2 + e^-6.4 + e^29.44) - 4.8 = 24.64; a shard that dropped the
    // mask would give 14.40.
    let config = SvSoftmax::sv_am(32.0, 0.35, 1.2).unwrap();
    let cosines = ndarray::array![[0.5, 0.1, -0.2, 0.6]];
    let inputs: Vec<ShardInput> = [0..2, 2..4]
        .into_iter()
        .map(|columns| ShardInput {
            cosines: cosines.slice(ndarray::s![.., columns.clone()]).to_owned(),
            grad_shape: (1, 2),
            columns,
            targets: Targets::new(&[0]),
        })
        .collect();
    for (result, _) in run_shards::<f64>(&config, &inputs, Some(Upstream::default())) {
        let loss = result.unwrap().loss;
        // The hand value is given to two decimals; the terms other than z_3 add 1e-11.
        assert!((loss - 24.64).abs() < 5e-3, "loss {loss}");
    }
}

#[test]
fn every_case_on_one_to_four_shards_matches_the_single_process_engine() {
    for n_shards in 1..=4 {
        for case in check::cases(n_shards, SEED + n_shards as u64) {
            check_case::<f64>(&case);
            check_case::<f32>(&case);
        }
    }
}

#[test]
fn the_f64_shards_match_the_reference() {
    for case in check::cases(3, SEED) {
        let results = run_shards::<f64>(
            &case.config,
            &check::shard_inputs(&case),
            Some(case.upstream()),
        );
        let (expected, expected_grad) = check::reference(&case).unwrap();
        let tolerance = Tolerance::new::<f64>(&case.config, case.cosines.ncols());
        for (shard, (forward, grad)) in results.iter().enumerate() {
            let forward = forward.as_ref().unwrap();
            let view = expected_grad.view();
            if let Err(message) = check::compare(
                &case,
                shard,
                forward,
                grad.view(),
                &expected,
                view,
                tolerance,
            ) {
                panic!("{} (shard {shard}): {message}", case.name);
            }
        }
    }
}

#[test]
fn forward_alone_gives_the_forward_of_forward_backward() {
    for case in check::cases(2, SEED).into_iter().step_by(7) {
        let inputs = check::shard_inputs(&case);
        let both = run_shards::<f32>(&case.config, &inputs, Some(case.upstream()));
        let forward = run_shards::<f32>(&case.config, &inputs, None);
        for ((both, _), (forward, _)) in both.iter().zip(&forward) {
            assert_eq!(
                both.as_ref().unwrap(),
                forward.as_ref().unwrap(),
                "{}",
                case.name
            );
        }
    }
}

#[test]
fn a_bad_input_gives_every_shard_the_same_error() {
    for n_shards in 1..=4 {
        for bad in check::bad_inputs(n_shards, SEED) {
            let upstream = Some(bad.case.upstream());
            for (shard, (result, _)) in run_shards::<f64>(&bad.case.config, &bad.inputs, upstream)
                .iter()
                .enumerate()
            {
                let message = match result {
                    Ok(_) => "no error".to_string(),
                    Err(error) => error.to_string(),
                };
                assert_eq!(
                    message, bad.expected,
                    "{}: shard {shard} of {n_shards}",
                    bad.name
                );
            }
        }
    }
}

#[test]
fn a_forward_call_among_backward_ones_is_named() {
    let case = &check::cases(2, SEED)[0];
    let inputs = check::shard_inputs(case);
    let group = Group::new(2);
    let outcomes: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|rank| {
                let (group, input) = (&group, &inputs[rank]);
                scope.spawn(move || {
                    let member = Member { group, rank };
                    let block = input.block::<f64>();
                    let mut grad = Array2::zeros(input.grad_shape);
                    let backward = (rank == 0).then(|| (case.upstream(), grad.view_mut()));
                    let mut out = Forward::default();
                    let mut buffers = Buffers::default();
                    let columns = input.columns.clone();
                    let (config, targets) = (&case.config, &input.targets);
                    let result = crate::evaluate(
                        &member,
                        &mut buffers,
                        columns,
                        config,
                        block.view(),
                        targets,
                        backward,
                        &mut out,
                    );
                    result.map_or_else(|error| error.to_string(), |()| "no error".into())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    let expected = svsoftmax_core::Error::ShardMismatch {
        rank: 1,
        what: "call",
    }
    .to_string();
    assert_eq!(outcomes, vec![expected.clone(), expected]);
}

#[test]
fn an_empty_batch_has_loss_zero() {
    let config = SvSoftmax::default();
    let inputs: Vec<ShardInput> = [0..3, 3..5]
        .into_iter()
        .map(|columns| ShardInput {
            cosines: Array2::zeros((0, columns.len())),
            grad_shape: (0, columns.len()),
            columns,
            targets: Targets::new(&[]),
        })
        .collect();
    for (result, _) in run_shards::<f32>(&config, &inputs, Some(Upstream::default())) {
        assert_eq!(result.unwrap().loss, 0.0);
    }
}

#[test]
fn even_columns_tile_the_classes() {
    for n_classes in 0..20 {
        for n_shards in 1..6 {
            let ranges: Vec<_> = (0..n_shards)
                .map(|shard| crate::even_columns(n_classes, n_shards, shard))
                .collect();
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[n_shards - 1].end, n_classes);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
                assert!(pair[0].len() >= pair[1].len() && pair[0].len() <= pair[1].len() + 1);
            }
        }
    }
}

#[test]
fn the_payload_counts_every_buffer() {
    // 12 header words, one f64 score and four f64 partial fields per row, one f64 flag.
    assert_eq!(crate::payload_bytes(512, true), 12 * 8 + 512 * (8 + 32) + 8);
    assert_eq!(crate::payload_bytes(512, false), 12 * 8 + 512 * 40);
}

#[test]
fn the_gradient_keeps_full_precision_at_large_scales() {
    // With logits of the size of s = 1e12, an exponent formed as `reference - (z_y + loss)`
    // carries ~1e-4 of rounding into every gradient entry; from the merged partials the
    // f64 gradient stays within a few ulps of the reference's largest entry.
    let mut random = check::Random::new(SEED);
    let (n_rows, n_classes) = (6, 40);
    let cosines = Array2::from_shape_fn((n_rows, n_classes), |_| random.unit() * 1.8 - 0.9);
    let targets = Targets::new(&(0..n_rows).map(|i| (i * 7) % n_classes).collect::<Vec<_>>());
    for scale in [1e4, 1e8, 1e12] {
        let config = SvSoftmax::sv_am(scale, 0.35, 1.5).unwrap();
        let case = Case {
            name: format!("s = {scale:e}"),
            config,
            cosines: cosines.clone(),
            targets: targets.clone(),
            upstream: vec![1.0],
            splits: vec![0..13, 13..13, 13..40],
        };
        let (_, expected_grad) = check::reference(&case).unwrap();
        let largest = expected_grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        let results =
            run_shards::<f64>(&config, &check::shard_inputs(&case), Some(case.upstream()));
        for (shard, (forward, grad)) in results.iter().enumerate() {
            forward.as_ref().unwrap();
            let columns = case.splits[shard].clone();
            let expected = expected_grad.slice(ndarray::s![.., columns]);
            for (g, e) in grad.iter().zip(expected.iter()) {
                assert!(
                    (g - e).abs() <= 16.0 * f64::EPSILON * largest,
                    "{}: {g} vs {e}",
                    case.name
                );
            }
        }
    }
}
