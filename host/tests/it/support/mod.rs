//! Helpers shared by the host's integration tests (every module of `it`).

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use sedna::plugin::{
    Builtin, Cause, Detections, Hem, Metric, Param, Plugin, Prediction, Runtime, RuntimeConfig,
    Sandbox, Source, TriggerCondition,
};

#[cfg(feature = "cluster")]
pub mod documents;
pub mod job;
pub mod models;
/// moto's S3 server and a link to it that can be cut (`tests/s3`).
#[path = "../../s3/server.rs"]
pub mod s3;

include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));

/// Writes a secret (a token) readable by its owner only, as the host and the CLI demand.
#[cfg(feature = "server")]
pub fn write_private(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(path, private).unwrap();
}

/// The test binary's one runtime, as a process has one.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(RuntimeConfig::default()).unwrap())
}

/// A command that runs one test of this binary, `test` (its path without the crate, as
/// `cargo test` lists it: `run::a_job_held_in_deploy`), alone in a child process.
///
/// For tests that need a process of their own: to kill it at a point only the library
/// lets them reach (an observer such as `LocalJob::on_stage`, so that production code
/// needs no fault-injection switch), or to run with other environment variables. The
/// child test is `#[ignore]`d, so that a normal run skips it; one that would harm when
/// run by hand (`-- --ignored`) returns at once unless the environment its parent sets
/// is there, and reads that environment itself (test code, never the host's). With one
/// test thread, libtest writes `test <name> ... ` on the child's first line of output.
pub fn this_binary_running(test: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([
        "--exact",
        test,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    command
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

/// The built-in `HardExampleRatio` trigger condition with these parameters.
pub fn hard_example_ratio(window: &str, ratio: &str) -> Plugin<TriggerCondition> {
    Plugin::load(
        runtime(),
        &trigger_component(),
        params(&[("window", window), ("ratio", ratio)]),
        Sandbox::default(),
    )
    .unwrap()
}

pub fn metric(name: &str, values: &[f64]) -> Metric {
    Metric {
        name: name.into(),
        values: values.to_vec(),
    }
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
    Prediction::Detections(Detections::from_rows(
        scores
            .iter()
            .enumerate()
            .map(|(i, &score)| ([i as f32, 0.0, i as f32 + 10.0, 10.0], score, 1)),
    ))
}

/// Checks an IBT implementation against the shared vectors in `tests/vectors/`: every
/// decision (single and batch) and every refused parameter.
pub fn assert_ibt_vectors(runtime: &Runtime, source: &Source) {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../../../../tests/vectors/ibt.json")).unwrap();
    for case in vectors["cases"].as_array().unwrap() {
        let params: Vec<Param> = case["params"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(key, value)| Param {
                key: key.clone(),
                value: value.as_str().unwrap().to_string(),
            })
            .collect();
        let ibt = Plugin::<Hem>::load(runtime, source, params, Sandbox::default()).unwrap();
        let prediction =
            sedna::plugin::json::parse_prediction(&case["prediction"].to_string()).unwrap();
        let expected = case["hard"].as_bool().unwrap();
        let name = format!("{}: {}", source.name, case["name"]);
        assert_eq!(
            ibt.is_hard_example(&prediction).unwrap(),
            expected,
            "{name}"
        );
        let batch = ibt
            .is_hard_example_batch(&[prediction.clone(), prediction])
            .unwrap();
        assert_eq!(batch, vec![expected; 2], "{name} (batch)");
    }
    let bad: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(include_str!(
        "../../../../tests/vectors/ibt-bad-params.json"
    ))
    .unwrap();
    for params in bad {
        let (key, value) = params.iter().next().unwrap();
        let err = Plugin::<Hem>::load(
            runtime,
            source,
            params_of(key, value.as_str().unwrap()),
            Sandbox::default(),
        )
        .err()
        .unwrap_or_else(|| panic!("{}: {key}={value} accepted", source.name));
        assert_eq!(err.call, "init");
        assert!(
            matches!(&err.cause, Cause::Refused(m) if m.contains(key.as_str()) && m.contains("[0, 1]")),
            "{err}"
        );
    }
}

fn params_of(key: &str, value: &str) -> Vec<Param> {
    params(&[(key, value)])
}

/// A component holding one core module with `count` functions of about `bytes` bytes
/// each, every one pushing `bytes / 3` constants and then adding them up: all of them
/// live at once, which costs Cranelift's register allocator time and memory (a 1 MiB
/// function, about 2 s and 200 MiB).
pub fn component_with_functions(count: usize, bytes: usize) -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, Component, Function, FunctionSection, Instruction, Module, ModuleSection,
        TypeSection,
    };
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut functions = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut body = Function::new([]);
    let values = (bytes / 3).max(1);
    for i in 0..values {
        // Under 64: a constant of one byte.
        body.instruction(&Instruction::I32Const((i % 60) as i32));
    }
    for _ in 1..values {
        body.instruction(&Instruction::I32Add);
    }
    body.instruction(&Instruction::Drop);
    body.instruction(&Instruction::End);
    for _ in 0..count {
        functions.function(0);
        code.function(&body);
    }
    let mut module = Module::new();
    module.section(&types).section(&functions).section(&code);
    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    component.finish()
}

/// A runtime that compiles in a child, `sedna compile-component`, within these bounds.
pub fn child_compiling_runtime(timeout: std::time::Duration, memory: u64) -> Runtime {
    Runtime::new(RuntimeConfig {
        compiler: Some(sedna::plugin::compile::ChildCompiler {
            program: env!("CARGO_BIN_EXE_sedna").into(),
            timeout,
            memory,
        }),
        ..RuntimeConfig::default()
    })
    .unwrap()
}
