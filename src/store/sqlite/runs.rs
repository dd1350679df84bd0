//! SQL for the run ledger: accepting runs (with the queue limit and idempotency keys), the
//! dispatcher's claim of the next runnable runs, finishing, cancelling, listing, and recovery of
//! runs a crash left `IN_PROGRESS`.
//!
//! Queries on QUEUED or IN_PROGRESS runs repeat the partial index's condition (`ACTIVE`) word for
//! word: SQLite uses a partial index only when the query's WHERE contains its WHERE, and without
//! it these queries would scan every run of the ledger (a million, after a few years).

use std::str::FromStr;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::Error;
use crate::domain::ids::{JobId, RunId, RunOfJob, UserId};
use crate::domain::run::{Run, RunStatus, Trigger};

/// The condition of the `runs_active` partial index, to be repeated verbatim in queries on it.
const ACTIVE: &str = "status IN ('QUEUED', 'IN_PROGRESS')";

const COLUMNS: &str = "r.id, r.job_id, j.name, r.status, r.run_trigger, r.run_by, r.rt_args, r.queued_at,
    r.started_at, r.finished_at, r.scheduled_for, r.exit_code, r.message, r.result_file, r.result_file_size,
    r.log_size, r.log_truncated, r.attempt, r.retry_of, r.chained_from, r.not_before, r.cancelled_by,
    r.task, r.node";

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
        attempt: row.get(17)?,
        retry_of: row.get(18)?,
        chained_from: row.get(19)?,
        not_before: row.get(20)?,
        cancelled_by: row.get(21)?,
        task: row.get(22)?,
        node: row.get(23)?,
    })
}

pub fn get(conn: &Connection, run_id: i64) -> Result<Option<Run>, Error> {
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
) -> Result<Enqueued, Error> {
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

/// The status is written into the statement, not bound: SQLite compares a bound value with the
/// literals of the partial indexes' conditions (`runs_one_in_progress`: `status = 'IN_PROGRESS'`)
/// while planning, and from then on binding that parameter again, even to the same value,
/// expires the statement, so every count parsed and planned the query anew (measured with
/// callgrind: 70 k of the 79 k instructions of the count that every accepted run makes).
pub fn count_with_status(conn: &Connection, job_id: i64, status: RunStatus) -> Result<i64, Error> {
    Ok(conn
        .prepare_cached(&count_query(status))?
        .query_row(params![job_id], |r| r.get(0))?)
}

/// The statement of `count_with_status` for `status` (job `?1`).
fn count_query(status: RunStatus) -> String {
    // `as_str` is one of four fixed words, never user input.
    let word = status.as_str();
    if matches!(status, RunStatus::Queued | RunStatus::InProgress) {
        format!("SELECT count(*) FROM runs WHERE {ACTIVE} AND status = '{word}' AND job_id = ?1")
    } else {
        format!("SELECT count(*) FROM runs WHERE status = '{word}' AND job_id = ?1")
    }
}

/// Whether the job has a run waiting or executing.
pub fn job_busy(conn: &Connection, job_id: i64) -> Result<bool, Error> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM runs WHERE status IN ('QUEUED', 'IN_PROGRESS') AND job_id = ?1 LIMIT 1",
        )?
        .exists([job_id])?)
}

