//! `GET /metrics`: the Prometheus text exposition of `crate::metrics`, for signed-in admins (Basic
//! or an API token suits Prometheus).

use actix_web::{HttpResponse, web};

use super::routes::Routes;
use crate::error::ServiceError;
use crate::metrics::CONTENT_TYPE;
use crate::web::AppState;
use crate::web::api::auth::CurrentUser;

/// Registers `GET /metrics`.
pub fn routes(r: &mut Routes) {
    r.add(__path_scrape, scrape);
}

#[utoipa::path(get, path = "/metrics", tag = "Operations", operation_id = "metrics",
    summary = "Prometheus metrics (admins)",
    description = "Requests by route and status, runs by type and final status, run \
        durations, fire lateness, queued and running gauges, skipped and missed fires. \
        An API token (`Authorization: Bearer`, Prometheus' `authorization` setting) is the \
        cheap way to scrape; Basic authorization works too.",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4.",
        content((String = "text/plain")))))]
/// `GET /metrics`: any signed-in admin (Basic authorization suits Prometheus).
async fn scrape(state: web::Data<AppState>, me: CurrentUser) -> Result<HttpResponse, ServiceError> {
    me.require_admin()?;
    let queued = match state.db.read(|l| l.active_run_counts()).await {
        Ok((queued, _)) => Some(queued),
        Err(e) => {
            tracing::warn!(error = ?e, "metrics: the ledger could not count queued runs");
            None
        }
    };
    let running = state.executor.running_count() as u64;
    let body = state.metrics.render(
        state.scheduler.stats(),
        queued,
        running,
        state.db.memory_used(),
    );
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(body))
}
