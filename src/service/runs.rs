//! Accepting runs: the one path by which a run of a job enters the ledger as QUEUED, whoever asks
//! — a client through the API or the pages (`accept_on_demand`), or the scheduler's fires
//! (`accept_fire`, many in one transaction). Both check the job as stored inside the write
//! transaction that stores the run, and both end in `accept`, which applies the rules every run
//! shares (runtime arguments, duplicates, the job's queue limit). Retries and chained runs are
//! follow-ups of a run that ended (`executor::followup`), not requests.

use crate::domain::access;
use crate::domain::job::Job;
use crate::domain::run::Trigger;
use crate::error::ServiceError;
use crate::store;
use crate::store::Ledger;
use crate::store::runs::{Enqueued, NewRun};

/// A request to run a job.
pub struct RunRequest {
    pub trigger: Trigger,
    pub run_by: i64,
    pub args: Option<String>,
    pub scheduled_for: Option<i64>,
    pub idempotency_key: Option<String>,
}

/// A client's request to run job `job_id` now (`POST …/runs`, the job page's Run button, the
/// CLI): refused when the job is deleted or Closed, or when it may not take the arguments. When
/// a run is stored, `audit` (about the new run) is recorded with it.
pub fn accept_on_demand(
    tx: &dyn Ledger,
    job_id: i64,
    request: &RunRequest,
    audit: Option<store::audit::Event>,
    now: i64,
) -> Result<Enqueued, ServiceError> {
    // Locked: a Close, PUT or delete committed meanwhile is seen here, none lands before the run.
    let job = tx
        .job_for_update(job_id)?
        .ok_or_else(ServiceError::job_not_found)?;
    if !job.is_active() {
        return Err(ServiceError::user(
            "SCHEDULED_JOB_NOT_ACTIVE",
            format!(
                "Job {} is Closed; reopen it (activityStatus Active) to run it.",
                job.name
            ),
        ));
    }
    let enqueued = accept(tx, &job, request, job.max_queued_runs, now)?;
    if let (Some(audit), Enqueued::Queued(run_id)) = (audit, &enqueued) {
        let audit = audit
            .object("RUN", run_id)
            .detail("jobId", job_id)
            .detail("jobName", job.name.clone())
            .detail("args", request.args.clone());
        tx.record_audit(&audit, now)?;
    }
    Ok(enqueued)
}

/// What a scheduled instant of a job came to.
#[derive(Debug)]
pub enum Fire {
    /// The job is deleted or Closed: the instant is not its any more.
    Gone,
    /// A run of the job is still queued or running: skipped (`misfirePolicy` is about instants
    /// the server missed, not about busy jobs).
    Busy,
    /// The ledger's answer for the run (queued, or a duplicate of the instant's earlier run).
    Enqueued(Enqueued),
}

/// The scheduler's fire of job `job_id` at `instant`: runs as the job's `runAs` user while that
/// user exists, else as `system_user`, and records the instant as the job's last fired one.
pub fn accept_fire(
    tx: &dyn Ledger,
    job_id: i64,
    instant: i64,
    trigger: Trigger,
    system_user: i64,
    now: i64,
) -> Result<Fire, ServiceError> {
    let Some(job) = tx.job_for_update(job_id)? else {
        return Ok(Fire::Gone);
    };
    if !job.is_active() {
        return Ok(Fire::Gone);
    }
    tx.set_last_fired_for(job_id, instant)?;
    if tx.job_busy(job_id)? {
        return Ok(Fire::Busy);
    }
    let run_by = match job.run_as {
        Some(user) if tx.missing_user_ids(&[user])?.is_empty() => user,
        _ => system_user,
    };
    let request = RunRequest {
        trigger,
        run_by,
        args: None,
        scheduled_for: Some(instant),
        idempotency_key: None,
    };
    // A fire reaches here only when nothing of the job is queued, so even a job that queues no
    // on-demand runs (`maxQueuedRuns` 0) gets its scheduled one.
    let enqueued = accept(tx, &job, &request, job.max_queued_runs.max(1), now)?;
    Ok(Fire::Enqueued(enqueued))
}

/// The rules every accepted run shares: runtime arguments only where the job (or an admin)
/// allows them, checked against the job as stored; then the ledger's duplicate and queue-limit
/// checks and the insert, one step in the caller's transaction.
fn accept(
    tx: &dyn Ledger,
    job: &Job,
    request: &RunRequest,
    queue_limit: i64,
    now: i64,
) -> Result<Enqueued, ServiceError> {
    if request.args.is_some() {
        let runner = tx
            .user(request.run_by)?
            .ok_or_else(ServiceError::user_not_found)?;
        if let Some(why) = access::runtime_args_refusal(job, &runner) {
            return Err(ServiceError::user("SCHEDULED_JOB_RT_ARGS_NOT_ALLOWED", why));
        }
    }
    let new_run = NewRun {
        job_id: job.id,
        trigger: request.trigger,
        run_by: request.run_by,
        rt_args: request.args.as_deref(),
        scheduled_for: request.scheduled_for,
        idempotency_key: request.idempotency_key.as_deref(),
    };
    Ok(tx.enqueue_run(&new_run, queue_limit, now)?)
}
