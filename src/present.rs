//! The JSON shapes of jobs and runs (OpenSpecimen's field names, plus ours), and the lookups that
//! fill them: user summaries, the saved query's title, `lastRunOn` and `nextRunOn`.

use std::collections::HashMap;

use serde::Serialize;

use crate::clock::{from_ms, now_ms};
use crate::domain::job::{
    ActivityStatus, Job, JobType, MisfirePolicy, NotifyOn, RepeatKind, weekday_name,
};
use crate::domain::next_fire::next_fire;
use crate::domain::run::{Run, RunStatus, Trigger};
use crate::domain::user::UserSummary;
use crate::error::ServiceError;
use crate::run_files::RunFiles;
use crate::store;
use crate::store::Ledger;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavedQueryRef {
    pub id: i64,
    pub title: Option<String>,
}

/// A job as every endpoint returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub job_type: JobType,
    pub repeat_schedule: RepeatKind,
    pub scheduled_minute: Option<u32>,
    pub scheduled_hour: Option<u32>,
    pub scheduled_day_of_week: Option<&'static str>,
    pub scheduled_day_of_month: Option<u32>,
    pub minutely_interval: Option<u32>,
    pub hourly_interval: Option<u32>,
    pub cron_expression: Option<String>,
    pub timezone: String,
    pub start_date: i64,
    pub end_date: Option<i64>,
    pub activity_status: ActivityStatus,
    pub next_run_on: Option<i64>,
    pub last_run_on: Option<i64>,
    pub created_by: Option<UserSummary>,
    pub run_as: Option<UserSummary>,
    pub recipients: Vec<UserSummary>,
    pub shared_with: Vec<UserSummary>,
    pub task_impl_fqn: Option<String>,
    pub command: Option<String>,
    pub fixed_args: Option<String>,
    pub rt_args_provided: bool,
    pub rt_args_help_text: Option<String>,
    pub saved_query: Option<SavedQueryRef>,
    pub is_active_job: bool,
    pub timeout_seconds: i64,
    pub misfire_policy: MisfirePolicy,
    pub max_queued_runs: i64,
    pub result_from_stdout: bool,
    /// (ext) Receives each finished run as a signed POST.
    pub webhook_url: Option<String>,
    /// (ext) How many times a failed run is tried again (0–10).
    pub max_retries: i64,
    /// (ext) Seconds between a failed run and its retry (1–86,400).
    pub retry_delay_seconds: i64,
    /// (ext) When e-mail and webhooks go out.
    pub notify_on: NotifyOn,
    /// (ext) Jobs queued when a run's series ends SUCCEEDED.
    pub on_success: Vec<JobRef>,
    /// (ext) Jobs queued when a run's series ends FAILED.
    pub on_failure: Vec<JobRef>,
}

/// A reference to another job in `onSuccess` / `onFailure`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobRef {
    pub id: i64,
    pub name: String,
}

/// A chain list of a job as `JobRef`s.
pub fn chain_refs(
    conn: &dyn Ledger,
    job_id: i64,
    on_result: &str,
) -> Result<Vec<JobRef>, ServiceError> {
    let mut refs = Vec::new();
    for id in conn.chain_targets(job_id, on_result)? {
        if let Some(name) = conn.job_name(id)? {
            refs.push(JobRef { id, name });
        }
    }
    Ok(refs)
}

/// A run as every endpoint returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub id: i64,
    pub job_id: i64,
    pub job_name: String,
    pub status: RunStatus,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The result file's name only.
    pub log_file_path: Option<String>,
    pub message: Option<String>,
    pub run_by: Option<UserSummary>,
    pub rt_args: Option<String>,
    pub queued_at: i64,
    pub trigger: Trigger,
    pub scheduled_for: Option<i64>,
    pub exit_code: Option<i64>,
    pub duration_ms: Option<i64>,
    pub result_file_size: Option<i64>,
    pub log_size: i64,
    pub log_truncated: bool,
    /// (ext) 1 for a series' first run, 2 for its first retry…
    pub attempt: i64,
    /// (ext) The id of the series' first run; null on the first.
    pub retry_of: Option<i64>,
    /// (ext) The run whose end queued this one (`CHAINED` runs and their retries).
    pub chained_from: Option<i64>,
    /// (ext) Who cancelled the run (its status is FAILED); null when it was not cancelled.
    pub cancelled_by: Option<UserSummary>,
    /// (ext) A queued retry does not start before this instant (epoch ms).
    pub not_before: Option<i64>,
    /// (ext) The node (`node_name`) that executed the run; null until it starts.
    pub node: Option<String>,
}

/// Caches user summaries while building several views.
#[derive(Default)]
pub struct UserCache {
    users: HashMap<i64, Option<UserSummary>>,
}

impl UserCache {
    pub fn summary(
        &mut self,
        conn: &dyn Ledger,
        id: i64,
    ) -> Result<Option<UserSummary>, ServiceError> {
        if let Some(found) = self.users.get(&id) {
            return Ok(found.clone());
        }
        let summary = conn.user(id)?.as_ref().map(UserSummary::from);
        self.users.insert(id, summary.clone());
        Ok(summary)
    }
}

