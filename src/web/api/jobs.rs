//! `/scheduled-jobs`: list, count, get, create, replace and soft-delete jobs, and preview their next
//! fire times. Admins see every job; other users see the jobs they created or that are shared with
//! them, may change only their own, and may not create or change EXTERNAL or INTERNAL jobs.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::TimeZone;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::audit_trail::event;
use super::auth::CurrentUser;
use super::params::{JobPath, Paging, PathOf, Query, json_object};
use super::routes::Routes;
use crate::clock::{from_ms, now_ms};
use crate::domain::access;
use crate::domain::audit::{actions, changes};
use crate::domain::job::{
    ActivityStatus, Job, JobDraft, JobType, MisfirePolicy, NotifyOn, RepeatKind,
};
use crate::domain::next_fire::next_fires;
use crate::domain::user::User;
use crate::error::ServiceError;
use crate::present::{JobView, UserCache, job_view, job_views};
use crate::service;
use crate::store::jobs::JobFilter;
use crate::web::AppState;

pub fn routes(r: &mut Routes) {
    r.add(__path_list, list);
    r.add(__path_create, create);
    // Added before `/scheduled-jobs/{jobId}`, which would otherwise take `count` for an id.
    r.add(__path_count, count);
    r.add(__path_get, get);
    r.add(__path_update, update);
    r.add(__path_delete, delete);
    r.add(__path_next_runs, next_runs);
}

const TYPE_NAMES: &[&str] = &["INTERNAL", "EXTERNAL", "QUERY"];

fn filter_of<'a>(query: &'a Query, me: &User) -> Result<JobFilter<'a>, ServiceError> {
    Ok(JobFilter {
        visible_to: (!me.admin).then_some(me.id),
        query: query.text("query"),
        job_type: query.choice::<JobType>("type", TYPE_NAMES)?,
    })
}

#[utoipa::path(get, path = "/scheduled-jobs", tag = "Jobs", operation_id = "listJobs",
    summary = "List jobs",
    description = "The jobs the caller may see (admins: all; others: created by or shared with \
        them), newest id first, each with `lastRunOn`.",
    params(
        ("query" = Option<String>, Query, description = "A case-insensitive part of the name."),
        ("type" = Option<JobType>, Query, description = "Only jobs of this type."),
        Paging,
    ),
    responses((status = 200, description = "The jobs.", body = Vec<JobView>)))]
async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ServiceError> {
    let query = Query::from_request(&req)?;
    filter_of(&query, &me.0)?;
    let (start_at, max_results) = query.paging()?;
    let me = me.0;
    let views = state
        .db
        .read(move |c| {
            let filter = filter_of(&query, &me)?;
            job_views(c, &c.list_jobs(&filter, start_at, max_results)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(views))
}

#[utoipa::path(get, path = "/scheduled-jobs/count", tag = "Jobs", operation_id = "countJobs",
    summary = "Count jobs",
    params(
        ("query" = Option<String>, Query, description = "A case-insensitive part of the name."),
        ("type" = Option<JobType>, Query, description = "Only jobs of this type."),
    ),
    responses((status = 200, description = "How many jobs the list would give.", body = JobCount)))]
async fn count(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ServiceError> {
    let query = Query::from_request(&req)?;
    filter_of(&query, &me.0)?;
    let me = me.0;
    let count = state
        .db
        .read(move |c| -> Result<_, ServiceError> { Ok(c.count_jobs(&filter_of(&query, &me)?)?) })
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "count": count })))
}

#[utoipa::path(get, path = "/scheduled-jobs/{jobId}", tag = "Jobs", operation_id = "getJob",
    summary = "One job",
    params(JobPath),
    responses((status = 200, description = "The job.", body = JobView)))]
