//! The results table, as text for a terminal and for the README.

use std::fmt::Write;

use crate::data::PIXELS;
use crate::train::{EMBEDDING, HIDDEN};
use crate::{Options, Run};

/// What was trained, in one line above the table.
pub fn setup(options: &Options, n_train: usize, n_test: usize) -> String {
    format!(
        "{n_train} training and {n_test} test images; MLP {PIXELS}-{HIDDEN}-{EMBEDDING} + \
         cosine head; s = {}, Adam lr = {}, batch {}, {} epochs, seed {}",
        options.scale, options.learning_rate, options.batch_size, options.epochs, options.seed
    )
}

/// One row per run: test accuracy, final training loss, support vectors per row at the
/// end (and as a share of the nine other classes), the mean test angles to the own and the
/// nearest other class weight with their gap, and the run's time.
pub fn table(runs: &[Run]) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{:<15} {:<19} {:>8} {:>10} {:>6} {:>7} {:>7} {:>8} {:>7} {:>7}",
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
    for run in runs {
        let (last, test) = (run.last(), &run.test);
        let _ = writeln!(
            out,
            "{:<15} {:<19} {:>7.1}% {:>10.4} {:>6.3} {:>6.1}% {:>6.1}° {:>7.1}° {:>6.1}° {:>6.1}s",
            run.loss.name,
            run.loss.parameters(),
            100.0 * test.accuracy,
            last.train_loss,
            last.support_vectors,
            100.0 * last.support_vector_fraction(),
            test.own_angle,
            test.other_angle,
            test.angle_gap(),
            run.elapsed.as_secs_f64()
        );
    }
    out
}
