//! The access policy of `domain::access` with the ledger facts it needs read here: whether a job is
//! shared with the user, whether the user is one of its recipients. Every caller that loads a job,
//! a run or a result on a user's behalf (the API, the pages, the CLI, chains at save time) goes
//! through these, so the answer is the same everywhere. Blocking: call on a ledger connection.

use crate::domain::access;
use crate::domain::ids::{JobId, UserId};
use crate::domain::job::Job;
use crate::domain::run::Run;
use crate::domain::user::User;
use crate::error::ServiceError;
use crate::store::Ledger;

/// Whether `user` may see `job` (and its runs, logs and results).
pub fn can_see(conn: &dyn Ledger, job: &Job, user: &User) -> Result<bool, ServiceError> {
    // Admins and creators need no ledger read.
    if access::can_change(job, user) {
        return Ok(true);
    }
    Ok(access::can_see(job, user, shared_with(conn, job, user)?))
}

/// Whether `user` may queue a run of `job` (by hand, or as a chain target of a job they save).
pub fn can_run(conn: &dyn Ledger, job: &Job, user: &User) -> Result<bool, ServiceError> {
    if access::can_change(job, user) {
        return Ok(true);
    }
    Ok(access::can_run(job, user, shared_with(conn, job, user)?))
}

fn shared_with(conn: &dyn Ledger, job: &Job, user: &User) -> Result<bool, ServiceError> {
    Ok(conn.job_shared_with(JobId(job.id), UserId(user.id))?)
}

/// A live job `user` may see: `SCHEDULED_JOB_NOT_FOUND` or `SCHEDULED_JOB_OP_NOT_ALLOWED`.
pub fn visible_job(conn: &dyn Ledger, job_id: i64, user: &User) -> Result<Job, ServiceError> {
    let job = conn
        .live_job(job_id)?
        .ok_or_else(ServiceError::job_not_found)?;
    if can_see(conn, &job, user)? {
        Ok(job)
    } else {
        Err(ServiceError::op_not_allowed())
    }
}

/// A live job `user` may change or delete: its creator or an admin.
pub fn changeable_job(conn: &dyn Ledger, job_id: i64, user: &User) -> Result<Job, ServiceError> {
    may_change(conn.live_job(job_id)?, user)
}

/// `changeable_job` in the write that changes the job, read with `job_for_update`: another
/// writer's change or delete of the job lands before this read or after this write, never between.
pub fn changeable_job_for_update(
    tx: &dyn Ledger,
    job_id: i64,
    user: &User,
) -> Result<Job, ServiceError> {
    may_change(tx.job_for_update(job_id)?, user)
}

fn may_change(job: Option<Job>, user: &User) -> Result<Job, ServiceError> {
    let job = job.ok_or_else(ServiceError::job_not_found)?;
    if access::can_change(&job, user) {
        Ok(job)
    } else {
        Err(ServiceError::op_not_allowed())
    }
}

/// Whether `user` may download `run`'s result file (a run of `job`).
pub fn can_download_result(
    conn: &dyn Ledger,
    run: &Run,
    job: &Job,
    user: &User,
) -> Result<bool, ServiceError> {
    if user.admin {
        // Admins may download every result; no ledger facts are needed.
        return Ok(true);
    }
    let shared = shared_with(conn, job, user)?;
    let recipient = conn.job_recipient(JobId(job.id), UserId(user.id))?;
    Ok(access::can_download_result(
        run, job, user, shared, recipient,
    ))
}
