//! The API's routes and what each does. Work that compiles components or reads files runs
//! on the blocking pool, never on the threads that serve connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::LengthLimitError;
use serde::{Deserialize, Serialize};

use super::error::HttpError;
use super::service::Service;
use super::wire::{BindRequest, Bound, RolledBack, Uploaded};
use crate::learn::JobStatus;
use crate::plugin::compile::Cancel;
use crate::plugin::inspect::{self, Inspection};
use crate::plugin::{StoredPlugin, check_name};

/// Bodies of the calls other than an upload (small JSON).
const MAX_JSON_BODY: usize = 64 << 10;

/// The API's routes over `service`: what [`Service::start`] serves, and what tests call
/// in-process (`tower::ServiceExt::oneshot`).
pub fn router(service: Arc<Service>) -> Router {
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
        .route("/v1/jobs/{job}/slots/{slot}/rollback", post(rollback))
        .fallback(|| async {
            HttpError::not_found(
                "not_found",
                "no such route: the API is under /v1 (plugins, jobs), plus /metrics and /healthz",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .with_state(service)
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
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Err(wait) = service.failed_checks.admit(client) {
            return Err(HttpError::TooManyFailures {
                retry_after: wait.as_secs().max(1),
            });
        }
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        let refusal = match presented {
            Some(token) if service.token.matches(token.trim()) => return Ok(Authorized),
            Some(_) => HttpError::Unauthorized(
                "the token is not this host's: use the one it printed at its first start (in <home>/token) or the file given to --token-file",
            ),
            None => HttpError::Unauthorized(
                "this call changes the host: send `Authorization: Bearer <token>` (the CLI reads --token-file, SEDNA_TOKEN or <home>/token)",
            ),
        };
        let failed = service.failed_checks.record(client);
        let who = client.map_or("an in-process caller".to_string(), |ip| ip.to_string());
        tracing::warn!(
            "{} {}: {} token from {who} ({failed} failed in its last minute)",
            parts.method,
            parts.uri.path(),
            if presented.is_some() { "a wrong" } else { "no" },
        );
        Err(refusal)
    }
}

/// The credentials of an `Authorization` value whose scheme is `Bearer` (schemes are
/// case-insensitive, RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(credentials)
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
        super::metrics::render(&service.jobs, service.runtime.errors()),
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
        check_name("name", &name).map_err(HttpError::BadName)?;
        let versions: Vec<StoredPlugin> = service
            .store
            .list()
            .map_err(HttpError::internal)?
            .into_iter()
            .filter(|p| p.name == name)
            .collect();
        if versions.is_empty() {
            return Err(HttpError::no_plugin(&name));
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
    // The server drops this future when the client disconnects: the compile stops.
    let cancel = Cancel::default();
    let _cancel_on_drop = cancel.on_drop();
    blocking(move || service.upload(&name, &version, query.world, &body, &cancel))
        .await
        .map(|uploaded| (StatusCode::CREATED, Json(uploaded)))
}

/// The upload's bytes, up to `limit`. A declared length over the limit is refused before
/// a byte is read, so a client that sent `Expect: 100-continue` never sends the body.
async fn read_upload(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, HttpError> {
    let too_large = || HttpError::TooLarge { limit };
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
            HttpError::BadRequest {
                status: StatusCode::BAD_REQUEST,
                detail: "the upload was cut short".into(),
            }
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

async fn bind(
    State(service): State<Arc<Service>>,
    _: Authorized,
    Path((job, slot)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Bound>, HttpError> {
    // JSON whatever the content type says, so that `curl -d` works as it is.
    let request: BindRequest = body
        .map_err(|e| HttpError::BadRequest {
            status: e.status(),
            detail: e.body_text(),
        })
        .and_then(|body| {
            serde_json::from_slice(&body).map_err(|e| HttpError::BadRequest {
                status: StatusCode::BAD_REQUEST,
                detail: format!(
                    "{e}: send {{\"plugin\": \"NAME@VERSION\", \"params\": {{\"KEY\": \"VALUE\"}}}}"
                ),
            })
        })?;
    blocking(move || service.bind(&job, &slot, request))
        .await
        .map(Json)
}

async fn rollback(
    State(service): State<Arc<Service>>,
    _: Authorized,
    Path((job, slot)): Path<(String, String)>,
) -> Result<Json<RolledBack>, HttpError> {
    blocking(move || service.rollback(&job, &slot))
        .await
        .map(Json)
}
