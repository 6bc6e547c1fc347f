//! What the host needs of a WIT world, and the worlds there are.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::types::Param;
use super::state::HostState;

/// The worlds a component can implement, by name and exported interface (the `World`
/// impls take theirs from here).
pub const WORLDS: &[(&str, &str)] = &[
    ("hard-example-miner", "sedna:plugin/mining@0.2.0"),
    ("trigger-condition", "sedna:plugin/condition@0.2.0"),
    ("estimator", "sedna:plugin/estimation@0.2.0"),
];

/// A WIT world the host can drive: how its bindings are made and initialised.
pub trait World: Send + Sync + 'static {
    /// The world's name in `wit/`, e.g. `hard-example-miner`.
    const NAME: &'static str;
    /// The interface a component of this world exports, e.g. `sedna:plugin/mining@0.2.0`.
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