async fn get(
    state: web::Data<AppState>,
    me: CurrentUser,
    path: PathOf<JobPath>,
) -> Result<HttpResponse, ServiceError> {
    let job_id = path?.job_id;
    let me = me.0;
    let view = state
        .db
        .read(move |c| {
            let job = service::access::visible_job(c, job_id, &me)?;
            job_view(c, &job, &mut UserCache::default())
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// A JSON body as a draft, by `service::jobs`' rules for the caller.
fn validated_draft(
    state: &AppState,
    body: &[u8],
    me: &User,
    existing: Option<&Job>,
) -> Result<JobDraft, ServiceError> {
    let body = json_object(body, false)?;
    service::jobs::draft_from_body(&body, &state.settings, me, existing)
}

async fn refuse_args_without_parameters(
    state: &AppState,
    draft: &JobDraft,
    existing: Option<&Job>,
) -> Result<(), ServiceError> {
    let sources =
        crate::query::sources::DataSources::from_settings(&state.settings, &state.data_dir);
    let (draft, existing) = (draft.clone(), existing.cloned());
    let refusal = state
        .db
        .read(move |c| {
            service::jobs::args_without_parameters_refusal(c, &sources, &draft, existing.as_ref())
        })
        .await?;
    match refusal {
        Some(item) => Err(ServiceError::User(vec![item])),
        None => Ok(()),
    }
}

#[utoipa::path(post, path = "/scheduled-jobs", tag = "Jobs", operation_id = "createJob",
    summary = "Create a job",
    description = "Validates every field and reports every problem at once. Only admins create \
        EXTERNAL or INTERNAL jobs.",
    request_body = JobRequest,
    responses((status = 200, description = "The saved job with its `id` and `nextRunOn`.", body = JobView)))]
async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    body: web::Bytes,
) -> Result<HttpResponse, ServiceError> {
    let draft = validated_draft(&state, &body, &me.0, None)?;
    refuse_args_without_parameters(&state, &draft, None).await?;
    let saver = me.0.clone();
    let audit = event(&me.0, &req, actions::JOB_CREATE);
    let view: JobView = state
        .db
        .write(move |tx| -> Result<_, ServiceError> {
            let id = service::jobs::save(tx, &draft, None, &saver, now_ms())?;
            let job = tx.live_job(id)?.ok_or_else(ServiceError::job_not_found)?;
            let view = job_view(tx, &job, &mut UserCache::default())?;
            let audit = audit
                .object("JOB", id)
                .detail("name", view.name.clone())
                .detail("changes", changes(&Value::Null, &to_json(&view)?));
            tx.record_audit(&audit, now_ms())?;
            Ok(view)
        })
        .await?;
    state.scheduler.job_changed(view.id);
    tracing::info!(job_id = view.id, name = %view.name, "job created");
    Ok(HttpResponse::Ok().json(view))
}

/// A live job the caller may change (`service::access::changeable_job` on a read connection).
async fn changeable_job(state: &AppState, job_id: i64, me: &User) -> Result<Job, ServiceError> {
    let me = me.clone();
    state
        .db
        .read(move |c| service::access::changeable_job(c, job_id, &me))
        .await
}

#[utoipa::path(put, path = "/scheduled-jobs/{jobId}", tag = "Jobs", operation_id = "updateJob",
    summary = "Replace a job",
    description = "A full replace, not a patch: fields left out take their defaults. Its \
        creator or an admin only.",
    params(JobPath),
    request_body = JobRequest,
    responses((status = 200, description = "The job as saved.", body = JobView)))]
async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    path: PathOf<JobPath>,
    body: web::Bytes,
) -> Result<HttpResponse, ServiceError> {
    let job_id = path?.job_id;
    let existing = changeable_job(&state, job_id, &me.0).await?;
    let draft = validated_draft(&state, &body, &me.0, Some(&existing))?;
    refuse_args_without_parameters(&state, &draft, Some(&existing)).await?;
    let saver = me.0.clone();
    let audit = event(&me.0, &req, actions::JOB_UPDATE).object("JOB", job_id);
    let view: JobView = state
        .db
        .write(move |tx| -> Result<_, ServiceError> {
            // The job may have been deleted, or its owner changed, since it was read.
            let old = service::access::changeable_job_for_update(tx, job_id, &saver)?;
            let before = to_json(&job_view(tx, &old, &mut UserCache::default())?)?;
            service::jobs::save(tx, &draft, Some(&old), &saver, now_ms())?;
            let job = tx
                .live_job(job_id)?
                .ok_or_else(ServiceError::job_not_found)?;
            let view = job_view(tx, &job, &mut UserCache::default())?;
            let audit = audit
                .detail("name", view.name.clone())
                .detail("changes", changes(&before, &to_json(&view)?));
            tx.record_audit(&audit, now_ms())?;
            Ok(view)
        })
        .await?;
    state.scheduler.job_changed(job_id);
    tracing::info!(job_id, "job updated");
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(delete, path = "/scheduled-jobs/{jobId}", tag = "Jobs", operation_id = "deleteJob",
    summary = "Delete a job",
    description = "A soft delete: `activityStatus` becomes `Disabled`, the name gets \
        `_<epochMillis>` appended, queued runs are cancelled, a running run finishes, history \
        is kept. Later calls on the id answer `SCHEDULED_JOB_NOT_FOUND`.",
    params(JobPath),
    responses((status = 200, description = "The deleted job.", body = JobView)))]
