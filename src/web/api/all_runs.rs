//! `/scheduled-job-runs` (ext, issue 13): the runs of every job the caller may see, newest first,
//! in the per-job list's JSON and with its filters and date formats, plus `jobId`, `trigger` and
//! `cancelled`; and `/scheduled-job-runs/count`. Admins see every live job's runs; other users
//! those of the jobs they created or that are shared with them (as in the jobs list).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::auth::CurrentUser;
use super::params::{ClientZone, CreatedBetween, Paging, Query, client_tz};
use super::routes::Routes;
use crate::clock::now_ms;
use crate::domain::dates::{ACCEPTED_FORMATS, Bound, parse_date_param};
use crate::domain::run::{RunStatus, Trigger};
use crate::domain::user::User;
use crate::error::ServiceError;
use crate::present::{RunView, run_views};
use crate::store::runs::AllRunsFilter;
use crate::web::AppState;

pub fn routes(r: &mut Routes) {
    r.add(__path_list, list);
    r.add(__path_count, count);
}

const STATUS_NAMES: &[&str] = &["QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED"];
const TRIGGER_NAMES: &[&str] = &["MANUAL", "SCHEDULED", "CATCH_UP", "RETRY", "CHAINED"];

/// The filter a request asks for, limited to what `me` may see.
pub fn filter_of(
    query: &Query,
    tz: chrono_tz::Tz,
    me: &User,
    now: i64,
) -> Result<AllRunsFilter, ServiceError> {
    let date = |name: &str, bound: Bound| -> Result<Option<i64>, ServiceError> {
        match query.text(name) {
            None => Ok(None),
            Some(text) => parse_date_param(text, tz, bound).map(Some).ok_or_else(|| {
                ServiceError::invalid_request(format!(
                    "{name} `{text}` is not a date; use {ACCEPTED_FORMATS}."
                ))
            }),
        }
    };
    let job_id = match query.text("jobId") {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(id) if id > 0 => Some(id),
            _ => {
                return Err(ServiceError::invalid_request(format!(
                    "jobId must be a job's id (a whole number above 0), not `{text}`."
                )));
            }
        },
    };
    let cancelled = match query.text("cancelled") {
        None => None,
        Some(_) => Some(query.bool("cancelled", false)?),
    };
    Ok(AllRunsFilter {
        visible_to: (!me.admin).then_some(me.id),
        from: date("fromDate", Bound::From)?,
        to: Some(date("toDate", Bound::To)?.unwrap_or(now)),
        status: query.choice::<RunStatus>("status", STATUS_NAMES)?,
        job_id,
        trigger: query.choice::<Trigger>("trigger", TRIGGER_NAMES)?,
        cancelled,
    })
}

/// The filters of the list of every job's runs and of its count (read by `filter_of`), described
/// once for the document.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[allow(dead_code)] // describes the parameters; never built
struct AllRunsFilters {
    /// Only runs in this status.
    status: Option<RunStatus>,
    /// Only runs of this job.
    job_id: Option<i64>,
    /// Only runs with this trigger.
    trigger: Option<Trigger>,
    /// true: only cancelled runs; false: none of them.
    cancelled: Option<bool>,
}

#[utoipa::path(get, path = "/scheduled-job-runs", tag = "Runs",
    operation_id = "listAllRuns", summary = "List the runs of every job",
    description = "The runs of every job the caller may see (admins: every job; others: the \
        jobs they created or that are shared with them), newest first, in the same JSON as a \
        job's runs. `fromDate` and `toDate` bound the run's creation time and accept the same \
        formats as a job's runs list.",
    params(
        CreatedBetween,
        AllRunsFilters,
        Paging,
        ClientZone,
    ),
    responses((status = 200, description = "The runs.", body = Vec<RunView>)))]
async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ServiceError> {
    let query = Query::from_request(&req)?;
    let filter = filter_of(
        &query,
        client_tz(&req, state.settings.timezone)?,
        &me.0,
        now_ms(),
    )?;
    let (start_at, max_results) = query.paging()?;
    let files = state.files.clone();
    let views = state
        .db
        .read(move |c| {
            let runs = c.list_all_runs(&filter, start_at, max_results)?;
            run_views(c, &runs, &files)
        })
        .await?;
    Ok(HttpResponse::Ok().json(views))
}

#[utoipa::path(get, path = "/scheduled-job-runs/count", tag = "Runs",
    operation_id = "countAllRuns", summary = "Count the runs of every job",
    params(
        CreatedBetween,
        AllRunsFilters,
        ClientZone,
    ),
    responses((status = 200, description = "How many runs the list would give.", body = RunCount)))]
async fn count(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ServiceError> {
    let query = Query::from_request(&req)?;
    let filter = filter_of(
        &query,
        client_tz(&req, state.settings.timezone)?,
        &me.0,
        now_ms(),
    )?;
    let count = state.db.read(move |c| c.count_all_runs(&filter)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "count": count })))
}

// ---- For the document only: the bodies this module reads by hand (leniently, with messages
// naming the field) or builds with `json!`. ----

/// `GET /scheduled-job-runs/count`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
struct RunCount {
    count: i64,
}
