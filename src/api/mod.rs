//! HTTP: OpenSpecimen's REST API under both `/openspecimen/rest/ng` and `/rest/ng`, plus `/health`.
//! One module per resource, each with `configure`. Handlers extract and authorise, call `domain` to
//! validate and `store` to commit, then tell the executor; they never spawn processes. Query
//! strings, paths and bodies are parsed here by hand so every bad input gets a message naming the
//! parameter, in the contract's error shape.

pub mod access_log; // one compact access line per request, short root spans
pub mod all_runs;
pub mod api_tokens; // service tokens (issue 15)
pub mod audit; // the audit trail's route and how handlers start an event (issue 15)
pub mod auth;
pub mod cors;
pub mod health;
pub mod jobs;
pub mod openapi;
pub mod params;
pub mod runs;
pub mod saved_queries;
pub mod sessions;
pub mod users;
pub mod views;

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::web;

use crate::auth::LoginThrottle;
use crate::config::Settings;
use crate::error::{ApiError, ErrorItem, error_response};
use crate::executor::Executor;
use crate::scheduler::Scheduler;
use crate::store::Db;

/// Everything a handler may need; registered once as `web::Data`.
pub struct AppState {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub executor: Executor,
    pub scheduler: Scheduler,
    pub throttle: LoginThrottle,
    /// Canonical data directory.
    pub data_dir: PathBuf,
    /// The Prometheus registry (`GET /metrics`, request counting).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The base paths OpenSpecimen clients use.
pub const BASE_PATHS: &[&str] = &["/rest/ng", "/openspecimen/rest/ng"];

/// Registers every API route under each base path.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for base in BASE_PATHS {
        cfg.service(
            web::scope(base)
                .configure(sessions::configure)
                .configure(users::configure)
                .configure(jobs::configure)
                .configure(runs::configure)
                .configure(all_runs::configure)
                .configure(saved_queries::configure)
                .configure(api_tokens::configure)
                .configure(audit::configure),
        );
    }
    cfg.configure(health::configure);
    cfg.configure(crate::metrics::configure);
    cfg.configure(openapi::configure);
}

/// OpenSpecimen (Spring) answers `/rest/ng/users/7/` like `/rest/ng/users/7`, and its clients rely on
/// it (OpenSpecimenAPIconnector's `delete_user` sends `/users/{id}/?close=true`): API paths lose a
/// trailing slash before routing. Only API paths: the docs page lives at `/docs/`.
pub async fn trim_api_trailing_slash(
    mut req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let path = req.path();
    let is_api = path.starts_with("/rest/ng/") || path.starts_with("/openspecimen/rest/ng/");
    if is_api && path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let uri = match req.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_string(),
        };
        if let Ok(uri) = uri.parse::<actix_web::http::Uri>() {
            req.match_info_mut().get_mut().update(&uri);
            req.head_mut().uri = uri;
        }
    }
    next.call(req).await
}

/// Unknown routes answer in the contract's shape.
pub async fn no_route() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NoRoute)
}

/// Replaces any error response that is not already JSON or an HTML page of the web UI (actix's own
/// plain-text errors for oversized payloads, wrong methods and the like) with the contract's error
/// array.
pub fn json_errors<B: 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|res: ServiceResponse<B>| {
        let is_json = res
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
        if is_json {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let item = match status {
            StatusCode::PAYLOAD_TOO_LARGE => ErrorItem::new(
                "PAYLOAD_TOO_LARGE",
                "The request body is larger than the server accepts.",
            ),
            StatusCode::NOT_FOUND => ErrorItem::new("NOT_FOUND", "No such endpoint."),
            StatusCode::METHOD_NOT_ALLOWED => ErrorItem::new(
                "METHOD_NOT_ALLOWED",
                "This endpoint does not accept that method.",
            ),
            s if s.is_server_error() => {
                ErrorItem::new("INTERNAL_ERROR", "Sorry, something went wrong.")
            }
            _ => ErrorItem::new("INVALID_REQUEST", "The request is malformed."),
        };
        let (req, old) = res.into_parts();
        let mut new = error_response(status, &[item]);
        for (name, value) in old.headers() {
            if name != CONTENT_TYPE && name != actix_web::http::header::CONTENT_LENGTH {
                new.headers_mut().insert(name.clone(), value.clone());
            }
        }
        new.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let res: ServiceResponse<EitherBody<B, BoxBody>> =
            ServiceResponse::new(req, new).map_into_right_body();
        Ok(ErrorHandlerResponse::Response(res))
    })
}
