//! The access policy: who may do what with a job, its runs and their files. Pure functions over
//! what the caller already loaded (the user, the job, the run, and the two ledger facts "is the job
//! shared with the user" and "is the user a recipient"), so the API, the pages, the CLI and the
//! notifications all ask the same questions and get the same answers. Nothing here reads the
//! ledger or knows HTTP.

use super::job::{InternalTask, Job, JobType};
use super::run::Run;
use super::user::User;

/// Whether `user` may see `job` (and its runs, logs and results): admins, its creator, and the
/// users it is shared with.
pub fn can_see(job: &Job, user: &User, shared_with_user: bool) -> bool {
    user.admin || job.created_by == user.id || shared_with_user
}

/// Whether `user` may change or delete `job`: admins and its creator.
pub fn can_change(job: &Job, user: &User) -> bool {
    user.admin || job.created_by == user.id
}

/// Whether `caller` may save a job of `job_type` (replacing one of `existing_type`): EXTERNAL and
/// INTERNAL jobs run programs or built-in tasks on the server, so only admins create or change
/// them, and only admins turn a job into one or out of one.
pub fn may_save_job_type(caller: &User, job_type: JobType, existing_type: Option<JobType>) -> bool {
    let privileged = |t: JobType| matches!(t, JobType::External | JobType::Internal);
    caller.admin || !(privileged(job_type) || existing_type.is_some_and(privileged))
}

/// Whether `user` may edit `job` (a full replace, which also closes and reopens it).
pub fn can_edit(job: &Job, user: &User) -> bool {
    can_change(job, user) && may_save_job_type(user, job.job_type, Some(job.job_type))
}

/// Whether `user` may delete `job`: who may change it, but an EXTERNAL job only an admin (its
/// creator may delete their own INTERNAL ones).
pub fn can_delete(job: &Job, user: &User) -> bool {
    can_change(job, user) && (user.admin || job.job_type != JobType::External)
}

/// Whether `caller` may set a job's webhook to `requested` (it was `current`): a webhook makes the
/// server call an address of the caller's choosing, so only admins set a new one; keeping what
/// the job has, or having none, is anyone's.
pub fn may_set_webhook(caller: &User, requested: Option<&str>, current: Option<&str>) -> bool {
    caller.admin || requested.is_none() || requested == current
}

/// Whether `user` may queue a run of `job`: whoever may see it.
pub fn can_run(job: &Job, user: &User, shared_with_user: bool) -> bool {
    can_see(job, user, shared_with_user)
}

/// Whose rights a run chained from `upstream_job`'s run by `upstream_runner` is checked against:
/// that user's, except when it is the built-in system user (a scheduled run of a job without
/// `runAs`), who may run anything: then the upstream job's owner's, so that taking a job away
/// from its owner also stops their jobs' chains into it.
pub fn chain_principal(upstream_runner: &User, upstream_job: &Job) -> i64 {
    if upstream_runner.is_system {
        upstream_job.created_by
    } else {
        upstream_runner.id
    }
}

/// Whether a run's result may be read only by admins. The rule follows the run (what produced
/// the file), never the job's present task: pointing a backup job at another task must not open
/// its old backups to the users it is shared with.
pub fn result_is_admin_only(run: &Run) -> bool {
    // The backup's result is a copy of the whole ledger, password and token hashes included.
    run.task.as_deref().and_then(InternalTask::parse) == Some(InternalTask::DatabaseBackup)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::{ActivityStatus, MisfirePolicy, NotifyOn, Repeat};

    fn user(id: i64, admin: bool) -> User {
        User {
            id,
            login_name: format!("u{id}"),
            first_name: String::new(),
            last_name: String::new(),
            email_address: String::new(),
            admin,
            is_system: false,
            active: true,
            created_at: 0,
        }
    }

    fn job(job_type: JobType, created_by: i64) -> Job {
        Job {
            id: 1,
            name: "j".into(),
            job_type,
            repeat: Repeat::OnDemand,
            timezone: chrono_tz::UTC,
            start_date: 0,
            end_date: None,
            activity_status: ActivityStatus::Active,
            created_by,
            run_as: None,
            task_impl_fqn: None,
            command: None,
            fixed_args: None,
            rt_args_provided: false,
            rt_args_help_text: None,
            saved_query_id: None,
            timeout_seconds: 60,
            misfire_policy: MisfirePolicy::Skip,
            max_queued_runs: 10,
            result_from_stdout: false,
            created_at: 0,
            updated_at: 0,
            last_fired_for: None,
            webhook_url: None,
            max_retries: 0,
            retry_delay_seconds: 0,
            notify_on: NotifyOn::Always,
        }
    }

    #[test]
    fn only_admins_edit_jobs_that_run_programs_and_creators_delete_their_internal_ones() {
        let (creator, other, admin) = (user(2, false), user(3, false), user(1, true));
        let external = job(JobType::External, 2);
        assert!(!can_edit(&external, &creator) && !can_delete(&external, &creator));
        assert!(can_edit(&external, &admin) && can_delete(&external, &admin));
        let internal = job(JobType::Internal, 2);
        assert!(!can_edit(&internal, &creator) && can_delete(&internal, &creator));
        let query = job(JobType::Query, 2);
        assert!(can_edit(&query, &creator) && can_delete(&query, &creator));
        assert!(!can_edit(&query, &other) && !can_delete(&query, &other));
        assert!(can_run(&query, &other, true) && !can_run(&query, &other, false));
    }

    #[test]
    fn a_save_may_not_turn_a_job_into_or_out_of_a_privileged_type_but_by_an_admin() {
        let (user, admin) = (user(2, false), user(1, true));
        assert!(may_save_job_type(&user, JobType::Query, None));
        assert!(may_save_job_type(
            &user,
            JobType::Query,
            Some(JobType::Query)
        ));
        assert!(!may_save_job_type(&user, JobType::External, None));
        assert!(!may_save_job_type(
            &user,
            JobType::Query,
            Some(JobType::Internal)
        ));
        assert!(may_save_job_type(
            &admin,
            JobType::Internal,
            Some(JobType::External)
        ));
    }

    #[test]
    fn only_admins_set_a_new_webhook() {
        let (user, admin) = (user(2, false), user(1, true));
        let current = Some("https://hooks.lab/a");
        assert!(
            may_set_webhook(&user, None, current),
            "removing it is anyone's"
        );
        assert!(
            may_set_webhook(&user, current, current),
            "keeping it is anyone's"
        );
        assert!(!may_set_webhook(&user, Some("https://evil/x"), current));
        assert!(!may_set_webhook(&user, Some("https://evil/x"), None));
        assert!(may_set_webhook(
            &admin,
            Some("https://hooks.lab/b"),
            current
        ));
    }
}
