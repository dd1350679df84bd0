//! `GET /health` (no auth): whether the ledger answers, and the version. 503 names the failing part.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").route(web::get().to(health)));
}

async fn health(state: web::Data<AppState>) -> HttpResponse {
    let database_ok = state.db.ping().await;
    let body = json!({
        "status": if database_ok { "ok" } else { "down" },
        "version": env!("CARGO_PKG_VERSION"),
        "database": if database_ok { "ok" } else { "down" },
        "runningRuns": state.executor.running_count(),
    });
    if database_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
