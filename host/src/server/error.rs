//! What the API answers when a call fails: an [`HttpError`] becomes a status and an
//! [`ErrorBody`]. A fault of the host itself is logged and answered without its detail.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::wire::ErrorBody;
use crate::plugin::{Cause, PluginError};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A name or version that is not one (400 `bad_name`).
    #[error("{0:#}")]
    BadName(anyhow::Error),
    /// A request the API cannot read (400 `bad_request`, or the status of the rejection).
    #[error("{detail}")]
    BadRequest { status: StatusCode, detail: String },
    /// No token, or not this host's (401 `unauthorized`).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Too many failed token checks from this client (429 `too_many_failures`, with
    /// `Retry-After`).
    #[error(
        "too many calls with a wrong or no token from this address: wait {retry_after} s, then call with the host's token"
    )]
    TooManyFailures { retry_after: u64 },
    /// The host is doing as much of this as it takes at once (503 `busy`, with
    /// `Retry-After`).
    #[error("{detail}")]
    Busy { detail: String },
    /// No such route, job, plugin or slot (404, with its code).
    #[error("{detail}")]
    NotFound { code: &'static str, detail: String },
    /// The call cannot be done as things stand (409, with its code).
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// An upload over the host's limit (413 `too_large`).
    #[error("the upload is larger than this host's limit of {limit} bytes (--max-upload)")]
    TooLarge { limit: usize },
    /// A component that is not of the world asked for (422 `wrong_world`).
    #[error("{0}")]
    WrongWorld(String),
    /// A component that failed a check or its start (422; 503 when the host could not
    /// serve the call).
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The host's own fault: logged, and answered as 500 `internal` without its detail.
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl HttpError {
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        HttpError::Internal(e.into())
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        HttpError::NotFound {
            code,
            detail: detail.into(),
        }
    }

    pub fn no_plugin(reference: &str) -> Self {
        HttpError::not_found(
            "no_such_plugin",
            format!("no stored plugin {reference:?} (GET /v1/plugins lists them)"),
        )
    }

    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::BadName(_) => StatusCode::BAD_REQUEST,
            HttpError::BadRequest { status, .. } => *status,
            HttpError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HttpError::TooManyFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
            HttpError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::NotFound { .. } => StatusCode::NOT_FOUND,
            HttpError::Conflict { .. } => StatusCode::CONFLICT,
            HttpError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::WrongWorld(_) => StatusCode::UNPROCESSABLE_ENTITY,
            HttpError::Plugin(e) if matches!(e.cause, Cause::Host(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            HttpError::Plugin(_) => StatusCode::UNPROCESSABLE_ENTITY,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The short stable code clients match on, e.g. `wrong_world`.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::BadName(_) => "bad_name",
            HttpError::BadRequest { .. } => "bad_request",
            HttpError::Unauthorized(_) => "unauthorized",
            HttpError::TooManyFailures { .. } => "too_many_failures",
            HttpError::Busy { .. } => "busy",
            HttpError::NotFound { code, .. } | HttpError::Conflict { code, .. } => code,
            HttpError::TooLarge { .. } => "too_large",
            HttpError::WrongWorld(_) => "wrong_world",
            HttpError::Plugin(e) => match e.cause {
                Cause::WrongWorld { .. } => "wrong_world",
                Cause::Invalid(_) => "not_a_component",
                Cause::Host(_) => "host",
                _ => "plugin_failed",
            },
            HttpError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let detail = match &self {
            HttpError::Internal(e) => {
                tracing::error!("the API failed a call: {e:#}");
                "the host failed to serve the call; its log says why".to_string()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: self.code().to_string(),
            detail,
        };
        let mut response = (self.status(), Json(body)).into_response();
        let retry_after = match self {
            HttpError::TooManyFailures { retry_after } => Some(retry_after),
            HttpError::Busy { .. } => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(error: HttpError) -> (StatusCode, ErrorBody) {
        let response = error.into_response();
        let status = response.status();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = runtime
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn a_fault_of_the_host_is_answered_without_its_detail() {
        let (status, body) = answer(HttpError::internal(anyhow::anyhow!(
            "cannot open /var/lib/sedna/secret/state.db"
        )));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body.error, "internal");
        assert!(!body.detail.contains("/var/lib"), "{}", body.detail);

        let (status, body) = answer(HttpError::TooLarge { limit: 10 });
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body.error, "too_large");
        assert!(body.detail.contains("10 bytes"), "{}", body.detail);
    }
}
