//! The Python loop (`python_loop.py`) in a virtual environment the bench makes, with
//! its packages from PyPI, pinned.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use crate::pipeline::Decision;

/// What the loop installs: the versions a Sedna user would get today.
const PACKAGES: &[&str] = &["onnxruntime==1.31.1", "numpy==2.4.6", "pillow==13.0.0"];

#[derive(Debug, Deserialize)]
pub struct Report {
    pub ms_per_frame: Vec<f64>,
    pub peak_rss_kib: u64,
    pub decisions: Vec<Decision>,
    pub versions: serde_json::Value,
}

/// Makes (or reuses) `dir` as a virtual environment with [`PACKAGES`].
fn environment(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let python = dir.join("bin/python");
    let stamp = dir.join("packages.txt");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == PACKAGES.join("\n")) {
        return Ok(python);
    }
    eprintln!(
        "making the Python environment {} ({})",
        dir.display(),
        PACKAGES.join(" ")
    );
    run(Command::new("python3").args(["-m", "venv"]).arg(dir))?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PACKAGES))?;
    std::fs::write(&stamp, PACKAGES.join("\n"))?;
    Ok(python)
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status()?;
    anyhow::ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

pub struct Loop<'a> {
    pub venv: &'a Path,
    pub model: &'a Path,
    pub frames: &'a Path,
    pub out: &'a Path,
    pub rounds: usize,
    pub threads: usize,
}

impl Loop<'_> {
    pub fn run(&self) -> anyhow::Result<Report> {
        let python = environment(self.venv)?;
        let _ = std::fs::remove_dir_all(self.out);
        let (img, boxes) = helmet_detection::demo::Sizes::FULL.mining;
        let params: std::collections::HashMap<_, _> =
            helmet_detection::demo::PARAMS.into_iter().collect();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python_loop.py");
        crate::json_output(
            Command::new(python)
                .arg(script)
                .arg("--model")
                .arg(self.model)
                .arg("--frames")
                .arg(self.frames)
                .arg("--out")
                .arg(self.out)
                .args(["--rounds", &self.rounds.to_string()])
                .args(["--threads", &self.threads.to_string()])
                .args(["--obj-threshold", params["obj_threshold"]])
                .args(["--nms-threshold", params["nms_threshold"]])
                .args(["--threshold-img", &img.to_string()])
                .args(["--threshold-box", &boxes.to_string()]),
            "the Python loop",
        )
    }
}
