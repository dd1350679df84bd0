//! SQL for the run ledger: accepting runs (with the queue limit and idempotency keys), the
//! dispatcher's claim of the next runnable runs, finishing, cancelling, listing, and recovery of
//! runs a crash left `IN_PROGRESS`.
//!
//! Queries on QUEUED or IN_PROGRESS runs repeat the partial index's condition (`ACTIVE`) word for
//! word: SQLite uses a partial index only when the query's WHERE contains its WHERE, and without
//! it these queries would scan every run of the ledger (a million, after a few years).

use std::str::FromStr;

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::domain::run::{Run, RunStatus, Trigger};
use crate::error::ApiError;

/// The condition of the `runs_active` partial index, to be repeated verbatim in queries on it.
const ACTIVE: &str = "status IN ('QUEUED', 'IN_PROGRESS')";

const COLUMNS: &str = "r.id, r.job_id, j.name, r.status, r.run_trigger, r.run_by, r.rt_args, r.queued_at,
    r.started_at, r.finished_at, r.scheduled_for, r.exit_code, r.message, r.result_file, r.result_file_size,
    r.log_size, r.log_truncated, r.task";

fn map_run(row: &Row) -> rusqlite::Result<Run> {
    let bad = |i: usize| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, "bad enum".into())
    };
    Ok(Run {
        id: row.get(0)?,
        job_id: row.get(1)?,
        job_name: row.get(2)?,
        status: RunStatus::from_str(&row.get::<_, String>(3)?).map_err(|()| bad(3))?,
        trigger: Trigger::from_str(&row.get::<_, String>(4)?).map_err(|()| bad(4))?,
        run_by: row.get(5)?,
        rt_args: row.get(6)?,
        queued_at: row.get(7)?,
        started_at: row.get(8)?,
        finished_at: row.get(9)?,
        scheduled_for: row.get(10)?,
        exit_code: row.get(11)?,
        message: row.get(12)?,
        result_file: row.get(13)?,
        result_file_size: row.get(14)?,
        log_size: row.get(15)?,
        log_truncated: row.get::<_, i64>(16)? != 0,
        task: row.get(17)?,
    })
}

pub fn get(conn: &Connection, run_id: i64) -> Result<Option<Run>, ApiError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM runs r JOIN jobs j ON j.id = r.job_id WHERE r.id = ?1"
        ))?
        .query_row([run_id], map_run)
        .optional()?)
}

/// A request for a new run.
pub struct NewRun<'a> {
    pub job_id: i64,
    pub trigger: Trigger,
    pub run_by: i64,
    pub rt_args: Option<&'a str>,
    pub scheduled_for: Option<i64>,
    pub idempotency_key: Option<&'a str>,
}

