//! JSON error responses (and the answers to refused file paths) and bounded request-body
//! reading.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{json, Value as Json};

use super::files::PathFault;

/// An error answered as JSON: `{"error": {"type", "message", "details", "extra_info"}, ...}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub body: Json,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, ty: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({"error": {"type": ty, "message": message.into(), "details": "", "extra_info": {}}}),
            retry_after: None,
        }
    }
    pub fn bad_request(ty: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ty, message)
    }
    pub fn with_body(status: StatusCode, body: Json) -> Self {
        ApiError {
            status,
            body,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body.to_string(),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = s.to_string().parse() {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

/// A JSON 200 response.
pub(crate) fn json_ok(v: &Json) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// An empty 200 response.
pub(crate) fn empty_ok() -> Response {
    StatusCode::OK.into_response()
}

/// The answer to a refused file path: 400 `invalid_path`, 403 `forbidden_path` or 404.
pub(crate) fn path_fault(f: PathFault) -> ApiError {
    match f {
        PathFault::BadName(m) => ApiError::bad_request("invalid_path", m),
        PathFault::Escape(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden_path", m),
        PathFault::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
    }
}

/// How much of an oversized body is read and thrown away before answering 413, so the
/// client (which is still sending) receives the answer instead of a connection reset.
const DRAIN_LIMIT: usize = 64 << 20;

/// Reads a request body of at most `limit` bytes (413 `payload_too_large` beyond).
pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(declared.unwrap_or(0).min(limit as u64) as usize);
    let mut stream = body.into_data_stream();
    let mut over = false;
    let mut drained = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("bad_body", format!("reading the request body failed: {e}"))
        })?;
        if over {
            drained += chunk.len();
            if drained > DRAIN_LIMIT {
                break;
            }
            continue;
        }
        if out.len() + chunk.len() > limit {
            over = true;
            out = Vec::new();
            continue;
        }
        out.extend_from_slice(&chunk);
    }
    if over {
        return Err(too_large());
    }
    Ok(out)
}

/// Parses an optional JSON object body (empty → `{}`), 400 `invalid_json` otherwise.
pub(crate) fn parse_json_object(bytes: &[u8]) -> Result<serde_json::Map<String, Json>, ApiError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Json>(bytes) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(other) => Err(ApiError::bad_request(
            "invalid_json",
            format!(
                "request body must be a JSON object, got {}",
                crate::prompt::json_kind(&other)
            ),
        )),
        Err(e) => Err(ApiError::bad_request(
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )),
    }
}
