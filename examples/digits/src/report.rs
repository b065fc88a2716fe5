//! The results table, as text for a terminal and for the README.

use std::fmt::Write;

use crate::data::PIXELS;
use crate::train::{EMBEDDING, HIDDEN};
use crate::{Comparison, Options, Run};

/// What was trained, in two lines above the table.
pub fn setup(options: &Options, n_train: usize, n_test: usize) -> String {
    let seeds = match options.seeds {
        1 => format!("one run per loss, seed {}", options.seed),
        n => format!(
            "one run per loss and seed (seeds {} to {}); the table gives means over seeds, \
             ± the standard deviation",
            options.seed,
            options.seed + n as u64 - 1
        ),
    };
    format!(
        "{n_train} training and {n_test} test images; MLP {PIXELS}-{HIDDEN}-{EMBEDDING} + \
         cosine head; s = {}, Adam lr = {}, batch {}, {} epochs\n{seeds}",
        options.scale, options.learning_rate, options.batch_size, options.epochs
    )
}

/// One row per loss: test accuracy, final training loss, support vectors per row at the
/// end (and as a share of the nine other classes), the mean test angles to the own and the
/// nearest other class weight with their gap, and the time of the loss's runs.
pub fn table(comparisons: &[Comparison]) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{:<15} {:<20} {:>12} {:>10} {:>6} {:>7} {:>6} {:>7} {:>12} {:>6}",
        "loss",
        "parameters",
        "test acc",
        "train loss",
        "SV/row",
        "SV frac",
        "θ own",
        "θ other",
        "gap",
        "time"
    );
    for comparison in comparisons {
        let accuracy = spread(comparison, "%", |run| 100.0 * run.test.accuracy);
        let gap = spread(comparison, "°", |run| run.test.angle_gap());
        let sv_fraction = comparison.mean(|run| 100.0 * run.last().support_vector_fraction());
        let _ = writeln!(
            out,
            "{:<15} {:<20} {:>12} {:>10.4} {:>6.3} {:>6.2}% {:>5.1}° {:>6.1}° {:>12} {:>5.1}s",
            comparison.loss.name,
            comparison.loss.parameters(),
            accuracy,
            comparison.mean(|run| run.last().train_loss),
            comparison.mean(|run| run.last().support_vectors),
            sv_fraction,
            comparison.mean(|run| run.test.own_angle),
            comparison.mean(|run| run.test.other_angle),
            gap,
            comparison.elapsed().as_secs_f64()
        );
    }
    out
}

/// The mean over seeds with its standard deviation, or the one value of a single seed.
fn spread(comparison: &Comparison, unit: &str, value: impl Fn(&Run) -> f64) -> String {
    let (mean, deviation) = comparison.spread(value);
    if comparison.runs.len() > 1 {
        format!("{mean:.1} ± {deviation:.1}{unit}")
    } else {
        format!("{mean:.1}{unit}")
    }
}
