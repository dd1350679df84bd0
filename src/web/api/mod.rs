//! HTTP: OpenSpecimen's REST API under both `/openspecimen/rest/ng` and `/rest/ng`, plus `/health`.
//! One module per resource, each with `routes`, which adds its handlers to the route builder
//! (`routes.rs`): every handler carries its `#[utoipa::path]`, so one call serves and documents
//! it, and `openapi.rs` only post-processes the whole document. Handlers extract and authorise,
//! call `domain` to validate and `store` to commit, then tell the executor; they never spawn
//! processes. Query strings and bodies are parsed here by hand, path ids by the typed paths of
//! `params`, so every bad input gets a message naming the parameter, in the contract's error shape.

pub mod all_runs;
pub mod api_tokens; // service tokens (issue 15)
pub mod audit; // GET /audit-events
pub mod audit_trail; // how handlers start and record audit events
pub mod auth;
pub mod docs; // GET /openapi.json and the /docs page
pub mod health;
pub mod jobs;
pub mod metrics; // GET /metrics
pub mod openapi; // the OpenAPI document: what is document-wide
pub mod params;
pub mod routes; // one call serves a handler and documents it
pub mod runs;
pub mod saved_queries;
pub mod sessions;
pub mod users;

use actix_web::web;

use routes::Routes;

/// The base paths OpenSpecimen clients use.
pub const BASE_PATHS: &[&str] = &["/rest/ng", "/openspecimen/rest/ng"];

/// Every API route, served under each base path, in the order they are matched
/// (`/users/password` before `/users/{userId}`).
pub fn api_routes(r: &mut Routes) {
    sessions::routes(r);
    users::routes(r);
    jobs::routes(r);
    runs::routes(r);
    all_runs::routes(r);
    saved_queries::routes(r);
    api_tokens::routes(r);
    audit::routes(r);
}

/// The routes outside the base paths.
pub fn root_routes(r: &mut Routes) {
    health::routes(r);
    metrics::routes(r);
    docs::routes(r);
}

/// Registers every route: the API under each base path, then the root ones and the docs page's
/// files.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for base in BASE_PATHS {
        cfg.service(
            web::scope(base)
                .app_data(params::path_config())
                .configure(|scope| Routes::of(api_routes).register(scope)),
        );
    }
    Routes::of(root_routes).register(cfg);
    cfg.configure(docs::configure);
}
