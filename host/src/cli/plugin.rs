use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;

use super::Context;
use crate::plugin::inspect::{self, Inspection};
use crate::plugin::{Hem, Plugin, Sandbox, Source, json, worlds};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Print a component's size, sha256, worlds, imports and exports.
    Inspect {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check that a component implements a world; exit 1 with the mismatch if not.
    Validate {
        file: PathBuf,
        /// hard-example-miner, trigger-condition or estimator.
        #[arg(long)]
        world: String,
    },
    /// Add a component to the plugin store as NAME@VERSION, after validating it.
    Add {
        file: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "latest")]
        version: String,
        /// The world it must implement; by default the one it exports.
        #[arg(long)]
        world: Option<String>,
    },
    /// List the built-in and stored plugins.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove NAME@VERSION from the plugin store.
    Rm { reference: String },
    /// Run a hard-example miner over predictions (one JSON per line) and print one
    /// decision per line; a bad line is reported with its number and the run goes on.
    Test {
        /// A `.wasm` file, a stored NAME@VERSION or a built-in name (`IBT`).
        plugin: String,
        /// Predictions, one per line: `[[x1, y1, x2, y2, score, label], ...]` or
        /// `{"class_scores": [...]}`.
        #[arg(long)]
        input: PathBuf,
        /// A parameter for the plugin's `init`; repeat for more.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

impl PluginCommand {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        match self {
            PluginCommand::Inspect { file, json } => {
                let source = Source::from_file(&file)?;
                let inspection = inspect::inspect(&context.runtime()?, &source)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&inspection)?);
                } else {
                    print_inspection(&file, &inspection);
                }
            }
            PluginCommand::Validate { file, world } => {
                let source = Source::from_file(&file)?;
                inspect::validate(&context.runtime()?, &source, &world)?;
                println!("{}: implements `{world}`", file.display());
            }
            PluginCommand::Add {
                file,
                name,
                version,
                world,
            } => {
                let source = Source::from_file(&file)?;
                let runtime = context.runtime()?;
                let world = match world {
                    Some(world) => world,
                    None => single_world(&inspect::inspect(&runtime, &source)?, &file)?,
                };
                inspect::validate(&runtime, &source, &world)?;
                let entry = context
                    .store()?
                    .add(&name, &version, &world, &source.wasm)?;
                println!(
                    "added {}@{} ({}, sha256 {})",
                    entry.name, entry.version, entry.world, entry.sha256
                );
            }
            PluginCommand::List { json } => {
                let plugins = context.store()?.list()?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&plugins)?);
                } else {
                    println!(
                        "{:<24} {:<12} {:<20} {:>9}  SHA256",
                        "NAME", "VERSION", "WORLD", "SIZE"
                    );
                    for p in plugins {
                        println!(
                            "{:<24} {:<12} {:<20} {:>9}  {}",
                            p.name,
                            p.version,
                            p.world,
                            p.size,
                            &p.sha256[..16]
                        );
                    }
                }
            }
            PluginCommand::Rm { reference } => {
                let Some((name, version)) = reference.split_once('@') else {
                    bail!(
                        "name the plugin as NAME@VERSION (see `sedna plugin list`), not {reference:?}"
                    );
                };
                context.store()?.remove(name, version)?;
                println!("removed {reference}");
            }
            PluginCommand::Test {
                plugin,
                input,
                params,
                json,
            } => return test(context, &plugin, &input, &params, json),
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn test(
    context: &Context,
    plugin: &str,
    input: &Path,
    params: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let params = super::parse_params(params)?;
    let source = context.store()?.resolve(plugin)?;
    let miner = Plugin::<Hem>::load(&context.runtime()?, &source, params, Sandbox::default())?;
    let file = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    let (mut decisions, mut bad) = (0usize, 0usize);
    let mut out = std::io::stdout().lock();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("{}:{number}: cannot read", input.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let decision = json::parse_prediction(&line)
            .and_then(|p| miner.is_hard_example(&p).map_err(|e| e.to_string()));
        match decision {
            Ok(hard) if json => writeln!(
                out,
                "{}",
                serde_json::json!({ "line": number, "hard": hard })
            )?,
            Ok(hard) => writeln!(out, "{number}: {}", if hard { "hard" } else { "not hard" })?,
            Err(e) => {
                bad += 1;
                eprintln!("{}:{number}: {e}", input.display());
                continue;
            }
        }
        decisions += 1;
    }
    if bad > 0 {
        eprintln!("{decisions} decisions, {bad} bad lines");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn single_world(inspection: &Inspection, file: &std::path::Path) -> anyhow::Result<String> {
    match inspection.worlds.as_slice() {
        [world] => Ok(world.clone()),
        [] => bail!(
            "{} implements none of the worlds ({}); see `sedna plugin inspect`",
            file.display(),
            worlds::ALL
                .iter()
                .map(|(w, _)| *w)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        many => bail!(
            "{} exports several worlds ({}): choose one with --world",
            file.display(),
            many.join(", ")
        ),
    }
}

fn print_inspection(file: &std::path::Path, i: &Inspection) {
    println!("file:    {}", file.display());
    println!("size:    {} bytes", i.size);
    println!("sha256:  {}", i.sha256);
    let worlds = if i.worlds.is_empty() {
        "none of sedna:plugin's".to_string()
    } else {
        i.worlds.join(", ")
    };
    println!("worlds:  {worlds}");
    println!("imports:");
    for item in &i.imports {
        println!("  {:<9} {}", item.kind, item.name);
    }
    println!("exports:");
    for item in &i.exports {
        println!("  {:<9} {}", item.kind, item.name);
    }
}
