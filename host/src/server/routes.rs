//! The API's routes and what each does. Work that compiles components or reads files runs
//! on the blocking pool, never on the threads that serve connections.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::LengthLimitError;
use serde::{Deserialize, Serialize};

use super::Service;
use crate::learn::{BindError, JobHandle, JobStatus, SlotName};
use crate::plugin::inspect::{self, Inspection};
use crate::plugin::{Builtin, Cause, Param, PluginError, Source, StoredPlugin, check_name};

/// Bodies of the calls other than an upload (small JSON).
const MAX_JSON_BODY: usize = 64 << 10;

pub(super) fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/plugins", get(list_plugins))
        .route(
            "/v1/plugins/{name}",
            get(plugin_versions).put(upload_latest),
        )
        .route(
            "/v1/plugins/{name}/{version}",
            get(show_plugin).put(upload).delete(remove_plugin),
        )
        .route("/v1/jobs", get(list_jobs))
        .route("/v1/jobs/{job}", get(job_status))
        .route("/v1/jobs/{job}/slots", get(job_slots))
        .route("/v1/jobs/{job}/slots/{slot}", put(bind))
        .fallback(|| async {
            HttpError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route: the API is under /v1 (plugins, jobs), plus /metrics and /healthz",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .with_state(service)
}

/// An error as the API answers it: `{error, detail}` with its status.
#[derive(Debug, Serialize, Deserialize)]
pub struct HttpError {
    #[serde(skip, default = "internal_status")]
    pub status: StatusCode,
    /// A short stable code, e.g. `wrong_world`.
    pub error: String,
    /// What went wrong and what to do, for people.
    pub detail: String,
}

fn internal_status() -> StatusCode {
    StatusCode::INTERNAL_SERVER_ERROR
}

impl HttpError {
    pub fn new(status: StatusCode, error: &str, detail: impl Into<String>) -> Self {
        HttpError {
            status,
            error: error.to_string(),
            detail: detail.into(),
        }
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }

    fn bad_name(e: anyhow::Error) -> Self {
        HttpError::new(StatusCode::BAD_REQUEST, "bad_name", format!("{e:#}"))
    }

    fn no_job(name: &str) -> Self {
        HttpError::new(
            StatusCode::NOT_FOUND,
            "no_such_job",
            format!("no job {name:?} runs here (GET /v1/jobs lists them)"),
        )
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

/// A component that failed a check or its start: 422, except when the host itself could
/// not serve the call.
impl From<PluginError> for HttpError {
    fn from(e: PluginError) -> Self {
        let (status, code) = match &e.cause {
            Cause::WrongWorld { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "wrong_world"),
            Cause::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "not_a_component"),
            Cause::Host(_) => (StatusCode::SERVICE_UNAVAILABLE, "host"),
            _ => (StatusCode::UNPROCESSABLE_ENTITY, "plugin_failed"),
        };
        HttpError::new(status, code, e.to_string())
    }
}

/// Proof that the request carried the host's token. Taken before the body is read, so a
/// caller without the token cannot make the host read an upload.
pub(super) struct Authorized;

impl FromRequestParts<Arc<Service>> for Authorized {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        service: &Arc<Service>,
    ) -> Result<Self, HttpError> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(token) if service.token.matches(token.trim()) => Ok(Authorized),
            Some(_) => Err(HttpError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the token is not this host's: use the one it printed at its first start (in <home>/token) or the file given to --token-file",
            )),
            None => Err(HttpError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this call changes the host: send `Authorization: Bearer <token>` (the CLI reads --token-file, SEDNA_TOKEN or <home>/token)",
            )),
        }
    }
}

/// Runs `work` on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, HttpError> + Send + 'static,
) -> Result<T, HttpError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(HttpError::internal)?
}

async fn metrics(State(service): State<Arc<Service>>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, super::metrics::CONTENT_TYPE)],
        super::metrics::render(&service.jobs),
    )
}

async fn list_plugins(
    State(service): State<Arc<Service>>,
) -> Result<Json<Vec<StoredPlugin>>, HttpError> {
    blocking(move || service.store.list().map_err(HttpError::internal))
        .await
        .map(Json)
}

