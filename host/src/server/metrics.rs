//! `GET /metrics`: the host's counters and latency histograms in Prometheus text format
//! (version 0.0.4), one family at a time with its HELP and TYPE.

use std::fmt::Write as _;

use crate::learn::JobHandle;
use crate::metrics::{BUCKETS, HistogramSnapshot};
use crate::pipeline::camera::CameraState;
use crate::pipeline::{CameraStats, InferenceWorker, WorkerStats};
use crate::plugin::ErrorCounts;

/// The content type Prometheus expects.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric of `jobs` and of the process.
pub fn render(jobs: &[JobHandle], errors: &ErrorCounts) -> String {
    let mut out = Text::default();
    out.family(
        "sedna_build_info",
        "gauge",
        "The running sedna's version (always 1).",
    );
    out.sample(
        "sedna_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );

    let workers: Vec<(&str, &InferenceWorker)> = jobs
        .iter()
        .filter_map(|j| Some((j.name(), j.worker.as_deref()?)))
        .collect();
    let counters: [(&str, &str, CounterOf); 5] = [
        (
            "sedna_frames_total",
            "Frames the inference worker ran (read, predicted and mined, or failed).",
            |s| s.frames.get(),
        ),
        (
            "sedna_frames_failed_total",
            "Frames that could not be read, predicted or mined.",
            |s| s.failed.get(),
        ),
        (
            "sedna_source_failures_total",
            "Passes of the worker's source that could not read it at all (tried again).",
            |s| s.source_failures.get(),
        ),
        (
            "sedna_hard_examples_total",
            "Frames the hard-example miner flagged.",
            |s| s.hard.get(),
        ),
        (
            "sedna_model_swaps_total",
            "Models swapped into the inference worker (deployed or bound).",
            |s| s.swaps.get(),
        ),
    ];
    for (name, help, value) in counters {
        out.family(name, "counter", help);
        for (job, worker) in &workers {
            out.sample(name, &[("job", job)], value(&worker.stats));
        }
    }
    let name = "sedna_frame_stage_seconds";
    out.family(
        name,
        "histogram",
        "Time a frame spends in each stage: read, predict, mine, keep.",
    );
    for (job, worker) in &workers {
        for (stage, histogram) in worker.stats.stages.named() {
            out.histogram(
                name,
                &[("job", job), ("stage", stage)],
                &histogram.snapshot(),
            );
        }
    }

    render_cameras(&mut out, &workers);

    let uploads: Vec<(&str, crate::pipeline::UploadStats)> = workers
        .iter()
        .filter_map(|(job, worker)| Some((*job, worker.store().upload_stats()?)))
        .collect();
    type Count = fn(&crate::pipeline::UploadStats) -> u64;
    let families: [(&str, &str, &str, Count); 2] = [
        (
            "sedna_hard_example_uploads_total",
            "counter",
            "Hard-example files uploaded to HE_SAVED_URL in object storage.",
            |u| u.uploaded,
        ),
        (
            "sedna_hard_example_uploads_waiting",
            "gauge",
            "Hard-example files kept on the node, waiting to be uploaded.",
            |u| u.pending,
        ),
    ];
    for (name, kind, help, count) in families.into_iter().filter(|_| !uploads.is_empty()) {
        out.family(name, kind, help);
        for (job, stats) in &uploads {
            out.sample(name, &[("job", job)], count(stats));
        }
    }

    let name = "sedna_rounds_total";
    out.family(
        name,
        "counter",
        "Rounds run to their end (completed) or stopped by an error (failed).",
    );
    for job in jobs {
        out.sample(
            name,
            &[("job", job.name()), ("outcome", "completed")],
            job.rounds.completed.get(),
        );
        out.sample(
            name,
            &[("job", job.name()), ("outcome", "failed")],
            job.rounds.failed.get(),
        );
    }
    let name = "sedna_deploys_total";
    out.family(
        name,
        "counter",
        "Rounds whose deploy trigger held: the new model was deployed.",
    );
    for job in jobs {
        out.sample(name, &[("job", job.name())], job.rounds.deploys.get());
    }
    let name = "sedna_round_stage_seconds";
    out.family(
        name,
        "histogram",
        "Time a round spends in each stage: train, eval, deploy.",
    );
    for job in jobs {
        for (stage, histogram) in job.rounds.stages() {
            let stage = stage.name().to_ascii_lowercase();
            let snapshot = histogram.snapshot();
            out.histogram(name, &[("job", job.name()), ("stage", &stage)], &snapshot);
        }
    }

    let name = "sedna_plugin_binds_total";
    out.family(
        name,
        "counter",
        "Plugins bound to a job's slot through the API: swapped in, or refused.",
    );
    for job in jobs {
        for (outcome, counter) in [
            ("swapped", &job.binds.swapped),
            ("refused", &job.binds.refused),
        ] {
            out.sample(
                name,
                &[("job", job.name()), ("outcome", outcome)],
                counter.get(),
            );
        }
    }
    let name = "sedna_plugin_errors_total";
    out.family(
        name,
        "counter",
        "Plugin failures by call and kind (trap, timeout, out_of_memory, refused, ...).",
    );
    for (call, kind, count) in errors.snapshot() {
        out.sample(name, &[("call", &call), ("kind", kind)], count);
    }
    out.0
}

/// Each camera's counters, state and frame age, labelled by job, camera name and URL
/// (redacted).
fn render_cameras(out: &mut Text, workers: &[(&str, &InferenceWorker)]) {
    let cameras: Vec<(&str, CameraStats)> = workers
        .iter()
        .flat_map(|(job, worker)| worker.cameras().into_iter().map(move |c| (*job, c)))
        .collect();
    type Value = fn(&CameraStats) -> f64;
    let families: [(&str, &str, &str, Value); 6] = [
        (
            "sedna_camera_frames_total",
            "counter",
            "Frames a camera delivered and the host decoded.",
            |c| c.frames as f64,
        ),
        (
            "sedna_camera_dropped_frames_total",
            "counter",
            "Frames replaced by a newer one before the worker took them (the worker is slower than the camera).",
            |c| c.dropped as f64,
        ),
        (
            "sedna_camera_reconnects_total",
            "counter",
            "Connection attempts after the first (a refusal, a drop, a restart, a stall).",
            |c| c.reconnects as f64,
        ),
        (
            "sedna_camera_decode_errors_total",
            "counter",
            "Frames that did not decode; the stream resumed at the next key frame.",
            |c| c.decode_errors as f64,
        ),
        (
            "sedna_camera_streaming",
            "gauge",
            "1 while the camera streams, 0 while it connects or backs off.",
            |c| f64::from(u8::from(c.state == CameraState::Streaming)),
        ),
        (
            "sedna_camera_last_frame_timestamp_seconds",
            "gauge",
            "When the camera's last frame was decoded (Unix time; 0 before any).",
            |c| c.last_frame_unix.unwrap_or(0.0),
        ),
    ];
    for (name, kind, help, value) in families {
        out.family(name, kind, help);
        for (job, camera) in &cameras {
            let labels = [
                ("job", *job),
                ("camera", &camera.name),
                ("url", &camera.camera),
            ];
            out.sample(name, &labels, value(camera));
        }
    }
    let name = "sedna_camera_frame_age_seconds";
    out.family(
        name,
        "histogram",
        "From a camera's frame being captured (by the camera's clock, from its RTCP sender reports; its arrival before the first) to the worker's decision on it.",
    );
    for (job, camera) in &cameras {
        let labels = [
            ("job", *job),
            ("camera", &camera.name),
            ("url", &camera.camera),
        ];
        out.histogram(name, &labels, &camera.age);
    }
}

/// Reads one of a worker's counters.
type CounterOf = fn(&WorkerStats) -> u64;

#[derive(Default)]
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{name}{} {value}", label_set(labels));
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], snapshot: &HistogramSnapshot) {
        let bounds = BUCKETS.iter().map(|b| b.to_string()).chain(["+Inf".into()]);
        let counts = snapshot.cumulative.iter().chain([&snapshot.count]);
        for (bound, count) in bounds.zip(counts) {
            let mut with_le = labels.to_vec();
            with_le.push(("le", &bound));
            self.sample(&format!("{name}_bucket"), &with_le, count);
        }
        self.sample(&format!("{name}_sum"), labels, snapshot.sum_seconds);
        self.sample(&format!("{name}_count"), labels, snapshot.count);
    }
}

/// `{a="1",b="2"}` with values escaped as the format requires.
fn label_set(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = labels
        .iter()
        .map(|(key, value)| {
            let value = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{key}=\"{value}\"")
        })
        .collect();
    format!("{{{}}}", pairs.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            label_set(&[("a", "x\"y\\z\nw"), ("b", "2")]),
            r#"{a="x\"y\\z\nw",b="2"}"#
        );
        assert_eq!(label_set(&[]), "");
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_a_sum_and_a_count() {
        let h = crate::metrics::Histogram::default();
        h.observe(std::time::Duration::from_millis(3));
        let mut text = Text::default();
        text.histogram("x_seconds", &[("job", "j")], &h.snapshot());
        let lines: Vec<&str> = text.0.lines().collect();
        assert_eq!(lines.len(), BUCKETS.len() + 3);
        assert!(lines.contains(&r#"x_seconds_bucket{job="j",le="0.0025"} 0"#));
        assert!(lines.contains(&r#"x_seconds_bucket{job="j",le="0.005"} 1"#));
        assert!(lines.contains(&r#"x_seconds_bucket{job="j",le="+Inf"} 1"#));
        assert!(lines.contains(&r#"x_seconds_count{job="j"} 1"#));
    }
}
