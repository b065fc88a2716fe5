//! Trains one embedding model on the handwritten digits under each of five losses — plain
//! softmax, AM-Softmax, SV-Softmax, SV-AM-Softmax and SV-Arc-Softmax — and compares them.
//!
//! The digits are the 1797 images of 8 x 8 pixels that `smartcore` ships, split 80/20 per
//! digit. The model is a two-layer MLP embedding with the cosine head of `svsoftmax-dfdx`,
//! trained by Adam from the same initial weights on the same batches under every loss.
//! [`compare`] runs it all; the `digits` binary adds progress bars, the table and the plot.
//!
//! ```no_run
//! let comparisons = digits::compare(&digits::Options::quick(), &mut ())?;
//! println!("{}", digits::report::table(&comparisons));
//! # Ok::<(), digits::Error>(())
//! ```
#![warn(missing_docs)]

pub mod data;
pub mod losses;
pub mod plot;
pub mod report;
pub mod train;

pub use data::Digits;
pub use losses::{losses, LossSpec};
pub use train::{train, Comparison, Epoch, Evaluation, Observer, Run};

use std::path::PathBuf;

/// Why a comparison could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The loss rejected its configuration or its input.
    #[error(transparent)]
    Loss(#[from] svsoftmax_core::Error),
    /// An option is out of its range.
    #[error("invalid {name}: expected {expected}, got {got}")]
    InvalidOption {
        /// The option, as the command line names it.
        name: &'static str,
        /// The range it must lie in.
        expected: &'static str,
        /// The value given.
        got: String,
    },
    /// The embedded data set is not the one expected.
    #[error("unexpected digits data: {0}")]
    Data(String),
    /// dfdx's optimizer failed to update the model.
    #[error("the optimizer failed: {0}")]
    Optimizer(String),
    /// The plot could not be drawn or written.
    #[error("cannot write the plot to {}: {message}", path.display())]
    Plot {
        /// Where the plot was to go.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The training budget and hyperparameters shared by every loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Passes over the training set.
    pub epochs: usize,
    /// Rows per step; the last batch of an epoch holds the rest.
    pub batch_size: usize,
    /// Adam's step size.
    pub learning_rate: f64,
    /// The scale `s` of every loss.
    pub scale: f64,
    /// Seeds the split, the initial weights and the batch order of the first run; the
    /// others take the next seeds.
    pub seed: u64,
    /// Runs per loss, each from its own seed, over which the table averages.
    pub seeds: usize,
}

impl Options {
    /// The README's run.
    pub const EPOCHS: usize = 40;
    /// The README's runs per loss.
    pub const SEEDS: usize = 5;
    /// The `--quick` run's budget, which CI's test trains: one seed.
    pub const QUICK_EPOCHS: usize = 8;

    /// The README's run: [`Options::SEEDS`] runs per loss of [`Options::EPOCHS`] epochs.
    pub fn full() -> Self {
        Self {
            epochs: Self::EPOCHS,
            batch_size: 64,
            learning_rate: 3e-3,
            scale: 16.0,
            seed: 0,
            seeds: Self::SEEDS,
        }
    }

    /// One run per loss of [`Options::QUICK_EPOCHS`] epochs.
    pub fn quick() -> Self {
        Self {
            epochs: Self::QUICK_EPOCHS,
            seeds: 1,
            ..Self::full()
        }
    }

    /// Checks the options before any training.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for no epoch, no seed, an empty batch or a step size that is
    /// not finite and positive, and the core's error for a scale it rejects.
    pub fn check(&self) -> Result<(), Error> {
        losses(self.scale)?;
        let invalid = |name, expected, got: String| {
            Err(Error::InvalidOption {
                name,
                expected,
                got,
            })
        };
        if self.epochs == 0 {
            return invalid("epochs", "at least 1", self.epochs.to_string());
        }
        if self.seeds == 0 || self.seed.checked_add(self.seeds as u64 - 1).is_none() {
            let got = format!("{} from {}", self.seeds, self.seed);
            return invalid("seeds", "at least 1, all below 2^64", got);
        }
        if self.batch_size == 0 {
            return invalid("batch size", "at least 1", self.batch_size.to_string());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            let got = self.learning_rate.to_string();
            return invalid("learning rate", "a finite number > 0", got);
        }
        Ok(())
    }
}

impl Default for Options {
    fn default() -> Self {
        Self::full()
    }
}

/// Trains one model per seed under each of [`losses`], in the table's order. Each seed
/// makes its own split of the digits; every loss sees the same splits, initial weights and
/// batches.
///
/// # Errors
/// As [`Options::check`], [`Digits::load`], [`losses`] and [`train`].
pub fn compare(options: &Options, observer: &mut dyn Observer) -> Result<Vec<Comparison>, Error> {
    options.check()?;
    let seeds: Vec<u64> = (0..options.seeds as u64)
        .map(|i| options.seed + i)
        .collect();
    let splits = seeds
        .iter()
        .map(|&seed| Digits::load(seed))
        .collect::<Result<Vec<_>, _>>()?;

    let mut comparisons = Vec::new();
    for loss in losses(options.scale)? {
        observer.started(&loss, options.epochs * seeds.len());
        let runs = seeds
            .iter()
            .zip(&splits)
            .map(|(&seed, digits)| {
                // One run of the comparison: its own seed, and a count of one, so that the
                // run's own check does not count on from a later seed past 2^64.
                let options = Options {
                    seed,
                    seeds: 1,
                    ..*options
                };
                train(&loss, digits, &options, observer)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let comparison = Comparison { loss, runs };
        observer.finished(&comparison);
        comparisons.push(comparison);
    }
    Ok(comparisons)
}
