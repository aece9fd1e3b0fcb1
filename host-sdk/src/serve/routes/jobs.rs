//! The Jobs API the stock ComfyUI frontend follows jobs with (`/jobs`), built from the
//! queue and the history.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value as Json};

use crate::serve::body::{json_ok, parse_json_object, read_limited, ApiError};
use crate::serve::extract::{path_arg, query, P, Q, S};
use crate::serve::state::Shared;

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

pub(crate) async fn list_jobs(State(s): S, q: Q) -> Result<Response, ApiError> {
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

pub(crate) async fn get_job(State(s): S, id: P) -> Result<Response, ApiError> {
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

pub(crate) async fn cancel_job(State(s): S, id: P) -> Result<Response, ApiError> {
    let id = path_arg(id)?;
    let done = cancel(&s, &id);
    s.broadcast_status();
    Ok(json_ok(&json!({"cancelled": done})))
}

pub(crate) async fn cancel_jobs(
    State(s): S,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
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
