//! What the stock ComfyUI frontend (`--frontend-root`) stores on the server: the settings
//! and user files of its single user, kept in memory.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};

use crate::serve::body::{empty_ok, json_ok, parse_json_object, read_limited, ApiError};
use crate::serve::extract::{path_arg, query, P, Q, S};
use crate::sync::lock;

/// Most bytes kept for one user file, and most files.
const USERDATA_FILE_LIMIT: usize = 4 << 20;
const USERDATA_FILES: usize = 1000;

/// `GET /users`: a single user whose settings the server stores.
pub(crate) async fn users() -> Response {
    json_ok(&json!({"storage": "server", "migrated": true}))
}

/// `{}`: the translations, global subgraphs, workflow templates and node replacements the
/// frontend asks for (this server has none).
pub(crate) async fn empty_object() -> Response {
    json_ok(&json!({}))
}

pub(crate) async fn get_settings(State(s): S) -> Response {
    json_ok(&Json::Object(lock(&s.compat.settings).clone()))
}

pub(crate) async fn post_settings(
    State(s): S,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_limited(&headers, body, 1 << 20).await?;
    let m = parse_json_object(&bytes)?;
    lock(&s.compat.settings).extend(m);
    Ok(empty_ok())
}

pub(crate) async fn get_setting(State(s): S, id: P) -> Result<Response, ApiError> {
    let id = path_arg(id)?;
    Ok(json_ok(
        lock(&s.compat.settings).get(&id).unwrap_or(&Json::Null),
    ))
}

pub(crate) async fn post_setting(
    State(s): S,
    id: P,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path_arg(id)?;
    let bytes = read_limited(&headers, body, 1 << 20).await?;
    let v: Json = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("setting value is not JSON: {e}"))
    })?;
    lock(&s.compat.settings).insert(id, v);
    Ok(empty_ok())
}

pub(crate) async fn list_userdata(State(s): S, q: Q) -> Result<Response, ApiError> {
    let q = query(q)?;
    let dir = q.get("dir").cloned().unwrap_or_default();
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    let full_info = q.get("full_info").is_some_and(|v| v == "true");
    let files = lock(&s.compat.userdata);
    let mut names: Vec<(&String, usize)> = files
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k, v.len()))
        .collect();
    names.sort();
    let list: Vec<Json> = names
        .into_iter()
        .map(|(k, size)| {
            let rel = &k[prefix.len()..];
            if full_info {
                json!({"path": rel, "size": size, "modified": 0})
            } else {
                json!(rel)
            }
        })
        .collect();
    Ok(json_ok(&json!(list)))
}

fn userdata_name(file: P) -> Result<String, ApiError> {
    let f = path_arg(file)?;
    if f.is_empty() || f.len() > 512 || f.split('/').any(|p| p == ".." || p.is_empty()) {
        return Err(ApiError::bad_request(
            "invalid_path",
            format!("bad user file name '{f}'"),
        ));
    }
    Ok(f)
}

pub(crate) async fn get_userdata(State(s): S, file: P) -> Result<Response, ApiError> {
    let f = userdata_name(file)?;
    match lock(&s.compat.userdata).get(&f) {
        Some(b) => Ok((StatusCode::OK, b.clone()).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no user file '{f}'"),
        )),
    }
}

pub(crate) async fn post_userdata(
    State(s): S,
    file: P,
    q: Q,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let f = userdata_name(file)?;
    let q = query(q)?;
    let bytes = read_limited(&headers, body, USERDATA_FILE_LIMIT).await?;
    let mut files = lock(&s.compat.userdata);
    let overwrite = q.get("overwrite").is_none_or(|v| v != "false");
    if files.contains_key(&f) && !overwrite {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            format!("user file '{f}' exists"),
        ));
    }
    if !files.contains_key(&f) && files.len() >= USERDATA_FILES {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "too_many_files",
            "too many user files",
        ));
    }
    files.insert(f.clone(), bytes.clone());
    Ok(json_ok(
        &json!({"path": f, "size": bytes.len(), "modified": 0}),
    ))
}

pub(crate) async fn delete_userdata(State(s): S, file: P) -> Result<Response, ApiError> {
    let f = userdata_name(file)?;
    lock(&s.compat.userdata).remove(&f);
    Ok(StatusCode::NO_CONTENT.into_response())
}
