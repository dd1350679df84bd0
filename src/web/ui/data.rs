//! Small JSON endpoints the pages need and the REST API lacks: who is signed in, the last runs of
//! several jobs at once (status and duration, for the list's charts), and the next fire times of a
//! schedule that is not saved yet (the add/edit form's preview). Authenticated like the API; they
//! read and compute only, never change anything.

use std::collections::BTreeMap;

use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use chrono::TimeZone;
use serde::Serialize;

use crate::clock::{from_ms, now_ms};
use crate::domain::errors::ErrorItem;
use crate::domain::job::{ActivityStatus, Schedule, validate_schedule};
use crate::domain::next_fire::next_fires;
use crate::error::ServiceError;
use crate::service;
use crate::service::access::visible_job;
use crate::store::runs::RunFilter;
use crate::web::AppState;
use crate::web::api::auth::CurrentUser;
use crate::web::api::params::{Query, json_object};

/// `GET /ui/api/me`: `{"signedIn": false}`, or the user. Never 401, so the sign-in page can ask.
pub async fn me(req: HttpRequest) -> HttpResponse {
    match CurrentUser::extract(&req).await {
        Ok(CurrentUser(user)) => HttpResponse::Ok().json(serde_json::json!({
            "signedIn": true,
            "id": user.id,
            "loginName": user.login_name,
            "admin": user.admin,
        })),
        Err(_) => HttpResponse::Ok().json(serde_json::json!({ "signedIn": false })),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecentRun {
    id: i64,
    status: &'static str,
    queued_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    duration_ms: Option<i64>,
}

const MAX_JOB_IDS: usize = 200;
const MAX_RECENT: i64 = 50;

/// `GET /ui/api/recent-runs?jobIds=1,2,3&count=20`: `{"<jobId>": [runs, newest first]}` for the
/// listed jobs the caller may see (others are left out).
pub async fn recent_runs(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ServiceError> {
    let query = Query::from_request(&req)?;
    let count = query.int("count", 20)?;
    if !(1..=MAX_RECENT).contains(&count) {
        return Err(ServiceError::invalid_request(format!(
            "count must be from 1 to {MAX_RECENT}."
        )));
    }
    let mut ids = Vec::new();
    for part in query.text("jobIds").unwrap_or_default().split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let id: i64 = part.parse().map_err(|_| {
            ServiceError::invalid_request(format!(
                "jobIds must be job ids separated by commas, not `{part}`."
            ))
        })?;
        ids.push(id);
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.len() > MAX_JOB_IDS {
        return Err(ServiceError::invalid_request(format!(
            "jobIds may list at most {MAX_JOB_IDS} jobs."
        )));
    }
    let me = me.0;
    let runs = state
        .db
        .read(move |c| -> Result<_, ServiceError> {
            let mut out: BTreeMap<String, Vec<RecentRun>> = BTreeMap::new();
            for job_id in ids {
                if visible_job(c, job_id, &me).is_err() {
                    continue;
                }
                let filter = RunFilter {
                    job_id,
                    from: None,
                    to: None,
                    status: None,
                };
                let runs = c
                    .list_runs(&filter, 0, count)?
                    .into_iter()
                    .map(|r| RecentRun {
                        id: r.id,
                        status: r.status.as_str(),
                        queued_at: r.queued_at,
                        started_at: r.started_at,
                        finished_at: r.finished_at,
                        duration_ms: r.duration_ms(),
                    })
                    .collect();
                out.insert(job_id.to_string(), runs);
            }
            Ok(out)
        })
        .await?;
    Ok(HttpResponse::Ok().json(runs))
}

#[derive(Serialize)]
struct FireTime {
    at: i64,
    local: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Preview {
    next_runs: Vec<FireTime>,
    timezone: String,
    /// `Closed` jobs keep their schedule but do not fire.
    paused: bool,
    errors: Vec<ErrorItem>,
}

/// `POST /ui/api/schedule-preview?count=5` with a job body (as for `POST /scheduled-jobs`): the
/// next fire times of its schedule, computed by the scheduler's own function, and the problems
/// of its schedule fields. Always 200 for a well-formed body.
pub async fn schedule_preview(
    state: web::Data<AppState>,
    req: HttpRequest,
    _me: CurrentUser,
    body: web::Bytes,
) -> Result<HttpResponse, ServiceError> {
    let count = Query::from_request(&req)?.int("count", 5)?;
    if !(1..=50).contains(&count) {
        return Err(ServiceError::invalid_request("count must be from 1 to 50."));
    }
    let body = json_object(&body, false)?;
    let settings = &state.settings;
    let now = now_ms();
    let (draft, activity_status, errors) =
        validate_schedule(&body, &service::jobs::job_defaults(settings, None));
    let timezone = draft.timezone;
    let next_runs = if errors.is_empty() {
        let schedule = Schedule {
            repeat: draft.repeat.clone(),
            timezone,
            start_date: draft.start_date,
            end_date: draft.end_date,
        };
        next_fires(&schedule, from_ms(now), count as usize)
            .into_iter()
            .map(|t| FireTime {
                at: t.timestamp_millis(),
                local: timezone.from_utc_datetime(&t.naive_utc()).to_rfc3339(),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(HttpResponse::Ok().json(Preview {
        next_runs,
        timezone: timezone.name().to_string(),
        paused: activity_status == ActivityStatus::Closed,
        errors,
    }))
}
