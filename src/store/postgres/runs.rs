//! The run ledger on PostgreSQL: accepting runs (queue limit, idempotency keys, scheduled
//! instants), the dispatcher's claim, ends, cancelling, lists and recovery — the SQLite
//! implementation's meaning, statement for statement, made safe for writers running at once:
//! every acceptance, follow-up, cancel and end locks its job's row first, and the claim takes the
//! jobs no other claim holds (`FOR UPDATE OF j SKIP LOCKED`), with `runs_one_in_progress` (one
//! IN_PROGRESS run per job, a unique index) as the backstop.

use postgres::Row;

use super::{Bound, Pg, parse};
use crate::domain::ids::{JobId, RunId, RunOfJob, UserId};
use crate::domain::run::{Run, RunStatus};
use crate::store::Error;
use crate::store::ledger::RunLedger;
use crate::store::runs::{
    AllRunsFilter, Enqueued, FollowUpRun, IDEMPOTENCY_WINDOW_MS, NewRun, Outcome, RunFilter,
};

/// The condition of the `runs_active` partial index, repeated so the planner sees it applies.
const ACTIVE: &str = "status IN ('QUEUED', 'IN_PROGRESS')";

const COLUMNS: &str = "r.id, r.job_id, j.name, r.status, r.run_trigger, r.run_by, r.rt_args, r.queued_at,
    r.started_at, r.finished_at, r.scheduled_for, r.exit_code, r.message, r.result_file, r.result_file_size,
    r.log_size, r.log_truncated, r.attempt, r.retry_of, r.chained_from, r.not_before, r.cancelled_by,
    r.task, r.node";

fn map_run(row: &Row) -> Result<Run, Error> {
    Ok(Run {
        id: row.try_get(0)?,
        job_id: row.try_get(1)?,
        job_name: row.try_get(2)?,
        status: parse(row, 3, "run status")?,
        trigger: parse(row, 4, "run trigger")?,
        run_by: row.try_get(5)?,
        rt_args: row.try_get(6)?,
        queued_at: row.try_get(7)?,
        started_at: row.try_get(8)?,
        finished_at: row.try_get(9)?,
        scheduled_for: row.try_get(10)?,
        exit_code: row.try_get(11)?,
        message: row.try_get(12)?,
        result_file: row.try_get(13)?,
        result_file_size: row.try_get(14)?,
        log_size: row.try_get(15)?,
        log_truncated: row.try_get(16)?,
        attempt: row.try_get(17)?,
        retry_of: row.try_get(18)?,
        chained_from: row.try_get(19)?,
        not_before: row.try_get(20)?,
        cancelled_by: row.try_get(21)?,
        task: row.try_get(22)?,
        node: row.try_get(23)?,
    })
}

fn map_runs(rows: Vec<Row>) -> Result<Vec<Run>, Error> {
    rows.iter().map(map_run).collect()
}

impl Pg<'_> {
    /// How many runs of the job wait (the queue limit's count; call with the job locked).
    fn queued_count(&self, job_id: i64) -> Result<i64, Error> {
        self.count_runs_with_status(job_id, RunStatus::Queued)
    }

    /// The job's oldest QUEUED run whose time has come set IN_PROGRESS, unless the job has one
    /// IN_PROGRESS already: read afresh (this statement's own snapshot) with the job locked, so
    /// a claim that committed since the candidates were read is seen. Its id, if it started.
    fn start_oldest_queued(&self, job_id: i64, node: &str, now: i64) -> Result<Option<i64>, Error> {
        let row = self.row(
            &format!(
                "UPDATE runs SET status = 'IN_PROGRESS', started_at = $2, node = $3
                 WHERE id = (SELECT f.id FROM runs f
                             WHERE f.{ACTIVE} AND f.status = 'QUEUED' AND f.job_id = $1
                             ORDER BY f.id LIMIT 1)
                   AND status = 'QUEUED' AND (not_before IS NULL OR not_before <= $2)
                   AND NOT EXISTS (SELECT 1 FROM runs p
                                   WHERE p.{ACTIVE} AND p.status = 'IN_PROGRESS' AND p.job_id = $1)
                 RETURNING id"
            ),
            &[&job_id, &now, &node],
        )?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }
}

