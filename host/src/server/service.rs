//! What the API serves: the plugin store, the runtime that checks and precompiles
//! uploads, and the jobs running in this process; and what each call does to them.

use std::time::Instant;

use super::auth::{FailedChecks, Token};
use super::error::HttpError;
use super::wire::{BindRequest, Bound, RolledBack, Uploaded};
use crate::learn::{BindError, JobHandle, SlotName};
use crate::plugin::compile::Cancel;
use crate::plugin::inspect;
use crate::plugin::{Builtin, Param, PluginStore, Runtime, Source, StoredPlugin, check_name};

/// Uploads checked and compiled at once, by default.
pub const DEFAULT_MAX_COMPILES: usize = 2;

/// Failed token checks a client may make a minute, by default.
pub const DEFAULT_MAX_TOKEN_FAILURES: u32 = 10;

/// The largest component an upload may carry, by default.
pub const DEFAULT_MAX_UPLOAD: usize = 64 << 20;

/// What the API serves: the plugin store, the runtime that checks and precompiles
/// uploads, and the jobs running in this process.
pub struct Service {
    pub(super) runtime: Runtime,
    pub(super) store: PluginStore,
    pub(super) token: Token,
    pub(super) jobs: Vec<JobHandle>,
    pub(super) max_upload: usize,
    pub(super) limits: ConnectionLimits,
    pub(super) failed_checks: FailedChecks,
    /// Uploads being checked and compiled now, at most `max_compiles`.
    compiling: std::sync::atomic::AtomicUsize,
    max_compiles: usize,
    /// Held by a bind and by a removal, so that a plugin cannot be removed while a bind
    /// of it is on its way into a slot.
    binding: std::sync::Mutex<()>,
}

impl Service {
    pub fn new(runtime: Runtime, store: PluginStore, token: Token, jobs: Vec<JobHandle>) -> Self {
        Service {
            runtime,
            store,
            token,
            jobs,
            max_upload: DEFAULT_MAX_UPLOAD,
            limits: ConnectionLimits::default(),
            failed_checks: FailedChecks::per_minute(DEFAULT_MAX_TOKEN_FAILURES),
            compiling: Default::default(),
            max_compiles: DEFAULT_MAX_COMPILES,
            binding: Default::default(),
        }
    }

    /// Sets the largest component an upload may carry.
    pub fn max_upload(mut self, bytes: usize) -> Self {
        self.max_upload = bytes;
        self
    }

    /// Sets how many uploads may be checked and compiled at once; more are refused (503)
    /// rather than queued, so that uploads cannot take every core from the job.
    pub fn max_compiles(mut self, at_once: usize) -> Self {
        self.max_compiles = at_once.max(1);
        self
    }

    /// Sets how many failed token checks a client may make a minute before it is refused.
    pub fn max_token_failures(mut self, per_minute: u32) -> Self {
        self.failed_checks = FailedChecks::per_minute(per_minute);
        self
    }

    /// Sets how many connections are served at once and how long they may take.
    pub fn connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// What a client may hold of the host: a slow or idle client cannot keep a connection,
/// and many cannot take the descriptors the job needs for its data and frames.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConnectionLimits {
    /// Connections served at once; the others wait in the listen queue, which costs the
    /// process no descriptor, until one ends.
    pub max_connections: usize,
    /// Time to send a request's headers; also how long a kept-alive connection may idle.
    pub header_timeout: std::time::Duration,
    /// The longest a connection lives (a slow upload included).
    pub lifetime: std::time::Duration,
}

/// Descriptors kept for the job (data index, frames, models, state) whatever the cap.
pub const RESERVED_DESCRIPTORS: usize = 256;

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 128,
            header_timeout: std::time::Duration::from_secs(10),
            lifetime: std::time::Duration::from_secs(300),
        }
    }
}

impl ConnectionLimits {
    /// The cap, lowered to leave [`RESERVED_DESCRIPTORS`] of the process's descriptor
    /// limit to the job.
    pub fn max_connections_within(&self, descriptor_limit: u64) -> usize {
        let room = (descriptor_limit as usize).saturating_sub(RESERVED_DESCRIPTORS);
        self.max_connections.min(room).max(1)
    }
}

impl Service {
    pub(super) fn job(&self, name: &str) -> Result<&JobHandle, HttpError> {
        self.jobs.iter().find(|j| j.name() == name).ok_or_else(|| {
            HttpError::not_found(
                "no_such_job",
                format!("no job {name:?} runs here (GET /v1/jobs lists them)"),
            )
        })
    }

    /// The store's entry for `name@version` (uploaded plugins; built-ins are not stored).
    pub(super) fn stored(&self, name: &str, version: &str) -> Result<StoredPlugin, HttpError> {
        check_name("name", name).map_err(HttpError::BadName)?;
        check_name("version", version).map_err(HttpError::BadName)?;
        self.store
            .entry(name, version)
            .map_err(HttpError::internal)?
            .ok_or_else(|| HttpError::no_plugin(&format!("{name}@{version}")))
    }

