//! `GET /openapi.json`, the OpenAPI document (`openapi.rs`), and `GET /docs`, a browsable page
//! (Swagger UI, compiled into the binary: no CDN, works offline). Both are public, like `/health`:
//! they are static files of the binary and reveal nothing about the ledger.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::openapi::document;
use super::routes::Routes;
use crate::error::ServiceError;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/openapi.json";

pub fn routes(r: &mut Routes) {
    r.add(__path_openapi_json, openapi_json);
    r.add(__path_docs_redirect, docs_redirect);
}

/// Swagger UI's files under `/docs/` (`/docs` itself redirects there).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(SwaggerUi::new("/docs/{_:.*}").config(
        // The token typed into "Authorize" stays in the page's memory only (no
        // `persistAuthorization`: it would keep it in the browser's local storage).
        Config::new([DOCUMENT_PATH]).try_it_out_enabled(true),
    ));
}

/// The document as served, serialised once.
static DOCUMENT_JSON: LazyLock<Result<String, String>> =
    LazyLock::new(|| serde_json::to_string(&document()).map_err(|e| e.to_string()));

#[utoipa::path(get, path = "/openapi.json", tag = "Operations", operation_id = "openapiDocument",
    summary = "This document (no sign-in)",
    responses((status = 200, description = "The OpenAPI document.", body = Object)),
    security(()))]
async fn openapi_json() -> Result<HttpResponse, ServiceError> {
    let body = DOCUMENT_JSON
        .as_ref()
        .map_err(|e| ServiceError::Internal(anyhow::anyhow!("OpenAPI document: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body.clone()))
}

#[utoipa::path(get, path = "/docs", tag = "Operations", operation_id = "docsPage",
    summary = "The browsable API page (no sign-in)",
    description = "Redirects to `/docs/`, where Swagger UI is served from the binary.",
    responses(
        (status = 308, description = "To `/docs/`.",
            headers(("Location" = String, description = "`/docs/`"))),
        (status = 200, description = "The page (when the redirect is followed).",
            content((String = "text/html"))),
    ),
    security(()))]
async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}
