//! The PNG of test accuracy and support-vector fraction per epoch, one line per loss.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;

use crate::{Epoch, Error, Run};

/// The picture's size in pixels: two panels side by side.
pub const SIZE: (u32, u32) = (1200, 480);

/// A color per loss, in the table's order: the first five of the common 10-color
/// categorical palette, easy to tell apart on white.
const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// The font family the charts ask for, registered from the `dejavu` crate so that drawing
/// needs no font installed on the machine.
const FONT: &str = "sans-serif";

/// Draws test accuracy (left) and the training support-vector fraction (right) against
/// the epoch for every run, and writes the PNG to `path`.
///
/// # Errors
/// [`Error::Plot`] if the font does not load, or the file or its folder cannot be made.
pub fn plot(runs: &[Run], path: &Path) -> Result<(), Error> {
    let fail = |message: String| Error::Plot {
        path: path.to_owned(),
        message,
    };
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|e| fail(e.to_string()))?;
    }
    register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| fail("the embedded DejaVu Sans font does not parse".to_owned()))?;

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    let accuracy = |epoch: &Epoch| 100.0 * epoch.test_accuracy;
    let fraction = |epoch: &Epoch| epoch.support_vector_fraction();
    let lowest_accuracy = series_min(runs, accuracy);
    // Accuracy starts well above chance after one epoch; a floor at a multiple of 10
    // keeps the lines apart where they converge.
    let accuracy_floor = (lowest_accuracy / 10.0).floor() * 10.0;
    let accuracy_panel = Panel {
        title: "test accuracy (%)",
        y_range: accuracy_floor.min(90.0)..100.0,
        value: &accuracy,
        legend: SeriesLabelPosition::LowerRight,
    };
    let fraction_panel = Panel {
        title: "support vectors per row / (classes - 1), training",
        y_range: 0.0..(1.1 * series_max(runs, fraction)).max(1e-3),
        value: &fraction,
        legend: SeriesLabelPosition::UpperRight,
    };
    accuracy_panel
        .draw(&left, runs)
        .map_err(|e| fail(e.to_string()))?;
    fraction_panel
        .draw(&right, runs)
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))
}

/// One chart: a quantity of each epoch, a line per run.
struct Panel<'a> {
    title: &'static str,
    y_range: std::ops::Range<f64>,
    value: &'a dyn Fn(&Epoch) -> f64,
    legend: SeriesLabelPosition,
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

impl Panel<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, runs: &[Run]) -> DrawResult<DB> {
        let epochs = runs.iter().map(|run| run.history.len()).max().unwrap_or(1);
        let mut chart = ChartBuilder::on(area)
            .caption(self.title, (FONT, 20))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(1.0..epochs.max(2) as f64, self.y_range.clone())?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .label_style((FONT, 14))
            .draw()?;

        for (run, &color) in runs.iter().zip(COLORS.iter().cycle()) {
            let points = run
                .history
                .iter()
                .map(|epoch| (epoch.epoch as f64, (self.value)(epoch)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(run.loss.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(self.legend.clone())
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
    }
}

fn series_min(runs: &[Run], value: impl Fn(&Epoch) -> f64) -> f64 {
    let values = runs.iter().flat_map(|run| run.history.iter().map(&value));
    values.fold(f64::INFINITY, f64::min)
}

fn series_max(runs: &[Run], value: impl Fn(&Epoch) -> f64) -> f64 {
    let values = runs.iter().flat_map(|run| run.history.iter().map(&value));
    values.fold(f64::NEG_INFINITY, f64::max)
}
