use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use super::Context;
use super::remote::{HostArgs, connect};
use crate::plugin::inspect::{self, Inspection};
use crate::plugin::{Hem, Plugin, Sandbox, Source, StoredPlugin, check_name, json};
use crate::server::DEFAULT_LISTEN;
use crate::server::wire::{Bound, RolledBack, Uploaded};

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
        #[command(flatten)]
        entry: Entry,
    },
    /// Upload a component to a running host (`sedna run --listen`), which checks it,
    /// precompiles it and stores it (`--bind` then swaps it into a job's slot); or, given
    /// `oci://registry/repository:tag`, push it to an OCI registry.
    Push {
        file: PathBuf,
        /// An OCI registry's `oci://registry[:port]/repository:tag`, instead of a host.
        #[arg(value_name = "oci://...")]
        to: Option<String>,
        #[command(flatten)]
        entry: Entry,
        /// Sign it for the registry with this key (`sedna plugin keygen`).
        #[arg(long, value_name = "FILE", requires = "to")]
        sign_key: Option<PathBuf>,
        /// Swap it into a running job's slot: JOB/SLOT, the slot one of hem, estimator,
        /// train-trigger, deploy-trigger.
        #[arg(long, value_name = "JOB/SLOT")]
        bind: Option<String>,
        /// A parameter for the plugin's `init` when bound; repeat for more (by default
        /// the replaced plugin's).
        #[arg(long = "param", value_name = "KEY=VALUE", requires = "bind")]
        params: Vec<String>,
        #[command(flatten)]
        remote: HostArgs,
    },
    /// Pull a plugin from an OCI registry into the store (checked against its digests,
    /// and its signature when this host trusts keys) as NAME@VERSION: by default the
    /// repository's last part and the tag (or `sha256-` and the digest's start).
    #[cfg(feature = "server")]
    Pull {
        #[arg(value_name = "oci://...")]
        reference: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        version: Option<String>,
    },
    /// Make an ed25519 key pair to sign pushes with: FILE (private, mode 0600) and
    /// FILE.pub, for hosts to trust.
    #[cfg(feature = "server")]
    Keygen { file: PathBuf },
    /// Trust plugins signed by the key in FILE.pub: from then on this host pulls from
    /// registries only plugins one of its trusted keys signed.
    #[cfg(feature = "server")]
    Trust { public_key: PathBuf },
    /// List the built-in and stored plugins (of a running host with --host).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: HostArgs,
    },
    /// Remove NAME@VERSION from the plugin store (of a running host with --host).
    Rm {
        reference: String,
        #[command(flatten)]
        remote: HostArgs,
    },
    /// Return a running job's slot (JOB/SLOT) to the plugin it held before its last bind
    /// (past the first, the job file's).
    Rollback {
        #[arg(value_name = "JOB/SLOT")]
        target: String,
        #[command(flatten)]
        remote: HostArgs,
    },
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

