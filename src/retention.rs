//! Retention: a built-in pass, shortly after start and then every 24 hours, that removes the
//! result files and logs of runs that finished more than `retention.files_days` ago (the files
//! cleaner's own code, `run_files::RunFiles::remove_old`: directories, and pieces in the database
//! when run files are kept there; the rows stay, so a download
//! answers `SCHEDULED_JOB_RESULT_DATA_FILE_NOT_FOUND`) and, only when `retention.runs_days` is set,
//! deletes the rows of runs that finished more than that many days ago, with their files, in
//! batches of `ROW_BATCH` per write transaction so the ledger's writer is never held for long.
//! Runs that are queued or running are never touched. The same pass deletes audit events older
//! than `retention.audit_days` (default 730, two years; 0 keeps them for ever), also in batches,
//! and every expired session (idle longer than `auth.session_timeout_minutes`, or older than
//! `auth.session_max_hours`) whatever the retention settings: a server nobody signs in to keeps
//! no dead tokens (sign-in also removes them, as it opens a new session).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::Settings;
use crate::domain::ids::RunId;
use crate::error::ServiceError;
use crate::metrics::Metrics;
use crate::query::csv::Guard;
use crate::run_files::RunFiles;
use crate::store::Db;

/// The first pass waits this long after start, so start-up work goes first.
pub const FIRST_PASS_DELAY: Duration = Duration::from_secs(60);
/// Time between two passes.
pub const PASS_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Run rows deleted per write transaction.
pub const ROW_BATCH: i64 = 1000;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// What one pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Runs whose directory (result file and log) was removed, rows deleted or not.
    pub runs_with_files_removed: u64,
    pub files: u64,
    pub bytes: u64,
    /// Run rows deleted (`retention.runs_days`).
    pub rows_deleted: u64,
    /// Audit events deleted (`retention.audit_days`).
    pub audit_events_deleted: u64,
    /// Expired sessions deleted.
    pub sessions_deleted: u64,
}

/// Starts the daily pass until `stop` is cancelled.
pub fn spawn_daily(
    db: Db,
    settings: Arc<Settings>,
    data_dir: PathBuf,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let retention = &settings.retention;
    if retention.files_days == 0 && retention.runs_days.is_none() && retention.audit_days == 0 {
        tracing::info!(
            "retention off: run files, run rows and audit events are kept (expired sessions are still removed)"
        );
    }
    tokio::spawn(async move {
        let mut wait = FIRST_PASS_DELAY;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
            wait = PASS_INTERVAL;
            match run_retention_now(&db, &settings, &data_dir).await {
                Ok(report) => {
                    metrics.observe_retention(report.runs_with_files_removed, report.rows_deleted);
                    tracing::info!(
                        runs = report.runs_with_files_removed,
                        files = report.files,
                        bytes = report.bytes,
                        rows_deleted = report.rows_deleted,
                        audit_events_deleted = report.audit_events_deleted,
                        sessions_deleted = report.sessions_deleted,
                        "retention pass done"
                    );
                }
                Err(e) => tracing::error!(error = ?e, "retention pass failed; next try in 24 h"),
            }
        }
    });
}

/// One retention pass now (the daily task's work; tests call it directly). `data_dir` is the
/// canonical data directory.
pub async fn run_retention_now(
    db: &Db,
    settings: &Settings,
    data_dir: &Path,
) -> Result<RetentionReport, ServiceError> {
    let db = db.clone();
    let settings = settings.clone();
    let data_dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || retention_pass(&db, &settings, &data_dir, now_ms())).await?
}

fn retention_pass(
    db: &Db,
    all: &Settings,
    data_dir: &Path,
    now: i64,
) -> Result<RetentionReport, ServiceError> {
    let mut report = RetentionReport::default();
    let cutoffs = all.auth.session_cutoffs(now);
    let sessions = db.write_sync(|tx| tx.delete_expired_sessions(cutoffs))?;
    report.sessions_deleted = sessions as u64;
    let settings = &all.retention;
    if settings.audit_days > 0 {
        let cutoff = now - settings.audit_days as i64 * DAY_MS;
        loop {
            let deleted = db.write_sync(|tx| tx.delete_audit_events_before(cutoff, ROW_BATCH))?;
            report.audit_events_deleted += deleted as u64;
            if (deleted as i64) < ROW_BATCH {
                break;
            }
        }
    }
    let files = RunFiles::for_ledger(db, data_dir.to_path_buf());
    if let Some(days) = settings.runs_days {
        delete_old_rows(db, &files, now - days as i64 * DAY_MS, &mut report)?;
    }
    if settings.files_days > 0 {
        let cutoff = now - settings.files_days as i64 * DAY_MS;
        let never = Guard {
            deadline: None,
            cancel: None,
        };
        // The pass has no run directory of its own to spare.
        let removed = files
            .remove_old(db, cutoff, None, &never)?
            .map_err(|stop| {
                ServiceError::Internal(anyhow::anyhow!("retention pass stopped: {stop:?}"))
            })?;
        for r in &removed {
            report.runs_with_files_removed += 1;
            report.files += r.files;
            report.bytes += r.bytes;
        }
    }
    Ok(report)
}

/// Deletes, batch by batch, the rows of runs that finished before `cutoff`, each run's files
/// first (a row is kept when its files cannot be removed, so no files are left unaccounted).
fn delete_old_rows(
    db: &Db,
    files: &RunFiles,
    cutoff: i64,
    report: &mut RetentionReport,
) -> Result<(), ServiceError> {
    let mut after = RunId(0);
    loop {
        let batch = db.read_sync(|c| c.runs_finished_before(cutoff, after, ROW_BATCH))?;
        let Some(last) = batch.last() else {
            return Ok(());
        };
        after = last.run;
        let mut cleared = Vec::with_capacity(batch.len());
        for (ids, removed) in batch.iter().zip(files.remove_runs(&batch)) {
            let run_id = ids.run.0;
            match removed {
                Ok(Some((files, bytes))) => {
                    report.runs_with_files_removed += 1;
                    report.files += files;
                    report.bytes += bytes;
                    cleared.push(run_id);
                }
                Ok(None) => cleared.push(run_id),
                Err(e) => tracing::warn!(
                    run_id,
                    error = %e,
                    "retention: cannot remove the run's files; its row stays"
                ),
            }
        }
        report.rows_deleted += db.write_sync(|tx| tx.delete_finished_runs(&cleared, cutoff))?;
    }
}
