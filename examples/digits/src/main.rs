//! `digits`: trains the digit model under each loss, prints the comparison table and
//! writes the plot.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use digits::{Comparison, Digits, Epoch, LossSpec, Observer, Options};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    allow_negative_numbers = true,
    about = "Train a handwritten-digit embedding under softmax, AM-Softmax, \
    SV-Softmax, SV-AM-Softmax and SV-Arc-Softmax, and compare them"
)]
struct Cli {
    /// A short budget for a smoke test: one seed of 8 epochs instead of 5 of 40
    /// (`--epochs` and `--seeds` override it).
    #[arg(long)]
    quick: bool,
    /// Passes over the training set, for every loss and seed.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    epochs: Option<u32>,
    /// Runs per loss, from the seeds `--seed`, `--seed` + 1, ...
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    seeds: Option<u32>,
    /// The first seed of the train/test split, the initial weights and the batch order.
    #[arg(long, default_value_t = Options::full().seed)]
    seed: u64,
    /// The scale `s` of every loss.
    #[arg(long, default_value_t = Options::full().scale)]
    scale: f64,
    /// Adam's step size.
    #[arg(long, default_value_t = Options::full().learning_rate)]
    learning_rate: f64,
    /// Rows per training step.
    #[arg(long, default_value_t = Options::full().batch_size as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Where to write the PNG plot.
    #[arg(long, default_value = "target/digits.png")]
    out: PathBuf,
}

/// A progress bar per loss over all its seeds' epochs, on standard error; indicatif
/// draws nothing when that is not a terminal.
struct Bars {
    bar: ProgressBar,
}

impl Observer for Bars {
    fn started(&mut self, loss: &LossSpec, epochs: usize) {
        let style = ProgressStyle::with_template(
            "{prefix:>15} [{bar:30}] {pos:>3}/{len} epochs {elapsed:>4} {msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> ");
        self.bar = ProgressBar::new(epochs as u64)
            .with_style(style)
            .with_prefix(loss.name);
    }

    fn epoch(&mut self, epoch: &Epoch) {
        self.bar.set_message(format!(
            "loss {:.4}, test accuracy {:.1}%",
            epoch.train_loss,
            100.0 * epoch.test_accuracy
        ));
        self.bar.inc(1);
    }

    fn finished(&mut self, _comparison: &Comparison) {
        self.bar.finish();
    }
}

impl Cli {
    /// The budget `--quick` picks, with the flags given on top.
    fn options(&self) -> Options {
        let base = if self.quick {
            Options::quick()
        } else {
            Options::full()
        };
        Options {
            epochs: self.epochs.map_or(base.epochs, |epochs| epochs as usize),
            seeds: self.seeds.map_or(base.seeds, |seeds| seeds as usize),
            seed: self.seed,
            scale: self.scale,
            learning_rate: self.learning_rate,
            batch_size: self.batch_size as usize,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli.options(), &cli.out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options, out: &Path) -> Result<(), digits::Error> {
    let start = Instant::now();
    options.check()?;
    digits::plot::check_path(out)?;
    let split = Digits::load(options.seed)?;
    println!(
        "{}",
        digits::report::setup(options, split.train.len(), split.test.len())
    );
    let mut bars = Bars {
        bar: ProgressBar::hidden(),
    };
    let comparisons = digits::compare(options, &mut bars)?;
    println!("\n{}", digits::report::table(&comparisons));
    digits::plot::plot(&comparisons, out)?;
    println!("plot written to {}", out.display());
    println!("total time {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}