/// Marks up to `limit` runs IN_PROGRESS: for each job with nothing in progress, its oldest QUEUED
/// run. Returns their ids, oldest first. Call in a write transaction.
pub fn claim_runnable(
    conn: &Connection,
    node: &str,
    limit: usize,
    now: i64,
) -> Result<Vec<i64>, Error> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    // A job's oldest QUEUED run goes first; while it is a retry waiting for its delay
    // (`not_before`), the job's later runs wait behind it. The jobs with queued runs are found
    // by skipping along the `runs_active` index (a recursive step per job, each an index seek)
    // rather than grouping every queued run: a claim costs per job, not per queued run, which
    // matters because it runs on the single writer at every run's end. The limit is applied
    // while reading, not as `LIMIT ?`: SQLite (with STAT4, as bundled) plans a LIMIT with the
    // bound value, so binding a new one expired the statement and every claim parsed and planned
    // the query again — half of the claim's cost. The ORDER BY reads every candidate anyway (one
    // per job with queued runs).
    //
    // Most claims (a run's end hands over one slot) are answered among the oldest queued runs,
    // so those are looked at first: when `limit` of the first `QUICK_LOOK` are runnable, they are
    // the oldest runnable ones (every other queued run is younger). Otherwise the whole query.
    let mut ids = quick_claim(conn, limit, now)?;
    if ids.len() < limit {
        ids = conn
            .prepare_cached(&claim_query())?
            .query_map(params![now], |r| r.get(0))?
            .take(limit)
            .collect::<Result<_, _>>()?;
    }
    let mut start = conn.prepare_cached(
        "UPDATE runs SET status = 'IN_PROGRESS', started_at = ?2, node = ?3
         WHERE id = ?1 AND status = 'QUEUED'",
    )?;
    for id in &ids {
        start.execute(params![id, now, node])?;
    }
    Ok(ids)
}

/// How many of the oldest queued runs the claim looks at before it asks about every job.
const QUICK_LOOK: usize = 32;

/// Up to `limit` runnable runs (as `claim_query` decides) among the `QUICK_LOOK` oldest queued
/// runs, oldest first: each the oldest queued run of its job, the job with nothing in progress,
/// its time come. The oldest are read one at a time and the look stops at the `limit`-th
/// runnable one: the oldest queued run is usually runnable, so a run's end (a limit of one)
/// reads one or two candidates. (As one query with `ORDER BY`, SQLite sorted the candidates and
/// so tested all 32 first: two thirds of the claim's cost, measured with callgrind.)
fn quick_claim(conn: &Connection, limit: usize, now: i64) -> Result<Vec<i64>, Error> {
    let mut oldest = conn.prepare_cached(&oldest_queued_query())?;
    let mut must_wait = conn.prepare_cached(&must_wait_query())?;
    let mut candidates = oldest.query([])?;
    let mut ids = Vec::new();
    while ids.len() < limit {
        let Some(row) = candidates.next()? else {
            break;
        };
        let (id, job_id, not_before): (i64, i64, Option<i64>) =
            (row.get(0)?, row.get(1)?, row.get(2)?);
        if not_before.is_some_and(|at| at > now) {
            continue;
        }
        if !must_wait.query_row(params![job_id, id], |r| r.get::<_, bool>(0))? {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The quick look's candidates: the `QUICK_LOOK` oldest queued runs, oldest first.
fn oldest_queued_query() -> String {
    format!(
        "SELECT id, job_id, not_before FROM runs INDEXED BY runs_status_id
         WHERE status = 'QUEUED' ORDER BY status, id LIMIT {QUICK_LOOK}"
    )
}

/// Whether queued run `?2` of job `?1` must wait: its job has an older queued run, or one in
/// progress.
fn must_wait_query() -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM runs WHERE {ACTIVE} AND status = 'QUEUED'
                          AND job_id = ?1 AND id < ?2)
             OR EXISTS (SELECT 1 FROM runs WHERE {ACTIVE} AND status = 'IN_PROGRESS'
                          AND job_id = ?1)"
    )
}

