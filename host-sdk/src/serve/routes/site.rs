//! The page at `/` (the built-in editor, or a stock frontend build with
//! `--frontend-root`), the frontend's static files and the answer to unknown routes.

use std::path::Path;

use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::files::read_file;
use crate::serve::body::{path_fault, ApiError};
use crate::serve::extract::S;
use crate::serve::{files, web};

pub(crate) async fn index(State(s): S) -> Response {
    match &s.cfg.frontend_root {
        Some(root) => serve_static(root, "index.html").await,
        None => web::index().await,
    }
}

async fn serve_static(root: &Path, rel: &str) -> Response {
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

pub(crate) async fn fallback(State(s): S, method: Method, uri: Uri) -> Response {
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