    /// Removes a stored plugin that no job's slot holds: one in use stays, so that the
    /// store never lists less than what runs.
    pub(super) fn remove(&self, name: &str, version: &str) -> Result<(), HttpError> {
        let _binding = self.binding.lock().unwrap_or_else(|e| e.into_inner());
        self.stored(name, version)?;
        let reference = format!("{name}@{version}");
        if let Some((job, slot)) = self
            .jobs
            .iter()
            .find_map(|job| Some((job, job.holding(&reference)?)))
        {
            return Err(HttpError::Conflict {
                code: "plugin_in_use",
                detail: format!(
                    "{reference} is bound to the `{slot}` slot of job `{}`: bind another plugin there first",
                    job.name()
                ),
            });
        }
        self.store
            .remove(name, version)
            .map_err(HttpError::internal)
    }

    /// Checks a component (a component, of `world` or of the one world it exports),
    /// compiles it into the cache, so that a bind loads it without compiling, and stores it.
    pub(super) fn upload(
        &self,
        name: &str,
        version: &str,
        world: Option<String>,
        wasm: &[u8],
        cancel: &Cancel,
    ) -> Result<Uploaded, HttpError> {
        check_name("name", name).map_err(HttpError::BadName)?;
        check_name("version", version).map_err(HttpError::BadName)?;
        if Builtin::find(name).is_some() {
            return Err(HttpError::BadName(anyhow::anyhow!(
                "`{name}` is the name of a built-in plugin: choose another name"
            )));
        }
        let _compiling = self.compile_slot()?;
        let source = Source::new(format!("{name}@{version}"), wasm);
        let started = Instant::now();
        // Compiled first, bounded and stopped if the client goes; the checks below then
        // find it compiled.
        self.runtime.compile_unless_cancelled(&source, cancel)?;
        let world = match world {
            Some(world) => world,
            None => inspect::inspect(&self.runtime, &source)?
                .single_world()
                .map_err(|why| {
                    HttpError::WrongWorld(format!("{name}@{version}: {why} (?world=WORLD)"))
                })?,
        };
        inspect::validate(&self.runtime, &source, &world)?;
        let compile_ms = started.elapsed().as_secs_f64() * 1e3;
        let plugin = self
            .store
            .add(name, version, &world, wasm)
            .map_err(HttpError::internal)?;
        tracing::info!(plugin = %source.name, world, sha256 = %plugin.sha256, "plugin uploaded");
        Ok(Uploaded { plugin, compile_ms })
    }

    /// One of the `max_compiles` slots, held while an upload is checked and compiled.
    fn compile_slot(&self) -> Result<CompileSlot<'_>, HttpError> {
        use std::sync::atomic::Ordering;
        self.compiling
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |busy| {
                (busy < self.max_compiles).then_some(busy + 1)
            })
            .map(|_| CompileSlot(&self.compiling))
            .map_err(|_| HttpError::Busy {
                detail: format!(
                    "the host is compiling {} uploads already (--max-compiles): retry in a moment",
                    self.max_compiles
                ),
            })
    }

    pub(super) fn bind(
        &self,
        job: &str,
        slot: &str,
        request: BindRequest,
    ) -> Result<Bound, HttpError> {
        let _binding = self.binding.lock().unwrap_or_else(|e| e.into_inner());
        let job = self.job(job)?;
        let slot: SlotName = slot
            .parse()
            .map_err(|e: String| HttpError::not_found("no_such_slot", e))?;
        // Only the store and the built-ins: never a path on the host.
        let reference = &request.plugin;
        match reference.split_once('@') {
            Some((name, version)) => {
                check_name("name", name).map_err(HttpError::BadName)?;
                check_name("version", version).map_err(HttpError::BadName)?;
            }
            None => check_name("name", reference).map_err(HttpError::BadName)?,
        }
        let source = self
            .store
            .resolve(reference)
            .map_err(|e| HttpError::not_found("no_such_plugin", format!("{e:#}")))?;
        let params = request.params.map(|params| {
            params
                .into_iter()
                .map(|(key, value)| Param { key, value })
                .collect()
        });
        let started = Instant::now();
        job.bind(slot, &source, params).map_err(bind_error)?;
        Ok(Bound {
            job: job.name().to_string(),
            slot: slot.name().to_string(),
            plugin: source.name,
            sha256: source.sha256,
            took_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// Returns a job's slot to what it held before its last bind.
    pub(super) fn rollback(&self, job: &str, slot: &str) -> Result<RolledBack, HttpError> {
        let _binding = self.binding.lock().unwrap_or_else(|e| e.into_inner());
        let job = self.job(job)?;
        let slot: SlotName = slot
            .parse()
            .map_err(|e: String| HttpError::not_found("no_such_slot", e))?;
        let plugin = job.rollback(slot).map_err(bind_error)?;
        Ok(RolledBack {
            job: job.name().to_string(),
            slot: slot.name().to_string(),
            plugin,
        })
    }
}

fn bind_error(e: BindError) -> HttpError {
    let detail = e.to_string();
    let code = match e {
        BindError::Plugin(e) => return e.into(),
        BindError::NoWorker { .. } => "no_such_slot",
        BindError::NothingToRollBack { .. } => "nothing_to_roll_back",
        BindError::Gone { .. } => "previous_plugin_gone",
    };
    HttpError::Conflict { code, detail }
}

/// A compile slot, given back when dropped.
struct CompileSlot<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for CompileSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
