//! SQL the built-in INTERNAL tasks need from the ledger: how many jobs and runs it holds (for the
//! backup and restore), which runs have finished and when (for the files cleaner), and the runs
//! report, streamed.
//! Read-only, except the retention pass's deletion of old run rows (`retention`); the tasks
//! themselves live in `executor::internal`.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};

use super::Error;
use crate::domain::ids::{JobId, RunId, RunOfJob};
use crate::store::ledger::{Cell, Interrupt, ReportSink};

/// When the run finished, if it has.
pub fn finished_at(conn: &Connection, ids: RunOfJob) -> Result<Option<i64>, Error> {
    Ok(conn
        .prepare_cached(
            "SELECT finished_at FROM runs
             WHERE id = ?1 AND job_id = ?2 AND status IN ('SUCCEEDED', 'FAILED')",
        )?
        .query_row(params![ids.run, ids.job], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten())
}

/// Every run queued at or after `?1` (epoch ms), oldest first, one CSV-ready row each: times in
/// UTC ISO 8601, the result file by name only.
const RUNS_REPORT_SQL: &str = "
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

/// Up to `limit` runs that finished before `cutoff` (epoch ms), with ids above `after`, by id: a
/// batch of the retention pass's row deletion.
pub fn finished_before(
    conn: &Connection,
    cutoff: i64,
    after: RunId,
    limit: i64,
) -> Result<Vec<RunOfJob>, Error> {
    let rows = conn
        .prepare_cached(
            "SELECT job_id, id FROM runs
             WHERE id > ?2 AND status IN ('SUCCEEDED', 'FAILED') AND finished_at < ?1
             ORDER BY id LIMIT ?3",
        )?
        .query_map(params![cutoff, after.0, limit], |r| {
            Ok(RunOfJob::new(JobId(r.get(0)?), RunId(r.get(1)?)))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Deletes the rows of `run_ids` that finished before `cutoff`; returns how many went. Call in a
/// write transaction (the retention pass keeps each to one batch).
pub fn delete_finished_runs(conn: &Connection, run_ids: &[i64], cutoff: i64) -> Result<u64, Error> {
    let mut delete = conn.prepare_cached(
        "DELETE FROM runs WHERE id = ?1 AND status IN ('SUCCEEDED', 'FAILED') AND finished_at < ?2",
    )?;
    let mut deleted = 0;
    for id in run_ids {
        deleted += delete.execute(params![id, cutoff])? as u64;
    }
    Ok(deleted)
}

/// How many jobs (deleted ones included) and runs the ledger holds (moved from `labcron restore`).
pub fn totals(conn: &Connection) -> Result<(i64, i64), Error> {
    Ok(conn.query_row(
        "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM runs)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

/// The runs report (`RUNS_REPORT_SQL`) streamed into `sink`, `interrupt` watched while SQLite
/// works (the connection's progress handler, removed again before the connection goes back).
pub fn runs_report(
    conn: &Connection,
    since: i64,
    interrupt: Interrupt,
    sink: &mut dyn ReportSink,
) -> Result<(), Error> {
    conn.progress_handler(super::INTERRUPT_STEPS, Some(move || interrupt()))?;
    let streamed = stream_report(conn, since, sink);
    conn.progress_handler(0, None::<fn() -> bool>)?;
    streamed
}

fn stream_report(conn: &Connection, since: i64, sink: &mut dyn ReportSink) -> Result<(), Error> {
    let mut stmt = conn.prepare(RUNS_REPORT_SQL)?;
    let names: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    if !sink.columns(&names) {
        return Ok(());
    }
    let columns = names.len();
    let mut rows = stmt.query([since])?;
    while let Some(row) = rows.next()? {
        let mut cells = Vec::with_capacity(columns);
        for index in 0..columns {
            cells.push(match row.get_ref(index)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(i) => Cell::Integer(i),
                ValueRef::Real(r) => Cell::Real(r),
                ValueRef::Text(t) => Cell::Text(t),
                ValueRef::Blob(b) => Cell::Blob(b),
            });
        }
        if !sink.row(&cells) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::Db;

    /// Collects a report's columns and rows as text; stops after `keep` rows.
    struct Collect {
        columns: Vec<String>,
        rows: Vec<Vec<String>>,
        keep: usize,
    }

    impl ReportSink for Collect {
        fn columns(&mut self, names: &[&str]) -> bool {
            self.columns = names.iter().map(|n| n.to_string()).collect();
            true
        }

        fn row(&mut self, cells: &[Cell<'_>]) -> bool {
            let text = |cell: &Cell<'_>| match *cell {
                Cell::Null => "NULL".to_string(),
                Cell::Integer(i) => i.to_string(),
                Cell::Real(r) => r.to_string(),
                Cell::Text(t) | Cell::Blob(t) => String::from_utf8_lossy(t).into_owned(),
            };
            self.rows.push(cells.iter().map(text).collect());
            self.rows.len() < self.keep
        }
    }

    fn ledger_with_runs(queued_at: &[i64]) -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labcron.db");
        let db = Db::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO jobs (name, type, repeat_schedule, timezone, start_date, activity_status,
                               created_by, command, timeout_seconds, max_queued_runs, created_at,
                               updated_at)
             VALUES ('nightly', 'EXTERNAL', 'ONDEMAND', 'UTC', 0, 'Active',
                     (SELECT id FROM users LIMIT 1), 'x.sh', 60, 10, 0, 0);",
        )
        .unwrap();
        // One transaction: a commit per run would sync 20,000 times.
        conn.execute_batch("BEGIN").unwrap();
        for at in queued_at {
            conn.execute(
                "INSERT INTO runs (job_id, status, run_trigger, run_by, queued_at)
                 VALUES (1, 'QUEUED', 'MANUAL', (SELECT id FROM users LIMIT 1), ?1)",
                [at],
            )
            .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        (dir, db)
    }

    fn never() -> Interrupt {
        Arc::new(|| false)
    }

    #[test]
    fn the_runs_report_streams_the_runs_since_an_instant_and_stops_when_the_sink_says_so() {
        let (_dir, db) = ledger_with_runs(&[1_000, 2_000, 3_000, 4_000]);
        let mut all = Collect {
            columns: Vec::new(),
            rows: Vec::new(),
            keep: usize::MAX,
        };
        db.read_sync(|l| l.runs_report(2_000, never(), &mut all))
            .unwrap();
        assert_eq!(&all.columns[..3], ["runId", "jobId", "jobName"]);
        let ids: Vec<&str> = all.rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(
            ids,
            ["2", "3", "4"],
            "the runs queued since 2,000, oldest first"
        );
        assert_eq!(all.rows[0][2], "nightly");
        assert_eq!(
            all.rows[0][8], "1970-01-01T00:00:02.000Z",
            "queuedAt in UTC ISO 8601"
        );
        let mut first = Collect {
            columns: Vec::new(),
            rows: Vec::new(),
            keep: 1,
        };
        db.read_sync(|l| l.runs_report(0, never(), &mut first))
            .unwrap();
        assert_eq!(first.rows.len(), 1, "the sink's false ends the report");
    }

    #[test]
    fn an_interrupted_report_fails_and_leaves_the_connection_as_it_was() {
        let (_dir, db) = ledger_with_runs(&(0..20_000).collect::<Vec<i64>>());
        let interrupt: Interrupt = Arc::new(|| true);
        let mut sink = Collect {
            columns: Vec::new(),
            rows: Vec::new(),
            keep: usize::MAX,
        };
        let stopped = db.read_sync(|l| l.runs_report(0, interrupt, &mut sink));
        assert!(stopped.is_err(), "the interrupt stops the report");
        assert!(sink.rows.len() < 20_000);
        // The progress handler went with the report: the next long read on the pool (the same
        // idle connection, taken again) is not stopped, though the old interrupt still says so.
        let counted = db.read_sync(|l| l.count_all_runs(&Default::default()));
        assert_eq!(counted.unwrap(), 20_000);
    }
}
