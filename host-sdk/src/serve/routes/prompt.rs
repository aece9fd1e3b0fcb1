//! Prompts and the queue: `/prompt`, `/queue`, `/history`, `/interrupt`, `/free`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value as Json};

use crate::executor::{new_prompt_id, RunOptions};
use crate::prompt::Prompt;
use crate::serve::body::{empty_ok, json_ok, parse_json_object, read_limited, ApiError};
use crate::serve::extract::{path_arg, query, P, Q, S};
use crate::serve::queue::{number_json, QueueItem, SubmitError};

/// A canonical lowercase UUID (ComfyUI accepts client ids only in this form).
fn is_canonical_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

pub(crate) async fn get_prompt(State(s): S) -> Response {
    json_ok(&json!({"exec_info": {"queue_remaining": s.queue.remaining()}}))
}

fn prompt_error(ty: &str, message: &str, details: String) -> ApiError {
    ApiError::with_body(
        StatusCode::BAD_REQUEST,
        json!({"error": {"type": ty, "message": message, "details": details, "extra_info": {}},
               "node_errors": {}}),
    )
}

pub(crate) async fn post_prompt(
    State(s): S,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_limited(&headers, body, s.cfg.max_json_bytes).await?;
    let req = parse_json_object(&bytes)?;
    let Some(prompt_json) = req.get("prompt") else {
        return Err(prompt_error(
            "no_prompt",
            "No prompt provided",
            "the request has no \"prompt\" field".into(),
        ));
    };
    let prompt_id = match req.get("prompt_id") {
        None | Some(Json::Null) => new_prompt_id(),
        Some(Json::String(id)) if is_canonical_uuid(id) => id.clone(),
        Some(other) => {
            return Err(prompt_error(
                "invalid_prompt_id",
                "Invalid prompt_id",
                format!("prompt_id must be a lowercase canonical UUID, got {other}"),
            ))
        }
    };
    let number = match req.get("number") {
        None | Some(Json::Null) => None,
        Some(v) => match v.as_f64().filter(|n| n.is_finite()) {
            Some(n) => Some(n),
            None => {
                return Err(prompt_error(
                    "invalid_number",
                    "Invalid number",
                    format!("number must be a finite number, got {v}"),
                ))
            }
        },
    };
    let front = req.get("front").and_then(Json::as_bool).unwrap_or(false);
    let client_id = req
        .get("client_id")
        .and_then(Json::as_str)
        .map(str::to_string);
    let mut extra_data = match req.get("extra_data") {
        None | Some(Json::Null) => Map::new(),
        Some(Json::Object(m)) => m.clone(),
        Some(_) => {
            return Err(prompt_error(
                "invalid_extra_data",
                "Invalid extra_data",
                "extra_data must be a JSON object".into(),
            ))
        }
    };
    if let Some(c) = &client_id {
        extra_data.insert("client_id".into(), json!(c));
    }
    extra_data
        .entry("create_time")
        .or_insert_with(|| json!(crate::events::now_ms()));
    let targets = match req.get("partial_execution_targets") {
        None | Some(Json::Null) => None,
        Some(Json::Array(a)) => Some(
            a.iter()
                .map(|v| match v {
                    Json::String(s) => Ok(s.clone()),
                    Json::Number(n) => Ok(n.to_string()),
                    _ => Err(()),
                })
                .collect::<Result<Vec<String>, ()>>()
                .map_err(|_| {
                    prompt_error(
                        "invalid_targets",
                        "Invalid partial_execution_targets",
                        "partial_execution_targets must be a list of node ids".into(),
                    )
                })?,
        ),
        Some(_) => {
            return Err(prompt_error(
                "invalid_targets",
                "Invalid partial_execution_targets",
                "partial_execution_targets must be a list of node ids".into(),
            ))
        }
    };
    let prompt = Prompt::from_json(prompt_json.clone()).map_err(|e| {
        ApiError::with_body(
            StatusCode::BAD_REQUEST,
            json!({"error": e.to_comfy(), "node_errors": {}}),
        )
    })?;
    let opts = RunOptions {
        prompt_id: Some(prompt_id.clone()),
        extra_pnginfo: extra_data.get("extra_pnginfo").cloned(),
        targets,
        partial: true,
    };
    let exec = s.exec.clone();
    let (prompt, opts, validated) = tokio::task::spawn_blocking(move || {
        let v = exec.validate(&prompt, &opts);
        (prompt, opts, v)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("validation failed unexpectedly: {e}"),
        )
    })?;
    let plan = validated.map_err(|v| ApiError::with_body(StatusCode::BAD_REQUEST, v.to_json()))?;
    let outputs: Vec<String> = plan
        .outputs
        .iter()
        .map(|&i| plan.nodes[i].id.clone())
        .collect();
    let node_errors = plan.node_errors.clone();
    let extra_data = Json::Object(extra_data);
    let request_bytes = bytes.len();
    // With persistence the submit waits for its commit (an fsync): off the async threads.
    let state = s.clone();
    let id = prompt_id.clone();
    let submitted = tokio::task::spawn_blocking(move || {
        state.queue.submit(
            number,
            front,
            request_bytes,
            |number, seq| QueueItem {
                rank: 1,
                number,
                seq,
                prompt_id: id.clone(),
                prompt,
                plan,
                extra_data,
                outputs,
                client_id,
                opts,
                bytes: request_bytes,
                starts: 0,
            },
            &id,
        )
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("queueing failed unexpectedly: {e}"),
        )
    })?;
    match submitted {
        Ok(number) => {
            s.broadcast_status();
            Ok(json_ok(
                &json!({"prompt_id": prompt_id, "number": number_json(number),
                                "node_errors": node_errors}),
            ))
        }
        Err(SubmitError::Duplicate) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "duplicate_prompt_id",
            format!("prompt_id already exists: {prompt_id}"),
        )),
        Err(SubmitError::Full { limit }) => Err(queue_full(format!(
            "the queue is full ({limit} prompts waiting); retry later"
        ))),
        Err(SubmitError::FullBytes { limit }) => Err(queue_full(format!(
            "the waiting prompts exceed {limit} bytes; retry later"
        ))),
        Err(SubmitError::Stopping) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is stopping",
        )),
        Err(SubmitError::Store(e)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the prompt was not queued because it could not be saved: {e}"),
        )),
    }
}

