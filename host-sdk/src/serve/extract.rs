//! Request extraction shared by the route handlers: the state, the query string and path
//! arguments, with rejections answered as ComfyUI-shaped JSON errors.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};

use super::body::ApiError;
use super::state::Shared;

/// The shared state, as handlers take it.
pub(crate) type S = State<Arc<Shared>>;
/// The query string, or why it could not be parsed.
pub(crate) type Q = Result<Query<HashMap<String, String>>, QueryRejection>;
/// One path argument, or why it could not be parsed.
pub(crate) type P = Result<UrlPath<String>, PathRejection>;

/// The query string's parameters (400 `invalid_query` when it cannot be parsed).
pub(crate) fn query(q: Q) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m)
        .map_err(|e| ApiError::bad_request("invalid_query", format!("bad query string: {e}")))
}

/// A path argument (400 `invalid_path` when it cannot be parsed).
pub(crate) fn path_arg(p: P) -> Result<String, ApiError> {
    p.map(|UrlPath(s)| s)
        .map_err(|e| ApiError::bad_request("invalid_path", format!("bad path: {e}")))
}