/// The claim's query (`claim_runnable`): for each job with queued runs and nothing in progress,
/// its oldest queued run whose time has come (`?1`: now), oldest first.
fn claim_query() -> String {
    format!(
        "WITH RECURSIVE queued_job(job_id) AS (
                 SELECT (SELECT job_id FROM runs WHERE {ACTIVE} AND status = 'QUEUED'
                         ORDER BY status, job_id LIMIT 1)
                 UNION ALL
                 SELECT (SELECT r.job_id FROM runs r
                         WHERE r.{ACTIVE} AND r.status = 'QUEUED' AND r.job_id > q.job_id
                         ORDER BY r.status, r.job_id LIMIT 1)
                 FROM queued_job q WHERE q.job_id IS NOT NULL)
             SELECT n.id FROM queued_job q
             JOIN runs n ON n.id = (SELECT f.id FROM runs f
                                    WHERE f.{ACTIVE} AND f.status = 'QUEUED' AND f.job_id = q.job_id
                                    ORDER BY f.status, f.job_id, f.id LIMIT 1)
             WHERE q.job_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM runs p
                               WHERE p.{ACTIVE} AND p.status = 'IN_PROGRESS' AND p.job_id = q.job_id)
               AND (n.not_before IS NULL OR n.not_before <= ?1)
             ORDER BY n.id"
    )
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
pub fn finish(conn: &Connection, run_id: i64, outcome: &Outcome, now: i64) -> Result<bool, Error> {
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
pub fn fail_queued(conn: &Connection, run_id: i64, message: &str, now: i64) -> Result<bool, Error> {
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
) -> Result<usize, Error> {
    Ok(conn.execute(
        &format!(
            "UPDATE runs SET status = 'FAILED', finished_at = ?2, message = ?3
             WHERE {ACTIVE} AND status = 'QUEUED' AND job_id = ?1"
        ),
        params![job_id, now, message],
    )?)
}

/// The runs left IN_PROGRESS, with their jobs.
pub fn in_progress(conn: &Connection) -> Result<Vec<RunOfJob>, Error> {
    let mut stmt = conn.prepare(&format!(
        "SELECT id, job_id FROM runs WHERE {ACTIVE} AND status = 'IN_PROGRESS' ORDER BY id"
    ))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(RunOfJob::new(JobId(r.get(1)?), RunId(r.get(0)?)))
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Fails every IN_PROGRESS run with `message` (after a crash or at shutdown).
pub fn fail_all_in_progress(conn: &Connection, message: &str, now: i64) -> Result<usize, Error> {
    Ok(conn.execute(
        &format!(
            "UPDATE runs SET status = 'FAILED', finished_at = ?1, message = ?2
             WHERE {ACTIVE} AND status = 'IN_PROGRESS'"
        ),
        params![now, message],
    )?)
}

/// The IN_PROGRESS runs someone asked to cancel: (run id, their login name).
pub fn cancels_asked(conn: &Connection) -> Result<Vec<(i64, String)>, Error> {
    let mut stmt = conn.prepare(&format!(
        "SELECT r.id, u.login_name FROM runs r JOIN users u ON u.id = r.cancelled_by
         WHERE r.{ACTIVE} AND r.status = 'IN_PROGRESS' ORDER BY r.id"
    ))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
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
) -> Result<Vec<Run>, Error> {
    let mut stmt = conn.prepare_cached(&list_query(max_results))?;
    let runs = stmt
        .query_map(
            params![
                f.job_id,
                f.from,
                f.to,
                f.status.map(|s| s.as_str()),
                start_at
            ],
            map_run,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(runs)
}

/// The statement of `list`. The page size is written into it, not bound: SQLite (with STAT4, as
/// bundled) lets a bound LIMIT's value shape the plan, so each execution that binds it expires
/// the statement, and every request parsed and planned the query again (a bound OFFSET does not;
/// clients use a few page sizes, each one cached statement).
fn list_query(max_results: i64) -> String {
    format!(
        "SELECT {COLUMNS} FROM runs r JOIN jobs j ON j.id = r.job_id
         WHERE r.job_id = ?1 AND (?2 IS NULL OR r.queued_at >= ?2) AND (?3 IS NULL OR r.queued_at <= ?3)
           AND (?4 IS NULL OR r.status = ?4)
         ORDER BY r.id DESC LIMIT {max_results} OFFSET ?5"
    )
}

/// Updates the log size of a running run (so readers see progress).
pub fn set_log_progress(
    conn: &Connection,
    run_id: i64,
    log_size: i64,
    truncated: bool,
) -> Result<(), Error> {
    conn.execute(
        "UPDATE runs SET log_size = ?2, log_truncated = ?3 WHERE id = ?1",
        params![run_id, log_size, truncated],
    )?;
    Ok(())
}

/// Counts of QUEUED and IN_PROGRESS runs across all jobs.
pub fn active_counts(conn: &Connection) -> Result<(i64, i64), Error> {
    Ok(conn.query_row(
        "SELECT coalesce(sum(status = 'QUEUED'), 0), coalesce(sum(status = 'IN_PROGRESS'), 0)
         FROM runs WHERE status IN ('QUEUED', 'IN_PROGRESS')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

/// A run queued by the end of another (a retry or a chained run).
pub struct FollowUpRun<'a> {
    pub job_id: i64,
    pub trigger: Trigger,
    pub run_by: i64,
    pub rt_args: Option<&'a str>,
    pub attempt: i64,
    pub retry_of: Option<i64>,
    pub chained_from: Option<i64>,
    pub not_before: Option<i64>,
}

/// Stores a QUEUED follow-up run unless the job already has `max_queued` runs waiting.
pub fn enqueue_follow_up(
    conn: &Connection,
    run: &FollowUpRun,
    max_queued: i64,
    now: i64,
) -> Result<Enqueued, Error> {
    if count_with_status(conn, run.job_id, RunStatus::Queued)? >= max_queued {
        return Ok(Enqueued::QueueFull);
    }
    conn.prepare_cached(
        "INSERT INTO runs (job_id, status, run_trigger, run_by, rt_args, queued_at, attempt, retry_of,
                           chained_from, not_before)
         VALUES (?1, 'QUEUED', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        run.job_id,
        run.trigger.as_str(),
        run.run_by,
        run.rt_args,
        now,
        run.attempt,
        run.retry_of,
        run.chained_from,
        run.not_before
    ])?;
    Ok(Enqueued::Queued(conn.last_insert_rowid()))
}

/// Records a follow-up run that could not be queued as FAILED at once, saying why; it ends its
/// series (nothing retries or chains from it).
pub fn insert_refused(
    conn: &Connection,
    run: &FollowUpRun,
    message: &str,
    now: i64,
) -> Result<i64, Error> {
    conn.prepare_cached(
        "INSERT INTO runs (job_id, status, run_trigger, run_by, rt_args, queued_at, finished_at, message,
                           attempt, retry_of, chained_from, series_end)
         VALUES (?1, 'FAILED', ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, 1)",
    )?
    .execute(params![
        run.job_id,
        run.trigger.as_str(),
        run.run_by,
        run.rt_args,
        now,
        message,
        run.attempt,
        run.retry_of,
        run.chained_from
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Notes who cancels a run that is still QUEUED or IN_PROGRESS.
pub fn mark_cancelled_by(conn: &Connection, run_id: RunId, user_id: UserId) -> Result<(), Error> {
    conn.execute(
        "UPDATE runs SET cancelled_by = ?2 WHERE id = ?1 AND status IN ('QUEUED', 'IN_PROGRESS')
           AND cancelled_by IS NULL",
        params![run_id, user_id],
    )?;
    Ok(())
}

/// Marks a finished run as the end of its series.
pub fn set_series_end(conn: &Connection, run_id: i64) -> Result<(), Error> {
    conn.prepare_cached("UPDATE runs SET series_end = 1 WHERE id = ?1")?
        .execute([run_id])?;
    Ok(())
}

/// The status of the job's latest series end before run `before_id`.
pub fn previous_series_end(
    conn: &Connection,
    job_id: i64,
    before_id: i64,
) -> Result<Option<RunStatus>, Error> {
    let status: Option<String> = conn
        .prepare_cached(
            "SELECT status FROM runs WHERE series_end = 1 AND job_id = ?1 AND id < ?2
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![job_id, before_id], |r| r.get(0))
        .optional()?;
    Ok(status.and_then(|s| RunStatus::from_str(&s).ok()))
}

/// Filters of the runs list across jobs. `visible_to = None` means every job (admins).
#[derive(Debug, Clone, Default)]
pub struct AllRunsFilter {
    pub visible_to: Option<i64>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub status: Option<RunStatus>,
    pub job_id: Option<i64>,
    pub trigger: Option<Trigger>,
    pub cancelled: Option<bool>,
}

impl AllRunsFilter {
    /// The index that reads the matching runs newest first without a sort. Named, because
    /// SQLite's planner, without statistics, may take `runs_job_queued_at` for `job_id = ?` and
    /// then sort every run of the job.
    fn table_clause(&self) -> &'static str {
        if self.job_id.is_some() {
            "runs r INDEXED BY runs_job"
        } else if self.status.is_some() {
            "runs r INDEXED BY runs_status_id"
        } else {
            "runs r"
        }
    }

    /// The WHERE clause and its values. Only the conditions asked for are written, so SQLite
    /// picks the index that fits (`runs_job` for a job, `runs_status_id` for a status, the rowid
    /// otherwise) instead of scanning the ledger to test `?n IS NULL OR …`.
    ///
    /// `ordered`: the rows are read newest first (the list, which joins each run's job as `j`
    /// with `CROSS JOIN`, so SQLite keeps `runs` as the outer loop and never sorts).
    fn where_clause(&self, ordered: bool) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut values: Vec<Value> = Vec::new();
        let mut clauses = Vec::new();
        if ordered {
            // Read newest first, each run's job (joined as `j`, by its primary key) decides
            // whether it is shown: the cost is per run read, one page of them. A list of the
            // visible jobs built first would cost every job at every request (10,000 jobs: 3 ms,
            // twenty times the page itself).
            clauses.push("j.activity_status <> 'Disabled'".to_string());
            if let Some(user) = self.visible_to {
                values.push(Value::Integer(user));
                let n = values.len();
                clauses.push(format!(
                    "(j.created_by = ?{n} OR EXISTS (SELECT 1 FROM job_shared_users s
                        WHERE s.job_id = j.id AND s.user_id = ?{n}))"
                ));
            }
        } else {
            let mut visible =
                "r.job_id IN (SELECT j.id FROM jobs j WHERE j.activity_status <> 'Disabled'"
                    .to_string();
            if let Some(user) = self.visible_to {
                values.push(Value::Integer(user));
                let n = values.len();
                visible.push_str(&format!(
                    " AND (j.created_by = ?{n} OR EXISTS (SELECT 1 FROM job_shared_users s
                        WHERE s.job_id = j.id AND s.user_id = ?{n}))"
                ));
            }
            visible.push(')');
            clauses.push(visible);
        }
        let mut add = |sql: &str, value: Value| {
            values.push(value);
            clauses.push(sql.replace("?", &format!("?{}", values.len())));
        };
        // `+` keeps SQLite off `runs_job_queued_at` for the date bounds: reading `runs_job` or
        // the rowid in id order needs no sort and stops after one page.
        if let Some(from) = self.from {
            add("+r.queued_at >= ?", Value::Integer(from));
        }
        if let Some(to) = self.to {
            add("+r.queued_at <= ?", Value::Integer(to));
        }
        if let Some(status) = self.status {
            add("r.status = ?", Value::Text(status.as_str().into()));
        }
        if let Some(job_id) = self.job_id {
            add("r.job_id = ?", Value::Integer(job_id));
        }
        if let Some(trigger) = self.trigger {
            add("r.run_trigger = ?", Value::Text(trigger.as_str().into()));
        }
        match self.cancelled {
            Some(true) => clauses.push("r.cancelled_by IS NOT NULL".into()),
            Some(false) => clauses.push("r.cancelled_by IS NULL".into()),
            None => {}
        }
        (clauses.join(" AND "), values)
    }
}