/// Runs `f` (which may wait for a commit to disk) off the async threads.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, ApiError> + Send + 'static,
) -> Result<R, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("the request failed unexpectedly: {e}"),
        )
    })?
}

/// 503 `queue_full` with a one-second `Retry-After`.
fn queue_full(message: String) -> ApiError {
    let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_full", message);
    e.retry_after = Some(1);
    e
}

pub(crate) async fn get_queue(State(s): S) -> Response {
    let (running, pending) = s.queue.snapshot();
    json_ok(&json!({"queue_running": running, "queue_pending": pending}))
}

/// `{"clear": true}` and/or `{"delete": [ids]}`.
fn clear_or_delete(req: &Map<String, Json>) -> Result<(bool, Vec<String>), ApiError> {
    let clear = match req.get("clear") {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "clear must be a boolean",
            ))
        }
    };
    let delete = match req.get("delete") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::bad_request("invalid_request", "delete must be a list of prompt ids")
            })?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "delete must be a list of prompt ids",
            ))
        }
    };
    Ok((clear, delete))
}

pub(crate) async fn post_queue(
    State(s): S,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_limited(&headers, body, s.cfg.max_json_bytes).await?;
    let (clear, delete) = clear_or_delete(&parse_json_object(&bytes)?)?;
    let state = s.clone();
    blocking(move || {
        if clear {
            state.queue.clear_pending();
        }
        if !delete.is_empty() {
            state.queue.delete_pending(&delete);
        }
        Ok(())
    })
    .await?;
    s.broadcast_status();
    Ok(empty_ok())
}

pub(crate) async fn get_history(State(s): S, q: Q) -> Result<Response, ApiError> {
    let q = query(q)?;
    let max_items = match q.get("max_items") {
        None => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("max_items must be a count, got '{v}'"),
            )
        })?),
    };
    let offset = match q.get("offset") {
        None => -1,
        Some(v) => v.parse::<i64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("offset must be an integer, got '{v}'"),
            )
        })?,
    };
    let list = s.queue.with_history(|h| h.list(max_items, offset));
    Ok(json_ok(&Json::Object(list)))
}

pub(crate) async fn get_history_one(State(s): S, id: P) -> Result<Response, ApiError> {
    let id = path_arg(id)?;
    let mut out = Map::new();
    if let Some(e) = s.queue.with_history(|h| h.get(&id).cloned()) {
        out.insert(id, e);
    }
    Ok(json_ok(&Json::Object(out)))
}

pub(crate) async fn post_history(
    State(s): S,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_limited(&headers, body, s.cfg.max_json_bytes).await?;
    let (clear, delete) = clear_or_delete(&parse_json_object(&bytes)?)?;
    blocking(move || {
        s.queue.delete_history(clear, &delete).map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the history was changed in memory but not on disk: {e}"),
            )
        })
    })
    .await?;
    Ok(empty_ok())
}

pub(crate) async fn interrupt(
    State(s): S,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_limited(&headers, body, s.cfg.max_json_bytes).await?;
    let req = parse_json_object(&bytes)?;
    match req.get("prompt_id") {
        None | Some(Json::Null) => {
            s.queue.interrupt(None);
        }
        Some(Json::String(id)) => {
            s.queue.interrupt(Some(id));
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "prompt_id must be a string",
            ))
        }
    }
    Ok(empty_ok())
}

pub(crate) async fn free(
    State(s): S,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_limited(&headers, body, s.cfg.max_json_bytes).await?;
    let req = parse_json_object(&bytes)?;
    let flag = |k: &str| req.get(k).and_then(Json::as_bool).unwrap_or(false);
    let (unload, mem) = (flag("unload_models"), flag("free_memory"));
    if unload || mem {
        s.queue.request_free(unload, mem);
    }
    Ok(empty_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape() {
        assert!(is_canonical_uuid("0f8fad5b-d9cb-469f-a165-70867728950e"));
        assert!(!is_canonical_uuid("0F8FAD5B-D9CB-469F-A165-70867728950E"));
        assert!(!is_canonical_uuid("0f8fad5bd9cb469fa16570867728950e"));
        assert!(!is_canonical_uuid("not-a-uuid"));
        assert!(is_canonical_uuid(&new_prompt_id()));
    }
}
