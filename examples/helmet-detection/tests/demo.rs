//! The demo, small: the real job runs a round on hard examples from the video, deploys,
//! and the worker swaps to the new model.

use std::process::Command;

#[test]
fn the_quick_demo_completes_a_round_and_deploys_a_new_model() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_helmet-detection"))
        .args(["demo", "--quick", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("round 1: deployed"), "{stdout}");

    let base = std::fs::read(out.path().join("models/base.onnx")).unwrap();
    let deployed = std::fs::read(out.path().join("deploy/model.onnx")).unwrap();
    assert_ne!(base, deployed, "the deployed model is the trained one");
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(report.contains("| mAP@0.5 |"), "{report}");

    // The hard examples the annotator labelled were appended to the data index.
    let index = std::fs::read_to_string(out.path().join("data/index.txt")).unwrap();
    assert!(
        index.lines().any(|l| l.starts_with("images/hard-")),
        "{index}"
    );
}
