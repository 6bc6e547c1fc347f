use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// A plugin failed: which plugin, in which call, and why.
///
/// The host never dies of a plugin's failure: the failed instance is dropped and the
/// next call runs on a fresh one.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{plugin}`: `{call}` {cause}")]
pub struct PluginError {
    pub plugin: String,
    pub call: String,
    pub cause: Cause,
}

impl PluginError {
    /// A failure. The runtime counts the ones it meets ([`ErrorCounts::failed`]).
    pub fn new(plugin: &str, call: &str, cause: Cause) -> Self {
        PluginError {
            plugin: plugin.to_string(),
            call: call.to_string(),
            cause,
        }
    }
}

/// Plugin failures by call and kind of cause, counted by the runtime that ran them
/// (`/metrics`). Calls are the worlds' function names, so the set stays small.
#[derive(Debug, Default)]
pub struct ErrorCounts(Mutex<BTreeMap<(String, &'static str), u64>>);

impl ErrorCounts {
    /// A failure of `plugin`'s `call`, counted.
    pub fn failed(&self, plugin: &str, call: &str, cause: Cause) -> PluginError {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((call.to_string(), cause.kind()))
            .or_default() += 1;
        PluginError::new(plugin, call, cause)
    }

    /// `(call, kind, failures)` for every call and kind that has failed.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((call, kind), n)| (call.clone(), *kind, *n))
            .collect()
    }
}

/// Why a plugin call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Cause {
    #[error(
        "did not finish within its deadline of {0:?} (raise the plugin's deadline if it needs longer)"
    )]
    Timeout(Duration),
    #[error("exceeded its memory cap of {} MiB (raise the plugin's memory cap if it needs more)", .0 >> 20)]
    OutOfMemory(u64),
    #[error("overflowed its call stack (unbounded recursion?)")]
    StackOverflow,
    #[error("trapped: {0}")]
    Trap(String),
    /// The plugin itself refused, e.g. `init` returned an error for a bad parameter.
    #[error("failed: {0}")]
    Refused(String),
    #[error("does not implement world `{world}`: {detail}")]
    WrongWorld { world: String, detail: String },
    #[error("is not a usable WebAssembly component: {0}")]
    Invalid(String),
    /// The host could not serve the call (out of instance slots, a file it could not open).
    #[error("could not run: {0}")]
    Host(String),
}

impl Cause {
    /// A short stable name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Cause::Timeout(_) => "timeout",
            Cause::OutOfMemory(_) => "out_of_memory",
            Cause::StackOverflow => "stack_overflow",
            Cause::Trap(_) => "trap",
            Cause::Refused(_) => "refused",
            Cause::WrongWorld { .. } => "wrong_world",
            Cause::Invalid(_) => "invalid",
            Cause::Host(_) => "host",
        }
    }
}