/// The next fire instant as `nextRunOn` shows it: none for paused or deleted jobs.
pub fn next_run_on(job: &Job) -> Option<i64> {
    if !job.is_active() {
        return None;
    }
    next_fire(&job.schedule(), from_ms(now_ms())).map(|t| t.timestamp_millis())
}

pub fn job_view(
    conn: &dyn Ledger,
    job: &Job,
    users: &mut UserCache,
) -> Result<JobView, ServiceError> {
    let (recipient_ids, shared_ids) = conn.job_user_lists(job.id)?;
    let mut summaries = |ids: Vec<i64>| -> Result<Vec<UserSummary>, ServiceError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(users.summary(conn, id)?);
        }
        Ok(out)
    };
    let recipients = summaries(recipient_ids)?;
    let shared_with = summaries(shared_ids)?;
    let saved_query = match job.saved_query_id {
        Some(id) => Some(SavedQueryRef {
            id,
            title: conn.saved_query_title(id)?,
        }),
        None => None,
    };
    let query_ok =
        job.job_type != JobType::Query || saved_query.as_ref().is_some_and(|q| q.title.is_some());
    let r = &job.repeat;
    Ok(JobView {
        id: job.id,
        name: job.name.clone(),
        job_type: job.job_type,
        repeat_schedule: r.kind(),
        scheduled_minute: r.minute(),
        scheduled_hour: r.hour(),
        scheduled_day_of_week: r.day_of_week().map(weekday_name),
        scheduled_day_of_month: r.day_of_month(),
        minutely_interval: r.minutely_interval(),
        hourly_interval: r.hourly_interval(),
        cron_expression: r.cron_expression().map(str::to_string),
        timezone: job.timezone.name().to_string(),
        start_date: job.start_date,
        end_date: job.end_date,
        activity_status: job.activity_status,
        next_run_on: next_run_on(job),
        last_run_on: conn.last_run_on(job.id)?,
        created_by: users.summary(conn, job.created_by)?,
        run_as: match job.run_as {
            Some(id) => users.summary(conn, id)?,
            None => None,
        },
        recipients,
        shared_with,
        task_impl_fqn: job.task_impl_fqn.clone(),
        command: job.command.clone(),
        fixed_args: job.fixed_args.clone(),
        rt_args_provided: job.rt_args_provided,
        rt_args_help_text: job.rt_args_help_text.clone(),
        saved_query,
        is_active_job: job.is_active() && query_ok,
        timeout_seconds: job.timeout_seconds,
        misfire_policy: job.misfire_policy,
        max_queued_runs: job.max_queued_runs,
        result_from_stdout: job.result_from_stdout,
        webhook_url: job.webhook_url.clone(),
        max_retries: job.max_retries,
        retry_delay_seconds: job.retry_delay_seconds,
        notify_on: job.notify_on,
        on_success: chain_refs(conn, job.id, store::jobs::CHAIN_SUCCESS)?,
        on_failure: chain_refs(conn, job.id, store::jobs::CHAIN_FAILURE)?,
    })
}

/// The views of a page of runs, looking each user up once for the page.
pub fn run_views(
    conn: &dyn Ledger,
    runs: &[Run],
    files: &RunFiles,
) -> Result<Vec<RunView>, ServiceError> {
    let mut users = UserCache::default();
    runs.iter()
        .map(|run| run_view(conn, run, &mut users, files))
        .collect()
}

/// The views of a page of jobs, looking each user up once for the page.
pub fn job_views(conn: &dyn Ledger, jobs: &[Job]) -> Result<Vec<JobView>, ServiceError> {
    let mut users = UserCache::default();
    jobs.iter()
        .map(|job| job_view(conn, job, &mut users))
        .collect()
}

pub fn run_view(
    conn: &dyn Ledger,
    run: &Run,
    users: &mut UserCache,
    files: &RunFiles,
) -> Result<RunView, ServiceError> {
    // While a run executes its log grows; the ledger has the final size only at the end.
    let log_size = files.live_log_size(run);
    Ok(RunView {
        id: run.id,
        job_id: run.job_id,
        job_name: run.job_name.clone(),
        status: run.status,
        started_at: run.started_at,
        finished_at: run.finished_at,
        log_file_path: run.result_file_name().map(str::to_string),
        message: run.message.clone(),
        run_by: users.summary(conn, run.run_by)?,
        rt_args: run.rt_args.clone(),
        queued_at: run.queued_at,
        trigger: run.trigger,
        scheduled_for: run.scheduled_for,
        exit_code: run.exit_code,
        duration_ms: run.duration_ms(),
        result_file_size: run.result_file_size,
        log_size,
        log_truncated: run.log_truncated,
        attempt: run.attempt,
        retry_of: run.retry_of,
        chained_from: run.chained_from,
        cancelled_by: match run.cancelled_by {
            Some(id) => users.summary(conn, id)?,
            None => None,
        },
        not_before: run.not_before,
        node: run.node.clone(),
    })
}
