//! The PNG of test accuracy and support-vector fraction per epoch, one line per loss.

use std::path::Path;

use plotters::coord::types::RangedCoordusize;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;

use crate::{Comparison, Epoch, Error};

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

/// The support-vector fraction's floor on its logarithmic axis, below the smallest mean
/// over five seeds that is not zero (one support vector in one seed's epoch,
/// `1 / (1438 · 9 · 5)` ≈ 1.5e-5): an epoch with none lies on the bottom edge.
const FRACTION_FLOOR: f64 = 1e-5;

/// Draws test accuracy (left) and the training support-vector fraction (right, on a
/// logarithmic axis) against the epoch, each the mean over seeds, one line per loss, and
/// writes the PNG to `path`.
///
/// # Errors
/// [`Error::Plot`] if the font does not load, or the file or its folder cannot be made.
pub fn plot(comparisons: &[Comparison], path: &Path) -> Result<(), Error> {
    check_path(path)?;
    let fail = |message: String| Error::Plot {
        path: path.to_owned(),
        message,
    };
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|e| fail(e.to_string()))?;
    }
    register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| fail("the embedded DejaVu Sans font does not parse".to_owned()))?;

    let lines: Vec<Line> = comparisons
        .iter()
        .zip(COLORS.iter().cycle())
        .map(|(comparison, &color)| Line {
            name: comparison.loss.name,
            color,
            history: comparison.mean_history(),
        })
        .collect();
    let mut rgb = vec![0; SIZE.0 as usize * SIZE.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        let (left, right) = root.split_horizontally(SIZE.0 / 2);
        draw_accuracy(&left, &lines).map_err(|e| fail(e.to_string()))?;
        draw_fraction(&right, &lines).map_err(|e| fail(e.to_string()))?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    write_png(path, &rgb).map_err(fail)
}

/// Encodes a [`SIZE`] buffer of 8-bit RGB pixels, row by row from the top, as a PNG file.
fn write_png(path: &Path, rgb: &[u8]) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), SIZE.0, SIZE.1);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // A chart is mostly flat colour: the best compression makes the file a fifth of the
    // default's size, for a fraction of a second.
    encoder.set_compression(png::Compression::Best);
    encoder.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(rgb).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())
}

/// Checks that `path` names a PNG file, before the training that precedes the plot.
///
/// # Errors
/// [`Error::Plot`] unless the path ends in `.png` (any case) and a file can be written there.
pub fn check_path(path: &Path) -> Result<(), Error> {
    let extension = path.extension().and_then(|e| e.to_str());
    if !extension.is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        return Err(Error::Plot {
            path: path.to_owned(),
            message: "expected a file name ending in .png".to_owned(),
        });
    }
    // Create the folder and the file now, so that an unwritable path fails before the
    // training rather than after it; an existing plot is kept until the new one replaces it.
    let writable = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
        });
    writable.map(drop).map_err(|error| Error::Plot {
        path: path.to_owned(),
        message: format!("expected a path where a file can be written, got {error}"),
    })
}

/// One loss's mean curve.
struct Line {
    name: &'static str,
    color: RGBColor,
    history: Vec<Epoch>,
}

type Area<DB> = DrawingArea<DB, Shift>;
type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw_accuracy<DB: DrawingBackend>(area: &Area<DB>, lines: &[Line]) -> DrawResult<DB> {
    let accuracy = |epoch: &Epoch| 100.0 * epoch.test_accuracy;
    let lowest = lines
        .iter()
        .flat_map(|line| line.history.iter().map(accuracy))
        .fold(100.0, f64::min);
    // A floor at a multiple of 10 shows the first epochs and keeps room above.
    let floor = ((lowest / 10.0).floor() * 10.0).min(90.0);
    let mut chart = ChartBuilder::on(area)
        .caption("test accuracy (%)", (FONT, 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(epoch_range(lines), floor..100.0)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .label_style((FONT, 14))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()?;
    for line in lines {
        let points = line.history.iter().map(|e| (e.epoch, accuracy(e)));
        draw_line(&mut chart, line, points)?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight)
}

fn draw_fraction<DB: DrawingBackend>(area: &Area<DB>, lines: &[Line]) -> DrawResult<DB> {
    let mut chart = ChartBuilder::on(area)
        .caption("support vectors / (classes - 1), training rows", (FONT, 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(epoch_range(lines), (FRACTION_FLOOR..1.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .label_style((FONT, 14))
        .light_line_style(RGBColor(238, 238, 238))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()?;
    for line in lines {
        let points = line.history.iter().map(|e| {
            let fraction = e.support_vector_fraction();
            (e.epoch, fraction.max(FRACTION_FLOOR))
        });
        draw_line(&mut chart, line, points)?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// Epochs from 1 to the longest history (at least 2, so that the axis has a length).
fn epoch_range(lines: &[Line]) -> std::ops::Range<usize> {
    let epochs = lines.iter().map(|line| line.history.len()).max();
    1..epochs.unwrap_or(0).max(2)
}

fn draw_line<'a, DB, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordusize, Y>>,
    line: &Line,
    points: impl Iterator<Item = (usize, f64)>,
) -> DrawResult<DB>
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64>,
{
    let color = line.color;
    chart
        .draw_series(LineSeries::new(points, color.stroke_width(2)))?
        .label(line.name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2)));
    Ok(())
}

fn draw_legend<'a, DB, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordusize, Y>>,
    position: SeriesLabelPosition,
) -> DrawResult<DB>
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}
