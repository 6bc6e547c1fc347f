//! Sedna's resources load as the quick start writes them, and every bad input is an error
//! that names the file, the document, the field and the fix.

use std::path::{Path, PathBuf};

use sedna::spec::{self, SpecError};

const QUICK_START: &str = include_str!("../data/quick-start.yaml");

fn quick_start_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/quick-start.yaml")
}

/// The quick start with one edit applied, parsed as `job.yaml`.
fn parse_edited(from: &str, to: &str) -> Result<spec::Resources, SpecError> {
    assert!(
        QUICK_START.contains(from),
        "the quick start has no {from:?}"
    );
    spec::parse(Path::new("job.yaml"), &QUICK_START.replacen(from, to, 1))
}

fn assert_error(from: &str, to: &str, field: &str, says: &str) {
    let err = parse_edited(from, to).expect_err(&format!("{to:?} was accepted"));
    assert_eq!(err.field.as_deref(), Some(field), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "job.yaml: document 4 (IncrementalLearningJob helmet-detection-demo), field `"
        ),
        "{text}"
    );
    assert!(text.contains(says), "{text}");
}

#[test]
fn the_quick_start_loads_as_written() {
    let resources = spec::load(&[quick_start_path()]).unwrap();
    assert_eq!(resources.datasets.len(), 1);
    assert_eq!(resources.models.len(), 2);
    let job = &resources.jobs[0];
    assert_eq!(job.metadata.name.as_deref(), Some("helmet-detection-demo"));
    let spec = &job.spec;
    assert_eq!(spec.dataset.train_prob, 0.8);
    assert_eq!(spec.train_spec.trigger.check_period_seconds, 60);
    let timer = spec.train_spec.trigger.timer.unwrap();
    assert_eq!(
        (timer.start.to_string(), timer.end.to_string()),
        ("02:00".into(), "20:00".into())
    );
    assert_eq!(
        spec.train_spec.trigger.condition.metric.name,
        "num_of_samples"
    );
    assert_eq!(spec.deploy_spec.hard_example_mining.name, "IBT");
    assert_eq!(spec.deploy_spec.hard_example_mining.parameters.len(), 2);
    assert!(spec.deploy_spec.model.hot_update_enabled);
    let train = sedna::spec::parameters(&spec.train_spec.template);
    let names: Vec<&str> = train.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        names,
        [
            "batch_size",
            "epochs",
            "input_shape",
            "class_names",
            "nms_threshold",
            "obj_threshold"
        ]
    );
    assert_eq!(train[3].value, "person,helmet,helmet-on,helmet-off");
    let infer = sedna::spec::parameters(&spec.deploy_spec.template);
    assert!(
        infer
            .iter()
            .any(|p| p.key == "video_url" && p.value == "file://video/video.mp4")
    );
    assert_eq!(spec.output_dir, "/output");
}

#[test]
fn bad_fields_name_their_path_and_the_fix() {
    assert_error(
        "operator: \">\"\n        threshold: 500",
        "operator: \"=>\"\n        threshold: 500",
        "spec.trainSpec.trigger.condition.operator",
        "unknown operator \"=>\"",
    );
    assert_error(
        "start: 02:00",
        "start: 2am",
        "spec.trainSpec.trigger.timer.start",
        "HH:MM",
    );
    assert_error(
        "threshold: 500",
        "threshold: many",
        "spec.trainSpec.trigger.condition.threshold",
        "invalid type",
    );
    assert_error(
        "metric: num_of_samples",
        "metric: num_of_samples[x]",
        "spec.trainSpec.trigger.condition.metric",
        "name[index]",
    );
    assert_error(
        "trainProb: 0.8",
        "trainProb: 1.5",
        "spec.dataset.trainProb",
        "(0, 1]",
    );
    assert_error(
        "hotUpdateEnabled: true",
        "hotUpdateEnabled: maybe",
        "spec.deploySpec.model.hotUpdateEnabled",
        "invalid type",
    );
    assert_error(
        "  outputDir: \"/output\"",
        "  outputdir: \"/output\"",
        "spec.outputdir",
        "unknown field `outputdir`, expected one of",
    );
    assert_error(
        "  initialModel:\n    name: \"initial-model\"",
        "  initialModel:\n    name: \"no-such-model\"",
        "spec.initialModel.name",
        "no Model named \"no-such-model\"",
    );
}