async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    path: PathOf<JobPath>,
) -> Result<HttpResponse, ServiceError> {
    let job_id = path?.job_id;
    let existing = changeable_job(&state, job_id, &me.0).await?;
    if !access::can_delete(&existing, &me.0) {
        return Err(ServiceError::op_not_allowed());
    }
    let message = format!("cancelled: job deleted by {}", me.0.login_name);
    let audit = event(&me.0, &req, actions::JOB_DELETE)
        .object("JOB", job_id)
        .detail("name", existing.name.clone());
    let view: JobView = state
        .db
        .write(move |tx| {
            tx.job_for_update(job_id)?
                .ok_or_else(ServiceError::job_not_found)?;
            let now = now_ms();
            tx.soft_delete_job(job_id, now)?;
            tx.fail_queued_runs_of_job(job_id, &message, now)?;
            let job = tx
                .job_even_deleted(job_id)?
                .ok_or_else(ServiceError::job_not_found)?;
            debug_assert_eq!(job.activity_status, ActivityStatus::Disabled);
            tx.record_audit(&audit, now)?;
            job_view(tx, &job, &mut UserCache::default())
        })
        .await?;
    state.scheduler.job_changed(job_id);
    tracing::info!(job_id, "job deleted");
    Ok(HttpResponse::Ok().json(view))
}

fn to_json(view: &JobView) -> Result<Value, ServiceError> {
    serde_json::to_value(view).map_err(|e| ServiceError::Internal(e.into()))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct FireTime {
    /// Epoch milliseconds.
    at: i64,
    /// The same instant in the job's time zone, RFC 3339 (shows DST offsets).
    local: String,
}

#[utoipa::path(get, path = "/scheduled-jobs/{jobId}/next-runs", tag = "Jobs",
    operation_id = "nextRuns", summary = "Next fire times (ext)",
    description = "The next scheduled fire instants, from the function that fires the job \
        (daylight-saving changes included). Empty for paused jobs and ONDEMAND.",
    params(
        JobPath,
        ("count" = Option<i64>, Query, description = "How many: 1 to 100, default 5.",
            minimum = 1, maximum = 100),
    ),
    responses((status = 200, description = "The instants.", body = Vec<FireTime>)))]