async fn plugin_versions(
    State(service): State<Arc<Service>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<StoredPlugin>>, HttpError> {
    blocking(move || {
        check_name("name", &name).map_err(HttpError::bad_name)?;
        let versions: Vec<StoredPlugin> = service
            .store
            .list()
            .map_err(HttpError::internal)?
            .into_iter()
            .filter(|p| p.name == name)
            .collect();
        if versions.is_empty() {
            return Err(no_plugin(&name));
        }
        Ok(Json(versions))
    })
    .await
}

/// A stored plugin and what its component is.
#[derive(Serialize)]
struct Shown {
    plugin: StoredPlugin,
    inspection: Inspection,
}

async fn show_plugin(
    State(service): State<Arc<Service>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Shown>, HttpError> {
    blocking(move || {
        let plugin = service.stored(&name, &version)?;
        let source = service
            .store
            .resolve(&format!("{name}@{version}"))
            .map_err(HttpError::internal)?;
        let inspection = inspect::inspect(&service.runtime, &source)?;
        Ok(Json(Shown { plugin, inspection }))
    })
    .await
}

#[derive(Deserialize)]
struct UploadQuery {
    /// The world the component must implement; by default the one it exports.
    world: Option<String>,
}

/// What an upload stored, and how long its checks and precompilation took.
#[derive(Debug, Serialize, Deserialize)]
pub struct Uploaded {
    pub plugin: StoredPlugin,
    pub compile_ms: f64,
}

async fn upload_latest(
    state: State<Arc<Service>>,
    authorized: Authorized,
    Path(name): Path<String>,
    query: Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Uploaded>), HttpError> {
    let path = Path((name, "latest".to_string()));
    upload(state, authorized, path, query, headers, body).await
}

async fn upload(
    State(service): State<Arc<Service>>,
    _: Authorized,
    Path((name, version)): Path<(String, String)>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Uploaded>), HttpError> {
    let body = read_upload(&headers, body, service.max_upload).await?;
    blocking(move || service.upload(&name, &version, query.world, &body))
        .await
        .map(|uploaded| (StatusCode::CREATED, Json(uploaded)))
}

/// The upload's bytes, up to `limit`. A declared length over the limit is refused before
/// a byte is read, so a client that sent `Expect: 100-continue` never sends the body.
async fn read_upload(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, HttpError> {
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the upload is larger than this host's limit of {limit} bytes (--max-upload)"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if e.into_inner().is::<LengthLimitError>() {
            too_large()
        } else {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the upload was cut short",
            )
        }
    })
}

