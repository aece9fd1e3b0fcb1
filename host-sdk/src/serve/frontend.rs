//! Endpoints the stock ComfyUI frontend needs to boot and follow jobs (`--frontend-root`):
//! single-user answers, settings and user files kept in memory, and the Jobs API built from
//! the queue and the history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value as Json};

use super::api::{empty_ok, path_arg, query, Q, S};
use super::body::{json_ok, parse_json_object, read_limited, ApiError};
use super::Shared;

/// Most bytes kept for one user file, and most files.
const USERDATA_FILE_LIMIT: usize = 4 << 20;
const USERDATA_FILES: usize = 1000;

/// Settings and user files of the (single) frontend user, in memory.
#[derive(Default)]
pub(crate) struct CompatStore {
    settings: Mutex<Map<String, Json>>,
    userdata: Mutex<HashMap<String, Vec<u8>>>,
}

/// Adds the frontend's routes to the API router.
pub(crate) fn routes(api: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    api.route(
        "/users",
        get(|| async { json_ok(&json!({"storage": "server", "migrated": true})) }),
    )
    .route("/settings", get(get_settings).post(post_settings))
    .route("/settings/{id}", get(get_setting).post(post_setting))
    .route("/userdata", get(list_userdata))
    .route(
        "/userdata/{file}",
        get(get_userdata)
            .post(post_userdata)
            .delete(delete_userdata),
    )
    .route("/i18n", get(|| async { json_ok(&json!({})) }))
    .route("/global_subgraphs", get(|| async { json_ok(&json!({})) }))
    .route("/workflow_templates", get(|| async { json_ok(&json!({})) }))
    .route("/node_replacements", get(|| async { json_ok(&json!({})) }))
    .route("/jobs", get(list_jobs))
    .route("/jobs/cancel", post(cancel_jobs))
    .route("/jobs/{id}", get(get_job))
    .route("/jobs/{id}/cancel", post(cancel_job))
}

