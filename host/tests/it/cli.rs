//! The `sedna plugin` commands, run as a user runs them.

use std::process::{Command, Output};

use crate::support::*;
use sedna::plugin::Prediction;

fn sedna(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sedna"))
        .args(args)
        .env("SEDNA_HOME", home)
        .env_remove("SEDNA_LOG")
        .output()
        .unwrap()
}

/// Runs `sedna ARGS`, expecting exit code 1 and `expected` in what it printed on stderr.
fn assert_fails(home: &std::path::Path, args: &[&str], expected: &str) {
    let out = sedna(home, args);
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    assert!(
        stderr(&out).contains(expected),
        "{args:?}: {}",
        stderr(&out)
    );
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn inspect_names_the_world_imports_and_exports() {
    let home = tempfile::tempdir().unwrap();
    let trigger = builtin_file(home.path(), "HardExampleRatio");
    let out = sedna(home.path(), &["plugin", "inspect", FIXTURE_HEM_HOSTILE]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("worlds:  hard-example-miner"), "{text}");
    assert!(text.contains("sedna:plugin/mining@0.3.0"), "{text}");
    assert!(text.contains("sedna:plugin/log@0.3.0"), "{text}");
    assert!(
        text.contains(&fixture(FIXTURE_HEM_HOSTILE).sha256),
        "{text}"
    );

    let out = sedna(home.path(), &["plugin", "inspect", "--json", &trigger]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["worlds"], serde_json::json!(["trigger-condition"]));
    assert!(json["size"].as_u64().unwrap() > 1000);
}

#[test]
fn validate_spells_out_a_mismatch() {
    let home = tempfile::tempdir().unwrap();
    let trigger = builtin_file(home.path(), "HardExampleRatio");
    let out = sedna(
        home.path(),
        &[
            "plugin",
            "validate",
            FIXTURE_HEM_HOSTILE,
            "--world",
            "hard-example-miner",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("implements `hard-example-miner`"));

    let out = sedna(
        home.path(),
        &[
            "plugin",
            "validate",
            &trigger,
            "--world",
            "hard-example-miner",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("does not implement world `hard-example-miner`"),
        "{err}"
    );
    assert!(
        err.contains("sedna:plugin/mining@0.3.0") && err.contains("trigger-condition"),
        "{err}"
    );

    assert_fails(
        home.path(),
        &[
            "plugin",
            "validate",
            FIXTURE_HEM_HOSTILE,
            "--world",
            "no-such-world",
        ],
        "the worlds are hard-example-miner, trigger-condition",
    );

    // The estimator world: the built-in ONNX estimator implements it, a HEM does not.
    let onnx = builtin_file(home.path(), "ONNX");
    let out = sedna(
        home.path(),
        &["plugin", "validate", &onnx, "--world", "estimator"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_fails(
        home.path(),
        &[
            "plugin",
            "validate",
            FIXTURE_HEM_HOSTILE,
            "--world",
            "estimator",
        ],
        "it is a `hard-example-miner` component",
    );

    let junk = home.path().join("junk.wasm");
    std::fs::write(&junk, "not a component").unwrap();
    assert_fails(
        home.path(),
        &[
            "plugin",
            "validate",
            junk.to_str().unwrap(),
            "--world",
            "hard-example-miner",
        ],
        "not a usable WebAssembly component",
    );

    assert_fails(
        home.path(),
        &[
            "plugin",
            "validate",
            "/no/such.wasm",
            "--world",
            "hard-example-miner",
        ],
        "cannot read plugin file /no/such.wasm",
    );
}

#[test]
fn add_list_and_remove_stored_plugins() {
    let home = tempfile::tempdir().unwrap();
    let trigger = builtin_file(home.path(), "HardExampleRatio");
    let out = sedna(
        home.path(),
        &[
            "plugin",
            "add",
            FIXTURE_HEM_HOSTILE,
            "--name",
            "hostile",
            "--version",
            "1.0",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("added hostile@1.0 (hard-example-miner"),
        "{}",
        stdout(&out)
    );

    let out = sedna(home.path(), &["plugin", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"IBT") && names.contains(&"hostile"),
        "{names:?}"
    );

    // The wrong world, a bad name, a built-in's name: refused, nothing stored.
    let out = sedna(
        home.path(),
        &[
            "plugin",
            "add",
            &trigger,
            "--name",
            "t",
            "--world",
            "hard-example-miner",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_fails(
        home.path(),
        &["plugin", "add", FIXTURE_HEM_HOSTILE, "--name", "../evil"],
        "not valid",
    );
    assert_fails(
        home.path(),
        &["plugin", "add", FIXTURE_HEM_HOSTILE, "--name", "IBT"],
        "built-in",
    );

    let out = sedna(home.path(), &["plugin", "rm", "hostile@1.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_fails(
        home.path(),
        &["plugin", "rm", "hostile@1.0"],
        "no stored plugin `hostile@1.0`",
    );
    let text = stdout(&sedna(home.path(), &["plugin", "list"]));
    assert!(text.contains("IBT") && !text.contains("hostile"), "{text}");
}

#[test]
fn plugin_test_prints_one_decision_per_line_and_reports_bad_lines() {
    let home = tempfile::tempdir().unwrap();
    let input = home.path().join("predictions.jsonl");
    std::fs::write(
        &input,
        "[[0,0,10,10,0.95,1],[5,5,9,9,0.2,2]]\n\n[[0,0,10,10,0.95,1]]\n[[1,2,3]]\n{\"class_scores\": [0.5, 0.5]}\n",
    )
    .unwrap();
    let input = input.to_str().unwrap();

    let out = sedna(home.path(), &["plugin", "test", "IBT", "--input", input]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a bad line fails the run at the end"
    );
    assert_eq!(stdout(&out), "1: hard\n3: not hard\n5: not hard\n");
    let err = stderr(&out);
    assert!(err.contains("predictions.jsonl:4: box 0 is not"), "{err}");
    assert!(err.contains("3 decisions, 1 bad lines"), "{err}");

    // Parameters change the decisions; --json prints objects.
    let out = sedna(
        home.path(),
        &[
            "plugin",
            "test",
            "IBT",
            "--input",
            input,
            "--param",
            "threshold_img=0.1",
            "--json",
        ],
    );
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0], serde_json::json!({"line": 1, "hard": false}));
    assert_eq!(lines.len(), 3);

    assert_fails(
        home.path(),
        &[
            "plugin",
            "test",
            "IBT",
            "--input",
            input,
            "--param",
            "threshold_img",
        ],
        "KEY=VALUE",
    );
    assert_fails(
        home.path(),
        &[
            "plugin",
            "test",
            "IBT",
            "--input",
            input,
            "--param",
            "threshold_img=9",
        ],
        "threshold_img",
    );
    assert_fails(
        home.path(),
        &["plugin", "test", "NoSuchPlugin", "--input", input],
        "no plugin named `NoSuchPlugin`",
    );
}

#[test]
fn predict_prints_one_prediction_per_image_that_plugin_test_reads() {
    let home = tempfile::tempdir().unwrap();
    let model = home.path().join("colours.onnx");
    models::classifier().save(&model).unwrap();
    let images = models::colour_samples(home.path(), 0, 2);
    let broken = home.path().join("broken.jpg");
    std::fs::write(&broken, b"not a jpeg").unwrap();
    let paths: Vec<String> = images
        .iter()
        .map(|s| s.image.display().to_string())
        .chain([broken.display().to_string()])
        .collect();
    let mut args = vec!["predict", model.to_str().unwrap()];
    args.extend(paths.iter().map(String::as_str));
    let out = sedna(home.path(), &args);
    assert_eq!(out.status.code(), Some(1), "one image is broken");
    assert!(
        stderr(&out).contains("broken.jpg: cannot decode the image"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("2 predictions, 1 images skipped"),
        "{}",
        stderr(&out)
    );
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        let Prediction::ClassScores(scores) = sedna::plugin::json::parse_prediction(line).unwrap()
        else {
            panic!("class scores: {line}");
        };
        assert_eq!(scores.len(), 2);
    }

    // The output feeds a hard-example miner as it is.
    let predictions = home.path().join("predictions.jsonl");
    std::fs::write(&predictions, lines.join("\n")).unwrap();
    let out = sedna(
        home.path(),
        &[
            "plugin",
            "test",
            "CrossEntropy",
            "--input",
            predictions.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 2);

    assert_fails(
        home.path(),
        &[
            "predict",
            model.to_str().unwrap(),
            &paths[0],
            "--param",
            "class_names=only-one",
        ],
        "holds 2 values for 1 classes",
    );
}

#[test]
fn train_and_evaluate_run_the_estimator_on_an_index() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    let model = dir.join("base.onnx");
    crate::support::models::detector(crate::support::models::CONVENTIONS)
        .save(&model)
        .unwrap();
    let lines: Vec<String> = crate::support::models::dataset(dir, 0, 16)
        .iter()
        .map(|s| {
            let sedna::media::Label::Boxes(boxes) = &s.label else {
                unreachable!()
            };
            let boxes: Vec<String> = boxes
                .iter()
                .map(|(b, c)| format!("{},{},{},{},{c}", b[0], b[1], b[2], b[3]))
                .collect();
            format!("{} {}", s.image.display(), boxes.join(" "))
        })
        .collect();
    let index = dir.join("index.txt");
    std::fs::write(&index, lines.join("\n") + "\nnot-an-image-line\n").unwrap();
    let (model, index, out) = (
        model.to_str().unwrap(),
        index.to_str().unwrap(),
        dir.join("new/tuned.onnx"),
    );
    let out_arg = out.to_str().unwrap();

    let before = sedna(dir, &["evaluate", model, "--data", index]);
    assert!(before.status.success(), "{}", stderr(&before));
    let before: serde_json::Value = serde_json::from_str(&stdout(&before)).unwrap();
    let trained = sedna(
        dir,
        &[
            "train",
            model,
            "--data",
            index,
            "--valid",
            index,
            "--out",
            out_arg,
            "--param",
            "epochs=30",
            "--param",
            "learning_rate=0.1",
            "--param",
            "batch_size=8",
        ],
    );
    assert!(trained.status.success(), "{}", stderr(&trained));
    let report: serde_json::Value = serde_json::from_str(&stdout(&trained)).unwrap();
    assert_eq!(report["loss"].as_array().unwrap().len(), 30, "{report}");
    assert!(
        stderr(&trained).contains("not-an-image-line"),
        "a bad line is named: {}",
        stderr(&trained)
    );
    let after = sedna(dir, &["evaluate", out_arg, "--data", index]);
    let after: serde_json::Value = serde_json::from_str(&stdout(&after)).unwrap();
    let map = |v: &serde_json::Value| v["map"][0].as_f64().unwrap();
    assert!(
        map(&after) > map(&before) + 0.2,
        "mAP {} -> {}",
        map(&before),
        map(&after)
    );
    assert_eq!(report["valid_map"][0].as_f64(), Some(map(&after)));

    assert_fails(
        dir,
        &["train", model, "--data", "/nope.txt", "--out", out_arg],
        "--data: cannot read /nope.txt",
    );
    assert_fails(
        dir,
        &[
            "train",
            model,
            "--data",
            index,
            "--out",
            out_arg,
            "--param",
            "optimizer=adam",
        ],
        "`sgd` or `adamw`",
    );
}

#[test]
fn doctor_installs_onnx_runtime_into_the_data_directory_where_later_runs_find_it() {
    let home = tempfile::tempdir().unwrap();
    let doctor = |args: &[&str], path: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sedna"));
        command
            .args(["doctor"])
            .args(args)
            .env("SEDNA_HOME", home.path())
            .env_remove("ORT_DYLIB_PATH")
            .env_remove("SEDNA_ONNX_BACKEND");
        if let Some(path) = path {
            command.env("PATH", path);
        }
        command.output().unwrap()
    };
    // Without Python, the error says what to install.
    let out = doctor(&["--install-onnxruntime"], Some(""));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("install Python 3 and pip"),
        "{}",
        stderr(&out)
    );

    let out = doctor(&["--install-onnxruntime"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let library = home.path().join("onnxruntime/onnxruntime/capi");
    assert!(
        stdout(&out).contains(&format!("installed: {}", library.display())),
        "{}",
        stdout(&out)
    );
    // A later run finds it there, before any pip-installed one.
    let out = doctor(&[], None);
    let text = stdout(&out);
    assert!(
        text.contains("ONNX backend: onnxruntime 1.31.1")
            && text.contains(&library.display().to_string()),
        "{text}"
    );
}

#[test]
fn a_command_whose_reader_goes_away_ends_quietly() {
    // `sedna crds | head -0`: the pipe is closed before the command writes.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sedna"))
        .arg("crds")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = stderr(&out);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    use std::os::unix::process::ExitStatusExt as _;
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}",
        out.status
    );
}

#[test]
fn compile_bounds_out_of_range_are_refused_with_the_flag_named() {
    let home = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (
            ["--compile-timeout", "0"],
            "--compile-timeout 0.0: give seconds above 0",
        ),
        (
            ["--compile-timeout", "1e300"],
            "--compile-timeout 1e300: give seconds above 0 and below 2^64",
        ),
        (
            ["--compile-memory", "10"],
            "--compile-memory 10: give MiB from 64",
        ),
    ] {
        let mut all = args.to_vec();
        all.push("crds");
        assert_fails(home.path(), &all, expected);
    }
    // Within range, a command whose plugin compiles in the child runs.
    let ibt = builtin_file(home.path(), "IBT");
    let ok = sedna(
        home.path(),
        &[
            "--compile-timeout",
            "30",
            "--compile-memory",
            "1024",
            "plugin",
            "inspect",
            &ibt,
        ],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
}