/// What became of a request for a run.
#[derive(Debug)]
pub enum Enqueued {
    /// A new QUEUED run with this id.
    Queued(i64),
    /// The idempotency key (or the scheduled instant) was seen before: the earlier run's id.
    Duplicate(i64),
    /// The job already has `max_queued_runs` runs waiting.
    QueueFull,
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Stores a QUEUED run unless it duplicates an earlier one or the job's queue is full. Call in a
/// write transaction so the checks and the insert are one step.
pub fn enqueue(
    conn: &Connection,
    run: &NewRun,
    max_queued: i64,
    now: i64,
) -> Result<Enqueued, ApiError> {
    if let Some(key) = run.idempotency_key {
        let earlier: Option<i64> = conn
            .prepare_cached(
                "SELECT id FROM runs WHERE job_id = ?1 AND idempotency_key = ?2 AND queued_at >= ?3
                 ORDER BY id LIMIT 1",
            )?
            .query_row(params![run.job_id, key, now - IDEMPOTENCY_WINDOW_MS], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(id) = earlier {
            return Ok(Enqueued::Duplicate(id));
        }
    }
    if let Some(instant) = run.scheduled_for {
        let earlier: Option<i64> = conn
            .prepare_cached("SELECT id FROM runs WHERE job_id = ?1 AND scheduled_for = ?2")?
            .query_row(params![run.job_id, instant], |r| r.get(0))
            .optional()?;
        if let Some(id) = earlier {
            return Ok(Enqueued::Duplicate(id));
        }
    }
    if count_with_status(conn, run.job_id, RunStatus::Queued)? >= max_queued {
        return Ok(Enqueued::QueueFull);
    }
    conn.prepare_cached(
        "INSERT INTO runs (job_id, status, run_trigger, run_by, rt_args, queued_at, scheduled_for, idempotency_key)
         VALUES (?1, 'QUEUED', ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        run.job_id,
        run.trigger.as_str(),
        run.run_by,
        run.rt_args,
        now,
        run.scheduled_for,
        run.idempotency_key
    ])?;
    Ok(Enqueued::Queued(conn.last_insert_rowid()))
}

pub fn count_with_status(
    conn: &Connection,
    job_id: i64,
    status: RunStatus,
) -> Result<i64, ApiError> {
    let sql = if matches!(status, RunStatus::Queued | RunStatus::InProgress) {
        format!("SELECT count(*) FROM runs WHERE {ACTIVE} AND status = ?2 AND job_id = ?1")
    } else {
        "SELECT count(*) FROM runs WHERE status = ?2 AND job_id = ?1".to_string()
    };
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![job_id, status.as_str()], |r| r.get(0))?)
}

/// Whether the job has a run waiting or executing.
pub fn job_busy(conn: &Connection, job_id: i64) -> Result<bool, ApiError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM runs WHERE status IN ('QUEUED', 'IN_PROGRESS') AND job_id = ?1 LIMIT 1",
        )?
        .exists([job_id])?)
}

/// Marks up to `limit` runs IN_PROGRESS: for each job with nothing in progress, its oldest QUEUED
/// run. Returns their ids, oldest first. Call in a write transaction.
pub fn claim_runnable(conn: &Connection, limit: usize, now: i64) -> Result<Vec<i64>, ApiError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = conn
        .prepare_cached(&format!(
            "SELECT min(q.id) FROM runs q
             WHERE q.{ACTIVE} AND q.status = 'QUEUED'
               AND NOT EXISTS (SELECT 1 FROM runs p
                               WHERE p.{ACTIVE} AND p.status = 'IN_PROGRESS' AND p.job_id = q.job_id)
             GROUP BY q.job_id ORDER BY min(q.id) LIMIT ?1"
        ))?
        .query_map([limit as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut start = conn.prepare_cached(
        "UPDATE runs SET status = 'IN_PROGRESS', started_at = ?2 WHERE id = ?1 AND status = 'QUEUED'",
    )?;
    for id in &ids {
        start.execute(params![id, now])?;
    }
    Ok(ids)
}

/// The outcome of a finished run.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub succeeded: bool,
    pub exit_code: Option<i64>,
    pub message: Option<String>,
    pub result_file: Option<String>,
    pub result_file_size: Option<i64>,
    pub log_size: i64,
    pub log_truncated: bool,
    /// The built-in task the run executed (INTERNAL runs): what produced its result file.
    pub task: Option<String>,
}

/// Records the end of an IN_PROGRESS run. Returns false when the run was no longer IN_PROGRESS.
pub fn finish(
    conn: &Connection,
    run_id: i64,
    outcome: &Outcome,
    now: i64,
) -> Result<bool, ApiError> {
    let status = if outcome.succeeded {
        "SUCCEEDED"
    } else {
        "FAILED"
    };
    let changed = conn.prepare_cached(
        "UPDATE runs SET status = ?2, finished_at = ?3, exit_code = ?4, message = ?5, result_file = ?6,
             result_file_size = ?7, log_size = ?8, log_truncated = ?9, task = ?10
         WHERE id = ?1 AND status = 'IN_PROGRESS'",
    )?
    .execute(params![
        run_id,
        status,
        now,
        outcome.exit_code,
        outcome.message,
        outcome.result_file,
        outcome.result_file_size,
        outcome.log_size,
        outcome.log_truncated,
        outcome.task
    ])?;
    Ok(changed == 1)
}

