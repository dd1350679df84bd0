//! `labcron migrate-ledger --to postgres://…`: moves the ledger of the settings' data directory
//! (and its run files) into an empty PostgreSQL database, checked, and prints what it copied. The
//! copy itself knows both engines and lives in the store (`store::migrate_to_postgres`).

use crate::config::Settings;
use crate::store::migrate_to_postgres;

pub use migrate_to_postgres::Summary;

/// Copies the ledger into the database at `to` (with `dry_run`, checked and rolled back).
/// Blocking: call it off the async threads.
pub fn migrate(settings: &Settings, to: &str, dry_run: bool) -> anyhow::Result<Summary> {
    let data_dir = &settings.data_dir;
    let open = |job: i64, run: i64, relative: &str| {
        crate::run_files::open_run_file(data_dir, job, run, relative)
    };
    migrate_to_postgres::migrate(data_dir, to, dry_run, &open)
}