impl RunLedger for Pg<'_> {
    fn run(&self, run_id: i64) -> Result<Option<Run>, Error> {
        self.row(
            &format!("SELECT {COLUMNS} FROM runs r JOIN jobs j ON j.id = r.job_id WHERE r.id = $1"),
            &[&run_id],
        )?
        .as_ref()
        .map(map_run)
        .transpose()
    }

    fn enqueue_run(&self, run: &NewRun, max_queued: i64, now: i64) -> Result<Enqueued, Error> {
        // The checks and the insert are one step only while no other writer accepts a run of
        // this job: they wait here until this transaction ends.
        self.lock_job(run.job_id)?;
        if let Some(key) = run.idempotency_key {
            let earlier = self.row(
                "SELECT id FROM runs WHERE job_id = $1 AND idempotency_key = $2 AND queued_at >= $3
                 ORDER BY id LIMIT 1",
                &[&run.job_id, &key, &(now - IDEMPOTENCY_WINDOW_MS)],
            )?;
            if let Some(row) = earlier {
                return Ok(Enqueued::Duplicate(row.try_get(0)?));
            }
        }
        if let Some(instant) = run.scheduled_for {
            let earlier = self.row(
                "SELECT id FROM runs WHERE job_id = $1 AND scheduled_for = $2",
                &[&run.job_id, &instant],
            )?;
            if let Some(row) = earlier {
                return Ok(Enqueued::Duplicate(row.try_get(0)?));
            }
        }
        if self.queued_count(run.job_id)? >= max_queued {
            return Ok(Enqueued::QueueFull);
        }
        let row = self.one(
            "INSERT INTO runs (job_id, status, run_trigger, run_by, rt_args, queued_at, scheduled_for,
                               idempotency_key)
             VALUES ($1, 'QUEUED', $2, $3, $4, $5, $6, $7) RETURNING id",
            &[
                &run.job_id,
                &run.trigger.as_str(),
                &run.run_by,
                &run.rt_args,
                &now,
                &run.scheduled_for,
                &run.idempotency_key,
            ],
        )?;
        Ok(Enqueued::Queued(row.try_get(0)?))
    }

    fn count_runs_with_status(&self, job_id: i64, status: RunStatus) -> Result<i64, Error> {
        let sql = if matches!(status, RunStatus::Queued | RunStatus::InProgress) {
            format!("SELECT count(*) FROM runs WHERE {ACTIVE} AND status = $2 AND job_id = $1")
        } else {
            "SELECT count(*) FROM runs WHERE status = $2 AND job_id = $1".to_string()
        };
        Ok(self.one(&sql, &[&job_id, &status.as_str()])?.try_get(0)?)
    }

    fn job_busy(&self, job_id: i64) -> Result<bool, Error> {
        self.exists(
            &format!("SELECT 1 FROM runs WHERE {ACTIVE} AND job_id = $1 LIMIT 1"),
            &[&job_id],
        )
    }

    fn claim_runnable(&self, node: &str, limit: usize, now: i64) -> Result<Vec<i64>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // A node claims only while it holds its incarnation: one declared lost or whose name
        // another process took over would execute runs whose ends it may not write (they would
        // stay IN_PROGRESS for ever). The row is share-locked, so a declaration waits for this
        // claim and then fails what it claimed.
        if let Some(me) = self.node.as_deref() {
            let held = self.row(
                "SELECT 1 FROM nodes WHERE name = $1 AND incarnation = $2 AND lost_at IS NULL
                 FOR SHARE",
                &[&me.name, &me.incarnation],
            )?;
            if held.is_none() {
                return Ok(Vec::new());
            }
        }
        // The candidates: each job with a runnable oldest QUEUED run and nothing in progress,
        // oldest first, locked; a job another claim (or an acceptance, an end) holds is
        // skipped, not waited for. Locking happens below the LIMIT, so skipped jobs do not
        // count against it.
        let candidates = self.rows(
            &format!(
                "SELECT j.id FROM jobs j
                 JOIN LATERAL (SELECT f.id, f.not_before FROM runs f
                               WHERE f.{ACTIVE} AND f.status = 'QUEUED' AND f.job_id = j.id
                               ORDER BY f.id LIMIT 1) n ON TRUE
                 WHERE j.id IN (SELECT q.job_id FROM runs q WHERE q.{ACTIVE} AND q.status = 'QUEUED')
                   AND (n.not_before IS NULL OR n.not_before <= $1)
                   AND NOT EXISTS (SELECT 1 FROM runs p
                                   WHERE p.{ACTIVE} AND p.status = 'IN_PROGRESS' AND p.job_id = j.id)
                 ORDER BY n.id
                 LIMIT $2
                 FOR UPDATE OF j SKIP LOCKED"
            ),
            &[&now, &(limit as i64)],
        )?;
        // The candidates were read in the statement's snapshot, taken before the locks: a
        // claim that committed in between is seen only by the start's own statement.
        let mut ids = Vec::with_capacity(candidates.len());
        for row in &candidates {
            if let Some(id) = self.start_oldest_queued(row.try_get(0)?, node, now)? {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn finish_run(&self, run_id: i64, outcome: &Outcome, now: i64) -> Result<bool, Error> {
        // The job first (as every run write): the end's follow-ups lock it next anyway.
        self.lock_job_of_run(run_id)?;
        // A node writes only its own runs' ends, and only while it is not declared lost: the
        // node that declared it lost has failed them already (see `NodeLedger`).
        let me = self.node.as_deref();
        let status = if outcome.succeeded {
            "SUCCEEDED"
        } else {
            "FAILED"
        };
        let changed = self.exec(
            "UPDATE runs SET status = $2, finished_at = $3, exit_code = $4, message = $5,
                 result_file = $6, result_file_size = $7, log_size = $8, log_truncated = $9,
                 task = $10
             WHERE id = $1 AND status = 'IN_PROGRESS'
               AND ($11::TEXT IS NULL
                    OR (node = $11 AND EXISTS (SELECT 1 FROM nodes n WHERE n.name = $11
                                               AND n.incarnation = $12 AND n.lost_at IS NULL)))",
            &[
                &run_id,
                &status,
                &now,
                &outcome.exit_code,
                &outcome.message,
                &outcome.result_file,
                &outcome.result_file_size,
                &outcome.log_size,
                &outcome.log_truncated,
                &outcome.task,
                &me.map(|n| n.name.as_str()),
                &me.map(|n| n.incarnation.as_str()),
            ],
        )?;
        Ok(changed == 1)
    }

    fn fail_queued_run(&self, run_id: i64, message: &str, now: i64) -> Result<bool, Error> {
        self.lock_job_of_run(run_id)?;
        let changed = self.exec(
            "UPDATE runs SET status = 'FAILED', finished_at = $2, message = $3
             WHERE id = $1 AND status = 'QUEUED'",
            &[&run_id, &now, &message],
        )?;
        Ok(changed == 1)
    }

    fn fail_queued_runs_of_job(
        &self,
        job_id: i64,
        message: &str,
        now: i64,
    ) -> Result<usize, Error> {
        self.lock_job(job_id)?;
        Ok(self.exec(
            &format!(
                "UPDATE runs SET status = 'FAILED', finished_at = $2, message = $3
                 WHERE {ACTIVE} AND status = 'QUEUED' AND job_id = $1"
            ),
            &[&job_id, &now, &message],
        )? as usize)
    }

    fn runs_in_progress(&self) -> Result<Vec<RunOfJob>, Error> {
        self.rows(
            &format!(
                "SELECT id, job_id FROM runs WHERE {ACTIVE} AND status = 'IN_PROGRESS' ORDER BY id"
            ),
            &[],
        )?
        .iter()
        .map(|r| Ok(RunOfJob::new(JobId(r.try_get(1)?), RunId(r.try_get(0)?))))
        .collect()
    }

    fn fail_runs_in_progress(&self, message: &str, now: i64) -> Result<usize, Error> {
        Ok(self.exec(
            &format!(
                "UPDATE runs SET status = 'FAILED', finished_at = $1, message = $2
                 WHERE {ACTIVE} AND status = 'IN_PROGRESS'"
            ),
            &[&now, &message],
        )? as usize)
    }

    fn list_runs(&self, f: &RunFilter, start_at: i64, max_results: i64) -> Result<Vec<Run>, Error> {
        let status = f.status.map(|s| s.as_str());
        map_runs(self.rows(
            &format!(
                "SELECT {COLUMNS} FROM runs r JOIN jobs j ON j.id = r.job_id
                 WHERE r.job_id = $1 AND ($2::BIGINT IS NULL OR r.queued_at >= $2)
                   AND ($3::BIGINT IS NULL OR r.queued_at <= $3)
                   AND ($4::TEXT IS NULL OR r.status = $4)
                 ORDER BY r.id DESC LIMIT $6 OFFSET $5"
            ),
            &[&f.job_id, &f.from, &f.to, &status, &start_at, &max_results],
        )?)
    }

    fn set_log_progress(&self, run_id: i64, log_size: i64, truncated: bool) -> Result<(), Error> {
        self.exec(
            "UPDATE runs SET log_size = $2, log_truncated = $3 WHERE id = $1",
            &[&run_id, &log_size, &truncated],
        )?;
        Ok(())
    }

    fn active_run_counts(&self) -> Result<(i64, i64), Error> {
        let row = self.one(
            &format!(
                "SELECT count(*) FILTER (WHERE status = 'QUEUED'),
                        count(*) FILTER (WHERE status = 'IN_PROGRESS')
                 FROM runs WHERE {ACTIVE}"
            ),
            &[],
        )?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    fn enqueue_follow_up(
        &self,
        run: &FollowUpRun,
        max_queued: i64,
        now: i64,
    ) -> Result<Enqueued, Error> {
        self.lock_job(run.job_id)?;
        if self.queued_count(run.job_id)? >= max_queued {
            return Ok(Enqueued::QueueFull);
        }
        let row = self.one(
            "INSERT INTO runs (job_id, status, run_trigger, run_by, rt_args, queued_at, attempt,
                               retry_of, chained_from, not_before)
             VALUES ($1, 'QUEUED', $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            &[
                &run.job_id,
                &run.trigger.as_str(),
                &run.run_by,
                &run.rt_args,
                &now,
                &run.attempt,
                &run.retry_of,
                &run.chained_from,
                &run.not_before,
            ],
        )?;
        Ok(Enqueued::Queued(row.try_get(0)?))
    }

    fn insert_refused_run(&self, run: &FollowUpRun, message: &str, now: i64) -> Result<i64, Error> {
        let row = self.one(
            "INSERT INTO runs (job_id, status, run_trigger, run_by, rt_args, queued_at, finished_at,
                               message, attempt, retry_of, chained_from, series_end)
             VALUES ($1, 'FAILED', $2, $3, $4, $5, $5, $6, $7, $8, $9, TRUE) RETURNING id",
            &[
                &run.job_id,
                &run.trigger.as_str(),
                &run.run_by,
                &run.rt_args,
                &now,
                &message,
                &run.attempt,
                &run.retry_of,
                &run.chained_from,
            ],
        )?;
        Ok(row.try_get(0)?)
    }

    fn mark_cancelled_by(&self, run_id: RunId, user_id: UserId) -> Result<(), Error> {
        self.lock_job_of_run(run_id.0)?;
        self.exec(
            "UPDATE runs SET cancelled_by = $2
             WHERE id = $1 AND status IN ('QUEUED', 'IN_PROGRESS') AND cancelled_by IS NULL",
            &[&run_id.0, &user_id.0],
        )?;
        Ok(())
    }

    fn set_series_end(&self, run_id: i64) -> Result<(), Error> {
        self.exec(
            "UPDATE runs SET series_end = TRUE WHERE id = $1",
            &[&run_id],
        )?;
        Ok(())
    }

    fn previous_series_end(&self, job_id: i64, before_id: i64) -> Result<Option<RunStatus>, Error> {
        let row = self.row(
            "SELECT status FROM runs WHERE series_end AND job_id = $1 AND id < $2
             ORDER BY id DESC LIMIT 1",
            &[&job_id, &before_id],
        )?;
        // As in SQLite: a status this labcron does not know reads as none.
        Ok(row
            .map(|r| r.try_get::<_, String>(0))
            .transpose()?
            .and_then(|s| s.parse().ok()))
    }

    fn list_all_runs(
        &self,
        filter: &AllRunsFilter,
        start_at: i64,
        max_results: i64,
    ) -> Result<Vec<Run>, Error> {
        let mut bound = Bound::default();
        let clause = all_runs_clause(filter, &mut bound);
        let offset = bound.push(start_at);
        let limit = bound.push(max_results);
        map_runs(self.rows(
            &format!(
                "SELECT {COLUMNS} FROM runs r JOIN jobs j ON j.id = r.job_id WHERE {clause}
                 ORDER BY r.id DESC LIMIT {limit} OFFSET {offset}"
            ),
            &bound.refs(),
        )?)
    }

    fn count_all_runs(&self, filter: &AllRunsFilter) -> Result<i64, Error> {
        let mut bound = Bound::default();
        let clause = all_runs_clause(filter, &mut bound);
        Ok(self
            .one(
                &format!(
                    "SELECT count(*) FROM runs r JOIN jobs j ON j.id = r.job_id WHERE {clause}"
                ),
                &bound.refs(),
            )?
            .try_get(0)?)
    }

    fn last_manual_args(
        &self,
        job_id: i64,
        user_id: i64,
    ) -> Result<Option<(i64, String, bool)>, Error> {
        let row = self.row(
            "SELECT id, rt_args, run_by = $2 AS mine FROM
               (SELECT id, rt_args, run_by, run_trigger FROM runs WHERE job_id = $1
                ORDER BY id DESC LIMIT $3) w
             WHERE run_trigger = 'MANUAL' AND rt_args IS NOT NULL AND rt_args <> ''
             ORDER BY mine DESC, id DESC LIMIT 1",
            &[&job_id, &user_id, &LAST_ARGS_WINDOW],
        )?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .transpose()
    }
}

/// How far back the Run dialog looks for the arguments it prefills (as in SQLite).
const LAST_ARGS_WINDOW: i64 = 1000;

/// The WHERE clause of the all-runs list and count (runs joined with their job as `j`): only
/// the conditions asked for, as in the SQLite implementation.
fn all_runs_clause(f: &AllRunsFilter, bound: &mut Bound) -> String {
    let mut clauses = vec!["j.activity_status <> 'Disabled'".to_string()];
    if let Some(user) = f.visible_to {
        let n = bound.push(user);
        clauses.push(format!(
            "(j.created_by = {n} OR EXISTS (SELECT 1 FROM job_shared_users s
                 WHERE s.job_id = j.id AND s.user_id = {n}))"
        ));
    }
    if let Some(from) = f.from {
        clauses.push(format!("r.queued_at >= {}", bound.push(from)));
    }
    if let Some(to) = f.to {
        clauses.push(format!("r.queued_at <= {}", bound.push(to)));
    }
    if let Some(status) = f.status {
        clauses.push(format!("r.status = {}", bound.push(status.as_str())));
    }
    if let Some(job_id) = f.job_id {
        clauses.push(format!("r.job_id = {}", bound.push(job_id)));
    }
    if let Some(trigger) = f.trigger {
        clauses.push(format!("r.run_trigger = {}", bound.push(trigger.as_str())));
    }
    match f.cancelled {
        Some(true) => clauses.push("r.cancelled_by IS NOT NULL".into()),
        Some(false) => clauses.push("r.cancelled_by IS NULL".into()),
        None => {}
    }
    clauses.join(" AND ")
}
