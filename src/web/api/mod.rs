//! HTTP: OpenSpecimen's REST API under both `/openspecimen/rest/ng` and `/rest/ng`, plus `/health`.
//! One module per resource, each with `configure`. Handlers extract and authorise, call `domain` to
//! validate and `store` to commit, then tell the executor; they never spawn processes. Query
//! strings, paths and bodies are parsed here by hand so every bad input gets a message naming the
//! parameter, in the contract's error shape.

pub mod all_runs;
pub mod api_tokens; // service tokens (issue 15)
pub mod audit; // GET /audit-events
pub mod audit_trail; // how handlers start and record audit events
pub mod auth;
pub mod health;
pub mod jobs;
pub mod metrics; // GET /metrics
pub mod openapi;
pub mod params;
pub mod runs;
pub mod saved_queries;
pub mod sessions;
pub mod users;

use actix_web::web;

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
    cfg.configure(metrics::configure);
    cfg.configure(openapi::configure);
}
