//! Files: `/view` and `/upload/image` over ComfyUI's output, input and temp folders.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::executor::new_prompt_id;
use crate::serve::body::{json_ok, path_fault, read_limited, ApiError};
use crate::serve::extract::{query, Q, S};
use crate::serve::files;
use crate::serve::multipart::parse_multipart;
use crate::serve::state::Shared;

pub(crate) async fn read_file(path: PathBuf) -> std::io::Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

fn folder_for<'a>(s: &'a Shared, ty: &str) -> Result<&'a Path, ApiError> {
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

pub(crate) async fn view(State(s): S, q: Q) -> Result<Response, ApiError> {
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

pub(crate) async fn upload_image(
    State(s): S,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
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

fn write_upload(dir: &Path, name: &str, data: &[u8], overwrite: bool) -> Result<String, ApiError> {
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
