//! The embedding model, its training under one loss, and what is measured on the way.

use std::time::{Duration, Instant};

use dfdx::optim::{Adam, AdamConfig};
use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use svsoftmax_core::Targets;
use svsoftmax_dfdx::{builders::CosineHead, LossOutput, SvSoftmaxLoss};

use crate::data::{Digits, Split, CLASSES, PIXELS};
use crate::losses::LossSpec;
use crate::{Error, Options};

/// The embedding's dimension.
pub const EMBEDDING: usize = 64;
/// The hidden layer's width.
pub const HIDDEN: usize = 128;

/// A two-layer MLP embedding of the pixels, then the cosine head over the ten digits.
pub type Architecture = (
    Linear<PIXELS, HIDDEN>,
    ReLU,
    Linear<HIDDEN, EMBEDDING>,
    CosineHead<EMBEDDING, CLASSES>,
);
type Model = <Architecture as BuildOnDevice<Cpu, f32>>::Built;

/// What one epoch of training left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Epoch {
    /// From 1.
    pub epoch: usize,
    /// The mean training loss over the epoch's rows, each taken when its batch was trained.
    pub train_loss: f64,
    /// The mean number of support vectors per training row, as the loss counted them.
    pub support_vectors: f64,
    /// The share of test images whose nearest class weight is their digit's.
    pub test_accuracy: f64,
}

impl Epoch {
    /// Support vectors per row over the most a row can have (every other class).
    pub fn support_vector_fraction(&self) -> f64 {
        self.support_vectors / (CLASSES - 1) as f64
    }
}

/// Where the test embeddings lie against the class weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// The share of rows whose largest cosine is their own class's.
    pub accuracy: f64,
    /// The mean angle, in degrees, between an embedding and its own class weight.
    pub own_angle: f64,
    /// The mean angle, in degrees, between an embedding and the nearest other class weight.
    pub other_angle: f64,
}

impl Evaluation {
    /// How much farther the nearest other class lies than the own one, in degrees: the gap
    /// a margin is meant to open.
    pub fn angle_gap(&self) -> f64 {
        self.other_angle - self.own_angle
    }
}

/// One loss's training run from one seed.
#[derive(Debug, Clone)]
pub struct Run {
    /// The seed of its split, initial weights and batch order.
    pub seed: u64,
    /// One entry per epoch, in order; never empty.
    pub history: Vec<Epoch>,
    /// The trained model on the test set.
    pub test: Evaluation,
    /// Wall-clock time of the run, evaluations included.
    pub elapsed: Duration,
}

impl Run {
    /// The last epoch's record.
    pub fn last(&self) -> &Epoch {
        self.history
            .last()
            .expect("a run trains at least one epoch")
    }
}

/// Told about the training's progress; every method does nothing unless overridden.
pub trait Observer {
    /// The runs under `loss` start: `epochs` epochs in all, over every seed.
    fn started(&mut self, _loss: &LossSpec, _epochs: usize) {}
    /// An epoch ended.
    fn epoch(&mut self, _epoch: &Epoch) {}
    /// The runs under the loss ended.
    fn finished(&mut self, _comparison: &Comparison) {}
}

/// Observes nothing.
impl Observer for () {}

/// The runs of one loss, one per seed.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The loss trained with.
    pub loss: LossSpec,
    /// One run per seed; never empty.
    pub runs: Vec<Run>,
}

