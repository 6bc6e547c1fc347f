//! What a component file is: its size, hash, imports, exports and the worlds it
//! implements (`sedna plugin inspect` and `sedna plugin validate`).

use serde::Serialize;
use wasmtime::component::types::ComponentItem;

use super::engine::Runtime;
use super::error::{Cause, PluginError};
use super::instance::Plugin;
use super::store::Source;
use super::world::{WORLDS, World};
use super::worlds::{Estimator, Hem, TriggerCondition};

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub size: usize,
    pub sha256: String,
    /// The worlds whose interface the component exports.
    pub worlds: Vec<String>,
    pub imports: Vec<Item>,
    pub exports: Vec<Item>,
}

impl Inspection {
    /// The one world the component implements; an error says why there is not one.
    pub fn single_world(&self) -> Result<String, String> {
        match self.worlds.as_slice() {
            [world] => Ok(world.clone()),
            [] => Err(format!(
                "it implements none of the worlds ({}); see `sedna plugin inspect`",
                WORLDS
                    .iter()
                    .map(|(w, _)| *w)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            many => Err(format!(
                "it exports several worlds ({}): name the one it is for",
                many.join(", ")
            )),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Item {
    pub name: String,
    pub kind: &'static str,
}

pub fn inspect(runtime: &Runtime, source: &Source) -> Result<Inspection, PluginError> {
    let (component, _) = runtime.compile(source)?;
    let ty = component.component_type();
    let engine = runtime.engine();
    let item = |(name, ext): (&str, wasmtime::component::types::ComponentExtern<'_>)| Item {
        name: name.to_string(),
        kind: kind(&ext.ty),
    };
    let imports: Vec<Item> = ty.imports(engine).map(item).collect();
    let exports: Vec<Item> = ty.exports(engine).map(item).collect();
    let worlds = WORLDS
        .iter()
        .filter(|(_, export)| exports.iter().any(|e| e.name == *export))
        .map(|(world, _)| world.to_string())
        .collect();
    Ok(Inspection {
        size: source.wasm.len(),
        sha256: source.sha256.clone(),
        worlds,
        imports,
        exports,
    })
}

/// Checks that the component implements `world` fully: the exported interface with the
/// right types, and no import the host does not provide.
pub fn validate(
    runtime: &Runtime,
    source: &Source,
    world: &str,
) -> Result<Inspection, PluginError> {
    match world {
        Hem::NAME => Plugin::<Hem>::check(runtime, source).map(drop),
        TriggerCondition::NAME => Plugin::<TriggerCondition>::check(runtime, source).map(drop),
        Estimator::NAME => Plugin::<Estimator>::check(runtime, source).map(drop),
        _ => {
            let known: Vec<&str> = WORLDS.iter().map(|(w, _)| *w).collect();
            let detail = format!("no such world; the worlds are {}", known.join(", "));
            Err(runtime.errors().failed(
                &source.name,
                "validate",
                Cause::WrongWorld {
                    world: world.to_string(),
                    detail,
                },
            ))
        }
    }?;
    inspect(runtime, source)
}

fn kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}
