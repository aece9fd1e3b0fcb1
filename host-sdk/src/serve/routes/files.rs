//! Files: `/view` and `/upload/image` over ComfyUI's output, input and temp folders. Every name
//! is confined to its folder first ([`files`]: no `..`, no absolute paths, no symbolic links);
//! only then does the file service or the upload writer touch it.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;
use tower_http::services::ServeFile;

use crate::executor::new_prompt_id;
use crate::serve::body::{json_ok, path_fault, ApiError};
use crate::serve::extract::{query, Q, S};
use crate::serve::files;
use crate::serve::multipart::{read_form, Limits, MultipartError};
use crate::serve::state::Shared;

pub(crate) async fn read_file(path: PathBuf) -> std::io::Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

fn folder_for<'a>(s: &'a Shared, ty: &str) -> Result<&'a Path, ApiError> {
    match ty {
        "output" => Ok(&s.cfg.executor.output_dir),
        "input" => Ok(&s.cfg.executor.input_dir),
        "temp" => Ok(&s.cfg.executor.temp_dir),
        other => Err(ApiError::bad_request(
            "invalid_type",
            format!("type must be output, input or temp, got '{other}'"),
        )),
    }
}

/// Headers of a `/view` request that the file service answers (ranges and revalidation).
const FORWARDED: [header::HeaderName; 6] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// `GET /view`: a file of the output, input or temp folder, confined to it ([`files::resolve_existing`]),
/// then served by tower-http's `ServeFile`: streamed, `Range` → 206, `ETag`/`Last-Modified` with
/// conditional requests → 304, MIME type from the extension.
pub(crate) async fn view(State(s): S, q: Q, req: Request) -> Result<Response, ApiError> {
    let q = query(q)?;
    let filename = q
        .get("filename")
        .ok_or_else(|| ApiError::bad_request("invalid_query", "filename is required"))?;
    let subfolder = q.get("subfolder").map(String::as_str).unwrap_or("");
    let ty = q.get("type").map(String::as_str).unwrap_or("output");
    let base = folder_for(&s, if ty.is_empty() { "output" } else { ty })?.to_path_buf();
    let (name, sub) = (filename.clone(), subfolder.to_string());
    let path = tokio::task::spawn_blocking(move || files::resolve_existing(&base, &sub, &name))
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(path_fault)?;
    let mut fwd = Request::builder()
        .method(req.method().clone())
        .uri("/")
        .body(Body::empty())
        .map_err(|e| internal(e.to_string()))?;
    for h in FORWARDED {
        for v in req.headers().get_all(&h) {
            fwd.headers_mut().append(h.clone(), v.clone());
        }
    }
    let res = ServeFile::new(&path).try_call(fwd).await.map_err(|e| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("cannot read '{filename}': {e}"),
        )
    })?;
    // `preview=` (re-encoding to webp/jpeg) and `channel=` are accepted but the file is
    // served as stored.
    let mut res = res.map(Body::new);
    let disposition = format!(
        "filename=\"{}\"",
        filename.replace(['"', '\\', '\r', '\n'], "_")
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    // Revalidate every time (an upload may overwrite a file), answered 304 when unchanged.
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(res)
}

fn internal(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
}

/// Most bytes of a form field other than the file (`type`, `subfolder`, `overwrite`).
const TEXT_FIELD_BYTES: usize = 4096;
/// Most parts in an upload form.
const MAX_FIELDS: usize = 32;

/// `POST /upload/image`: ComfyUI's upload form (`image` file, optional `type`, `subfolder`,
/// `overwrite`), read by axum's multipart extractor with a limit per field; the file is stored
/// under a free name (or over the old one with `overwrite`) inside its folder.
pub(crate) async fn upload_image(State(s): S, req: Request) -> Result<Response, ApiError> {
    let limit = s.cfg.max_upload_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let form_error = |e: MultipartError| {
        let ty = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "invalid_upload"
        };
        ApiError::new(e.status(), ty, e.to_string())
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(form_error(MultipartError::BodyTooLarge { limit }));
    }
    let form = Multipart::from_request(req, &())
        .await
        .map_err(|e| form_error(MultipartError::ContentType(e.body_text())))?;
    let limits = Limits {
        file_bytes: limit,
        text_bytes: TEXT_FIELD_BYTES,
        fields: MAX_FIELDS,
    };
    let mut parts = read_form(form, limits, limit).await.map_err(form_error)?;
    let field = |name: &str| {
        parts
            .iter()
            .find(|p| p.name == name && p.filename.is_none())
            .map(|p| String::from_utf8_lossy(&p.data).into_owned())
    };
    let ty = field("type")
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "input".into());
    let subfolder = field("subfolder").unwrap_or_default();
    let overwrite = field("overwrite").is_some_and(|v| v == "true" || v == "1");
    let image = parts
        .iter()
        .position(|p| p.name == "image" && p.filename.is_some())
        .map(|i| parts.swap_remove(i))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_upload",
                "the form has no file field named \"image\"",
            )
        })?;
    let name = image.filename.unwrap_or_default();
    files::check_file_name(&name).map_err(path_fault)?;
    let base = folder_for(&s, &ty)?.to_path_buf();
    let data = image.data;
    let sub = subfolder.clone();
    let written = tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
        let dir = files::prepare_dir(&base, &sub).map_err(path_fault)?;
        write_upload(&dir, &name, &data, overwrite)
    })
    .await
    .map_err(|e| internal(e.to_string()))??;
    Ok(json_ok(
        &json!({"name": written, "subfolder": subfolder, "type": ty}),
    ))
}

/// Stores an upload in `dir`: written whole under a hidden temporary name first, then put in
/// place, so `/view` never serves half a file. With `overwrite` it replaces `name` (a rename);
/// otherwise it takes the first free name of `name`, `name (1)`, ... (a hard link, which never
/// replaces an existing file).
fn write_upload(dir: &Path, name: &str, data: &[u8], overwrite: bool) -> Result<String, ApiError> {
    let io_err = |e: std::io::Error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "write_failed",
            format!("cannot store the upload: {e}"),
        )
    };
    let tmp = dir.join(format!(".upload-{}", new_prompt_id()));
    if let Err(e) = std::fs::write(&tmp, data) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    let placed = place(dir, &tmp, name, overwrite);
    let _ = std::fs::remove_file(&tmp);
    placed.map_err(|e| match e {
        Placed::Io(e) => io_err(e),
        Placed::Taken => ApiError::new(
            StatusCode::CONFLICT,
            "name_taken",
            format!("too many files named like '{name}'"),
        ),
    })
}

enum Placed {
    Io(std::io::Error),
    Taken,
}

fn place(dir: &Path, tmp: &Path, name: &str, overwrite: bool) -> Result<String, Placed> {
    if overwrite {
        std::fs::rename(tmp, dir.join(name)).map_err(Placed::Io)?;
        return Ok(name.to_string());
    }
    for k in 0..10_000u32 {
        let candidate = if k == 0 {
            name.to_string()
        } else {
            files::numbered_name(name, k)
        };
        match std::fs::hard_link(tmp, dir.join(&candidate)) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            // A file system without hard links: claim the name, then move the file over it.
            Err(_) => match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dir.join(&candidate))
            {
                Ok(_) => {
                    std::fs::rename(tmp, dir.join(&candidate)).map_err(Placed::Io)?;
                    return Ok(candidate);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Placed::Io(e)),
            },
        }
    }
    Err(Placed::Taken)
}
