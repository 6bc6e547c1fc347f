use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::cache::{CacheOutcome, ComponentCache};
use super::compile::{Cancel, ChildCompiler};
use super::error::{Cause, ErrorCounts, PluginError};
use super::state::HostState;
use super::store::Source;

/// How the process's engine is sized. One knob, `max_instances`, sizes the pooling
/// allocator; everything else has a default that suits edge devices.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Plugin instances alive at once across all plugins (each idle pooled instance
    /// counts). Past it, instantiation fails with a clear error.
    pub max_instances: u32,
    /// Where precompiled components are kept; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch advances: the granularity of call deadlines.
    pub epoch_tick: Duration,
    /// Use the pooling allocator (fast instantiation); off, memory is mapped per instance.
    pub pooling: bool,
    /// Compile in a bounded child process (as the `sedna` program does); `None` compiles
    /// in this process.
    pub compiler: Option<ChildCompiler>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instances: 256,
            cache_dir: None,
            epoch_tick: Duration::from_millis(10),
            pooling: true,
            compiler: None,
        }
    }
}

/// The process's one wasmtime engine, its linker and its component cache.
///
/// Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    cache: ComponentCache,
    config: RuntimeConfig,
    max_idle_instances: usize,
    errors: ErrorCounts,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let engine = Engine::new(&wasm_config(config.pooling.then_some(config.max_instances)))?;
        start_epoch_ticker(&engine, config.epoch_tick);
        let linker = HostState::linker(&engine)?;
        let cache = ComponentCache::new(config.cache_dir.clone());
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache,
                config,
                max_idle_instances: std::thread::available_parallelism()
                    .map_or(2, |n| n.get().max(2)),
                errors: ErrorCounts::default(),
            }),
        })
    }

    /// The names a component exports (to say which world a wrong one implements).
    pub(crate) fn exported_names(&self, component: &Component) -> Vec<String> {
        component
            .component_type()
            .exports(self.engine())
            .map(|(name, _)| name.to_string())
            .collect()
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.inner.linker
    }

    /// The failures of the plugins this runtime loaded and called.
    pub fn errors(&self) -> &ErrorCounts {
        &self.inner.errors
    }

    pub fn cache(&self) -> &ComponentCache {
        &self.inner.cache
    }

    /// Compiles a plugin's component, or takes it from the cache.
    pub fn compile(&self, source: &Source) -> Result<(Component, CacheOutcome), PluginError> {
        self.compile_unless_cancelled(source, &Cancel::default())
    }

    /// [`Runtime::compile`], stopped when `cancel` is set (with a child compiler).
    pub fn compile_unless_cancelled(
        &self,
        source: &Source,
        cancel: &Cancel,
    ) -> Result<(Component, CacheOutcome), PluginError> {
        let engine = &self.inner.engine;
        self.inner
            .cache
            .get(engine, source, |wasm| {
                super::screen::screen(wasm).map_err(anyhow::Error::msg)?;
                let Some(child) = &self.inner.config.compiler else {
                    return Ok(Component::new(engine, wasm)?);
                };
                let compiled = child.compile(wasm, cancel)?;
                // SAFETY: the bytes are what `Engine::precompile_component` wrote in a
                // child running this program, for an engine of the same settings
                // (`deserialize` checks them), read whole from its stdout.
                Ok(unsafe { Component::deserialize(engine, &compiled) }?)
            })
            .map_err(|e| {
                self.errors()
                    .failed(&source.name, "compile", Cause::Invalid(format!("{e:#}")))
            })
    }

    /// Idle instances a plugin keeps for the next calls: enough for every core to call.
    pub(crate) fn max_idle_instances(&self) -> usize {
        self.inner.max_idle_instances
    }

    /// Epoch ticks that make up `deadline`, rounded up.
    pub(crate) fn deadline_ticks(&self, deadline: Duration) -> u64 {
        let tick = self.inner.config.epoch_tick.as_nanos().max(1);
        deadline.as_nanos().div_ceil(tick).max(1) as u64
    }
}

/// The engine's settings: the process's, and a child compiler's (whose precompiled
/// components the process then loads), with a pooling allocator for `pooling` instances.
pub(crate) fn wasm_config(pooling: Option<u32>) -> Config {
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(1 << 20);
    if let Some(instances) = pooling {
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_limits(
            instances,
        )));
    }
    wasm
}

/// A child compiler's side (see [`super::compile`]): compiles the component on stdin for
/// an engine of the parent's settings and writes the precompiled form on stdout. Its
/// engine has no pooling allocator (which would map its pools under the memory limit);
/// how instances are allocated is no part of what a precompiled component must match.
pub fn run_compile_child() -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut wasm = Vec::new();
    std::io::stdin().read_to_end(&mut wasm)?;
    let compiled = Engine::new(&wasm_config(None))?.precompile_component(&wasm)?;
    std::io::stdout().write_all(&compiled)?;
    Ok(())
}

/// Limits for the pooling allocator, generous enough for components built by
/// componentize-py and componentize-js (many core instances and large tables).
fn pooling_limits(max_instances: u32) -> PoolingAllocationConfig {
    let mut p = PoolingAllocationConfig::new();
    p.total_component_instances(max_instances)
        .total_core_instances(max_instances * 8)
        .total_memories(max_instances * 2)
        .total_tables(max_instances * 4)
        .max_core_instances_per_component(64)
        .max_memories_per_component(8)
        .max_tables_per_component(16)
        .max_memories_per_module(2)
        .table_elements(200_000)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20);
    p
}

/// Advances the engine's epoch every `tick` until the engine is dropped.
fn start_epoch_ticker(engine: &Engine, tick: Duration) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("sedna-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .expect("cannot start the epoch thread");
}
