//! A HEM decision per frame (16 boxes) through the IBT component, against the same rule
//! in plain Python (the loop a Sedna user runs today). Prints medians and the ratio,
//! measured in one run. Target (issue 3): the component >= 10x faster.
//!
//! `cargo bench -p sedna --bench hem_vs_python` (needs `python3` on the PATH).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use sedna::plugin::{
    Builtin, Detections, Hem, Plugin, Prediction, Runtime, RuntimeConfig, Sandbox,
};

const FRAMES: usize = 10_000;
const ROUNDS: usize = 15;
const BOXES: usize = 16;

/// The same pseudo-random scores in Rust and in the Python script (a linear congruence).
fn scores() -> Vec<Vec<f32>> {
    let mut state = 12345u64;
    (0..FRAMES)
        .map(|_| {
            (0..BOXES)
                .map(|_| {
                    state = (state * 1_103_515_245 + 12_345) % (1 << 31);
                    (state % 1000) as f32 / 1000.0
                })
                .collect()
        })
        .collect()
}

const PYTHON: &str = r#"
import json, sys, time

def ibt(boxes, threshold_img=0.5, threshold_box=0.5):
    # Sedna's IBT rule: the share of uncertain boxes against 1 - threshold_img.
    if not boxes or not all(len(b) > 4 for b in boxes):
        return False
    scores = [b[4] for b in boxes if 0 <= b[4] <= 1]
    if len(scores) != len(boxes):
        return False
    uncertain = [s for s in scores if s <= threshold_box]
    return len(uncertain) / len(boxes) >= 1 - threshold_img

frames = json.load(sys.stdin)
times = []
for _ in range(int(sys.argv[1])):
    start = time.perf_counter_ns()
    decisions = [ibt(f) for f in frames]
    times.append((time.perf_counter_ns() - start) / len(frames))
times.sort()
print(json.dumps({"ns_per_frame": times[len(times) // 2], "hard": sum(decisions)}))
"#;

fn main() {
    let frames = scores();
    let predictions: Vec<Prediction> = frames
        .iter()
        .map(|scores| {
            Prediction::Detections(Detections::from_rows(scores.iter().enumerate().map(
                |(i, &score)| ([i as f32, 0.0, i as f32 + 8.0, 8.0], score, (i % 4) as u32),
            )))
        })
        .collect();

    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let ibt = Plugin::<Hem>::load(
        &runtime,
        &Builtin::find("IBT").unwrap().source(),
        Vec::new(),
        Sandbox::default(),
    )
    .unwrap();
    let mut ours = Vec::new();
    let mut hard = 0;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        hard = predictions
            .iter()
            .filter(|p| ibt.is_hard_example(p).unwrap())
            .count();
        ours.push(start.elapsed().as_nanos() as f64 / FRAMES as f64);
    }
    ours.sort_by(f64::total_cmp);
    let ours = ours[ROUNDS / 2];

    // The same decisions in batches of 32 frames, as a worker that mines per batch calls.
    let mut batched = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let batch_hard: usize = predictions
            .chunks(32)
            .map(|batch| {
                ibt.is_hard_example_batch(batch)
                    .unwrap()
                    .iter()
                    .filter(|&&h| h)
                    .count()
            })
            .sum();
        assert_eq!(batch_hard, hard);
        batched.push(start.elapsed().as_nanos() as f64 / FRAMES as f64);
    }
    batched.sort_by(f64::total_cmp);
    let batched = batched[ROUNDS / 2];

    let boxes: Vec<Vec<[f32; 6]>> = frames
        .iter()
        .map(|scores| {
            scores
                .iter()
                .enumerate()
                .map(|(i, &s)| [i as f32, 0.0, i as f32 + 8.0, 8.0, s, (i % 4) as f32])
                .collect()
        })
        .collect();
    let mut python = Command::new("python3")
        .args(["-c", PYTHON, &ROUNDS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("this benchmark needs python3 on the PATH");
    python
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&boxes).unwrap().as_bytes())
        .unwrap();
    let output = python.wait_with_output().unwrap();
    let result: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the Python loop's result");
    let theirs = result["ns_per_frame"].as_f64().unwrap();

    println!("HEM decision per frame, {BOXES} boxes, median of {ROUNDS} rounds of {FRAMES} frames");
    println!("  IBT component (one call per frame): {ours:>8.0} ns");
    println!("  IBT in plain Python:                {theirs:>8.0} ns");
    println!("  IBT component, batches of 32:       {batched:>8.0} ns");
    println!(
        "  ratio (Python / component):         {:>8.1}x one call per frame, {:.1}x batched",
        theirs / ours,
        theirs / batched
    );
    println!(
        "  decisions agree: {} (hard frames: {hard} and {})",
        result["hard"] == hard,
        result["hard"]
    );
}