async fn next_runs(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    path: PathOf<JobPath>,
) -> Result<HttpResponse, ServiceError> {
    let job_id = path?.job_id;
    let query = Query::from_request(&req)?;
    let count = query.int("count", 5)?;
    if !(1..=100).contains(&count) {
        return Err(ServiceError::invalid_request(
            "count must be from 1 to 100.",
        ));
    }
    let me = me.0;
    let job = state
        .db
        .read(move |c| service::access::visible_job(c, job_id, &me))
        .await?;
    let schedule = job.schedule();
    let times: Vec<FireTime> = if job.is_active() {
        next_fires(&schedule, from_ms(now_ms()), count as usize)
            .into_iter()
            .map(|t| FireTime {
                at: t.timestamp_millis(),
                local: schedule
                    .timezone
                    .from_utc_datetime(&t.naive_utc())
                    .to_rfc3339(),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(HttpResponse::Ok().json(times))
}

// ---- For the document only: the bodies this module reads by hand (leniently, with messages
// naming the field) or builds with `json!`. ----

/// `GET /scheduled-jobs/count`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
struct JobCount {
    count: i64,
}

/// A reference to a user or saved query by id (a bare number is accepted too).
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
struct IdRef {
    id: i64,
}

/// A job as `POST` and `PUT /scheduled-jobs` take it (`PUT` replaces the whole job). Strings are
/// trimmed (blank means absent); numbers may also be sent as numeric strings; unknown fields are
/// ignored. Only the schedule fields the `repeatSchedule` uses are stored.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct JobRequest {
    /// Unique among jobs that are not deleted; at most 255 characters.
    #[schema(min_length = 1, max_length = 255)]
    name: String,
    #[serde(rename = "type")]
    job_type: JobType,
    repeat_schedule: RepeatKind,
    /// HOURLY, DAILY, WEEKLY, MONTHLY: 0–59.
    #[schema(minimum = 0, maximum = 59)]
    scheduled_minute: Option<i64>,
    /// DAILY, WEEKLY, MONTHLY: 0–23.
    #[schema(minimum = 0, maximum = 23)]
    scheduled_hour: Option<i64>,
    /// WEEKLY: `SUNDAY` … `SATURDAY`.
    #[schema(examples("MONDAY"))]
    scheduled_day_of_week: Option<String>,
    /// MONTHLY: 1–31 (a month without the day fires on its last day).
    #[schema(minimum = 1, maximum = 31)]
    scheduled_day_of_month: Option<i64>,
    /// MINUTELY: 1–1440 (0 or absent means 1).
    #[schema(minimum = 0, maximum = 1440)]
    minutely_interval: Option<i64>,
    /// HOURLY: 1–8784 (absent means 1).
    #[schema(minimum = 1, maximum = 8784)]
    hourly_interval: Option<i64>,
    /// CRON: 5 or 6 fields (seconds optional); `L`, `#` and `W` allowed.
    cron_expression: Option<String>,
    /// An IANA zone name; default the server's zone.
    #[schema(examples("Europe/Berlin"))]
    timezone: Option<String>,
    /// Epoch milliseconds; no scheduled fire before it. Default: now (on update: unchanged).
    start_date: Option<i64>,
    /// Epoch milliseconds, not before `startDate`; no scheduled fire after it.
    end_date: Option<i64>,
    /// `Active` (default) or `Closed` (paused).
    #[schema(examples("Active", "Closed"))]
    activity_status: Option<String>,
    /// The user scheduled runs run as.
    run_as: Option<IdRef>,
    recipients: Option<Vec<IdRef>>,
    shared_with: Option<Vec<IdRef>>,
    /// INTERNAL: `files-cleaner` (alias `FilesBacklogCleaner`), `database-backup`, `runs-report`.
    task_impl_fqn: Option<String>,
    /// EXTERNAL (admins only): a program in the scripts directory and its arguments, split like
    /// a POSIX shell splits words but never run by a shell; an unquoted `#` is rejected.
    command: Option<String>,
    /// Arguments appended on every run.
    fixed_args: Option<String>,
    /// Whether runs take runtime `args`. A QUERY job whose saved query has no named parameters
    /// may not (`SCHEDULED_JOB_RT_ARGS_NOT_ALLOWED`).
    rt_args_provided: Option<bool>,
    rt_args_help_text: Option<String>,
    /// QUERY: the saved query to run.
    saved_query: Option<IdRef>,
    /// 1 to 604800; default from the configuration.
    #[schema(minimum = 1, maximum = 604800)]
    timeout_seconds: Option<i64>,
    misfire_policy: Option<MisfirePolicy>,
    /// 0 to 100000; default from the configuration.
    #[schema(minimum = 0, maximum = 100000)]
    max_queued_runs: Option<i64>,
    /// EXTERNAL only: stdout is the result file.
    result_from_stdout: Option<bool>,
    /// An http(s) URL that receives each finished run as a signed POST.
    webhook_url: Option<String>,
    /// How many times a failed run (exit code, timeout, interrupted by a restart) is tried
    /// again as a new `RETRY` run; default 0.
    #[schema(minimum = 0, maximum = 10)]
    max_retries: Option<i64>,
    /// Seconds between a failed run and its retry; default 60.
    #[schema(minimum = 1, maximum = 86400)]
    retry_delay_seconds: Option<i64>,
    /// When e-mail and webhooks go out; default `ALWAYS`.
    notify_on: Option<NotifyOn>,
    /// Jobs queued (`CHAINED`) when a run's series ends SUCCEEDED; the caller must be allowed to
    /// run them; a cycle is refused with `SCHEDULED_JOB_CHAIN_CYCLE`.
    on_success: Option<Vec<IdRef>>,
    /// Jobs queued (`CHAINED`) when a run's series ends FAILED.
    on_failure: Option<Vec<IdRef>>,
}
