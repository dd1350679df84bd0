//! A data directory's files as the tests touch them: executable scripts in a scripts directory,
//! the ledger opened beside a running server (WAL allows it), a run aged in it, and what a
//! failed run leaves in its directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes an executable script `name` into `scripts_dir` (created if missing).
pub fn try_write_script(scripts_dir: &Path, name: &str, body: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(scripts_dir)?;
    let path = scripts_dir.join(name);
    std::fs::write(&path, body)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// `try_write_script`, panicking on an error.
pub fn write_script(scripts_dir: &Path, name: &str, body: &str) -> PathBuf {
    try_write_script(scripts_dir, name, body).expect("write an executable script")
}

/// Opens the ledger of a data directory (the server may be running: WAL allows it).
pub fn ledger(data_dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(data_dir.join("labcron.db")).expect("open the ledger");
    conn.busy_timeout(Duration::from_secs(30))
        .expect("busy timeout");
    conn
}

/// Moves a run's times `days` into the past, directly in the ledger.
pub fn age_run(data_dir: &Path, run_id: i64, days: i64) {
    const DAY_MS: i64 = 24 * 3600 * 1000;
    let shift = days * DAY_MS;
    let changed = super::ledger::sql_rows(
        data_dir,
        &format!(
            "UPDATE runs SET queued_at = queued_at - {shift}, started_at = started_at - {shift},
                 finished_at = finished_at - {shift}
             WHERE id = {run_id} RETURNING id"
        ),
    );
    assert_eq!(changed.len(), 1, "run {run_id} is in the ledger");
}

/// Asserts that only the run log is left of a run (no partial result): in its directory on
/// SQLite; on PostgreSQL, where a run's files are kept in the database and its directory is
/// removed when it ends, no result piece is stored and nothing but the log is left on disk.
pub fn assert_only_the_log(data_dir: &Path, run: &serde_json::Value) {
    let run_dir = data_dir.join(format!("runs/{}/{}", run["jobId"], run["id"]));
    if super::ledger::on_postgres() {
        let pieces = super::ledger::sql_i64(
            data_dir,
            &format!(
                "SELECT count(*) FROM run_files WHERE run_id = {} AND kind = 'RESULT'",
                run["id"]
            ),
        );
        assert_eq!(pieces, 0, "result pieces stored for run {}", run["id"]);
        if let Ok(entries) = std::fs::read_dir(&run_dir) {
            let left: Vec<String> = entries
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|n| n != "run.log")
                .collect();
            assert!(left.is_empty(), "left in {}: {left:?}", run_dir.display());
        }
        return;
    }
    let files: Vec<String> = std::fs::read_dir(&run_dir)
        .expect("the run's directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["run.log"], "in {}", run_dir.display());
}

/// `PRAGMA integrity_check` of a data directory's ledger (`ok` when sound).
pub fn integrity_check(data_dir: &Path) -> String {
    ledger(data_dir)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}
