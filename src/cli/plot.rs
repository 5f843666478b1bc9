//! The loss and accuracy curves of a training run, drawn as SVG.

use anyhow::{anyhow, Result};
use cross_entropy_tch::training::{EpochMetrics, TrainRun};
use plotters::prelude::*;

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const TEST: RGBColor = RGBColor(255, 127, 14);

/// Two panels side by side: loss per epoch (train and test) and accuracy
/// per epoch (train and test); with a scheduler, a third: the lr per epoch.
pub fn training_curves_svg(run: &TrainRun) -> Result<String> {
    let mut svg = String::new();
    let scheduled = run.config.scheduler.is_some();
    {
        let width = if scheduled { 1500 } else { 1000 };
        let root = SVGBackend::with_string(&mut svg, (width, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
        let title = format!(
            "{}: softmax regression, {}, {} epochs (cross-entropy-tch)",
            run.data.name,
            super::text::optimizer_text(&run.config.optimizer),
            run.epochs.len()
        );
        let root = root.titled(&title, ("sans-serif", 18)).map_err(|e| anyhow!("plot: {e}"))?;
        let (left, right) = root.split_horizontally(500);
        let (right, third) = right.split_horizontally(500);
        let epochs = run.epochs.len() as f64;
        let max_loss =
            run.epochs.iter().flat_map(|m| [m.train_loss, m.test_loss]).fold(0.0f32, f32::max)
                as f64;
        panel(
            &left,
            "loss (cross-entropy)",
            epochs,
            0.0..max_loss * 1.05,
            |m| (m.train_loss as f64, m.test_loss as f64),
            run,
        )?;
        panel(&right, "accuracy", epochs, 0.0..1.02, |m| (m.train_accuracy, m.test_accuracy), run)?;
        if scheduled {
            lr_panel(&third, epochs, run)?;
        }
        root.present().map_err(|e| anyhow!("plot: {e}"))?;
    }
    Ok(svg)
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    epochs: f64,
    y: std::ops::Range<f64>,
    values: impl Fn(&EpochMetrics) -> (f64, f64),
    run: &TrainRun,
) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot: {e}");
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0.0..epochs.max(1.0), y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    let train: Vec<(f64, f64)> = run.epochs.iter().map(|m| (m.epoch as f64, values(m).0)).collect();
    let test: Vec<(f64, f64)> = run.epochs.iter().map(|m| (m.epoch as f64, values(m).1)).collect();
    chart
        .draw_series(LineSeries::new(train, TRAIN.stroke_width(2)))
        .map_err(err)?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], TRAIN.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(test, TEST.stroke_width(2)))
        .map_err(err)?
        .label("test")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], TEST.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(err)?;
    Ok(())
}

/// The learning rate of each epoch (what the scheduler set).
fn lr_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    epochs: f64,
    run: &TrainRun,
) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot: {e}");
    let max_lr = run.epochs.iter().map(|m| m.lr).fold(0.0f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption("learning rate", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..epochs.max(1.0), 0.0..(max_lr * 1.05).max(f64::MIN_POSITIVE))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.2e}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    let points: Vec<(f64, f64)> = run.epochs.iter().map(|m| (m.epoch as f64, m.lr)).collect();
    chart.draw_series(LineSeries::new(points, TRAIN.stroke_width(2))).map_err(err)?;
    Ok(())
}
