//! What a run's end sets in motion (issue 13): retries, chained runs and whether the end is worth
//! a notification. A run and its retries form a *series*; the series ends when a run succeeds, or
//! fails with no retry queued (none left, cancelled, job closed or deleted, queue full). Only a
//! series' end queues the jobs of `onSuccess` / `onFailure` and may notify, so a retried run sends
//! one notification, not one per attempt. Everything here runs inside the write transaction that
//! records the run's end, so a crash never leaves a failed run without its retry or chained runs.
//! The save-time chain rules (targets the saver may run, no cycle) are `service::jobs::check_chains`;
//! at queue time the same `service::access::can_run` decides, for the user the chain answers to
//! (`domain::access::chain_principal`: a system run's chain answers to its job's owner).

use crate::domain::access as domain_access;
use crate::domain::job::{Job, NotifyOn};
use crate::domain::run::{Run, RunStatus, Trigger};
use crate::error::ServiceError;
use crate::service::access;
use crate::store;
use crate::store::Ledger;
use crate::store::runs::{Enqueued, FollowUpRun};

/// What followed a run's end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FollowUp {
    /// The retry queued for the run, if any (then the series goes on).
    pub retry: Option<i64>,
    /// Runs queued (or recorded FAILED, when refused) by the job's chains.
    pub chained: Vec<i64>,
    /// Whether the job's `notifyOn` asks for a notification about this end.
    pub notify: bool,
    /// Whether the job has a webhook (as the end was recorded): with e-mail off, a notification
    /// goes nowhere without one.
    pub webhook: bool,
}

impl FollowUp {
    /// Whether anything was queued that the dispatcher should look at.
    pub fn queued_any(&self) -> bool {
        self.retry.is_some() || !self.chained.is_empty()
    }
}

/// Decides and stores what follows the end of run `run_id`, which has just been recorded. Call in
/// the write transaction that recorded it.
pub fn after_end(conn: &dyn Ledger, run_id: i64, now: i64) -> Result<FollowUp, ServiceError> {
    let Some(run) = conn.run(run_id)? else {
        return Ok(FollowUp::default());
    };
    if !run.status.is_finished() {
        return Ok(FollowUp::default());
    }
    let Some(job) = conn.job_even_deleted(run.job_id)? else {
        return Ok(FollowUp::default());
    };
    let mut follow_up = FollowUp::default();
    let cancelled = run.cancelled_by.is_some();
    if run.status == RunStatus::Failed && !cancelled && run.attempt <= job.max_retries {
        follow_up.retry = queue_retry(conn, &run, &job, now)?;
        if follow_up.retry.is_some() {
            return Ok(follow_up);
        }
    }
    conn.set_series_end(run.id)?;
    follow_up.notify = should_notify(conn, &job, &run)?;
    follow_up.webhook = job.webhook_url.is_some();
    // A cancelled run was stopped on purpose: nothing is chained to it.
    if !cancelled && job.activity_status != crate::domain::job::ActivityStatus::Disabled {
        let list = if run.status == RunStatus::Succeeded {
            store::jobs::CHAIN_SUCCESS
        } else {
            store::jobs::CHAIN_FAILURE
        };
        for target in conn.chain_targets(job.id, list)? {
            follow_up
                .chained
                .push(queue_chained(conn, &run, &job, target, now)?);
        }
    }
    Ok(follow_up)
}

/// Queues the next attempt of a failed run, after the job's delay. None when the job cannot take
/// it (closed, deleted, queue full): the series ends there.
fn queue_retry(
    conn: &dyn Ledger,
    run: &Run,
    job: &Job,
    now: i64,
) -> Result<Option<i64>, ServiceError> {
    if !job.is_active() {
        return Ok(None);
    }
    let retry = FollowUpRun {
        job_id: job.id,
        trigger: Trigger::Retry,
        run_by: run.run_by,
        rt_args: run.rt_args.as_deref(),
        attempt: run.attempt + 1,
        retry_of: Some(run.retry_of.unwrap_or(run.id)),
        chained_from: run.chained_from,
        not_before: Some(now + job.retry_delay_seconds * 1000),
    };
    match conn.enqueue_follow_up(&retry, job.max_queued_runs, now)? {
        Enqueued::Queued(id) => Ok(Some(id)),
        _ => {
            tracing::warn!(
                run_id = run.id,
                "no retry queued: job {} already has {} runs waiting",
                job.name,
                job.max_queued_runs
            );
            Ok(None)
        }
    }
}

/// Queues a run of `target_id` chained from `run`, run by the same user. A run that cannot be
/// queued (the user may no longer run the target, the target is closed, its queue is full) is
/// recorded FAILED at once with the reason, so the refusal is visible in the target's runs.
fn queue_chained(
    conn: &dyn Ledger,
    run: &Run,
    job: &Job,
    target_id: i64,
    now: i64,
) -> Result<i64, ServiceError> {
    let chained = FollowUpRun {
        job_id: target_id,
        trigger: Trigger::Chained,
        run_by: run.run_by,
        rt_args: None,
        attempt: 1,
        retry_of: None,
        chained_from: Some(run.id),
        not_before: None,
    };
    // Locked, as an acceptance does: a Close or delete of the target committed meanwhile is seen.
    let Some(target) = conn.job_for_update(target_id)? else {
        // Chain targets are live (deleted ones drop out), so this is a race with a delete.
        return Ok(conn.insert_refused_run(&chained, "not run: the job was deleted", now)?);
    };
    let runner = conn.user(run.run_by)?;
    // The user the chain answers to: the upstream run's, or its job's owner for a system run.
    let (principal, whose) = match &runner {
        Some(user) if user.is_system => (
            conn.user(domain_access::chain_principal(user, job))?,
            format!(", owner of job {},", job.name),
        ),
        other => (other.clone(), " of the upstream run".to_string()),
    };
    let refusal = match &principal {
        None => Some(format!("the user{whose} no longer exists")),
        Some(user) if !user.active => Some(format!("user {}{whose} is disabled", user.login_name)),
        Some(user) if !access::can_run(conn, &target, user)? => Some(format!(
            "user {}{whose} may no longer run job {}",
            user.login_name, target.name
        )),
        Some(_) if !target.is_active() => Some(format!("job {} is Closed", target.name)),
        Some(_) => None,
    };
    let prefix = format!("not run after run {} of job {}", run.id, job.name);
    if let Some(why) = refusal {
        return Ok(conn.insert_refused_run(&chained, &format!("{prefix}: {why}"), now)?);
    }
    match conn.enqueue_follow_up(&chained, target.max_queued_runs, now)? {
        Enqueued::Queued(id) => Ok(id),
        _ => Ok(conn.insert_refused_run(
            &chained,
            &format!(
                "{prefix}: job {} already has {} runs waiting",
                target.name, target.max_queued_runs
            ),
            now,
        )?),
    }
}

/// The job's `notifyOn` rule for the end of `run`'s series.
fn should_notify(conn: &dyn Ledger, job: &Job, run: &Run) -> Result<bool, ServiceError> {
    let failed = run.status == RunStatus::Failed;
    Ok(match job.notify_on {
        NotifyOn::Always => true,
        NotifyOn::Never => false,
        NotifyOn::Failure => failed,
        // The first failure after a success and the first success after a failure; a job's very
        // first outcome counts as a change only when it is a failure.
        NotifyOn::Change => match conn.previous_series_end(job.id, run.id)? {
            Some(previous) => previous != run.status,
            None => failed,
        },
    })
}
