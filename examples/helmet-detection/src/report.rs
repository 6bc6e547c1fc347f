//! What the demo measured, and the report it writes (`report.md`, `report.html`): mAP@0.5
//! and per-class precision, recall and AP of the base and the deployed model on both
//! held-out sets; the loss per epoch of the base model and of the round; the hard-example
//! ratio and the worker's frames a second over time, with the round and the swap marked;
//! example frames with the boxes each model found.
//!
//! The charts are SVG written here (a few dozen lines, no dependency): a plotting crate
//! would add fonts and a rendering stack for four simple charts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use image::{Rgb, RgbImage};
use sedna::media::{Frame, Sample as DataSample};
use sedna::plugin::{Estimator, Metric, Plugin, Prediction};

use crate::lab;
use crate::scene::CLASSES;

/// The worker at one moment of the stream.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Seconds since streaming started.
    pub at: f64,
    pub frames: u64,
    pub hard: u64,
    pub swaps: u64,
    /// Seconds the worker has spent on frames (read, predict, mine, keep).
    pub busy: f64,
}

/// What the demo measured.
pub struct Outcome {
    /// The ONNX backend that ran the models.
    pub backend: String,
    /// Metrics on the base and the shifted held-out sets, of the base model and of the
    /// deployed one.
    pub before: [Vec<Metric>; 2],
    pub after: [Vec<Metric>; 2],
    pub timeline: Vec<Sample>,
    /// When the round ran, in seconds since streaming started.
    pub round: (Duration, Duration),
    pub swap: Duration,
    pub base_loss: Vec<f64>,
    pub round_loss: Vec<f64>,
    /// Example frames: (base model's boxes, deployed model's boxes) image files.
    pub examples: Vec<(PathBuf, PathBuf)>,
    pub total: Duration,
}

/// Metric `name`'s `i`-th value, NaN when absent.
fn value(metrics: &[Metric], name: &str, i: usize) -> f64 {
    lab::metric(metrics, name)
        .and_then(|v| v.get(i).copied())
        .unwrap_or(f64::NAN)
}

/// Per window of the timeline: its middle, frames a second the worker could run (frames
/// over the time it was busy with them), and the share of its frames that were hard.
fn windows(timeline: &[Sample], span: f64) -> Vec<(f64, f64, f64)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, s) in timeline.iter().enumerate() {
        let first = &timeline[start];
        if s.at - first.at < span {
            continue;
        }
        let frames = (s.frames - first.frames) as f64;
        let busy = s.busy - first.busy;
        if frames > 0.0 && busy > 0.0 {
            let hard = (s.hard - first.hard) as f64;
            out.push(((s.at + first.at) / 2.0, frames / busy, hard / frames));
        }
        start = i;
    }
    out
}

impl Outcome {
    /// Frames a second the worker could run (frames over busy time) before the round,
    /// and while it trained.
    pub fn capacity(&self) -> (f64, f64) {
        let rate = |from: f64, to: f64| {
            let inside: Vec<&Sample> = self
                .timeline
                .iter()
                .filter(|s| s.at >= from && s.at <= to)
                .collect();
            match (inside.first(), inside.last()) {
                (Some(a), Some(b)) if b.busy > a.busy => {
                    (b.frames - a.frames) as f64 / (b.busy - a.busy)
                }
                _ => f64::NAN,
            }
        };
        let (start, end) = (self.round.0.as_secs_f64(), self.round.1.as_secs_f64());
        (rate(0.0, start), rate(start, end))
    }

    /// The hard-example ratio before the swap and after it.
    pub fn hard_ratio(&self) -> (f64, f64) {
        let swap = self
            .timeline
            .iter()
            .position(|s| s.swaps > self.timeline[0].swaps)
            .unwrap_or(self.timeline.len().saturating_sub(1));
        let ratio =
            |a: &Sample, b: &Sample| (b.hard - a.hard) as f64 / (b.frames - a.frames).max(1) as f64;
        let (first, last) = (&self.timeline[0], &self.timeline[self.timeline.len() - 1]);
        let at = &self.timeline[swap];
        (ratio(first, at), ratio(at, last))
    }

