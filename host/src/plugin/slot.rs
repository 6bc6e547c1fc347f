use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::bindings::types::Param;
use super::error::PluginError;
use super::instance::Plugin;
use super::sandbox::Sandbox;
use super::store::Source;
use super::world::World;

/// A hot-swappable plugin: the one a job's stage (its HEM, estimator or trigger) calls.
///
/// `replace` loads, type-checks, instantiates and initialises the new version off to the
/// side and only then swaps it in. A call already running finishes on the version it
/// started with; a failed `replace` leaves the old version serving.
pub struct Slot<W: World> {
    current: ArcSwap<Plugin<W>>,
    swapping: Mutex<()>,
}

impl<W: World> Slot<W> {
    pub fn new(plugin: Plugin<W>) -> Self {
        Slot {
            current: ArcSwap::from_pointee(plugin),
            swapping: Mutex::new(()),
        }
    }

    /// The version serving now; keep it for the length of one call.
    pub fn get(&self) -> Arc<Plugin<W>> {
        self.current.load_full()
    }

    /// Swaps in `source`, keeping the slot's parameters and sandbox.
    pub fn replace(&self, source: &Source) -> Result<(), PluginError> {
        let current = self.get();
        self.replace_with(source, current.params().to_vec(), current.sandbox().clone())
    }

    /// Swaps in `source` with new parameters and sandbox.
    pub fn replace_with(
        &self,
        source: &Source,
        params: Vec<Param>,
        sandbox: Sandbox,
    ) -> Result<(), PluginError> {
        let _one_at_a_time = self.swapping.lock().unwrap();
        let runtime = self.get().runtime().clone();
        let next = Plugin::load(&runtime, source, params, sandbox)?;
        let previous = self.current.swap(Arc::new(next));
        tracing::info!(
            from = %previous.name(),
            to = %source.name,
            sha256 = %source.sha256,
            "plugin swapped"
        );
        Ok(())
    }
}
