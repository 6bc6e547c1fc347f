//! The code `wasmtime::component::bindgen!` generates from `wit/`, one module per world,
//! and nothing else. The worlds share the `types` and `log` interfaces of the first; the
//! `inference` and `training` interfaces' resources are the host's own types (`resources`).

pub(super) mod hem_bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "hard-example-miner",
        additional_derives: [PartialEq],
    });
}

pub(super) mod trigger_bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "trigger-condition",
        with: {
            "sedna:plugin/types": super::hem_bindings::sedna::plugin::types,
            "sedna:plugin/log": super::hem_bindings::sedna::plugin::log,
        },
    });
}

pub(super) mod estimator_bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "estimator",
        imports: { "sedna:plugin/inference": trappable, "sedna:plugin/training": trappable },
        with: {
            "sedna:plugin/types": super::hem_bindings::sedna::plugin::types,
            "sedna:plugin/log": super::hem_bindings::sedna::plugin::log,
            "sedna:plugin/inference.error": crate::media::InferError,
            "sedna:plugin/inference.tensor": crate::media::Tensor,
            "sedna:plugin/inference.frame": crate::plugin::resources::FrameHandle,
            "sedna:plugin/inference.dataset": crate::plugin::resources::Dataset,
            "sedna:plugin/inference.graph": crate::plugin::resources::Graph,
            "sedna:plugin/inference.graph-execution-context": crate::plugin::resources::ExecutionContext,
            "sedna:plugin/training.session": crate::plugin::resources::TrainingSession,
        },
    });
}

pub use estimator_bindings::sedna::plugin::{inference, training};
pub use hem_bindings::sedna::plugin::{log, types};
