//! Helpers shared by the host's integration tests.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use sedna::plugin::{
    Builtin, Detection, Param, Prediction, Runtime, RuntimeConfig, Sandbox, Source,
};

include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));

/// The test binary's one runtime, as a process has one.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(RuntimeConfig::default()).unwrap())
}

pub fn fixture(path: &str) -> Source {
    Source::from_file(path.as_ref()).unwrap()
}

/// A built-in plugin's source, by its name.
pub fn builtin(name: &str) -> Source {
    Builtin::find(name).unwrap().source()
}

/// A trigger-condition component: the wrong world for a HEM slot.
pub fn trigger_component() -> Source {
    builtin("HardExampleRatio")
}

/// Writes a built-in plugin to `dir` as a `.wasm` file, as a user would have it.
pub fn builtin_file(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, Builtin::find(name).unwrap().wasm).unwrap();
    path.display().to_string()
}

pub fn params(pairs: &[(&str, &str)]) -> Vec<Param> {
    pairs
        .iter()
        .map(|(key, value)| Param {
            key: key.to_string(),
            value: value.to_string(),
        })
        .collect()
}

/// A sandbox with a short deadline, so that timeouts are quick to test.
pub fn sandbox(deadline_ms: u64) -> Sandbox {
    Sandbox {
        deadline: Duration::from_millis(deadline_ms),
        ..Sandbox::default()
    }
}

/// A frame with one box per score.
pub fn frame(scores: &[f32]) -> Prediction {
    Prediction::Detections(
        scores
            .iter()
            .enumerate()
            .map(|(i, &score)| Detection {
                x_min: i as f32,
                y_min: 0.0,
                x_max: i as f32 + 10.0,
                y_max: 10.0,
                score,
                label: 1,
            })
            .collect(),
    )
}
