//! `GET /health` (no auth): whether the ledger answers and the scheduler is beating, and the
//! version. 503 when a part is down; the body names it.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::web::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").route(web::get().to(health)));
}

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
