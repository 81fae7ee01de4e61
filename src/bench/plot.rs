//! The SVG plot of a run: requests per second and p50 latency of each
//! scenario at each concurrency, one bar per target, on log scales.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::bench::report::{Report, ScenarioReport};
use crate::bench::targets::TargetKind;
use crate::bench::BenchError;

/// Pixels per scenario group; the plot grows with the number of groups.
const GROUP_WIDTH: u32 = 110;
const MIN_WIDTH: u32 = 800;
const PANEL_HEIGHT: u32 = 380;

/// One panel: a value per (group, target).
struct Panel {
    title: &'static str,
    unit: &'static str,
    value: fn(&ScenarioReport, TargetKind) -> Option<f64>,
}

const PANELS: [Panel; 2] = [
    Panel {
        title: "Throughput",
        unit: "requests/s",
        value: |s, k| s.target(k).map(|m| m.requests_per_s),
    },
    Panel {
        title: "Latency p50",
        unit: "microseconds",
        value: |s, k| s.target(k).and_then(|m| m.p50_us),
    },
];

fn color(kind: TargetKind) -> RGBColor {
    match kind {
        TargetKind::Direct => RGBColor(0x4c, 0x72, 0xb0),
        TargetKind::ByteCopy => RGBColor(0x8c, 0x8c, 0x8c),
        TargetKind::Tdsguard => RGBColor(0xdd, 0x84, 0x52),
    }
}

/// Writes the plot of `report` to `path`.
pub fn write_svg(report: &Report, path: &Path) -> Result<(), BenchError> {
    let groups: Vec<&ScenarioReport> = report
        .scenarios
        .iter()
        .filter(|s| !s.targets.is_empty())
        .collect();
    let width = MIN_WIDTH.max(GROUP_WIDTH * groups.len() as u32 + 160);
    let root = SVGBackend::new(path, (width, PANEL_HEIGHT * 2)).into_drawing_area();
    draw(&root, &groups).map_err(|message| BenchError::Output {
        path: path.to_path_buf(),
        message,
    })?;
    root.present().map_err(|e| BenchError::Output {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn draw(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    groups: &[&ScenarioReport],
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    if groups.is_empty() {
        let style = ("sans-serif", 20).into_font();
        root.draw(&Text::new(
            "tdsguard bench: no measured scenario",
            (40, 40),
            style,
        ))
        .map_err(|e| e.to_string())?;
        return Ok(());
    }
    let areas = root.split_evenly((2, 1));
    for (area, panel) in areas.iter().zip(PANELS.iter()) {
        draw_panel(area, panel, groups)?;
    }
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &Panel,
    groups: &[&ScenarioReport],
) -> Result<(), String> {
    let values: Vec<f64> = groups
        .iter()
        .flat_map(|s| TargetKind::ALL.iter().filter_map(|&k| (panel.value)(s, k)))
        .filter(|v| *v > 0.0)
        .collect();
    let top = values.iter().copied().fold(1.0_f64, f64::max) * 2.0;
    let bottom = values.iter().copied().fold(top, f64::min).max(1e-3) / 2.0;
    let n = groups.len() as f64;

    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{} ({})", panel.title, panel.unit),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n, (bottom..top).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(panel.unit)
        .draw()
        .map_err(|e| e.to_string())?;

    for (t, &kind) in TargetKind::ALL.iter().enumerate() {
        let bars = bars(groups, panel, kind, t, bottom);
        chart
            .draw_series(bars)
            .map_err(|e| e.to_string())?
            .label(kind.label())
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 10, y + 5)], color(kind).filled())
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;

    // backend_coord is in the backend's pixels, Text in the area's.
    let (base_x, base_y) = area.get_base_pixel();
    let style = ("sans-serif", 11).into_font().color(&BLACK);
    for (i, s) in groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.15, bottom));
        let label = format!("{} c={}", s.scenario, s.concurrency);
        area.draw(&Text::new(
            label,
            (x - base_x, y - base_y + 6),
            style.clone(),
        ))
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One bar per group for target number `t` (of three), in its third of
/// the group's slot.
fn bars(
    groups: &[&ScenarioReport],
    panel: &Panel,
    kind: TargetKind,
    t: usize,
    bottom: f64,
) -> Vec<Rectangle<(f64, f64)>> {
    groups
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let v = (panel.value)(s, kind).filter(|v| *v > 0.0)?;
            let x0 = i as f64 + 0.1 + 0.27 * t as f64;
            Some(Rectangle::new(
                [(x0, bottom), (x0 + 0.25, v)],
                color(kind).filled(),
            ))
        })
        .collect()
}
