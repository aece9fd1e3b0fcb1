//! The application: ComfyUI's HTTP API (bare and under `/api`), the WebSocket, the endpoints
//! of the stock frontend, the editor, and the origin check in front of them all.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::body::ApiError;
use super::routes::{files, frontend, info, jobs, prompt, site, templates, ws};
use super::security::origin_allowed;
use super::state::Shared;
use super::web;

/// Builds the application.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/object_info", get(info::object_info))
        .route("/object_info/{class}", get(info::object_info_one))
        .route("/prompt", get(prompt::get_prompt).post(prompt::post_prompt))
        .route("/queue", get(prompt::get_queue).post(prompt::post_queue))
        .route(
            "/history",
            get(prompt::get_history).post(prompt::post_history),
        )
        .route("/history/{id}", get(prompt::get_history_one))
        .route("/interrupt", post(prompt::interrupt))
        .route("/free", post(prompt::free))
        .route("/view", get(files::view))
        // The whole form within the upload limit (the handler bounds each field too).
        .route(
            "/upload/image",
            post(files::upload_image).layer(DefaultBodyLimit::max(shared.cfg.max_upload_bytes)),
        )
        .route("/system_stats", get(info::system_stats))
        .route("/models", get(info::models))
        .route("/models/{folder}", get(info::models_folder))
        .route("/view_metadata/{folder}", get(info::view_metadata))
        .route("/embeddings", get(info::embeddings))
        .route("/extensions", get(info::extensions))
        .route("/features", get(info::features))
        .route("/ws", get(ws::ws))
        // What the stock ComfyUI frontend needs to boot and follow jobs.
        .route("/users", get(frontend::users))
        .route(
            "/settings",
            get(frontend::get_settings).post(frontend::post_settings),
        )
        .route(
            "/settings/{id}",
            get(frontend::get_setting).post(frontend::post_setting),
        )
        .route("/userdata", get(frontend::list_userdata))
        .route(
            "/userdata/{file}",
            get(frontend::get_userdata)
                .post(frontend::post_userdata)
                .delete(frontend::delete_userdata),
        )
        .route("/i18n", get(frontend::empty_object))
        .route("/global_subgraphs", get(frontend::empty_object))
        .route("/workflow_templates", get(frontend::empty_object))
        .route("/node_replacements", get(frontend::empty_object))
        .route("/jobs", get(jobs::list_jobs))
        .route("/jobs/cancel", post(jobs::cancel_jobs))
        .route("/jobs/{id}", get(jobs::get_job))
        .route("/jobs/{id}/cancel", post(jobs::cancel_job));
    Router::new()
        .merge(api.clone())
        .nest("/api", api)
        .route("/", get(site::index))
        .route("/internal/folder_paths", get(info::folder_paths))
        // The example workflows as the stock frontend's templates (and the editor's menu).
        .route("/templates/{file}", get(templates::file))
        .route("/odelt/editor", get(web::index))
        .route("/odelt/editor.js", get(web::script))
        .route("/odelt/editor.css", get(web::style))
        .fallback(site::fallback)
        .layer(middleware::from_fn(origin_check))
        .with_state(shared)
}

/// Refuses cross-origin requests (403 `forbidden_origin`) before any handler runs.
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
