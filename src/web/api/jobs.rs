//! `/scheduled-jobs`: list, count, get, create, replace and soft-delete jobs, and preview their next
//! fire times. Admins see every job; other users see the jobs they created or that are shared with
//! them, may change only their own, and may not create or change EXTERNAL or INTERNAL jobs.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::TimeZone;
use serde::Serialize;
use serde_json::Value;

use super::audit::{actions, changes, event};
use super::auth::CurrentUser;
use super::params::{Query, json_object, path_id};
use crate::clock::{from_ms, now_ms};
use crate::domain::access;
use crate::domain::job::{ActivityStatus, Job, JobDefaults, JobDraft, JobType, validate_job};
use crate::domain::next_fire::next_fires;
use crate::domain::user::User;
use crate::error::{ApiError, ErrorItem};
use crate::present::{JobView, UserCache, job_view};
use crate::run_files::resolve_program;
use crate::store;
use crate::store::jobs::JobFilter;
use crate::web::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/scheduled-jobs")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(web::resource("/scheduled-jobs/count").route(web::get().to(count)))
    .service(
        web::resource("/scheduled-jobs/{jobId}")
            .route(web::get().to(get))
            .route(web::put().to(update))
            .route(web::delete().to(delete)),
    )
    .service(web::resource("/scheduled-jobs/{jobId}/next-runs").route(web::get().to(next_runs)));
}

const TYPE_NAMES: &[&str] = &["INTERNAL", "EXTERNAL", "QUERY"];

fn filter_of<'a>(query: &'a Query, me: &User) -> Result<JobFilter<'a>, ApiError> {
    Ok(JobFilter {
        visible_to: (!me.admin).then_some(me.id),
        query: query.text("query"),
        job_type: query.choice::<JobType>("type", TYPE_NAMES)?,
    })
}

async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ApiError> {
    let query = Query::from_request(&req)?;
    filter_of(&query, &me.0)?;
    let (start_at, max_results) = query.paging(100, 1000)?;
    let me = me.0;
    let views = state
        .db
        .read(move |c| {
            let filter = filter_of(&query, &me)?;
            let jobs = store::jobs::list(c, &filter, start_at, max_results)?;
            let mut users = UserCache::default();
            jobs.iter()
                .map(|j| job_view(c, j, &mut users))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    Ok(HttpResponse::Ok().json(views))
}

async fn count(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ApiError> {
    let query = Query::from_request(&req)?;
    filter_of(&query, &me.0)?;
    let me = me.0;
    let count = state
        .db
        .read(move |c| store::jobs::count(c, &filter_of(&query, &me)?))
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "count": count })))
}

/// Whether `user` may see (and run) `job`: `access::can_see` with the sharing read from the ledger.
pub fn can_see(conn: &rusqlite::Connection, job: &Job, user: &User) -> Result<bool, ApiError> {
    // Admins and creators need no ledger read.
    if access::can_change(job, user) {
        return Ok(true);
    }
    let shared = store::jobs::is_shared_with(conn, job.id, user.id)?;
    Ok(access::can_see(job, user, shared))
}

/// Loads a live job the caller may see: `SCHEDULED_JOB_NOT_FOUND` or `SCHEDULED_JOB_OP_NOT_ALLOWED`.
pub fn visible_job(conn: &rusqlite::Connection, job_id: i64, user: &User) -> Result<Job, ApiError> {
    let job = store::jobs::get_live(conn, job_id)?.ok_or_else(ApiError::job_not_found)?;
    if can_see(conn, &job, user)? {
        Ok(job)
    } else {
        Err(ApiError::op_not_allowed())
    }
}

