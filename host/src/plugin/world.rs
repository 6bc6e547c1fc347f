//! What the host needs of a WIT world, and the worlds there are.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::types::Param;
use super::state::HostState;

/// A world's name in `wit/` and the interface its components export.
pub type WorldName = (&'static str, &'static str);

pub const HARD_EXAMPLE_MINER: WorldName = ("hard-example-miner", "sedna:plugin/mining@0.3.0");
pub const TRIGGER_CONDITION: WorldName = ("trigger-condition", "sedna:plugin/condition@0.3.0");
pub const ESTIMATOR: WorldName = ("estimator", "sedna:plugin/estimation@0.3.0");

/// The worlds a component can implement (the `World` impls take their names from here).
pub const WORLDS: &[WorldName] = &[HARD_EXAMPLE_MINER, TRIGGER_CONDITION, ESTIMATOR];

/// A WIT world the host can drive: how its bindings are made and initialised.
pub trait World: Send + Sync + 'static {
    /// The world's name in `wit/`, e.g. `hard-example-miner`.
    const NAME: &'static str;
    /// The interface a component of this world exports, e.g. `sedna:plugin/mining@0.3.0`.
    const EXPORT: &'static str;
    type Pre: Send + Sync;
    type Bindings: Send;

    /// Type-checks the component's exports against the world, once per load.
    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Self::Bindings>;
    fn init(
        bindings: &Self::Bindings,
        store: &mut Store<HostState>,
        params: &[Param],
    ) -> wasmtime::Result<Result<(), String>>;
}
