use std::sync::{Arc, Mutex};

use wasmtime::{Store, Trap};

use super::bindings::types::Param;
use super::engine::Runtime;
use super::error::{Cause, PluginError};
use super::sandbox::Sandbox;
use super::state::HostState;
use super::store::Source;
use super::world::{WORLDS, World};

/// A live, initialised instance of a plugin: its own store, memory and WASI context.
pub struct Instance<W: World> {
    store: Store<HostState>,
    bindings: W::Bindings,
}

/// One plugin loaded for world `W`, with its parameters and sandbox.
///
/// Calls take an idle instance from a small pool (or make a fresh one) so that threads
/// call in parallel. An instance whose call failed is dropped, never reused: the next
/// call runs on a fresh instance, initialised with the same parameters.
pub struct Plugin<W: World> {
    name: Arc<str>,
    source: Source,
    runtime: Runtime,
    pre: W::Pre,
    params: Vec<Param>,
    sandbox: Sandbox,
    idle: Mutex<Vec<Instance<W>>>,
}

impl<W: World> Plugin<W> {
    /// Compiles (or takes from the cache), links and type-checks the component, then
    /// instantiates and initialises it once: a plugin that cannot start is refused here.
    pub fn load(
        runtime: &Runtime,
        source: &Source,
        params: Vec<Param>,
        sandbox: Sandbox,
    ) -> Result<Self, PluginError> {
        let pre = Self::check(runtime, source)?;
        let plugin = Plugin {
            name: source.name.as_str().into(),
            source: source.clone(),
            runtime: runtime.clone(),
            pre,
            params,
            sandbox,
            idle: Mutex::new(Vec::new()),
        };
        let first = plugin.instantiate()?;
        plugin.idle.lock().unwrap().push(first);
        Ok(plugin)
    }

    /// Checks that the component implements `W` with only the imports the host provides.
    pub fn check(runtime: &Runtime, source: &Source) -> Result<W::Pre, PluginError> {
        let (component, _) = runtime.compile(source)?;
        let wrong_world = |e: wasmtime::Error| {
            let exports = runtime.exported_names(&component);
            let mut detail = format!("{e:#}");
            if let Some((world, _)) = WORLDS
                .iter()
                .find(|(_, export)| exports.iter().any(|e| e == export))
            {
                detail.push_str(&format!("; it is a `{world}` component"));
            } else if !exports.is_empty() {
                detail.push_str(&format!("; it exports {}", exports.join(", ")));
            }
            runtime.errors().failed(
                &source.name,
                "load",
                Cause::WrongWorld {
                    world: W::NAME.to_string(),
                    detail,
                },
            )
        };
        let instance_pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        W::pre(instance_pre).map_err(wrong_world)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn sha256(&self) -> &str {
        &self.source.sha256
    }

    /// The component this plugin was loaded from (to load it again, with another model).
    pub fn source(&self) -> &Source {
        &self.source
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// A fresh instance, initialised with the plugin's parameters.
    pub fn instantiate(&self) -> Result<Instance<W>, PluginError> {
        let Instance {
            mut store,
            bindings,
        } = self.instantiate_uninitialised()?;
        match W::init(&bindings, &mut store, &self.params) {
            Ok(Ok(())) => Ok(Instance { store, bindings }),
            Ok(Err(reason)) => Err(self.error("init", Cause::Refused(reason))),
            Err(e) => Err(self.failure("init", e, &mut store)),
        }
    }

    /// A fresh instance whose `init` has not run: only for measuring instantiation.
    #[doc(hidden)]
    pub fn instantiate_uninitialised(&self) -> Result<Instance<W>, PluginError> {
        let state = HostState::new(self.name.clone(), &self.sandbox)
            .map_err(|e| self.error("instantiate", Cause::Host(format!("{e:#}"))))?;
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|state| &mut state.budget);
        self.start_call(&mut store);
        let bindings = W::instantiate(&self.pre, &mut store)
            .map_err(|e| self.failure("instantiate", e, &mut store))?;
        Ok(Instance { store, bindings })
    }

    /// Starts the clock of a call: the engine interrupts the plugin's code at its
    /// deadline, and the host work it asks for stops there too.
    fn start_call(&self, store: &mut Store<HostState>) {
        store.set_epoch_deadline(self.runtime.deadline_ticks(self.sandbox.deadline));
        store.data_mut().deadline = std::time::Instant::now().checked_add(self.sandbox.deadline);
    }

    /// Runs one call on an idle instance (or a fresh one) under the call deadline.
    pub(crate) fn call<R>(
        &self,
        call: &str,
        f: impl FnOnce(&W::Bindings, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let idle = self.idle.lock().unwrap().pop();
        let mut instance = match idle {
            Some(instance) => instance,
            None => self.instantiate()?,
        };
        let store = &mut instance.store;
        self.start_call(store);
        match f(&instance.bindings, store) {
            Ok(answer) => {
                let mut idle = self.idle.lock().unwrap();
                if idle.len() < self.runtime.max_idle_instances() {
                    idle.push(instance);
                }
                Ok(answer)
            }
            Err(e) => Err(self.failure(call, e, store)),
        }
    }

    /// A call whose answer is `result<T, string>`: the plugin's own error is `Refused`
    /// (and its instance, which did not fail, serves the next call), unless it came
    /// past the deadline: then host work stopped there, and the plugin passed that on.
    pub(crate) fn call_refusable<R>(
        &self,
        call: &str,
        f: impl FnOnce(&W::Bindings, &mut Store<HostState>) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, PluginError> {
        let deadline = std::time::Instant::now().checked_add(self.sandbox.deadline);
        self.call(call, f)?.map_err(|why| {
            let cause = match deadline {
                Some(deadline) if std::time::Instant::now() >= deadline => {
                    Cause::Timeout(self.sandbox.deadline)
                }
                _ => Cause::Refused(why),
            };
            self.error(call, cause)
        })
    }

    /// Turns a wasmtime error into a typed cause, with what the plugin last printed.
    fn failure(
        &self,
        call: &str,
        error: wasmtime::Error,
        store: &mut Store<HostState>,
    ) -> PluginError {
        let state = store.data();
        let printed = state.output.take();
        let cause = match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Cause::Timeout(self.sandbox.deadline),
            Some(Trap::StackOverflow) => Cause::StackOverflow,
            _ if state.budget.memory_exceeded => Cause::OutOfMemory(state.budget.memory_cap),
            Some(trap) => Cause::Trap(with_output(trap.to_string(), &printed)),
            None => Cause::Trap(with_output(format!("{error:#}"), &printed)),
        };
        tracing::debug!(plugin = %self.name, call, "plugin call failed: {error:?}");
        self.error(call, cause)
    }

    /// A failure of `call`, counted in the runtime's errors.
    fn error(&self, call: &str, cause: Cause) -> PluginError {
        self.runtime.errors().failed(&self.name, call, cause)
    }
}

/// Appends the meaningful lines of what the plugin printed (a panic message, say).
fn with_output(message: String, printed: &str) -> String {
    let lines: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with"))
        .collect();
    if lines.is_empty() {
        message
    } else {
        format!("{message}; the plugin printed: {}", lines.join(" "))
    }
}
