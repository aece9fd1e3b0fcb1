//! What the server knows: `/object_info`, `/system_stats`, `/models`, `/view_metadata`,
//! `/embeddings`, `/extensions`, `/features`, `/internal/folder_paths`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value as Json};

use crate::serve::body::{json_ok, path_fault, ApiError};
use crate::serve::extract::{path_arg, query, P, Q, S};
use crate::serve::files;
use crate::serve::{meminfo, safetensors};

pub(crate) async fn object_info(State(s): S) -> Response {
    json_ok(&s.exec.object_info())
}

pub(crate) async fn object_info_one(State(s): S, class: P) -> Result<Response, ApiError> {
    let class = path_arg(class)?;
    let mut out = Map::new();
    // Described now, like /object_info, so combo lists show the files there at this moment.
    if let Some(e) = s.exec.refresh().node(&class) {
        out.insert(class, serde_json::to_value(&*e.info).unwrap_or(Json::Null));
    }
    Ok(json_ok(&Json::Object(out)))
}

pub(crate) async fn system_stats(State(s): S) -> Response {
    let (total, free) = meminfo::ram();
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

pub(crate) async fn models(State(s): S) -> Response {
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

pub(crate) async fn models_folder(State(s): S, folder: P) -> Result<Response, ApiError> {
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
pub(crate) async fn view_metadata(State(s): S, folder: P, q: Q) -> Result<Response, ApiError> {
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
    let meta = tokio::task::spawn_blocking(move || safetensors::metadata(&path))
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

pub(crate) async fn embeddings(State(s): S) -> Response {
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

pub(crate) async fn extensions() -> Response {
    json_ok(&json!([]))
}

pub(crate) async fn features(State(s): S) -> Response {
    json_ok(&s.features())
}

/// `GET /internal/folder_paths`.
pub(crate) async fn folder_paths(State(s): S) -> Response {
    let dir = |p: &std::path::Path| json!([[p.display().to_string()], []]);
    json_ok(&json!({
        "output": dir(&s.cfg.executor.output_dir),
        "input": dir(&s.cfg.executor.input_dir),
        "temp": dir(&s.cfg.executor.temp_dir),
        "models": dir(&s.cfg.executor.models_dir),
    }))
}