/// `GET /internal/folder_paths`.
pub(crate) async fn folder_paths(State(s): S) -> Response {
    let dir = |p: &std::path::Path| json!([[p.display().to_string()], []]);
    json_ok(&json!({
        "output": dir(&s.cfg.executor.output_dir),
        "input": dir(&s.cfg.input_dir),
        "temp": dir(&s.cfg.executor.temp_dir),
        "models": dir(&s.cfg.executor.models_dir),
    }))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn get_settings(State(s): S) -> Response {
    json_ok(&Json::Object(lock(&s.compat.settings).clone()))
}

async fn post_settings(State(s): S, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let bytes = read_limited(&headers, body, 1 << 20).await?;
    let m = parse_json_object(&bytes)?;
    lock(&s.compat.settings).extend(m);
    Ok(empty_ok())
}

async fn get_setting(
    State(s): S,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_arg(id)?;
    Ok(json_ok(
        lock(&s.compat.settings).get(&id).unwrap_or(&Json::Null),
    ))
}

async fn post_setting(
    State(s): S,
    id: Result<UrlPath<String>, PathRejection>,
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

async fn list_userdata(State(s): S, q: Q) -> Result<Response, ApiError> {
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

fn userdata_name(file: Result<UrlPath<String>, PathRejection>) -> Result<String, ApiError> {
    let f = path_arg(file)?;
    if f.is_empty() || f.len() > 512 || f.split('/').any(|p| p == ".." || p.is_empty()) {
        return Err(ApiError::bad_request(
            "invalid_path",
            format!("bad user file name '{f}'"),
        ));
    }
    Ok(f)
}

async fn get_userdata(
    State(s): S,
    file: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
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

async fn post_userdata(
    State(s): S,
    file: Result<UrlPath<String>, PathRejection>,
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

async fn delete_userdata(
    State(s): S,
    file: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let f = userdata_name(file)?;
    lock(&s.compat.userdata).remove(&f);
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- Jobs API ----

fn job_from_tuple(t: &Json, status: &str) -> Json {
    json!({"id": t[1], "status": status, "create_time": t[3]["create_time"], "priority": t[0],
           "outputs_count": null, "previewable_outputs_count": null})
}

fn job_from_history(id: &str, e: &Json) -> Json {
    let messages = e["status"]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let msg = |ty: &str| messages.iter().find(|m| m[0] == ty).map(|m| m[1].clone());
    let status = if e["status"]["status_str"] == "success" {
        "completed"
    } else if msg("execution_interrupted").is_some() {
        "cancelled"
    } else {
        "failed"
    };
    let mut outputs_count = 0usize;
    let mut preview = Json::Null;
    if let Some(outs) = e["outputs"].as_object() {
        for (node, o) in outs {
            if let Some(images) = o["images"].as_array() {
                outputs_count += images.len();
                if preview.is_null() {
                    if let Some(im) = images.first() {
                        preview = json!({"filename": im["filename"], "subfolder": im["subfolder"],
                            "type": im["type"], "nodeId": node, "mediaType": "images"});
                    }
                }
            }
        }
    }
    let end = [
        "execution_success",
        "execution_error",
        "execution_interrupted",
    ]
    .iter()
    .find_map(|t| msg(t))
    .map(|d| d["timestamp"].clone())
    .unwrap_or(Json::Null);
    let mut job = json!({
        "id": id, "status": status, "create_time": e["prompt"][3]["create_time"],
        "priority": e["prompt"][0],
        "execution_start_time": msg("execution_start").map(|d| d["timestamp"].clone()).unwrap_or(Json::Null),
        "execution_end_time": end,
        "outputs_count": outputs_count, "previewable_outputs_count": outputs_count,
    });
    if !preview.is_null() {
        job["preview_output"] = preview;
    }
    if let Some(err) = msg("execution_error") {
        job["execution_error"] = err;
    }
    job
}

fn all_jobs(s: &Shared) -> Vec<Json> {
    let (running, pending) = s.queue.snapshot();
    let mut jobs: Vec<Json> = running
        .iter()
        .map(|t| job_from_tuple(t, "in_progress"))
        .chain(pending.iter().map(|t| job_from_tuple(t, "pending")))
        .collect();
    let history = s.queue.with_history(|h| h.list(None, 0));
    jobs.extend(history.iter().map(|(id, e)| job_from_history(id, e)));
    jobs
}

async fn list_jobs(State(s): S, q: Q) -> Result<Response, ApiError> {
    let q = query(q)?;
    let statuses: Option<Vec<String>> = q
        .get("status")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let num = |k: &str, d: usize| -> Result<usize, ApiError> {
        q.get(k).map_or(Ok(d), |v| {
            v.parse()
                .map_err(|_| ApiError::bad_request("invalid_query", format!("{k} must be a count")))
        })
    };
    let limit = num("limit", 100)?.min(1000);
    let offset = num("offset", 0)?;
    let mut jobs: Vec<Json> = all_jobs(&s)
        .into_iter()
        .filter(|j| {
            statuses
                .as_ref()
                .is_none_or(|st| st.iter().any(|x| j["status"] == x.as_str()))
        })
        .collect();
    let key = match q.get("sort_by").map(String::as_str) {
        Some("execution_duration") => "execution_end_time",
        _ => "create_time",
    };
    jobs.sort_by(|a, b| {
        let (x, y) = (
            a[key].as_f64().unwrap_or(0.0),
            b[key].as_f64().unwrap_or(0.0),
        );
        y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal)
    });
    if q.get("sort_order").is_some_and(|o| o == "asc") {
        jobs.reverse();
    }
    let total = jobs.len();
    let page: Vec<Json> = jobs.into_iter().skip(offset).take(limit).collect();
    Ok(json_ok(&json!({
        "jobs": page,
        "pagination": {"offset": offset, "limit": limit, "total": total, "has_more": offset + limit < total}
    })))
}

async fn get_job(
    State(s): S,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_arg(id)?;
    if let Some(e) = s.queue.with_history(|h| h.get(&id).cloned()) {
        let mut job = job_from_history(&id, &e);
        job["workflow"] = e["prompt"][3]["extra_pnginfo"]["workflow"].clone();
        job["outputs"] = e["outputs"].clone();
        job["update_time"] = job["execution_end_time"].clone();
        job["execution_status"] = e["status"].clone();
        job["execution_meta"] = e["meta"].clone();
        return Ok(json_ok(&job));
    }
    match all_jobs(&s).into_iter().find(|j| j["id"] == id.as_str()) {
        Some(j) => Ok(json_ok(&j)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no job '{id}'"),
        )),
    }
}

fn cancel(s: &Shared, id: &str) -> bool {
    s.queue.delete_pending(&[id.to_string()]) > 0 || s.queue.interrupt(Some(id))
}

async fn cancel_job(
    State(s): S,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_arg(id)?;
    let done = cancel(&s, &id);
    s.broadcast_status();
    Ok(json_ok(&json!({"cancelled": done})))
}

async fn cancel_jobs(State(s): S, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let bytes = read_limited(&headers, body, 1 << 20).await?;
    let req = parse_json_object(&bytes)?;
    let ids = req
        .get("job_ids")
        .and_then(Json::as_array)
        .and_then(|a| {
            a.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| ApiError::bad_request("invalid_request", "job_ids must be a list of ids"))?;
    let cancelled: Vec<&String> = ids.iter().filter(|id| cancel(&s, id)).collect();
    s.broadcast_status();
    Ok(json_ok(&json!({"cancelled": cancelled})))
}
