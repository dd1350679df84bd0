//! `/scheduled-jobs`: list, count, get, create, replace and soft-delete jobs, and preview their next
//! fire times. Admins see every job; other users see the jobs they created or that are shared with
//! them, may change only their own, and may not create or change EXTERNAL or INTERNAL jobs.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::TimeZone;
use serde::Serialize;
use serde_json::Value;

use super::audit_trail::event;
use super::auth::CurrentUser;
use super::params::{Query, json_object, path_id};
use crate::clock::{from_ms, now_ms};
use crate::domain::access;
use crate::domain::audit::{actions, changes};
use crate::domain::job::{ActivityStatus, Job, JobDraft, JobType};
use crate::domain::next_fire::next_fires;
use crate::domain::user::User;
use crate::error::ServiceError;
use crate::present::{JobView, UserCache, job_view};
use crate::service;
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

fn filter_of<'a>(query: &'a Query, me: &User) -> Result<JobFilter<'a>, ServiceError> {
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
) -> Result<HttpResponse, ServiceError> {
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
) -> Result<HttpResponse, ServiceError> {
    let query = Query::from_request(&req)?;
    filter_of(&query, &me.0)?;
    let me = me.0;
    let count = state
        .db
        .read(move |c| -> Result<_, ServiceError> {
            Ok(store::jobs::count(c, &filter_of(&query, &me)?)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "count": count })))
}

async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ServiceError> {
    let job_id = path_id(&req, "jobId")?;
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
            let job = store::jobs::get_live(tx, id)?.ok_or_else(ServiceError::job_not_found)?;
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

/// A live job the caller may change (`service::access::changeable_job` on a read connection).
async fn changeable_job(state: &AppState, job_id: i64, me: &User) -> Result<Job, ServiceError> {
    let me = me.clone();
    state
        .db
        .read(move |c| service::access::changeable_job(c, job_id, &me))
        .await
}

async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    body: web::Bytes,
) -> Result<HttpResponse, ServiceError> {
    let job_id = path_id(&req, "jobId")?;
    let existing = changeable_job(&state, job_id, &me.0).await?;
    let draft = validated_draft(&state, &body, &me.0, Some(&existing))?;
    refuse_args_without_parameters(&state, &draft, Some(&existing)).await?;
    let saver = me.0.clone();
    let audit = event(&me.0, &req, actions::JOB_UPDATE).object("JOB", job_id);
    let view: JobView = state
        .db
        .write(move |tx| -> Result<_, ServiceError> {
            // The job may have been deleted, or its owner changed, since it was read.
            let old = service::access::changeable_job(tx, job_id, &saver)?;
            let before = to_json(&job_view(tx, &old, &mut UserCache::default())?)?;
            service::jobs::save(tx, &draft, Some(&old), &saver, now_ms())?;
            let job = store::jobs::get_live(tx, job_id)?.ok_or_else(ServiceError::job_not_found)?;
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
) -> Result<HttpResponse, ServiceError> {
    let job_id = path_id(&req, "jobId")?;
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
            store::jobs::get_live(tx, job_id)?.ok_or_else(ServiceError::job_not_found)?;
            let now = now_ms();
            store::jobs::soft_delete(tx, job_id, now)?;
            store::runs::fail_all_queued(tx, job_id, &message, now)?;
            let job = store::jobs::get_any(tx, job_id)?.ok_or_else(ServiceError::job_not_found)?;
            debug_assert_eq!(job.activity_status, ActivityStatus::Disabled);
            store::audit::record(tx, &audit, now)?;
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

async fn next_runs(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ServiceError> {
    let job_id = path_id(&req, "jobId")?;
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