/// Runs of every job the filter allows, newest first.
pub fn list_all(
    conn: &Connection,
    f: &AllRunsFilter,
    start_at: i64,
    max_results: i64,
) -> Result<Vec<Run>, Error> {
    let (clause, mut values) = f.where_clause(true);
    values.push(rusqlite::types::Value::Integer(start_at));
    let n = values.len();
    // The page size written in, not bound: see `list_query`.
    let sql = format!(
        "SELECT {COLUMNS} FROM {} CROSS JOIN jobs j ON j.id = r.job_id WHERE {clause}
         ORDER BY r.id DESC LIMIT {max_results} OFFSET ?{n}",
        f.table_clause()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let runs = stmt
        .query_map(rusqlite::params_from_iter(values), map_run)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(runs)
}

/// How many runs `list_all` would return without paging.
pub fn count_all(conn: &Connection, f: &AllRunsFilter) -> Result<i64, Error> {
    let (clause, values) = f.where_clause(false);
    let sql = format!("SELECT count(*) FROM {} WHERE {clause}", f.table_clause());
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(rusqlite::params_from_iter(values), |r| r.get(0))?)
}

/// The query plan of `list_all` (for the test that keeps it on an index).
pub fn explain_list_all(conn: &Connection, f: &AllRunsFilter) -> Result<Vec<String>, Error> {
    let (clause, mut values) = f.where_clause(true);
    values.push(rusqlite::types::Value::Integer(0));
    let n = values.len();
    let sql = format!(
        "EXPLAIN QUERY PLAN SELECT {COLUMNS} FROM {} CROSS JOIN jobs j ON j.id = r.job_id
         WHERE {clause} ORDER BY r.id DESC LIMIT 100 OFFSET ?{n}",
        f.table_clause()
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(values), |r| {
            r.get::<_, String>(3)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// How far back the Run dialog looks for the arguments it prefills (newest runs of the job).
const LAST_ARGS_WINDOW: i64 = 1000;

/// The arguments someone last typed for a job: the newest MANUAL run with arguments among the
/// job's last runs, `user_id`'s own when there is one. Returns (run id, arguments, by `user_id`).
pub fn last_manual_args(
    conn: &Connection,
    job_id: i64,
    user_id: i64,
) -> Result<Option<(i64, String, bool)>, Error> {
    // The window bounds the work on a job with a long history of scheduled runs.
    let mut stmt = conn.prepare_cached(
        "SELECT id, rt_args, run_by = ?2 AS mine FROM
           (SELECT id, rt_args, run_by, run_trigger FROM runs WHERE job_id = ?1
            ORDER BY id DESC LIMIT ?3)
         WHERE run_trigger = 'MANUAL' AND rt_args IS NOT NULL AND rt_args <> ''
         ORDER BY mine DESC, id DESC LIMIT 1",
    )?;
    Ok(stmt
        .query_row(params![job_id, user_id, LAST_ARGS_WINDOW], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, bool>(2)?))
        })
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ledger with `jobs` jobs and runs given as (job, status, not_before).
    fn ledger(jobs: i64, runs: &[(i64, &str, Option<i64>)]) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labcron.db");
        drop(crate::store::Db::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO users (login_name, created_at) VALUES ('owner', 0)",
            [],
        )
        .unwrap();
        for job in 1..=jobs {
            conn.execute(
                "INSERT INTO jobs (id, name, type, repeat_schedule, timezone, start_date,
                     activity_status, created_by, command, timeout_seconds, max_queued_runs,
                     created_at, updated_at)
                 VALUES (?1, 'job ' || ?1, 'EXTERNAL', 'ONDEMAND', 'UTC', 0, 'Active',
                     (SELECT id FROM users WHERE login_name = 'owner'), 'x.sh', 60, 100, 0, 0)",
                [job],
            )
            .unwrap();
        }
        for (job, status, not_before) in runs {
            conn.execute(
                "INSERT INTO runs (job_id, status, run_trigger, run_by, queued_at, not_before)
                 VALUES (?1, ?2, 'MANUAL', (SELECT id FROM users WHERE login_name = 'owner'), 0, ?3)",
                params![job, status, not_before],
            )
            .unwrap();
        }
        (dir, conn)
    }

    #[test]
    fn a_claim_takes_each_free_jobs_oldest_queued_run_oldest_first() {
        let (_dir, conn) = ledger(
            4,
            &[
                (3, "QUEUED", None),      // 1: job 3's oldest
                (1, "SUCCEEDED", None),   // 2
                (1, "QUEUED", None),      // 3: job 1's oldest
                (2, "IN_PROGRESS", None), // 4: job 2 is busy
                (2, "QUEUED", None),      // 5: waits for run 4
                (1, "QUEUED", None),      // 6: behind run 3
                (4, "QUEUED", Some(500)), // 7: a retry waiting until 500
                (4, "QUEUED", None),      // 8: behind the waiting retry
                (3, "QUEUED", None),      // 9: behind run 1
            ],
        );
        assert_eq!(claim_runnable(&conn, "here", 10, 100).unwrap(), vec![1, 3]);
        let status = |id: i64| -> String {
            conn.query_row("SELECT status FROM runs WHERE id = ?1", [id], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(status(1), "IN_PROGRESS");
        assert_eq!(status(3), "IN_PROGRESS");
        // Every job is busy or waiting now.
        assert!(claim_runnable(&conn, "here", 10, 100).unwrap().is_empty());
        // The retry's time comes; the limit takes the oldest first.
        conn.execute(
            "UPDATE runs SET status = 'SUCCEEDED' WHERE id IN (1, 3, 4)",
            [],
        )
        .unwrap();
        assert_eq!(claim_runnable(&conn, "here", 2, 600).unwrap(), vec![5, 6]);
        assert_eq!(claim_runnable(&conn, "here", 2, 600).unwrap(), vec![7, 9]);
        assert!(claim_runnable(&conn, "here", 0, 600).unwrap().is_empty());
    }

    #[test]
    fn claims_reuse_one_prepared_statement_whatever_the_limit_and_time() {
        let (_dir, conn) = ledger(3, &[(1, "QUEUED", None), (2, "QUEUED", None)]);
        // Different limits and instants, as the dispatcher (free slots) and a run's end (one
        // slot) ask; each run is put back to QUEUED so every claim has something to read.
        for (limit, now) in [(8, 100), (1, 101), (3, 102), (1, 103), (8, 104)] {
            let claimed = claim_runnable(&conn, "here", limit, now).unwrap();
            assert_eq!(claimed.len(), limit.min(2), "limit {limit}");
            conn.execute("UPDATE runs SET status = 'QUEUED'", [])
                .unwrap();
        }
        // The statements the claims used (the quick look always, the whole query when the
        // limit was not reached), from the connection's cache: never parsed and planned again
        // because a bound value changed.
        for (sql, runs) in [
            (oldest_queued_query(), 5),
            (must_wait_query(), 5),
            (claim_query(), 2),
        ] {
            let stmt = conn.prepare_cached(&sql).unwrap();
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "the claim's statement was prepared again: {sql}"
            );
            assert!(
                stmt.get_status(rusqlite::StatementStatus::Run) >= runs,
                "{sql}"
            );
        }
    }

    #[test]
    fn the_queue_count_is_not_prepared_again_from_run_to_run() {
        let (_dir, conn) = ledger(
            2,
            &[
                (1, "QUEUED", None),
                (1, "QUEUED", None),
                (2, "IN_PROGRESS", None),
            ],
        );
        // Every accepted run counts its job's queue, for one job and then another.
        for (job, queued) in [(1, 2), (2, 0), (1, 2), (2, 0), (1, 2)] {
            assert_eq!(
                count_with_status(&conn, job, RunStatus::Queued).unwrap(),
                queued
            );
        }
        assert_eq!(
            count_with_status(&conn, 2, RunStatus::InProgress).unwrap(),
            1
        );
        assert_eq!(count_with_status(&conn, 1, RunStatus::Failed).unwrap(), 0);
        let stmt = conn
            .prepare_cached(&count_query(RunStatus::Queued))
            .unwrap();
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "the queue count was prepared again"
        );
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::Run), 5);
    }

    #[test]
    fn a_claim_looks_past_the_oldest_queued_runs_when_they_all_wait() {
        // Job 1 is busy with more queued runs than the quick look sees; job 2's one run, younger
        // than all of them, is the only runnable one.
        let mut runs = vec![(1, "IN_PROGRESS", None)];
        runs.extend(std::iter::repeat_n((1, "QUEUED", None), QUICK_LOOK + 5));
        runs.push((2, "QUEUED", None));
        let (_dir, conn) = ledger(2, &runs);
        let youngest = runs.len() as i64;
        assert_eq!(
            claim_runnable(&conn, "here", 1, 100).unwrap(),
            vec![youngest]
        );
        assert!(claim_runnable(&conn, "here", 8, 100).unwrap().is_empty());
        // Job 1's first run ends: its oldest queued run goes next, whatever the limit.
        conn.execute("UPDATE runs SET status = 'SUCCEEDED' WHERE id = 1", [])
            .unwrap();
        assert_eq!(claim_runnable(&conn, "here", 8, 100).unwrap(), vec![2]);
    }

    #[test]
    fn the_quick_look_and_the_whole_query_agree() {
        // Jobs 1..=6 with interleaved runs; some busy, one waiting for a retry's delay.
        let mut runs = Vec::new();
        for round in 0..10 {
            for job in 1..=6 {
                let status = if round == 0 && job % 3 == 0 {
                    "IN_PROGRESS"
                } else {
                    "QUEUED"
                };
                let not_before = (round == 0 && job == 2).then_some(500);
                runs.push((job, status, not_before));
            }
        }
        let (_dir, conn) = ledger(6, &runs);
        for now in [100, 600] {
            let all: Vec<i64> = conn
                .prepare(&claim_query())
                .unwrap()
                .query_map(params![now], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let quick = quick_claim(&conn, usize::MAX, now).unwrap();
            assert_eq!(quick, all, "at {now}");
            assert!(!all.is_empty());
            // A smaller limit takes the oldest of them.
            for limit in 1..all.len() {
                assert_eq!(quick_claim(&conn, limit, now).unwrap(), all[..limit]);
            }
        }
    }

    #[test]
    fn the_runs_lists_are_not_prepared_again_from_page_to_page() {
        let runs: Vec<(i64, &str, Option<i64>)> =
            std::iter::repeat_n((1, "SUCCEEDED", None), 30).collect();
        let (_dir, conn) = ledger(1, &runs);
        let f = RunFilter {
            job_id: 1,
            from: None,
            to: None,
            status: None,
        };
        let all = AllRunsFilter::default();
        // Pages of one size, at different offsets, again and again (as clients page through).
        for start in [0, 10, 20, 0, 0] {
            let page: Vec<i64> = list(&conn, &f, start, 10)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect();
            assert_eq!(page, (21 - start..=30 - start).rev().collect::<Vec<_>>());
            assert_eq!(list_all(&conn, &all, start, 10).unwrap().len(), 10);
        }
        let stmt = conn.prepare_cached(&list_query(10)).unwrap();
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::Run), 5);
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "the runs list was prepared again"
        );
    }
}