impl Comparison {
    /// The mean and the standard deviation (over seeds, `n - 1` in the denominator; 0 for
    /// one seed) of a quantity of each run.
    pub fn spread(&self, value: impl Fn(&Run) -> f64) -> (f64, f64) {
        let values: Vec<f64> = self.runs.iter().map(value).collect();
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let squares = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>();
        let deviation = if values.len() > 1 {
            (squares / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        (mean, deviation)
    }

    /// The mean of a quantity over seeds.
    pub fn mean(&self, value: impl Fn(&Run) -> f64) -> f64 {
        self.spread(value).0
    }

    /// Epoch by epoch, the mean over seeds of each quantity.
    pub fn mean_history(&self) -> Vec<Epoch> {
        let epochs = self.runs.iter().map(|run| run.history.len()).min();
        (0..epochs.unwrap_or(0))
            .map(|i| {
                let at = |value: fn(&Epoch) -> f64| self.mean(|run| value(&run.history[i]));
                Epoch {
                    epoch: i + 1,
                    train_loss: at(|e| e.train_loss),
                    support_vectors: at(|e| e.support_vectors),
                    test_accuracy: at(|e| e.test_accuracy),
                }
            })
            .collect()
    }

    /// The time of all its runs.
    pub fn elapsed(&self) -> Duration {
        self.runs.iter().map(|run| run.elapsed).sum()
    }
}

/// Trains a freshly built model under `loss` and evaluates it on the test set after every
/// epoch. The initial weights and the order of the batches depend on `options.seed` alone,
/// so every loss starts from the same model and sees the same batches.
///
/// # Errors
/// As [`Options::check`], the loss's [`svsoftmax_core::Error`]s, and [`Error::Optimizer`]
/// if Adam's update fails.
pub fn train(
    loss: &LossSpec,
    digits: &Digits,
    options: &Options,
    observer: &mut dyn Observer,
) -> Result<Run, Error> {
    options.check()?;
    let start = Instant::now();
    let dev = Cpu::seed_from_u64(options.seed);
    let mut model = dev.build_module::<Architecture, f32>();
    let mut grads = model.alloc_grads();
    let adam = AdamConfig {
        lr: options.learning_rate,
        ..Default::default()
    };
    let mut optimizer = Adam::new(&model, adam);
    let criterion = SvSoftmaxLoss::new(loss.config);
    let mut order: Vec<usize> = (0..digits.train.len()).collect();
    let mut rng = StdRng::seed_from_u64(options.seed);

    let mut history = Vec::with_capacity(options.epochs);
    for epoch in 1..=options.epochs {
        order.shuffle(&mut rng);
        let mut totals = Totals::default();
        for batch in order.chunks(options.batch_size) {
            let rows = digits.train.gather(batch);
            let n_rows = rows.len();
            let images = images(&dev, rows.pixels, n_rows);
            let cosines = model.forward(images.trace(grads));
            let output = criterion.forward(cosines, &Targets::new(&rows.labels))?;
            totals.add(&output);

            grads = output.loss.backward();
            optimizer
                .update(&mut model, &grads)
                .map_err(|error| Error::Optimizer(error.to_string()))?;
            model.zero_grads(&mut grads);
        }
        let record = Epoch {
            epoch,
            train_loss: totals.loss / totals.rows as f64,
            support_vectors: totals.support_vectors as f64 / totals.rows as f64,
            test_accuracy: evaluate(&dev, &model, &digits.test).accuracy,
        };
        observer.epoch(&record);
        history.push(record);
    }

    Ok(Run {
        seed: options.seed,
        history,
        test: evaluate(&dev, &model, &digits.test),
        elapsed: start.elapsed(),
    })
}

/// Sums over an epoch's rows.
#[derive(Default)]
struct Totals {
    loss: f64,
    support_vectors: usize,
    rows: usize,
}

impl Totals {
    fn add<T>(&mut self, output: &LossOutput<f32, Cpu, T>) {
        self.loss += output.row_losses.iter().sum::<f64>();
        let rows = output.diagnostics.iter().flatten();
        self.support_vectors += rows.map(|row| row.support_vectors).sum::<usize>();
        self.rows += output.row_losses.len();
    }
}

fn images(dev: &Cpu, pixels: Vec<f32>, n_rows: usize) -> Tensor<(usize, Const<PIXELS>), f32, Cpu> {
    dev.tensor_from_vec(pixels, (n_rows, Const::<PIXELS>))
}

/// The model's cosines on `split`, read as a nearest-class-weight classifier.
fn evaluate(dev: &Cpu, model: &Model, split: &Split) -> Evaluation {
    let cosines = model
        .forward(images(dev, split.pixels.clone(), split.len()))
        .as_vec();
    let degrees = |cosine: f32| f64::from(cosine.clamp(-1.0, 1.0)).acos().to_degrees();

    let (mut correct, mut own_angle, mut other_angle) = (0, 0.0, 0.0);
    for (row, &label) in cosines.chunks(CLASSES).zip(&split.labels) {
        let own = row[label];
        let nearest_other = row
            .iter()
            .enumerate()
            .filter(|&(class_idx, _)| class_idx != label)
            .map(|(_, &cosine)| cosine)
            .fold(f32::NEG_INFINITY, f32::max);
        correct += usize::from(own > nearest_other);
        own_angle += degrees(own);
        other_angle += degrees(nearest_other);
    }
    let n_rows = split.len() as f64;
    Evaluation {
        accuracy: correct as f64 / n_rows,
        own_angle: own_angle / n_rows,
        other_angle: other_angle / n_rows,
    }
}
