//! The routes: ComfyUI's HTTP API (bare and under `/api`), the WebSocket, the editor.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value as Json};

use super::body::{json_ok, parse_json_object, read_limited, ApiError};
use super::files::{self, PathFault};
use super::hub::{status_message, Out};
use super::multipart::parse_multipart;
use super::queue::{number_json, QueueItem, SubmitError};
use super::security::origin_allowed;
use super::{web, Shared};
use crate::executor::{new_prompt_id, RunOptions};
use crate::prompt::Prompt;

pub(crate) type S = State<Arc<Shared>>;
pub(crate) type Q = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Builds the application.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/object_info", get(object_info))
        .route("/object_info/{class}", get(object_info_one))
        .route("/prompt", get(get_prompt).post(post_prompt))
        .route("/queue", get(get_queue).post(post_queue))
        .route("/history", get(get_history).post(post_history))
        .route("/history/{id}", get(get_history_one))
        .route("/interrupt", post(interrupt))
        .route("/free", post(free))
        .route("/view", get(view))
        .route("/upload/image", post(upload_image))
        .route("/system_stats", get(system_stats))
        .route("/models", get(models))
        .route("/models/{folder}", get(models_folder))
        .route("/view_metadata/{folder}", get(view_metadata))
        .route("/embeddings", get(embeddings))
        .route("/extensions", get(extensions))
        .route("/features", get(features))
        .route("/ws", get(ws));
    let api = super::frontend::routes(api);
    Router::new()
        .merge(api.clone())
        .nest("/api", api)
        .route("/", get(index))
        .route("/internal/folder_paths", get(super::frontend::folder_paths))
        .route("/odelt/editor", get(web::index))
        .route("/odelt/editor.js", get(web::script))
        .route("/odelt/editor.css", get(web::style))
        .fallback(fallback)
        .layer(middleware::from_fn(origin_check))
        .with_state(shared)
}

async fn origin_check(req: Request, next: Next) -> Response {
    let h = req.headers();
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    if !origin_allowed(get("host"), get("origin"), get("sec-fetch-site")) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "cross-origin request refused: the Origin does not match the Host of this loopback server",
        )
        .into_response();
    }
    next.run(req).await
}

pub(crate) fn query(q: Q) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m)
        .map_err(|e| ApiError::bad_request("invalid_query", format!("bad query string: {e}")))
}

pub(crate) fn path_arg(p: Result<UrlPath<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|UrlPath(s)| s)
        .map_err(|e| ApiError::bad_request("invalid_path", format!("bad path: {e}")))
}

pub(crate) fn empty_ok() -> Response {
    StatusCode::OK.into_response()
}

// ---- nodes ----

async fn object_info(State(s): S) -> Response {
    json_ok(&s.exec.object_info())
}

async fn object_info_one(
    State(s): S,
    class: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let class = path_arg(class)?;
    let mut out = Map::new();
    if let Some(e) = s.exec.plugins().node(&class) {
        out.insert(class, serde_json::to_value(&*e.info).unwrap_or(Json::Null));
    }
    Ok(json_ok(&Json::Object(out)))
}

// ---- prompts ----

/// A canonical lowercase UUID (ComfyUI accepts client ids only in this form).
pub(crate) fn is_canonical_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

async fn get_prompt(State(s): S) -> Response {
    json_ok(&json!({"exec_info": {"queue_remaining": s.queue.remaining()}}))
}

fn prompt_error(ty: &str, message: &str, details: String) -> ApiError {
    ApiError::with_body(
        StatusCode::BAD_REQUEST,
        json!({"error": {"type": ty, "message": message, "details": details, "extra_info": {}},
               "node_errors": {}}),
    )
}

async fn post_prompt(State(s): S, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
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
    let submitted = s.queue.submit(
        number,
        front,
        request_bytes,
        |number, seq| QueueItem {
            number,
            seq,
            prompt_id: prompt_id.clone(),
            prompt,
            plan,
            extra_data,
            outputs,
            client_id,
            opts,
            bytes: request_bytes,
        },
        &prompt_id,
    );
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
    }
}

/// 503 `queue_full` with a one-second `Retry-After`.
fn queue_full(message: String) -> ApiError {
    let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_full", message);
    e.retry_after = Some(1);
    e
}

