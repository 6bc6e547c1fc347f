//! A HEM decision per frame (16 boxes) through the IBT component, against the same rule
//! in plain Python (the loop a Sedna user runs today). Prints medians and the ratio,
//! measured in one run. Target (issue 3): the component >= 10x faster.
//!
//! `cargo bench -p sedna --bench hem_vs_python` (needs `python3` on the PATH).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use sedna::plugin::{
    Builtin, Detections, Hem, Plugin, Prediction, Runtime, RuntimeConfig, Sandbox,
};

const FRAMES: usize = 10_000;
const ROUNDS: usize = 21;
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

class IBT:
    # Shaped as Sedna's IBTFilter is: a filter object called once per frame, a range check
    # as a class method per box, and the scores converted with float().
    def __init__(self, threshold_img=0.5, threshold_box=0.5):
        self.threshold_img = float(threshold_img)
        self.threshold_box = float(threshold_box)

    @classmethod
    def in_unit_range(cls, value):
        return 0 <= float(value) <= 1

    def __call__(self, boxes):
        if not (boxes and all(len(b) > 4 for b in boxes)):
            return False
        scores = [b[4] for b in boxes if self.in_unit_range(b[4])]
        if len(scores) != len(boxes):
            return False
        uncertain = [float(s) for s in scores if float(s) <= self.threshold_box]
        return len(uncertain) / len(boxes) >= 1 - self.threshold_img

ibt = IBT()
frames = json.loads(sys.stdin.readline())
# One round per request, so that the host interleaves its rounds with ours.
for _ in sys.stdin:
    start = time.perf_counter_ns()
    hard = sum(1 for f in frames if ibt(f))
    elapsed = time.perf_counter_ns() - start
    print(json.dumps({"ns_per_frame": elapsed / len(frames), "hard": hard}), flush=True)
"#;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The Python loop, kept running: each request times one round over all frames.
struct PythonLoop {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl PythonLoop {
    fn start(frames: &[Vec<f32>]) -> Self {
        let rows: Vec<Vec<[f32; 6]>> = frames
            .iter()
            .map(|scores| {
                scores
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| [i as f32, 0.0, i as f32 + 8.0, 8.0, s, (i % 4) as f32])
                    .collect()
            })
            .collect();
        let mut child = Command::new("python3")
            .args(["-c", PYTHON])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("this benchmark needs python3 on the PATH");
        let stdin = child.stdin.as_mut().unwrap();
        writeln!(stdin, "{}", serde_json::to_string(&rows).unwrap()).unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        PythonLoop { child, lines }
    }

    /// Nanoseconds per frame and the number of hard frames, for one round.
    fn round(&mut self) -> (f64, usize) {
        writeln!(self.child.stdin.as_mut().unwrap(), "go").unwrap();
        let line = self
            .lines
            .next()
            .expect("the Python loop's answer")
            .unwrap();
        let result: serde_json::Value = serde_json::from_str(&line).unwrap();
        (
            result["ns_per_frame"].as_f64().unwrap(),
            result["hard"].as_u64().unwrap() as usize,
        )
    }
}

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
    let mut python = PythonLoop::start(&frames);

    // Rounds interleave the three loops, and ratios are taken round by round, so that
    // load from elsewhere on a shared machine weighs on both sides alike.
    let (mut single, mut batched, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut single_ratio, mut batched_ratio) = (Vec::new(), Vec::new());
    let mut agree = true;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let hard = predictions
            .iter()
            .filter(|p| ibt.is_hard_example(p).unwrap())
            .count();
        let ours = start.elapsed().as_nanos() as f64 / FRAMES as f64;

        // Batches of 32 frames, as a worker that mines per batch would call.
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
        let ours_batched = start.elapsed().as_nanos() as f64 / FRAMES as f64;

        let (python_ns, python_hard) = python.round();
        agree &= hard == python_hard && batch_hard == python_hard;
        single.push(ours);
        batched.push(ours_batched);
        theirs.push(python_ns);
        single_ratio.push(python_ns / ours);
        batched_ratio.push(python_ns / ours_batched);
    }
    drop(python.child.stdin.take());
    python.child.wait().unwrap();

    println!(
        "HEM decision per frame, {BOXES} boxes, {FRAMES} frames a round, medians of {ROUNDS} rounds"
    );
    println!(
        "  IBT component, one call per frame: {:>8.0} ns",
        median(single)
    );
    println!(
        "  IBT component, batches of 32:      {:>8.0} ns",
        median(batched)
    );
    println!(
        "  IBT in plain Python:               {:>8.0} ns",
        median(theirs)
    );
    println!(
        "  ratio Python / component (round by round): {:.1}x one call per frame, {:.1}x batched",
        median(single_ratio),
        median(batched_ratio)
    );
    println!("  decisions agree on every frame count: {agree}");
}
