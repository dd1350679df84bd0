//! The HTTP face of labcron: OpenSpecimen's REST API (`api`) and the web pages (`ui`). Nothing
//! outside this folder names `crate::web` (tests/architecture.rs checks it): handlers here call the
//! layers below, never the other way round.

pub mod access_log; // one compact access line per request, short root spans, the body deadline
pub mod api; // OpenSpecimen's REST API, one module per resource
pub mod cors; // the CORS policy from `http.cors_origins`
pub mod error; // ServiceError to HTTP: the status and the contract's JSON array, once
pub mod middleware; // request metrics, trailing slashes, unknown routes, actix errors as the contract's array
pub mod ui; // the Jobs web pages

use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::LoginThrottle;
use crate::config::Settings;
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
    /// Bounds the password hashes in flight (sign-ins, password changes).
    pub hashing: crate::auth::HashingGate,
    /// Canonical data directory.
    pub data_dir: PathBuf,
    /// Where runs' logs and results are kept (the data directory or the ledger's database).
    pub files: crate::run_files::RunFiles,
    /// The Prometheus registry (`GET /metrics`, request counting).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Who is running a saved-query try-out now (it bounds how many run at once).
    pub previews: crate::web::ui::PreviewSlots,
}
