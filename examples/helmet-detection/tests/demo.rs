//! The example as a user runs it: the quick demo (a round on hard examples from the video,
//! a deploy and a swap), the base-model command (a short run whose loss falls), and the
//! committed base model's held-out mAP.

use std::process::Command;

use helmet_detection::{base, demo, lab};

fn helmet_detection(args: &[&str], out: &std::path::Path) -> String {
    let run = Command::new(env!("CARGO_BIN_EXE_helmet-detection"))
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

#[test]
fn the_quick_demo_completes_a_round_and_deploys_a_new_model() {
    let out = tempfile::tempdir().unwrap();
    let stdout = helmet_detection(&["demo", "--quick"], out.path());
    assert!(stdout.contains("ONNX backend: "), "{stdout}");
    assert!(stdout.contains("round 1: deployed"), "{stdout}");

    let base = std::fs::read(out.path().join("models/base.onnx")).unwrap();
    let deployed = std::fs::read(out.path().join("deploy/model.onnx")).unwrap();
    assert_ne!(base, deployed, "the deployed model is the trained one");
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(report.contains("| mAP@0.5 |"), "{report}");
    assert!(report.contains("Loss per epoch, the round: "), "{report}");
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.contains("hard-example ratio") && html.contains("<img src=\"examples/"));

    // The hard examples the annotator labelled were appended to the data index.
    let index = std::fs::read_to_string(out.path().join("data/index.txt")).unwrap();
    assert!(
        index.lines().any(|l| l.starts_with("images/hard-")),
        "{index}"
    );
}

#[test]
fn the_base_model_command_trains_the_detector_and_its_loss_falls() {
    let out = tempfile::tempdir().unwrap();
    let stdout = helmet_detection(
        &[
            "base-model",
            "--scenes",
            "16",
            "--epochs",
            "3",
            "--param",
            "augment=false",
        ],
        out.path(),
    );
    let losses: Vec<f64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("loss per epoch: "))
        .unwrap_or_else(|| panic!("{stdout}"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(losses.len(), 3, "{stdout}");
    assert!(losses[2] < losses[0], "the loss did not fall: {losses:?}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("models/base.json")).unwrap())
            .unwrap();
    assert_eq!(
        record["command"],
        "helmet-detection base-model --scenes 16 --epochs 3 --seed 1 --param augment=false"
    );
    assert!(
        record["held_out"]["base_test"]["map50"].is_number(),
        "{record}"
    );
}

#[test]
fn the_committed_base_model_holds_its_held_out_map() {
    let Some(model) = base::committed() else {
        panic!("models/base.onnx is missing: `helmet-detection base-model` makes it");
    };
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.with_extension("json")).unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let data = demo::data(out.path(), 0, demo::Sizes::FULL.test).unwrap();
    let lab = lab::Lab::new().unwrap();
    let estimator = lab.estimator(&model, out.path(), &demo::PARAMS).unwrap();
    // The base look is learnt; the shifted one is not (the shift must matter).
    for (look, set, range) in [
        ("base", &data.base_test, 0.85..=1.0),
        ("shifted", &data.shifted_test, 0.0..=0.5),
    ] {
        let metrics = estimator.evaluate(set).unwrap();
        let map = lab::metric(&metrics, "map").unwrap()[0];
        let recorded = record["held_out"][format!("{look}_test")]["map50"]
            .as_f64()
            .unwrap();
        assert!(
            (map - recorded).abs() < 0.02,
            "{look}: mAP@0.5 {map:.3}, the record says {recorded:.3}"
        );
        assert!(
            range.contains(&map),
            "{look}: mAP@0.5 {map:.3} outside {range:?}"
        );
    }
}
