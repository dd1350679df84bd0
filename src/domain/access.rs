//! The access policy: who may do what with a job, its runs and their files. Pure functions over
//! what the caller already loaded (the user, the job, the run, and the two ledger facts "is the job
//! shared with the user" and "is the user a recipient"), so the API, the pages, the CLI and the
//! notifications all ask the same questions and get the same answers. Nothing here reads the
//! ledger or knows HTTP.

use super::job::{Job, JobType};
use super::run::Run;
use super::user::User;

/// The built-in task whose result is a copy of the whole ledger (password and token hashes
/// included): only admins may download it.
pub const LEDGER_BACKUP_TASK: &str = "database-backup";

/// Whether `user` may see `job` (and its runs, logs and results): admins, its creator, and the
/// users it is shared with.
pub fn can_see(job: &Job, user: &User, shared_with_user: bool) -> bool {
    user.admin || job.created_by == user.id || shared_with_user
}

/// Whether `user` may change or delete `job`: admins and its creator.
pub fn can_change(job: &Job, user: &User) -> bool {
    user.admin || job.created_by == user.id
}

/// Whether `user` may queue a run of `job`: whoever may see it.
pub fn can_run(job: &Job, user: &User, shared_with_user: bool) -> bool {
    can_see(job, user, shared_with_user)
}

/// Whether a run's result may be read only by admins. The rule follows the run (what produced
/// the file), never the job's present task: pointing a backup job at another task must not open
/// its old backups to the users it is shared with.
pub fn result_is_admin_only(run: &Run) -> bool {
    run.task.as_deref() == Some(LEDGER_BACKUP_TASK)
}

/// Whether `user` may download `run`'s result file: admins; for other results also whoever may
/// see the job, the job's recipients and the user the run ran as.
pub fn can_download_result(
    run: &Run,
    job: &Job,
    user: &User,
    shared_with_user: bool,
    recipient: bool,
) -> bool {
    if result_is_admin_only(run) {
        return user.admin;
    }
    can_see(job, user, shared_with_user) || run.run_by == user.id || recipient
}

/// Whether `caller` may make a job run as `requested`. Admins may name anyone; others only
/// themselves, or keep what the job already had (an admin's choice on a job they may edit).
pub fn may_set_run_as(caller: &User, requested: Option<i64>, current: Option<i64>) -> bool {
    match requested {
        None => true,
        Some(id) => caller.admin || id == caller.id || Some(id) == current,
    }
}

/// Why a run of `job` by `runner` may not carry runtime arguments, if it may not. A job takes
/// them only when it says so (`rtArgsProvided`); a built-in task takes only the arguments its job
/// fixes unless an admin runs it (its arguments decide what it deletes or reads).
pub fn runtime_args_refusal(job: &Job, runner: &User) -> Option<String> {
    if !job.rt_args_provided {
        return Some(format!(
            "Job {} takes no runtime arguments (rtArgsProvided is false); run it without args.",
            job.name
        ));
    }
    if job.job_type == JobType::Internal && !runner.admin {
        return Some(format!(
            "Job {} runs a built-in task: only admins may pass it runtime arguments.",
            job.name
        ));
    }
    None
}