    /// The before/after table and the run's figures, as Markdown.
    pub fn table(&self) -> String {
        let mut t = String::from(
            "| metric | base model, base test | deployed, base test | base model, shifted test | deployed, shifted test |\n|---|---|---|---|---|\n",
        );
        let mut row = |label: String, name: &str, i: usize| {
            let _ = writeln!(
                t,
                "| {label} | {:.3} | {:.3} | {:.3} | {:.3} |",
                value(&self.before[0], name, i),
                value(&self.after[0], name, i),
                value(&self.before[1], name, i),
                value(&self.after[1], name, i)
            );
        };
        row("mAP@0.5".into(), "map", 0);
        for (i, class) in CLASSES.iter().enumerate() {
            row(format!("{class} AP"), "ap", i);
            row(format!("{class} precision"), "precision", i);
            row(format!("{class} recall"), "recall", i);
        }
        let last = self.timeline.last().copied();
        let (frames, streaming) = last.map_or((0, 0.0), |s| (s.frames, s.at));
        let (idle, training) = self.capacity();
        let (hard_before, hard_after) = self.hard_ratio();
        let _ = write!(
            t,
            "\n- {}\n- frames streamed: {frames} in {streaming:.1} s ({:.1} frames/s, real time)\n- the worker's capacity: {idle:.1} frames/s before the round, {training:.1} while it trained ({:.0}%)\n- hard-example ratio: {hard_before:.3} before the swap, {hard_after:.3} after\n- swap (load, smoke test, swap): {:.1?}\n- the round (train, eval, deploy): {:.1?}\n- the whole demo: {:.1?}\n",
            self.backend,
            frames as f64 / streaming.max(1e-9),
            100.0 * training / idle,
            self.swap,
            self.round.1 - self.round.0,
            self.total
        );
        t
    }

