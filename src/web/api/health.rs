//! `GET /health` (no auth): whether the ledger answers and the scheduler is beating, and the
//! version. 503 when a part is down; the body names it.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::routes::Routes;
use crate::web::AppState;

pub fn routes(r: &mut Routes) {
    r.add(__path_health, health);
}

#[utoipa::path(get, path = "/health", tag = "Operations", operation_id = "health",
    summary = "Health (no sign-in)",
    responses(
        (status = 200, description = "Every part is up.", body = Health),
        (status = 503, description = "A part is down; the body names it.", body = Health),
    ),
    security(()))]
async fn health(state: web::Data<AppState>) -> HttpResponse {
    let database_ok = state.db.ping().await;
    let scheduler_ok = state.scheduler.is_healthy();
    let healthy = database_ok && scheduler_ok;
    let body = json!({
        "status": if healthy { "ok" } else { "down" },
        "version": env!("CARGO_PKG_VERSION"),
        "database": if database_ok { "ok" } else { "down" },
        "scheduler": if scheduler_ok { "ok" } else { "stalled" },
        "runningRuns": state.executor.running_count(),
    });
    if healthy {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

// ---- For the document only: the bodies this module reads by hand (leniently, with messages
// naming the field) or builds with `json!`. ----

/// `GET /health`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Health {
    /// `ok`, or `down` when a part is down (then the status is 503).
    #[schema(examples("ok"))]
    status: String,
    /// The server's version.
    version: String,
    /// `ok` or `down`.
    database: String,
    /// `ok`, or `stalled` when the scheduler stopped firing.
    scheduler: String,
    /// Runs executing now.
    running_runs: i64,
}
