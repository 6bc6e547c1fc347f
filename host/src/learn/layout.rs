//! Where a job keeps its files under `outputDir`: one home for every path, so that the
//! job, `sedna status`, the agent and the workers agree on them.
//!
//! ```text
//! <outputDir>/state.db                       the job's state (rounds, samples, conditions)
//! <outputDir>/job.lock                       held by the process running the job (its PID)
//! <outputDir>/data/train/<round>/train.txt   the round's training samples
//! <outputDir>/data/train/<round>/eval.txt    its evaluation set (its own and the last rounds')
//! <outputDir>/train/<round>/model.onnx       the trained model, and report.json
//! <outputDir>/eval/<round>/metrics.json      both models' metrics
//! <outputDir>/inference/results.jsonl        every frame's outcome
//! <outputDir>/hard_examples/                 hard examples, unless HE_SAVED_URL names a place
//! <outputDir>/objects/s3/<bucket>/<key>       images of an index in object storage
//! <outputDir>/cache/                          models fetched from object storage (bounded)
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::plugin::{Param, setting};
use crate::storage::Location;

/// The deploy template's entry naming where hard examples go.
pub const HARD_EXAMPLES_ENV: &str = "HE_SAVED_URL";

/// A job's output directory.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputLayout {
    output: PathBuf,
    /// An `outputDir` in object storage: the round's files (indexes, models, reports) go
    /// there too, under the same names, so that stages may run on other nodes. The state
    /// and the rest stay in `output`, on this node.
    remote: Option<Location>,
}

impl OutputLayout {
    pub fn new(output_dir: impl Into<PathBuf>) -> Self {
        OutputLayout {
            output: output_dir.into(),
            remote: None,
        }
    }

    /// The layout of a job's `outputDir`: a local path, or `s3://bucket/prefix`, whose
    /// node-local part is `<home>/jobs/<hash of the URL>` (`home`: the data directory).
    pub fn of(output_dir: &str, home: &Path) -> anyhow::Result<Self> {
        Ok(match Location::parse(output_dir)? {
            Location::Local(path) => Self::new(path),
            Location::Http(_) => {
                anyhow::bail!("{output_dir} is read only: give s3://BUCKET/PREFIX or a local path")
            }
            remote => {
                let hash = xxhash_rust::xxh3::xxh3_64(remote.to_string().as_bytes());
                OutputLayout {
                    output: home.join(format!("jobs/{hash:016x}")),
                    remote: Some(remote.as_folder()),
                }
            }
        })
    }

    pub fn output(&self) -> &Path {
        &self.output
    }

    /// The object-storage copy of a file under `output` (`None` for a local `outputDir`
    /// or a path outside it).
    pub fn remote(&self, local: &Path) -> Option<Location> {
        let relative = local.strip_prefix(&self.output).ok()?.to_str()?;
        self.remote.as_ref()?.join(relative).ok()
    }

    pub fn state_db(&self) -> PathBuf {
        self.output.join("state.db")
    }

    /// The plugins bound to the job's slots while it ran (see [`super::binds`]).
    pub fn binds(&self) -> PathBuf {
        self.output.join("binds.json")
    }

    /// Space set aside so that a full disk still leaves room to record why a round
    /// failed (see [`crate::files::SpaceReserve`]).
    pub fn space_reserve(&self) -> PathBuf {
        self.output.join(".space-reserve")
    }

    /// The lock a process running the job holds, so that no second one runs it too.
    pub fn lock(&self) -> PathBuf {
        self.output.join("job.lock")
    }

    /// Where the inference worker logs every frame's outcome.
    pub fn results_dir(&self) -> PathBuf {
        self.output.join("inference")
    }

    /// The hard examples' directory: the deploy template's `HE_SAVED_URL` when it is a
    /// local path, else `<outputDir>/hard_examples` (where they wait to be uploaded when
    /// it names object storage).
    pub fn hard_examples(&self, deploy_params: &[Param]) -> PathBuf {
        match setting(deploy_params, HARD_EXAMPLES_ENV).map(Location::parse) {
            Some(Ok(Location::Local(path))) => path,
            _ => self.output.join("hard_examples"),
        }
    }