async fn remove_plugin(
    State(service): State<Arc<Service>>,
    _: Authorized,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, HttpError> {
    blocking(move || {
        service.remove(&name, &version)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

async fn list_jobs(State(service): State<Arc<Service>>) -> Result<Json<Vec<JobStatus>>, HttpError> {
    blocking(move || {
        service
            .jobs
            .iter()
            .map(|job| job.status().map_err(HttpError::internal))
            .collect::<Result<Vec<_>, _>>()
            .map(Json)
    })
    .await
}

async fn job_status(
    State(service): State<Arc<Service>>,
    Path(job): Path<String>,
) -> Result<Json<JobStatus>, HttpError> {
    blocking(move || {
        let job = service.job(&job)?;
        job.status().map(Json).map_err(HttpError::internal)
    })
    .await
}

async fn job_slots(
    State(service): State<Arc<Service>>,
    Path(job): Path<String>,
) -> Result<Json<BTreeMap<String, Option<String>>>, HttpError> {
    let job = service.job(&job)?;
    Ok(Json(
        job.slots()
            .into_iter()
            .map(|(slot, plugin)| (slot.name().to_string(), plugin))
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindRequest {
    /// A stored plugin (`name@version`, or a name stored in one version) or a built-in.
    plugin: String,
    /// The plugin's `init` parameters; by default, for the worker's slots, the serving
    /// plugin's.
    params: Option<BTreeMap<String, String>>,
}

/// What a bind swapped in, and how long loading, checking and swapping took.
#[derive(Debug, Serialize, Deserialize)]
pub struct Bound {
    pub job: String,
    pub slot: String,
    pub plugin: String,
    pub sha256: String,
    pub took_ms: f64,
}

async fn bind(
    State(service): State<Arc<Service>>,
    _: Authorized,
    Path((job, slot)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Bound>, HttpError> {
    // JSON whatever the content type says, so that `curl -d` works as it is.
    let request: BindRequest = body
        .map_err(|e| HttpError::new(e.status(), "bad_request", e.body_text()))
        .and_then(|body| {
            serde_json::from_slice(&body).map_err(|e| {
                HttpError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "{e}: send {{\"plugin\": \"NAME@VERSION\", \"params\": {{\"KEY\": \"VALUE\"}}}}"
                    ),
                )
            })
        })?;
    blocking(move || service.bind(&job, &slot, request))
        .await
        .map(Json)
}

fn no_plugin(reference: &str) -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "no_such_plugin",
        format!("no stored plugin {reference:?} (GET /v1/plugins lists them)"),
    )
}

impl Service {
    fn job(&self, name: &str) -> Result<&JobHandle, HttpError> {
        self.jobs
            .iter()
            .find(|j| j.name() == name)
            .ok_or_else(|| HttpError::no_job(name))
    }

    /// The store's entry for `name@version` (uploaded plugins; built-ins are not stored).
    fn stored(&self, name: &str, version: &str) -> Result<StoredPlugin, HttpError> {
        check_name("name", name).map_err(HttpError::bad_name)?;
        check_name("version", version).map_err(HttpError::bad_name)?;
        self.store
            .entry(name, version)
            .map_err(HttpError::internal)?
            .ok_or_else(|| no_plugin(&format!("{name}@{version}")))
    }

    /// Removes a stored plugin that no job's slot holds: one in use stays, so that the
    /// store never lists less than what runs.
    fn remove(&self, name: &str, version: &str) -> Result<(), HttpError> {
        let _binding = self.binding.lock().unwrap_or_else(|e| e.into_inner());
        self.stored(name, version)?;
        let reference = format!("{name}@{version}");
        if let Some((job, slot)) = self
            .jobs
            .iter()
            .find_map(|job| Some((job, job.holding(&reference)?)))
        {
            return Err(HttpError::new(
                StatusCode::CONFLICT,
                "plugin_in_use",
                format!(
                    "{reference} is bound to the `{slot}` slot of job `{}`: bind another plugin there first",
                    job.name()
                ),
            ));
        }
        self.store
            .remove(name, version)
            .map_err(HttpError::internal)
    }

    /// Checks a component (a component, of `world` or of the one world it exports),
    /// compiles it into the cache, so that a bind loads it without compiling, and stores it.
    fn upload(
        &self,
        name: &str,
        version: &str,
        world: Option<String>,
        wasm: &[u8],
    ) -> Result<Uploaded, HttpError> {
        check_name("name", name).map_err(HttpError::bad_name)?;
        check_name("version", version).map_err(HttpError::bad_name)?;
        if Builtin::find(name).is_some() {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                "bad_name",
                format!("`{name}` is the name of a built-in plugin: choose another name"),
            ));
        }
        let source = Source::new(format!("{name}@{version}"), wasm);
        let started = Instant::now();
        let world = match world {
            Some(world) => world,
            None => inspect::inspect(&self.runtime, &source)?
                .single_world()
                .map_err(|why| {
                    HttpError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "wrong_world",
                        format!("{name}@{version}: {why} (?world=WORLD)"),
                    )
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

    fn bind(&self, job: &str, slot: &str, request: BindRequest) -> Result<Bound, HttpError> {
        let _binding = self.binding.lock().unwrap_or_else(|e| e.into_inner());
        let job = self.job(job)?;
        let slot: SlotName = slot
            .parse()
            .map_err(|e: String| HttpError::new(StatusCode::NOT_FOUND, "no_such_slot", e))?;
        // Only the store and the built-ins: never a path on the host.
        let reference = &request.plugin;
        match reference.split_once('@') {
            Some((name, version)) => {
                check_name("name", name).map_err(HttpError::bad_name)?;
                check_name("version", version).map_err(HttpError::bad_name)?;
            }
            None => check_name("name", reference).map_err(HttpError::bad_name)?,
        }
        let source = self.store.resolve(reference).map_err(|e| {
            HttpError::new(StatusCode::NOT_FOUND, "no_such_plugin", format!("{e:#}"))
        })?;
        let params = request.params.map(|params| {
            params
                .into_iter()
                .map(|(key, value)| Param { key, value })
                .collect()
        });
        let started = Instant::now();
        job.bind(slot, &source, params).map_err(|e| match e {
            BindError::NoWorker { .. } => {
                HttpError::new(StatusCode::CONFLICT, "no_such_slot", e.to_string())
            }
            BindError::Plugin(e) => e.into(),
        })?;
        Ok(Bound {
            job: job.name().to_string(),
            slot: slot.name().to_string(),
            plugin: source.name,
            sha256: source.sha256,
            took_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }
}