#[test]
fn a_missing_field_names_where_it_belongs() {
    let err = parse_edited("  outputDir: \"/output\"\n", "").unwrap_err();
    assert_eq!(err.field.as_deref(), Some("spec"), "{err}");
    assert!(err.message.contains("missing field `outputDir`"), "{err}");
}

#[test]
fn a_resource_without_a_name_is_refused() {
    let err = parse_edited("  name: helmet-detection-demo\n", "  labels: {}\n").unwrap_err();
    assert_eq!(err.field.as_deref(), Some("metadata.name"), "{err}");
    assert!(
        err.to_string().contains("give the resource a name"),
        "{err}"
    );
}

#[test]
fn the_quick_start_round_trips_through_the_custom_resource_types() {
    let resources = spec::parse(Path::new("job.yaml"), QUICK_START).unwrap();
    let job = &resources.jobs[0];
    let yaml = serde_yaml_ng::to_string(job).unwrap();
    assert!(
        yaml.starts_with("apiVersion: sedna.io/v1alpha1\nkind: IncrementalLearningJob\n"),
        "{yaml}"
    );
    let again: spec::IncrementalLearningJob = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(&again, job);
}

#[test]
fn documents_that_are_not_sedna_resources() {
    let err = parse_edited("kind: Dataset", "kind: Datasets").unwrap_err();
    assert_eq!((err.document, err.field.as_deref()), (1, Some("kind")));
    assert!(
        err.message
            .contains("Dataset, Model, IncrementalLearningJob or Secret (v1)"),
        "{err}"
    );
    let err = parse_edited("apiVersion: sedna.io/v1alpha1", "apiVersion: sedna.io/v1").unwrap_err();
    assert!(
        err.to_string()
            .contains("write `apiVersion: sedna.io/v1alpha1`"),
        "{err}"
    );
    let err = parse_edited("  format: \"txt\"", "  format: \"xml\"").unwrap_err();
    assert_eq!(err.field.as_deref(), Some("spec.format"), "{err}");
    assert!(
        err.message.contains("txt") && err.message.contains("csv"),
        "{err}"
    );
    let err = spec::parse(Path::new("x.yaml"), "kind: [unclosed").unwrap_err();
    assert!(err.message.contains("not valid YAML"), "{err}");
    let err = spec::load(&[PathBuf::from("/no/such/job.yaml")]).unwrap_err();
    assert!(
        err.to_string().contains("/no/such/job.yaml") && err.message.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn a_secret_beside_the_job_gives_its_keys_from_data_or_string_data() {
    let text = format!(
        "{QUICK_START}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: minio}}\ndata:\n  ACCESS_KEY_ID: bWluaW8=\n  S3_USE_HTTPS: MQ==\nstringData:\n  S3_USE_HTTPS: \"0\"\n"
    );
    let resources = spec::parse(Path::new("job.yaml"), &text).unwrap();
    let keys = resources.secret("minio").unwrap();
    assert_eq!(keys["ACCESS_KEY_ID"], "minio", "data is base64");
    assert_eq!(keys["S3_USE_HTTPS"], "0", "stringData wins");
    assert!(resources.secret("other").is_none());

    let bad = format!(
        "{QUICK_START}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata: 7\n"
    );
    let error = spec::parse(Path::new("job.yaml"), &bad)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("Secret s") && error.contains("data"),
        "{error}"
    );
}

#[test]
fn a_file_nested_too_deep_or_too_large_is_refused_before_it_is_parsed() {
    let file = std::path::Path::new("deep.yaml");
    let deep = format!(
        "kind: Dataset\nx: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let started = std::time::Instant::now();
    let err = spec::parse(file, &deep).unwrap_err().to_string();
    assert!(
        err.contains("deep.yaml") && err.contains("line 2: nested deeper than 64"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let large = format!("# {}\n", "x".repeat(5 << 20));
    let err = spec::parse(file, &large).unwrap_err().to_string();
    assert!(err.contains("resource files are at most"), "{err}");
    // Brackets in quotes, comments and words do not count.
    let fine = format!(
        "# {}\nkind: Dataset\nmetadata: {{name: \"it's [[[\"}}\nnote: it's {}\n",
        "[".repeat(100),
        "'[".repeat(3)
    );
    let err = spec::parse(file, &fine).unwrap_err().to_string();
    assert!(!err.contains("nested deeper"), "{err}");
}
