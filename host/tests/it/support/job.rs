//! A real job for the tests of `sedna run`, `sedna status` and the HTTP service: a
//! colour classifier, a data index that grows between checks, and the job's YAML.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::models;

pub struct Job {
    pub dir: tempfile::TempDir,
    pub index: PathBuf,
    pub yaml: PathBuf,
    pub next_seed: u64,
}

impl Job {
    pub fn new(train_env: &[(&str, &str)], deploy_metric: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::create_dir_all(root.join("models")).unwrap();
        models::classifier()
            .save(&root.join("models/base.onnx"))
            .unwrap();
        let index = root.join("data/index.txt");
        std::fs::write(&index, "# colour samples\n").unwrap();
        let env: String = train_env
            .iter()
            .map(|(k, v)| format!("\n              - name: {k}\n                value: \"{v}\""))
            .collect();
        let yaml = format!(
            r#"apiVersion: sedna.io/v1alpha1
kind: Dataset
metadata: {{name: colours}}
spec: {{url: "{root}/data/index.txt", format: txt, nodeName: edge}}
---
apiVersion: sedna.io/v1alpha1
kind: Model
metadata: {{name: base}}
spec: {{url: "{root}/models/base.onnx", format: onnx}}
---
apiVersion: sedna.io/v1alpha1
kind: Model
metadata: {{name: deployed}}
spec: {{url: "{root}/deploy/model.onnx", format: onnx}}
---
apiVersion: sedna.io/v1alpha1
kind: IncrementalLearningJob
metadata: {{name: colour-job}}
spec:
  initialModel: {{name: base}}
  dataset: {{name: colours, trainProb: 0.75}}
  trainSpec:
    template:
      spec:
        containers:
          - name: train
            image: ignored
            env:{env}
    trigger:
      checkPeriodSeconds: 1
      condition: {{operator: ">", threshold: 20, metric: num_of_samples}}
  evalSpec:
    template: {{spec: {{containers: [{{name: eval, image: ignored}}]}}}}
  deploySpec:
    model: {{name: deployed, hotUpdateEnabled: true}}
    trigger:
      condition: {{operator: ">", threshold: 0.2, metric: "{deploy_metric}"}}
    hardExampleMining: {{name: IBT}}
    template: {{spec: {{containers: [{{name: infer, image: ignored}}]}}}}
  outputDir: "{root}/out"
"#,
            root = root.display()
        );
        let path = root.join("job.yaml");
        std::fs::write(&path, yaml).unwrap();
        Job {
            dir,
            index,
            yaml: path,
            next_seed: 0,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces `from` with `to` in the job's YAML.
    pub fn edit(&self, from: &str, to: &str) {
        let yaml = std::fs::read_to_string(&self.yaml).unwrap();
        assert!(yaml.contains(from), "{from:?} is not in the job's YAML");
        std::fs::write(&self.yaml, yaml.replace(from, to)).unwrap();
    }

    /// Gives the deploy template these `env` entries, which start the inference worker.
    pub fn inference_env(&self, env: &[(&str, &str)]) {
        let entries: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("{{name: {k}, value: \"{v}\"}}"))
            .collect();
        self.edit(
            "template: {spec: {containers: [{name: infer, image: ignored}]}}",
            &format!(
                "template: {{spec: {{containers: [{{name: infer, image: ignored, env: [{}]}}]}}}}",
                entries.join(", ")
            ),
        );
    }

    /// Appends `count` labelled lines (and their images) to the data index.
    pub fn append(&mut self, count: u64, extra: &str) {
        let samples = models::colour_samples(&self.root().join("data"), self.next_seed, count);
        self.next_seed += count;
        let mut text = std::fs::read_to_string(&self.index).unwrap();
        for s in samples.iter() {
            let sedna::media::Label::Class(class) = &s.label else {
                unreachable!()
            };
            text.push_str(&format!(
                "{} {class}\n",
                s.image.file_name().unwrap().to_string_lossy()
            ));
        }
        text.push_str(extra);
        std::fs::write(&self.index, text).unwrap();
    }

    /// Records `frames` frames, alternately red and blue, as a camera would: an MP4 file
    /// at 25 frames a second.
    pub fn record_video(&self, frames: u64) -> PathBuf {
        let video = self.root().join("camera.mp4");
        let mut writer = sedna::media::VideoWriter::create(&video, 32, 32, 25).unwrap();
        for sample in models::colour_samples(&self.root().join("data"), 500, frames).iter() {
            let frame = sedna::media::Frame::open(&sample.image).unwrap();
            let frame = image::imageops::resize(frame.pixels(), 32, 32, image::imageops::Nearest);
            writer.write(&frame).unwrap();
        }
        writer.finish().unwrap();
        video
    }

    pub fn sedna(&self, args: &[&str]) -> Output {
        self.sedna_with(args, &[])
    }

    /// `sedna` with these environment variables besides the job's.
    pub fn sedna_with(&self, args: &[&str], env: &[(&str, String)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sedna"))
            .args(args)
            .env("SEDNA_HOME", self.root().join("home"))
            .env("SEDNA_LOG", "sedna=info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    }

    pub fn run_once(&self) -> Output {
        self.sedna(&["run", self.yaml.to_str().unwrap(), "--once"])
    }

    /// `sedna status`, or nothing while the job has not started.
    pub fn status_if_started(&self) -> String {
        text(&self.sedna(&["status", self.yaml.to_str().unwrap()]).stdout)
    }

    pub fn status(&self) -> String {
        let out = self.sedna(&["status", self.yaml.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    }
}

/// Where [`Job::move_to_buckets`] puts the job's outputDir.
pub const BUCKET_OUTPUT: &str = "s3://runs/colours";

impl Job {
    /// Moves the job into `server`'s buckets: its data index and images to
    /// `s3://data/colours/`, its models to `s3://models/` (the deploy model
    /// `s3://models/deployed.onnx`), its outputDir to [`BUCKET_OUTPUT`] when `output`.
    /// With `secret_port`, the resources name the Secret `minio` (added to the files)
    /// whose endpoint is that port; else the credentials come from the environment.
    pub fn move_to_buckets(
        &self,
        server: &super::s3::S3Server,
        secret_port: Option<u16>,
        output: bool,
    ) {
        use sedna::storage::{Location, Storage};
        let storage = Storage::new(Some(server.credentials(None)), sedna::storage::RETRY);
        for (dir, prefix) in [("data", "s3://data/colours"), ("models", "s3://models")] {
            for entry in std::fs::read_dir(self.root().join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy();
                let to = Location::parse(&format!("{prefix}/{name}")).unwrap();
                storage.put(&to, std::fs::read(&path).unwrap()).unwrap();
            }
        }
        let credential = match secret_port {
            Some(_) => ", credentialName: \"minio\"",
            None => "",
        };
        let local = |path: &str| format!("{}\"", self.root().join(path).display());
        for (path, url) in [
            ("data/index.txt", "s3://data/colours/index.txt"),
            ("models/base.onnx", "s3://models/base.onnx"),
            ("deploy/model.onnx", "s3://models/deployed.onnx"),
        ] {
            self.edit(&local(path), &format!("{url}\"{credential}"));
        }
        if output {
            self.edit(&local("out"), &format!("{BUCKET_OUTPUT}\""));
        }
        if let Some(port) = secret_port {
            let keys: Vec<String> = server
                .vars_at(port, None)
                .iter()
                .map(|(k, v)| format!("  {k}: \"{v}\""))
                .collect();
            let mut yaml = std::fs::read_to_string(&self.yaml).unwrap();
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: minio}}\nstringData:\n{}\n",
                keys.join("\n")
            ));
            std::fs::write(&self.yaml, yaml).unwrap();
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

pub const TRAIN_ENV: &[(&str, &str)] = &[
    ("epochs", "20"),
    ("learning_rate", "0.5"),
    ("batch_size", "4"),
];