/// How a component goes into a store.
#[derive(Args)]
pub struct Entry {
    /// Its name in the store (not needed for a push to a registry).
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value = "latest")]
    version: String,
    /// The world it must implement; by default the one it exports.
    #[arg(long)]
    world: Option<String>,
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
            PluginCommand::Add { file, entry } => add(context, &file, entry)?,
            PluginCommand::Push {
                file,
                to: Some(to),
                entry,
                sign_key,
                ..
            } => push_to_registry(context, &file, &to, entry.world, sign_key.as_deref())?,
            PluginCommand::Push {
                file,
                to: None,
                entry,
                bind,
                params,
                remote,
                ..
            } => push(context, &file, entry, bind.as_deref(), &params, &remote)?,
            #[cfg(feature = "server")]
            PluginCommand::Pull {
                reference,
                name,
                version,
            } => pull(context, &reference, name, version)?,
            #[cfg(feature = "server")]
            PluginCommand::Keygen { file } => {
                let public = crate::plugin::oci::SigningKey::generate(&file)?;
                println!(
                    "signing key in {} (keep it private); its public key in {}: give that to hosts (`sedna plugin trust {}`)",
                    file.display(),
                    public.display(),
                    public.display()
                );
            }
            #[cfg(feature = "server")]
            PluginCommand::Trust { public_key } => {
                crate::plugin::oci::PublicKey::read(&public_key)?;
                let dir = context.home.join("trusted-keys");
                let name = public_key
                    .file_name()
                    .ok_or_else(|| anyhow::anyhow!("{}: not a file", public_key.display()))?;
                let mut target = dir.join(name);
                target.set_extension("pub");
                crate::files::write_atomically(&target, &std::fs::read(&public_key)?)?;
                let count = crate::plugin::oci::trusted_keys(&context.home)?.len();
                println!(
                    "trusted {} ({count} keys in {}): plugins pulled from registries must be signed by one of them",
                    public_key.display(),
                    dir.display()
                );
            }
            PluginCommand::List { json, remote } => {
                let plugins: Vec<StoredPlugin> = match &remote.host {
                    Some(host) => connect(host, &remote, &context.home)?.get("/v1/plugins")?,
                    None => context.store()?.list()?,
                };
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
            PluginCommand::Rm { reference, remote } => {
                let Some((name, version)) = reference.split_once('@') else {
                    bail!(
                        "name the plugin as NAME@VERSION (see `sedna plugin list`), not {reference:?}"
                    );
                };
                match &remote.host {
                    Some(host) => {
                        check_name("name", name)?;
                        check_name("version", version)?;
                        connect(host, &remote, &context.home)?
                            .delete(&format!("/v1/plugins/{name}/{version}"))?
                    }
                    None => context.store()?.remove(name, version)?,
                }
                println!("removed {reference}");
            }
            PluginCommand::Rollback { target, remote } => {
                let (job, slot) = job_slot("plugin rollback", &target)?;
                let host = remote.host.as_deref().unwrap_or(DEFAULT_LISTEN);
                let back: RolledBack = connect(host, &remote, &context.home)?
                    .post(&format!("/v1/jobs/{job}/slots/{slot}/rollback"))?;
                println!(
                    "{}/{} holds {} again",
                    back.job,
                    back.slot,
                    back.plugin.as_deref().unwrap_or("no plugin")
                );
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

/// `sedna plugin add`: validates a component and stores it in this machine's store.
fn add(context: &Context, file: &Path, entry: Entry) -> anyhow::Result<()> {
    let name = entry.name()?.to_string();
    let Entry { version, world, .. } = entry;
    let source = Source::from_file(file)?;
    let world = checked_world(context, &source, world)?;
    let entry = context
        .store()?
        .add(&name, &version, &world, &source.wasm)?;
    println!(
        "added {}@{} ({}, sha256 {})",
        entry.name, entry.version, entry.world, entry.sha256
    );
    Ok(())
}

impl Entry {
    fn name(&self) -> anyhow::Result<&str> {
        self.name
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("name it in the store with --name"))
    }
}

/// The world `source` implements: `world` when given (checked), else the one it exports.
fn checked_world(
    context: &Context,
    source: &Source,
    world: Option<String>,
) -> anyhow::Result<String> {
    let runtime = context.runtime()?;
    let world = match world {
        Some(world) => world,
        None => inspect::inspect(&runtime, source)?
            .single_world()
            .map_err(|why| anyhow::anyhow!("{}: {why} (--world)", source.name))?,
    };
    inspect::validate(&runtime, source, &world)?;
    Ok(world)
}

/// `sedna plugin push FILE oci://...`: checks the component here, then pushes it.
fn push_to_registry(
    context: &Context,
    file: &Path,
    to: &str,
    world: Option<String>,
    sign_key: Option<&Path>,
) -> anyhow::Result<()> {
    #[cfg(feature = "server")]
    {
        use crate::plugin::oci;
        let reference = oci::Reference::parse(to)?;
        let key = sign_key.map(oci::SigningKey::read).transpose()?;
        let source = Source::from_file(file)?;
        let world = checked_world(context, &source, world)?;
        let http = crate::net::Http::new(oci::registry_trust())?;
        let pushed = oci::push(&http, &reference, &source.wasm, &world, key.as_ref())?;
        println!(
            "pushed {} to {reference} ({world}, {}{}); pinned: {}",
            file.display(),
            pushed.digest,
            if pushed.signed { ", signed" } else { "" },
            pushed.pinned
        );
        Ok(())
    }
    #[cfg(not(feature = "server"))]
    {
        let _ = (context, file, world, sign_key);
        bail!(
            "{to}: this sedna was built without the `server` feature, so it cannot reach an OCI registry"
        )
    }
}

/// `sedna plugin pull oci://...`: into the store as NAME@VERSION.
#[cfg(feature = "server")]
fn pull(
    context: &Context,
    reference: &str,
    name: Option<String>,
    version: Option<String>,
) -> anyhow::Result<()> {
    let parsed = crate::plugin::oci::Reference::parse(reference)?;
    let store = context.store()?;
    let (source, world) = store.pull(reference)?;
    let world = checked_world(context, &source, world)?;
    let name = name.unwrap_or_else(|| {
        let last = parsed.repository.rsplit('/').next().unwrap_or_default();
        last.to_string()
    });
    let version = version
        .or(parsed.tag.clone())
        .or_else(|| {
            let digest = parsed.digest.as_deref()?.strip_prefix("sha256:")?;
            Some(format!("sha256-{}", &digest[..12]))
        })
        .unwrap_or_else(|| "latest".into());
    let entry = store.add(&name, &version, &world, &source.wasm)?;
    println!(
        "pulled {reference} as {}@{} ({}, sha256 {})",
        entry.name, entry.version, entry.world, entry.sha256
    );
    Ok(())
}

/// `sedna plugin push`: uploads a component to a running host, and binds it if asked.
fn push(
    context: &Context,
    file: &Path,
    entry: Entry,
    bind: Option<&str>,
    params: &[String],
    remote: &HostArgs,
) -> anyhow::Result<()> {
    let name = entry.name()?.to_string();
    let Entry { version, world, .. } = entry;
    let host = remote.host.as_deref().unwrap_or(DEFAULT_LISTEN);
    let remote = connect(host, remote, &context.home)?;
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    check_name("name", &name)?;
    check_name("version", &version)?;
    let query = world.map(|w| format!("?world={w}")).unwrap_or_default();
    let uploaded: Uploaded =
        remote.put_bytes(&format!("/v1/plugins/{name}/{version}{query}"), &wasm)?;
    let p = &uploaded.plugin;
    println!(
        "pushed {}@{} ({}, sha256 {}, checked and precompiled in {:.1} ms)",
        p.name, p.version, p.world, p.sha256, uploaded.compile_ms
    );
    if let Some(target) = bind {
        let (job, slot) = job_slot("--bind", target)?;
        let mut request = serde_json::json!({ "plugin": format!("{name}@{version}") });
        if !params.is_empty() {
            let params: serde_json::Map<String, serde_json::Value> = super::parse_params(params)?
                .into_iter()
                .map(|p| (p.key, p.value.into()))
                .collect();
            request["params"] = params.into();
        }
        let bound: Bound = remote.put_json(&format!("/v1/jobs/{job}/slots/{slot}"), &request)?;
        println!(
            "bound {} to {}/{} (loaded, started and swapped in {:.1} ms)",
            bound.plugin, bound.job, bound.slot, bound.took_ms
        );
    }
    Ok(())
}

/// `JOB/SLOT`, split and checked; `what` names the argument in the error.
fn job_slot<'a>(what: &str, target: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    let Some((job, slot)) = target.split_once('/') else {
        bail!("{what} {target:?}: write it as JOB/SLOT, e.g. my-job/hem");
    };
    check_name("job", job)?;
    check_name("slot", slot)?;
    Ok((job, slot))
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
