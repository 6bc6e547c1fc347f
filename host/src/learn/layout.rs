//! Where a job keeps its files under `outputDir`: one home for every path, so that the
//! job, `sedna status`, the agent and the workers agree on them.
//!
//! ```text
//! <outputDir>/state.db                       the job's state (rounds, samples, conditions)
//! <outputDir>/data/train/<round>/train.txt   the round's training samples
//! <outputDir>/data/train/<round>/eval.txt    its evaluation set (its own and the last rounds')
//! <outputDir>/train/<round>/model.onnx       the trained model, and report.json
//! <outputDir>/eval/<round>/metrics.json      both models' metrics
//! <outputDir>/inference/results.jsonl        every frame's outcome
//! <outputDir>/hard_examples/                 hard examples, unless HE_SAVED_URL names a place
//! <outputDir>/objects/<bucket>/<key>          images of an index in object storage
//! <outputDir>/cache/                          models fetched from object storage (bounded)
//! ```

use std::path::{Path, PathBuf};

use crate::plugin::{Param, setting};

/// The deploy template's entry naming where hard examples go.
pub const HARD_EXAMPLES_ENV: &str = "HE_SAVED_URL";

/// A job's output directory.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputLayout {
    output: PathBuf,
}

impl OutputLayout {
    pub fn new(output_dir: impl Into<PathBuf>) -> Self {
        OutputLayout {
            output: output_dir.into(),
        }
    }

    pub fn output(&self) -> &Path {
        &self.output
    }

    pub fn state_db(&self) -> PathBuf {
        self.output.join("state.db")
    }

    /// Where the inference worker logs every frame's outcome.
    pub fn results_dir(&self) -> PathBuf {
        self.output.join("inference")
    }

    /// The hard examples' directory: the deploy template's `HE_SAVED_URL`, else
    /// `<outputDir>/hard_examples`.
    pub fn hard_examples(&self, deploy_params: &[Param]) -> PathBuf {
        setting(deploy_params, HARD_EXAMPLES_ENV)
            .map_or_else(|| self.output.join("hard_examples"), PathBuf::from)
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
    }
}