async fn get_queue(State(s): S) -> Response {
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

async fn post_queue(State(s): S, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let bytes = read_limited(&headers, body, s.cfg.max_json_bytes).await?;
    let (clear, delete) = clear_or_delete(&parse_json_object(&bytes)?)?;
    if clear {
        s.queue.clear_pending();
    }
    if !delete.is_empty() {
        s.queue.delete_pending(&delete);
    }
    s.broadcast_status();
    Ok(empty_ok())
}

async fn get_history(State(s): S, q: Q) -> Result<Response, ApiError> {
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

async fn get_history_one(
    State(s): S,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_arg(id)?;
    let mut out = Map::new();
    if let Some(e) = s.queue.with_history(|h| h.get(&id).cloned()) {
        out.insert(id, e);
    }
    Ok(json_ok(&Json::Object(out)))
}

async fn post_history(State(s): S, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let bytes = read_limited(&headers, body, s.cfg.max_json_bytes).await?;
    let (clear, delete) = clear_or_delete(&parse_json_object(&bytes)?)?;
    s.queue.with_history(|h| {
        if clear {
            h.clear();
        }
        h.delete(&delete);
    });
    Ok(empty_ok())
}

async fn interrupt(State(s): S, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
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

async fn free(State(s): S, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let bytes = read_limited(&headers, body, s.cfg.max_json_bytes).await?;
    let req = parse_json_object(&bytes)?;
    let flag = |k: &str| req.get(k).and_then(Json::as_bool).unwrap_or(false);
    let (unload, mem) = (flag("unload_models"), flag("free_memory"));
    if unload || mem {
        s.queue.request_free(unload, mem);
    }
    Ok(empty_ok())
}

// ---- files ----

async fn read_file(path: std::path::PathBuf) -> std::io::Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

fn folder_for<'a>(s: &'a Shared, ty: &str) -> Result<&'a std::path::Path, ApiError> {
    match ty {
        "output" => Ok(&s.cfg.executor.output_dir),
        "input" => Ok(&s.cfg.input_dir),
        "temp" => Ok(&s.cfg.executor.temp_dir),
        other => Err(ApiError::bad_request(
            "invalid_type",
            format!("type must be output, input or temp, got '{other}'"),
        )),
    }
}

fn path_fault(f: PathFault) -> ApiError {
    match f {
        PathFault::BadName(m) => ApiError::bad_request("invalid_path", m),
        PathFault::Escape(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden_path", m),
        PathFault::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
    }
}

async fn view(State(s): S, q: Q) -> Result<Response, ApiError> {
    let q = query(q)?;
    let filename = q
        .get("filename")
        .ok_or_else(|| ApiError::bad_request("invalid_query", "filename is required"))?;
    let subfolder = q.get("subfolder").map(String::as_str).unwrap_or("");
    let ty = q.get("type").map(String::as_str).unwrap_or("output");
    let base = folder_for(&s, if ty.is_empty() { "output" } else { ty })?;
    let path = files::resolve_existing(base, subfolder, filename).map_err(path_fault)?;
    let data = read_file(path).await.map_err(|e| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("cannot read '{filename}': {e}"),
        )
    })?;
    // `preview=` (re-encoding to webp/jpeg) and `channel=` are accepted but the file is
    // served as stored.
    let disposition = format!(
        "filename=\"{}\"",
        filename.replace(['"', '\\', '\r', '\n'], "_")
    );
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, files::mime_for(filename).to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-cache".to_string()),
        ],
        data,
    )
        .into_response())
}

async fn upload_image(State(s): S, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let bytes = read_limited(&headers, body, s.cfg.max_upload_bytes).await?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let parts = parse_multipart(ct, &bytes)
        .map_err(|e| ApiError::bad_request("invalid_upload", e.to_string()))?;
    let field = |name: &str| {
        parts
            .iter()
            .find(|p| p.name == name && p.filename.is_none())
            .map(|p| String::from_utf8_lossy(&p.data).into_owned())
    };
    let image = parts
        .iter()
        .find(|p| p.name == "image" && p.filename.is_some())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_upload",
                "the form has no file field named \"image\"",
            )
        })?;
    let ty = field("type")
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "input".into());
    let subfolder = field("subfolder").unwrap_or_default();
    let overwrite = field("overwrite").is_some_and(|v| v == "true" || v == "1");
    let name = image.filename.clone().unwrap_or_default();
    files::check_file_name(&name).map_err(path_fault)?;
    let base = folder_for(&s, &ty)?.to_path_buf();
    let data = image.data.clone();
    let sub = subfolder.clone();
    let written = tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
        let dir = files::prepare_dir(&base, &sub).map_err(path_fault)?;
        write_upload(&dir, &name, &data, overwrite)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            e.to_string(),
        )
    })??;
    Ok(json_ok(
        &json!({"name": written, "subfolder": subfolder, "type": ty}),
    ))
}