    /// Where hard examples are uploaded: `HE_SAVED_URL` when it names object storage.
    pub fn hard_examples_upload(
        &self,
        deploy_params: &[Param],
    ) -> anyhow::Result<Option<Location>> {
        let Some(url) = setting(deploy_params, HARD_EXAMPLES_ENV) else {
            return Ok(None);
        };
        match Location::parse(url)
            .with_context(|| format!("deploy template env `{HARD_EXAMPLES_ENV}`"))?
        {
            Location::Local(_) => Ok(None),
            Location::Http(_) => anyhow::bail!(
                "deploy template env `{HARD_EXAMPLES_ENV}` is {url}: http(s) is read only; give s3://BUCKET/PREFIX or a local path"
            ),
            remote => Ok(Some(remote.as_folder())),
        }
    }

    /// Where the images of an index in object storage are downloaded, once each.
    pub fn objects(&self) -> PathBuf {
        self.output.join("objects")
    }

    /// Where models fetched from object storage are cached.
    pub fn cache(&self) -> PathBuf {
        self.output.join("cache")
    }

    /// Round `round`'s samples: its training index and its evaluation set.
    pub fn round_indexes(&self, round: u64) -> (PathBuf, PathBuf) {
        let data = self.output.join(format!("data/train/{round}"));
        (data.join("train.txt"), data.join("eval.txt"))
    }

    /// Round `round`'s training directory, relative to `outputDir`.
    pub fn train_dir(round: u64) -> String {
        format!("train/{round}")
    }

    /// The model round `round` trains.
    pub fn model(&self, round: u64) -> PathBuf {
        self.output
            .join(Self::train_dir(round))
            .join(Self::MODEL_FILE)
    }

    /// What training reported (loss per epoch).
    pub fn train_report(&self, round: u64) -> PathBuf {
        self.output.join(Self::train_dir(round)).join("report.json")
    }

    /// Both models' metrics on the round's evaluation set.
    pub fn eval_report(&self, round: u64) -> PathBuf {
        self.output.join(format!("eval/{round}/metrics.json"))
    }

    /// The file name of a trained model.
    pub const MODEL_FILE: &'static str = "model.onnx";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_under_the_output_dir_and_he_saved_url_wins() {
        let layout = OutputLayout::new("/out");
        assert_eq!(layout.state_db(), Path::new("/out/state.db"));
        assert_eq!(
            layout.round_indexes(3),
            (
                PathBuf::from("/out/data/train/3/train.txt"),
                PathBuf::from("/out/data/train/3/eval.txt")
            )
        );
        assert_eq!(layout.model(3), Path::new("/out/train/3/model.onnx"));
        assert_eq!(layout.hard_examples(&[]), Path::new("/out/hard_examples"));
        let given = [Param {
            key: HARD_EXAMPLES_ENV.into(),
            value: "/he".into(),
        }];
        assert_eq!(layout.hard_examples(&given), Path::new("/he"));
        assert_eq!(layout.remote(&layout.model(3)), None);
        let bucket = OutputLayout::of("s3://runs/helmet", Path::new("/home")).unwrap();
        assert_eq!(
            bucket.remote(&bucket.model(3)).unwrap().to_string(),
            "s3://runs/helmet/train/3/model.onnx"
        );
        assert!(bucket.state_db().starts_with("/home/jobs/"));
        let error = OutputLayout::of("https://host/out", Path::new("/home"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("read only"), "{error}");
        assert_eq!(layout.hard_examples_upload(&given).unwrap(), None);
        let bucket = [Param {
            key: HARD_EXAMPLES_ENV.into(),
            value: "s3://labels/helmet".into(),
        }];
        assert_eq!(
            layout.hard_examples(&bucket),
            Path::new("/out/hard_examples")
        );
        let to = layout.hard_examples_upload(&bucket).unwrap().unwrap();
        assert_eq!(
            to.join("a.png").unwrap().to_string(),
            "s3://labels/helmet/a.png"
        );
        let web = [Param {
            key: HARD_EXAMPLES_ENV.into(),
            value: "https://host/he".into(),
        }];
        let error = layout.hard_examples_upload(&web).unwrap_err().to_string();
        assert!(error.contains("read only"), "{error}");
    }
}