    /// The mAP@0.5 change on the base and the shifted test set.
    pub fn map_change(&self) -> (f64, f64) {
        (
            value(&self.after[0], "map", 0) - value(&self.before[0], "map", 0),
            value(&self.after[1], "map", 0) - value(&self.before[1], "map", 0),
        )
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let (base, shifted) = self.map_change();
        let losses = |l: &[f64]| {
            l.iter()
                .map(|v| format!("{v:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut examples = String::new();
        for (before, after) in &self.examples {
            let _ = writeln!(examples, "- {} / {}", before.display(), after.display());
        }
        format!(
            "# Helmet detection: one round of incremental learning\n\n{}\nmAP@0.5 change: {base:+.3} on the base test set, {shifted:+.3} on the shifted test set.\n\nLoss per epoch, base model: {}\n\nLoss per epoch, the round: {}\n\nExample frames (base model / deployed):\n{examples}",
            self.table(),
            losses(&self.base_loss),
            losses(&self.round_loss),
        )
    }

    /// The report as HTML: the table, the charts and the example frames.
    pub fn html(&self, out: &Path) -> String {
        let map = bar_chart(
            "mAP@0.5 on the held-out test sets",
            &[
                (
                    "base look".into(),
                    value(&self.before[0], "map", 0),
                    value(&self.after[0], "map", 0),
                ),
                (
                    "shifted look".into(),
                    value(&self.before[1], "map", 0),
                    value(&self.after[1], "map", 0),
                ),
            ],
        );
        let per_class = |set: usize, title: &str| {
            let groups: Vec<(String, f64, f64)> = CLASSES
                .iter()
                .enumerate()
                .map(|(i, class)| {
                    (
                        class.to_string(),
                        value(&self.before[set], "ap", i),
                        value(&self.after[set], "ap", i),
                    )
                })
                .collect();
            bar_chart(title, &groups)
        };
        let windows = windows(&self.timeline, 2.0);
        let swap = self
            .timeline
            .iter()
            .find(|s| s.swaps > self.timeline[0].swaps)
            .map(|s| s.at);
        let mut marks = vec![(self.round.0.as_secs_f64(), "round starts")];
        if let Some(at) = swap {
            marks.push((at, "swap"));
        }
        let fps = line_chart(
            "the worker's frames/s (frames over the time spent on them)",
            "s",
            &[windows.iter().map(|w| (w.0, w.1)).collect()],
            &marks,
        );
        let hard = line_chart(
            "hard-example ratio",
            "s",
            &[windows.iter().map(|w| (w.0, w.2)).collect()],
            &marks,
        );
        let loss = |title: &str, l: &[f64]| {
            line_chart(
                title,
                "epoch",
                &[l.iter()
                    .enumerate()
                    .map(|(i, v)| ((i + 1) as f64, *v))
                    .collect()],
                &[],
            )
        };
        let rows: String = self
            .table()
            .lines()
            .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
            .map(|l| {
                let cells: String = l
                    .trim_matches('|')
                    .split('|')
                    .map(|c| format!("<td>{}</td>", c.trim()))
                    .collect();
                format!("<tr>{cells}</tr>\n")
            })
            .collect();
        let notes: String = self
            .table()
            .lines()
            .filter_map(|l| l.strip_prefix("- "))
            .map(|l| format!("<li>{l}</li>"))
            .collect();
        let relative = |p: &Path| p.strip_prefix(out).unwrap_or(p).display().to_string();
        let examples: String = self
            .examples
            .iter()
            .map(|(before, after)| {
                format!(
                    "<p><img src=\"{}\" width=\"45%\"> <img src=\"{}\" width=\"45%\"></p>\n",
                    relative(before),
                    relative(after)
                )
            })
            .collect();
        format!(
            "<!doctype html><meta charset=\"utf-8\"><title>Helmet detection: one round</title>\n<body style=\"font-family:sans-serif;max-width:64em;margin:2em auto\">\n<h1>Helmet detection: one round of incremental learning</h1>\n{map}\n{}\n{}\n<table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\">\n{rows}</table>\n<ul>{notes}</ul>\n<h2>Over the stream</h2>\n{fps}\n{hard}\n<h2>Training</h2>\n{}\n{}\n<h2>Shifted frames: the base model (left), the deployed one (right)</h2>\n{examples}</body>\n",
            per_class(0, "AP per class, base test set"),
            per_class(1, "AP per class, shifted test set"),
            loss("loss per epoch, base model", &self.base_loss),
            loss("loss per epoch, the round", &self.round_loss),
        )
    }
}

/// Colours of the classes' boxes.
const COLOURS: [[u8; 3]; 4] = [[40, 200, 255], [255, 60, 200], [40, 220, 60], [255, 40, 40]];

/// Draws `prediction`'s boxes on a copy of `frame`, a colour per class.
fn with_boxes(frame: &Frame, prediction: &Prediction) -> RgbImage {
    let mut image = frame.pixels().clone();
    let (w, h) = (image.width() as i64, image.height() as i64);
    if let Prediction::Detections(found) = prediction {
        for (corners, _, label) in found.rows() {
            let colour = Rgb(COLOURS[label as usize % COLOURS.len()]);
            let [x1, y1, x2, y2] = corners.map(|v| v.round() as i64);
            for t in 0..2 {
                for x in x1.max(0)..x2.min(w) {
                    for y in [y1 + t, y2 - 1 - t] {
                        if (0..h).contains(&y) {
                            image.put_pixel(x as u32, y as u32, colour);
                        }
                    }
                }
                for y in y1.max(0)..y2.min(h) {
                    for x in [x1 + t, x2 - 1 - t] {
                        if (0..w).contains(&x) {
                            image.put_pixel(x as u32, y as u32, colour);
                        }
                    }
                }
            }
        }
    }
    image
}

/// The first `count` samples of `set` with the boxes of `before` and of `after` drawn,
/// written to `out/examples/`.
pub fn examples(
    out: &Path,
    set: &Arc<[DataSample]>,
    before: &Plugin<Estimator>,
    after: &Plugin<Estimator>,
    count: usize,
) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    let dir = out.join("examples");
    std::fs::create_dir_all(&dir)?;
    let mut written = Vec::new();
    for sample in set.iter().take(count) {
        let frame = Arc::new(Frame::open(&sample.image)?);
        let stem = sample
            .image
            .file_stem()
            .map_or_else(|| "frame".into(), |s| s.to_string_lossy().into_owned());
        let mut pair = Vec::new();
        for (model, estimator) in [("base", before), ("deployed", after)] {
            let path = dir.join(format!("{stem}-{model}.png"));
            with_boxes(&frame, &estimator.predict(&frame)?).save(&path)?;
            pair.push(path);
        }
        written.push((pair[0].clone(), pair[1].clone()));
    }
    Ok(written)
}

/// Bars for `groups` of (label, before, after) values on [0, 1], as an SVG chart.
fn bar_chart(title: &str, groups: &[(String, f64, f64)]) -> String {
    let (width, height, left, top) = ((120 * groups.len() + 60).max(380), 260, 40, 30);
    let plot = (height - top - 50) as f64;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12"><text x="{left}" y="18" font-weight="bold">{title}</text><line x1="{left}" y1="{base}" x2="{right}" y2="{base}" stroke="#444"/>"##,
        base = top as f64 + plot,
        right = width - 10
    );
    for (i, (label, before, after)) in groups.iter().enumerate() {
        let x = left + 10 + i * 120;
        for (j, (value, colour)) in [(before, "#9aa5b1"), (after, "#2f7ed8")].iter().enumerate() {
            let value = if value.is_finite() {
                value.clamp(0.0, 1.0)
            } else {
                0.0
            };
            let h = value * plot;
            let bx = x + j * 46;
            let _ = write!(
                svg,
                r##"<rect x="{bx}" y="{y:.1}" width="40" height="{h:.1}" fill="{colour}"/><text x="{tx}" y="{ty:.1}" text-anchor="middle">{value:.2}</text>"##,
                y = top as f64 + plot - h,
                tx = bx + 20,
                ty = top as f64 + plot - h - 4.0
            );
        }
        let _ = write!(
            svg,
            r##"<text x="{tx}" y="{ty}" text-anchor="middle">{label}</text>"##,
            tx = x + 43,
            ty = height - 28
        );
    }
    let _ = write!(
        svg,
        r##"<rect x="{left}" y="{ly}" width="12" height="12" fill="#9aa5b1"/><text x="{t1}" y="{ty}">base model</text><rect x="{l2}" y="{ly}" width="12" height="12" fill="#2f7ed8"/><text x="{t2}" y="{ty}">deployed after one round</text></svg>"##,
        ly = height - 16,
        ty = height - 6,
        t1 = left + 16,
        l2 = left + 110,
        t2 = left + 126
    );
    svg
}

/// Lines through `series` of (x, y) points, with vertical `marks` at x, as an SVG chart.
fn line_chart(
    title: &str,
    x_label: &str,
    series: &[Vec<(f64, f64)>],
    marks: &[(f64, &str)],
) -> String {
    let (width, height, left, top, bottom) = (640.0, 240.0, 50.0, 30.0, 30.0);
    let points: Vec<&(f64, f64)> = series
        .iter()
        .flatten()
        .filter(|p| p.1.is_finite())
        .collect();
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for &&(x, y) in &points {
        (x0, x1, y1) = (x0.min(x), x1.max(x), y1.max(y));
    }
    for &(x, _) in marks {
        (x0, x1) = (x0.min(x), x1.max(x));
    }
    if points.is_empty() || x1 <= x0 {
        (x0, x1) = (0.0, 1.0);
    }
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (width - left - 10.0);
    let py = |y: f64| top + (1.0 - y / y1) * (height - top - bottom);
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12"><text x="{left}" y="18" font-weight="bold">{title}</text><line x1="{left}" y1="{b:.1}" x2="{r}" y2="{b:.1}" stroke="#444"/><line x1="{left}" y1="{top}" x2="{left}" y2="{b:.1}" stroke="#444"/><text x="4" y="{t2}">{y1:.2}</text><text x="4" y="{b:.1}">0</text><text x="{r}" y="{lx}" text-anchor="end">{x1:.0} {x_label}</text><text x="{left}" y="{lx}">{x0:.0}</text>"##,
        b = py(0.0),
        r = width - 10.0,
        t2 = top + 4.0,
        lx = height - 8.0
    );
    for &(x, label) in marks {
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{b:.1}" stroke="#d33" stroke-dasharray="4 3"/><text x="{tx:.1}" y="{ty}" fill="#d33">{label}</text>"##,
            x = px(x),
            b = py(0.0),
            tx = px(x) + 3.0,
            ty = top + 12.0
        );
    }
    for line in series {
        let path: Vec<String> = line
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="#2f7ed8" stroke-width="2" points="{}"/>"##,
            path.join(" ")
        );
    }
    svg.push_str("</svg>");
    svg
}