fn write_upload(
    dir: &std::path::Path,
    name: &str,
    data: &[u8],
    overwrite: bool,
) -> Result<String, ApiError> {
    use std::io::Write;
    let io_err = |e: std::io::Error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "write_failed",
            format!("cannot store the upload: {e}"),
        )
    };
    if overwrite {
        let tmp = dir.join(format!(".upload-{}", new_prompt_id()));
        std::fs::write(&tmp, data).map_err(io_err)?;
        std::fs::rename(&tmp, dir.join(name)).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err(e)
        })?;
        return Ok(name.to_string());
    }
    for k in 0..10_000u32 {
        let candidate = if k == 0 {
            name.to_string()
        } else {
            files::numbered_name(name, k)
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(&candidate))
        {
            Ok(mut f) => {
                f.write_all(data).map_err(io_err)?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(e)),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "name_taken",
        format!("too many files named like '{name}'"),
    ))
}

// ---- information ----

fn meminfo() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

async fn system_stats(State(s): S) -> Response {
    let (total, free) = meminfo();
    let device = &s.cfg.executor.device;
    let (ty, index) = match device.split_once(':') {
        Some((t, i)) => (t.to_string(), i.parse::<u32>().unwrap_or(0)),
        None => (device.clone(), 0),
    };
    let plugins: Vec<Json> = s
        .exec
        .plugins()
        .plugins()
        .iter()
        .map(|p| json!({"name": p.name(), "version": p.version(), "path": p.path().display().to_string(), "nodes": p.nodes().len()}))
        .collect();
    json_ok(&json!({
        "system": {"os": std::env::consts::OS, "ram_total": total, "ram_free": free,
                   "comfyui_version": format!("odelt-{}", env!("CARGO_PKG_VERSION")),
                   "required_frontend_version": "", "python_version": "", "pytorch_version": "",
                   "embedded_python": false, "argv": std::env::args().collect::<Vec<_>>()},
        "devices": [{"name": device, "type": ty, "index": index, "vram_total": 0, "vram_free": 0,
                     "torch_vram_total": 0, "torch_vram_free": 0}],
        "odelt": {"uptime_s": s.started.elapsed().as_secs(), "plugins": plugins,
                  "queue_remaining": s.queue.remaining(), "cache_entries": s.exec.cache_len(),
                  "websockets": s.hub.len()}
    }))
}

async fn models(State(s): S) -> Response {
    let mut names: Vec<String> = std::fs::read_dir(&s.cfg.executor.models_dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    json_ok(&json!(names))
}

async fn models_folder(
    State(s): S,
    folder: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let folder = path_arg(folder)?;
    files::check_file_name(&folder).map_err(path_fault)?;
    let dir = s.cfg.executor.models_dir.join(&folder);
    let is_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
    if !is_dir {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no model folder '{folder}'"),
        ));
    }
    Ok(json_ok(&json!(files::list_files(&dir, 10_000))))
}

/// The `__metadata__` of a safetensors file under `--models-dir/{folder}` (`{}` when it has none).
async fn view_metadata(
    State(s): S,
    folder: Result<UrlPath<String>, PathRejection>,
    q: Q,
) -> Result<Response, ApiError> {
    let folder = path_arg(folder)?;
    let q = query(q)?;
    files::check_file_name(&folder).map_err(path_fault)?;
    let filename = q
        .get("filename")
        .ok_or_else(|| ApiError::bad_request("invalid_query", "filename is required"))?
        .clone();
    let (sub, name) = match filename.rsplit_once('/') {
        Some((d, n)) => (d.to_string(), n.to_string()),
        None => (String::new(), filename.clone()),
    };
    if !name.ends_with(".safetensors") {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("'{filename}' is not a .safetensors file"),
        ));
    }
    let base = s.cfg.executor.models_dir.join(&folder);
    let path = files::resolve_existing(&base, &sub, &name).map_err(path_fault)?;
    let meta = tokio::task::spawn_blocking(move || safetensors_metadata(&path))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                e.to_string(),
            )
        })?
        .map_err(|e| ApiError::bad_request("invalid_file", format!("'{filename}': {e}")))?;
    Ok(json_ok(&meta))
}

/// Reads the JSON header of a safetensors file (at most 100 MB) and returns `__metadata__`.
fn safetensors_metadata(path: &std::path::Path) -> Result<Json, String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| "too short for a safetensors header".to_string())?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return Err(format!("header of {len} bytes is too large"));
    }
    let mut head = vec![0u8; len as usize];
    f.read_exact(&mut head)
        .map_err(|_| "truncated safetensors header".to_string())?;
    let v: Json = serde_json::from_slice(&head).map_err(|e| format!("header is not JSON: {e}"))?;
    Ok(v.get("__metadata__").cloned().unwrap_or_else(|| json!({})))
}