async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ApiError> {
    let job_id = path_id(&req, "jobId")?;
    let me = me.0;
    let view = state
        .db
        .read(move |c| {
            let job = visible_job(c, job_id, &me)?;
            job_view(c, &job, &mut UserCache::default())
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Validates a body against the request-independent rules and the caller's rights.
fn validated_draft(
    state: &AppState,
    body: &[u8],
    me: &User,
    existing: Option<&Job>,
) -> Result<JobDraft, ApiError> {
    let body = json_object(body, false)?;
    draft_from_body(&body, &state.settings, me, existing)
}

/// The job a JSON body describes, checked by every rule that needs no ledger: the fields, the
/// caller's right to the job's type, and the program's place in the scripts directory. Shared by
/// the API and `labcron jobs import`.
pub fn draft_from_body(
    body: &serde_json::Map<String, serde_json::Value>,
    settings: &crate::config::Settings,
    caller: &User,
    existing: Option<&Job>,
) -> Result<JobDraft, ApiError> {
    let caller_is_admin = caller.admin;
    let defaults = JobDefaults {
        now_ms: now_ms(),
        timezone: &settings.timezone,
        timeout_seconds: settings.runs.default_timeout_seconds as i64,
        max_queued_runs: settings.runs.default_max_queued_runs as i64,
        existing_start_date: existing.map(|j| j.start_date),
    };
    let (draft, mut errors) = validate_job(body, &defaults);
    let privileged = |t: JobType| matches!(t, JobType::External | JobType::Internal);
    // A webhook makes the server call an address of the caller's choosing: admins only.
    let webhook_changed = draft.webhook_url.is_some()
        && draft.webhook_url.as_deref() != existing.and_then(|j| j.webhook_url.as_deref());
    if !caller_is_admin && webhook_changed {
        return Err(ApiError::op_not_allowed());
    }
    if !caller_is_admin
        && (privileged(draft.job_type) || existing.is_some_and(|j| privileged(j.job_type)))
    {
        return Err(ApiError::op_not_allowed());
    }
    // A job's scheduled runs are recorded as run by its runAs user, so naming another user would
    // act in their name.
    if !access::may_set_run_as(caller, draft.run_as, existing.and_then(|j| j.run_as)) {
        errors.push(ErrorItem::new(
            "SCHEDULED_JOB_OP_NOT_ALLOWED",
            "runAs: only admins may make a job run as another user; leave it empty or name yourself.",
        ));
    }
    if let Some(program) = &draft.program
        && let Err(e) = resolve_program(&settings.scripts_dir(), program)
    {
        errors.push(ErrorItem::new(
            "SCHEDULED_JOB_COMMAND_NOT_ALLOWED",
            format!("Command not allowed: {e}."),
        ));
    }
    if errors.is_empty() {
        Ok(draft)
    } else {
        Err(ApiError::User(errors))
    }
}

/// Checks that need the ledger: unique name, existing users and saved query. Call in the write
/// transaction that stores the draft.
pub fn check_references(
    conn: &rusqlite::Connection,
    draft: &JobDraft,
    job_id: Option<i64>,
) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if store::jobs::name_taken(conn, &draft.name, job_id)? {
        errors.push(ErrorItem::new(
            "SCHEDULED_JOB_DUP_JOB_NAME",
            "A job with same name already exists.",
        ));
    }
    if let Some(run_as) = draft.run_as
        && !store::users::missing_ids(conn, &[run_as])?.is_empty()
    {
        errors.push(ErrorItem::new("USER_NOT_FOUND", "User does not exist."));
    }
    let mut listed: Vec<i64> = draft
        .recipients
        .iter()
        .chain(&draft.shared_with)
        .copied()
        .collect();
    listed.sort_unstable();
    listed.dedup();
    let missing = store::users::missing_ids(conn, &listed)?;
    if !missing.is_empty() {
        let ids: Vec<String> = missing.iter().map(i64::to_string).collect();
        errors.push(ErrorItem::new(
            "USER_ONE_OR_MORE_NOT_FOUND",
            format!("One or more users do not exist. (IDs: {})", ids.join(", ")),
        ));
    }
    if let Some(query_id) = draft.saved_query_id
        && store::jobs::saved_query_title(conn, query_id)?.is_none()
    {
        errors.push(ErrorItem::new(
            "SAVED_QUERY_NOT_FOUND",
            "Saved query does not exist.",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::User(errors))
    }
}

/// A QUERY job takes runtime parameters only when its saved query has parameters for them to
/// fill (issue 13). A stored job is held to it when the save turns them on or changes the query,
/// so that pausing an older job is never refused for it (its runs still refuse the arguments).
/// The one check of a job save, for the API and `labcron jobs import`. Blocking.
pub fn args_without_parameters_refusal(
    conn: &rusqlite::Connection,
    sources: &crate::query::sources::DataSources,
    draft: &JobDraft,
    existing: Option<&Job>,
) -> Result<Option<ErrorItem>, ApiError> {
    let unchanged = existing
        .is_some_and(|job| job.rt_args_provided && job.saved_query_id == draft.saved_query_id);
    if draft.job_type != JobType::Query || !draft.rt_args_provided || unchanged {
        return Ok(None);
    }
    let Some(query_id) = draft.saved_query_id else {
        return Ok(None);
    };
    super::saved_queries::no_parameters_refusal_in(conn, sources, query_id, "rtArgsProvided")
}

async fn refuse_args_without_parameters(
    state: &AppState,
    draft: &JobDraft,
    existing: Option<&Job>,
) -> Result<(), ApiError> {
    let sources =
        crate::query::sources::DataSources::from_settings(&state.settings, &state.data_dir);
    let (draft, existing) = (draft.clone(), existing.cloned());
    let refusal = state
        .db
        .read(move |c| args_without_parameters_refusal(c, &sources, &draft, existing.as_ref()))
        .await?;
    match refusal {
        Some(item) => Err(ApiError::User(vec![item])),
        None => Ok(()),
    }
}

async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let draft = validated_draft(&state, &body, &me.0, None)?;
    refuse_args_without_parameters(&state, &draft, None).await?;
    let creator = me.0.id;
    let saver = me.0.clone();
    let audit = event(&me.0, &req, actions::JOB_CREATE);
    let view: JobView = state
        .db
        .write(move |tx| {
            check_references(tx, &draft, None)?;
            crate::executor::followup::check_chains(tx, &draft, None, &saver)?;
            let id = store::jobs::insert(tx, &draft, creator, now_ms())?;
            let job = store::jobs::get_live(tx, id)?.ok_or_else(ApiError::job_not_found)?;
            let view = job_view(tx, &job, &mut UserCache::default())?;
            let audit = audit
                .object("JOB", id)
                .detail("name", view.name.clone())
                .detail("changes", changes(&Value::Null, &to_json(&view)?));
            store::audit::record(tx, &audit, now_ms())?;
            Ok(view)
        })
        .await?;
    state.scheduler.job_changed(view.id);
    tracing::info!(job_id = view.id, name = %view.name, "job created");
    Ok(HttpResponse::Ok().json(view))
}

/// A live job the caller may change: its creator or an admin.
async fn changeable_job(state: &AppState, job_id: i64, me: &User) -> Result<Job, ApiError> {
    let me = me.clone();
    state
        .db
        .read(move |c| {
            let job = store::jobs::get_live(c, job_id)?.ok_or_else(ApiError::job_not_found)?;
            if access::can_change(&job, &me) {
                Ok(job)
            } else {
                Err(ApiError::op_not_allowed())
            }
        })
        .await
}

async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let job_id = path_id(&req, "jobId")?;
    let existing = changeable_job(&state, job_id, &me.0).await?;
    let draft = validated_draft(&state, &body, &me.0, Some(&existing))?;
    refuse_args_without_parameters(&state, &draft, Some(&existing)).await?;
    let saver = me.0.clone();
    let audit = event(&me.0, &req, actions::JOB_UPDATE).object("JOB", job_id);
    let view: JobView = state
        .db
        .write(move |tx| {
            // The job may have been deleted since it was read.
            let old = store::jobs::get_live(tx, job_id)?.ok_or_else(ApiError::job_not_found)?;
            let before = to_json(&job_view(tx, &old, &mut UserCache::default())?)?;
            check_references(tx, &draft, Some(job_id))?;
            crate::executor::followup::check_chains(tx, &draft, Some(job_id), &saver)?;
            store::jobs::replace(tx, job_id, &draft, now_ms())?;
            let job = store::jobs::get_live(tx, job_id)?.ok_or_else(ApiError::job_not_found)?;
            let view = job_view(tx, &job, &mut UserCache::default())?;
            let audit = audit
                .detail("name", view.name.clone())
                .detail("changes", changes(&before, &to_json(&view)?));
            store::audit::record(tx, &audit, now_ms())?;
            Ok(view)
        })
        .await?;
    state.scheduler.job_changed(job_id);
    tracing::info!(job_id, "job updated");
    Ok(HttpResponse::Ok().json(view))
}

async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ApiError> {
    let job_id = path_id(&req, "jobId")?;
    let existing = changeable_job(&state, job_id, &me.0).await?;
    if !me.0.admin && existing.job_type == JobType::External {
        return Err(ApiError::op_not_allowed());
    }
    let message = format!("cancelled: job deleted by {}", me.0.login_name);
    let audit = event(&me.0, &req, actions::JOB_DELETE)
        .object("JOB", job_id)
        .detail("name", existing.name.clone());
    let view: JobView = state
        .db
        .write(move |tx| {
            store::jobs::get_live(tx, job_id)?.ok_or_else(ApiError::job_not_found)?;
            let now = now_ms();
            store::jobs::soft_delete(tx, job_id, now)?;
            store::runs::fail_all_queued(tx, job_id, &message, now)?;
            let job = store::jobs::get_any(tx, job_id)?.ok_or_else(ApiError::job_not_found)?;
            debug_assert_eq!(job.activity_status, ActivityStatus::Disabled);
            store::audit::record(tx, &audit, now)?;
            job_view(tx, &job, &mut UserCache::default())
        })
        .await?;
    state.scheduler.job_changed(job_id);
    tracing::info!(job_id, "job deleted");
    Ok(HttpResponse::Ok().json(view))
}

fn to_json(view: &JobView) -> Result<Value, ApiError> {
    serde_json::to_value(view).map_err(|e| ApiError::Internal(e.into()))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct FireTime {
    /// Epoch milliseconds.
    at: i64,
    /// The same instant in the job's time zone, RFC 3339 (shows DST offsets).
    local: String,
}

async fn next_runs(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ApiError> {
    let job_id = path_id(&req, "jobId")?;
    let query = Query::from_request(&req)?;
    let count = query.int("count", 5)?;
    if !(1..=100).contains(&count) {
        return Err(ApiError::invalid_request("count must be from 1 to 100."));
    }
    let me = me.0;
    let job = state.db.read(move |c| visible_job(c, job_id, &me)).await?;
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