/// Fails a QUEUED run at once. Returns false when it was not QUEUED any more.
pub fn fail_queued(
    conn: &Connection,
    run_id: i64,
    message: &str,
    now: i64,
) -> Result<bool, ApiError> {
    let changed = conn.execute(
        "UPDATE runs SET status = 'FAILED', finished_at = ?2, message = ?3 WHERE id = ?1 AND status = 'QUEUED'",
        params![run_id, now, message],
    )?;
    Ok(changed == 1)
}

/// Fails every QUEUED run of a job (on delete); returns how many.
pub fn fail_all_queued(
    conn: &Connection,
    job_id: i64,
    message: &str,
    now: i64,
) -> Result<usize, ApiError> {
    Ok(conn.execute(
        &format!(
            "UPDATE runs SET status = 'FAILED', finished_at = ?2, message = ?3
             WHERE {ACTIVE} AND status = 'QUEUED' AND job_id = ?1"
        ),
        params![job_id, now, message],
    )?)
}

/// Ids (and job ids) of runs left IN_PROGRESS.
pub fn in_progress(conn: &Connection) -> Result<Vec<(i64, i64)>, ApiError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT id, job_id FROM runs WHERE {ACTIVE} AND status = 'IN_PROGRESS' ORDER BY id"
    ))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Fails every IN_PROGRESS run with `message` (after a crash or at shutdown).
pub fn fail_all_in_progress(conn: &Connection, message: &str, now: i64) -> Result<usize, ApiError> {
    Ok(conn.execute(
        &format!(
            "UPDATE runs SET status = 'FAILED', finished_at = ?1, message = ?2
             WHERE {ACTIVE} AND status = 'IN_PROGRESS'"
        ),
        params![now, message],
    )?)
}

/// Filters of the runs list.
pub struct RunFilter {
    pub job_id: i64,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub status: Option<RunStatus>,
}

/// Runs of a job, newest first, bounded by creation time.
pub fn list(
    conn: &Connection,
    f: &RunFilter,
    start_at: i64,
    max_results: i64,
) -> Result<Vec<Run>, ApiError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM runs r JOIN jobs j ON j.id = r.job_id
         WHERE r.job_id = ?1 AND (?2 IS NULL OR r.queued_at >= ?2) AND (?3 IS NULL OR r.queued_at <= ?3)
           AND (?4 IS NULL OR r.status = ?4)
         ORDER BY r.id DESC LIMIT ?5 OFFSET ?6"
    ))?;
    let runs = stmt
        .query_map(
            params![
                f.job_id,
                f.from,
                f.to,
                f.status.map(|s| s.as_str()),
                max_results,
                start_at
            ],
            map_run,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(runs)
}

/// Updates the log size of a running run (so readers see progress).
pub fn set_log_progress(
    conn: &Connection,
    run_id: i64,
    log_size: i64,
    truncated: bool,
) -> Result<(), ApiError> {
    conn.execute(
        "UPDATE runs SET log_size = ?2, log_truncated = ?3 WHERE id = ?1",
        params![run_id, log_size, truncated],
    )?;
    Ok(())
}

/// Counts of QUEUED and IN_PROGRESS runs across all jobs.
pub fn active_counts(conn: &Connection) -> Result<(i64, i64), ApiError> {
    Ok(conn.query_row(
        "SELECT coalesce(sum(status = 'QUEUED'), 0), coalesce(sum(status = 'IN_PROGRESS'), 0)
         FROM runs WHERE status IN ('QUEUED', 'IN_PROGRESS')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}