async fn embeddings(State(s): S) -> Response {
    let dir = s.cfg.executor.models_dir.join("embeddings");
    let names: Vec<String> = files::list_files(&dir, 10_000)
        .into_iter()
        .map(|f| match f.rfind('.') {
            Some(d) if d > 0 => f[..d].to_string(),
            _ => f,
        })
        .collect();
    json_ok(&json!(names))
}

async fn extensions() -> Response {
    json_ok(&json!([]))
}

fn server_features(s: &Shared) -> Json {
    json!({"supports_preview_metadata": true, "max_upload_size": s.cfg.max_upload_bytes})
}

async fn features(State(s): S) -> Response {
    json_ok(&server_features(&s))
}

// ---- WebSocket ----

fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

async fn ws(State(s): S, q: Q, upgrade: WebSocketUpgrade) -> Result<Response, ApiError> {
    let q = query(q)?;
    let client_id = match q.get("clientId").filter(|c| !c.is_empty()) {
        Some(c) if valid_client_id(c) => c.clone(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_client_id",
                "clientId may only contain letters, digits, '-', '_' and '.' (at most 128)",
            ))
        }
        None => new_prompt_id().replace('-', ""),
    };
    Ok(upgrade
        .max_message_size(1 << 16)
        .on_upgrade(move |socket| ws_session(s, socket, client_id)))
}

async fn ws_session(s: Arc<Shared>, mut socket: WebSocket, client_id: String) {
    let (key, mut rx, preview_metadata) = s.hub.register(&client_id);
    let hello = status_message(s.queue.remaining(), Some(&client_id)).to_string();
    let mut greeting = vec![hello];
    if let Ok(c) = s.current.lock() {
        if let Some(c) = c
            .as_ref()
            .filter(|c| c.client.as_deref().is_none_or(|id| id == client_id))
        {
            greeting.push(
                json!({"type": "executing", "data": {"node": c.node_id, "display_node": c.node_id,
                                                     "prompt_id": c.prompt_id}})
                .to_string(),
            );
        }
    }
    let mut ok = true;
    for g in greeting {
        if socket.send(Message::Text(g.into())).await.is_err() {
            ok = false;
            break;
        }
    }
    if ok {
        loop {
            tokio::select! {
                out = rx.recv() => {
                    let msg = match out {
                        Some(Out::Text(t)) => Message::Text(t.to_string().into()),
                        Some(Out::Binary(b)) => Message::Binary(b.to_vec().into()),
                        None => break,
                    };
                    if socket.send(msg).await.is_err() {
                        break;
                    }
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Text(t))) => {
                        let Ok(v) = serde_json::from_str::<Json>(t.as_str()) else { continue };
                        if v["type"] == "feature_flags" {
                            let wants = v["data"]["supports_preview_metadata"].as_bool().unwrap_or(false);
                            preview_metadata.store(wants, Ordering::Relaxed);
                            let reply = json!({"type": "feature_flags", "data": server_features(&s)});
                            if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                                break;
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    s.hub.unregister(key);
}

// ---- the editor and static files ----

async fn index(State(s): S) -> Response {
    match &s.cfg.frontend_root {
        Some(root) => serve_static(root, "index.html").await,
        None => web::index().await,
    }
}

async fn serve_static(root: &std::path::Path, rel: &str) -> Response {
    let (dir, name) = match rel.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => ("", rel),
    };
    match files::resolve_existing(root, dir, name) {
        Ok(p) => match read_file(p).await {
            Ok(data) => {
                let mime = match name.rsplit('.').next().unwrap_or("") {
                    "html" => "text/html; charset=utf-8",
                    "js" | "mjs" => "text/javascript; charset=utf-8",
                    "css" => "text/css; charset=utf-8",
                    "svg" => "image/svg+xml",
                    "woff2" => "font/woff2",
                    _ => files::mime_for(name),
                };
                ([(header::CONTENT_TYPE, mime)], data).into_response()
            }
            Err(e) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()).into_response()
            }
        },
        Err(f) => path_fault(f).into_response(),
    }
}

async fn fallback(State(s): S, method: Method, uri: Uri) -> Response {
    if let (Some(root), &Method::GET) = (&s.cfg.frontend_root, &method) {
        let rel = uri.path().trim_start_matches('/');
        if !rel.is_empty() {
            return serve_static(root, rel).await;
        }
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}", uri.path()),
    )
    .into_response()
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
        assert!(valid_client_id("abc-123_x"));
        assert!(!valid_client_id("a b"));
    }
}
