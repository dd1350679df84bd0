//! SQL the built-in INTERNAL tasks need from the ledger: where the ledger file is (for the
//! backup), which runs have finished and when (for the files cleaner), and the runs report.
//! Read-only; the tasks themselves live in `executor::internal`.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::ApiError;

/// The file of the ledger's main database.
pub fn ledger_file(conn: &Connection) -> Result<String, ApiError> {
    Ok(conn.query_row(
        "SELECT file FROM pragma_database_list WHERE name = 'main'",
        [],
        |r| r.get(0),
    )?)
}

/// When run `run_id` of job `job_id` finished, if it has.
pub fn finished_at(conn: &Connection, job_id: i64, run_id: i64) -> Result<Option<i64>, ApiError> {
    Ok(conn
        .prepare_cached(
            "SELECT finished_at FROM runs
             WHERE id = ?1 AND job_id = ?2 AND status IN ('SUCCEEDED', 'FAILED')",
        )?
        .query_row(params![run_id, job_id], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten())
}

/// Every run queued at or after `?1` (epoch ms), oldest first, one CSV-ready row each: times in
/// UTC ISO 8601, the result file by name only.
pub const RUNS_REPORT_SQL: &str = "
SELECT r.id AS runId, r.job_id AS jobId, j.name AS jobName, j.type AS jobType, r.status,
       r.run_trigger AS \"trigger\", u.login_name AS runBy, r.rt_args AS rtArgs,
       strftime('%Y-%m-%dT%H:%M:%fZ', r.queued_at / 1000.0, 'unixepoch') AS queuedAt,
       strftime('%Y-%m-%dT%H:%M:%fZ', r.started_at / 1000.0, 'unixepoch') AS startedAt,
       strftime('%Y-%m-%dT%H:%M:%fZ', r.finished_at / 1000.0, 'unixepoch') AS finishedAt,
       r.finished_at - r.started_at AS durationMs, r.exit_code AS exitCode,
       replace(r.result_file, rtrim(r.result_file, replace(r.result_file, '/', '')), '') AS resultFile,
       r.result_file_size AS resultFileSize, r.log_size AS logSize, r.message
FROM runs r
JOIN jobs j ON j.id = r.job_id
LEFT JOIN users u ON u.id = r.run_by
WHERE r.queued_at >= ?1
ORDER BY r.id";
