//! `/scheduled-jobs/{jobId}/runs`: queue a run, list and read runs (with long-poll), download the
//! result file, read or follow the run log, cancel. Who may: admins, the job's creator and the users
//! it is shared with; the result file also its recipients and the run's `runBy`. The download is
//! `result_file`, the log and its follower `log`.

pub mod log; // GET …/log: a byte range, or the growing log followed as text or Server-Sent Events
pub mod result_file; // GET/HEAD …/result-file: the file a run left, never through a link

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::audit_trail::event;
use super::auth::CurrentUser;
use super::params::{
    ClientZone, CreatedBetween, JobPath, Paging, PathOf, Query, RunPath, client_tz, json_object,
};
use super::routes::Routes;
use crate::clock::now_ms;
use crate::domain::args::split_args;
use crate::domain::audit::actions;
use crate::domain::dates::{ACCEPTED_FORMATS, Bound, parse_date_param};
use crate::domain::job::{Job, JobType};
use crate::domain::run::{Run, RunStatus, Trigger};
use crate::domain::user::User;
use crate::error::ServiceError;
use crate::present::{JobView, RunView, UserCache, job_view, run_view, run_views};
use crate::service::access::visible_job;
use crate::service::runs::RunRequest;
use crate::store::Ledger;
use crate::store::runs::{Enqueued, RunFilter};
use crate::web::AppState;

pub fn routes(r: &mut Routes) {
    r.add(__path_list, list);
    r.add(__path_create, create);
    r.add(__path_get, get);
    r.add(result_file::__path_result_file, result_file::result_file);
    r.add(
        result_file::__path_result_file_head,
        result_file::result_file_head,
    );
    r.add(log::__path_log, log::log);
    r.add(log::__path_log_head, log::log_head);
    r.add(__path_cancel, cancel);
}

const STATUS_NAMES: &[&str] = &["QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED"];
const MAX_WAIT_SECONDS: i64 = 60;
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

/// The base path the request came in on, for `Location` headers.
fn base_path(req: &HttpRequest) -> &'static str {
    if req.path().starts_with("/openspecimen/") {
        "/openspecimen/rest/ng"
    } else {
        "/rest/ng"
    }
}

#[utoipa::path(post, path = "/scheduled-jobs/{jobId}/runs", tag = "Runs",
    operation_id = "queueRun", summary = "Run a job now",
    description = "Queues a run and answers at once; the run is in the ledger before the \
        answer is sent. A run requested while another runs or waits is `QUEUED` and runs \
        after it. A paused job answers `SCHEDULED_JOB_NOT_ACTIVE`; a full queue \
        `SCHEDULED_JOB_QUEUE_FULL`; `args` for a job that takes none (or for a QUERY job \
        whose saved query has no parameters) `SCHEDULED_JOB_RT_ARGS_NOT_ALLOWED`.",
    params(
        JobPath,
        ("response" = Option<String>, Query,
            description = "`run` answers with the new run instead of the job."),
        ("Idempotency-Key" = Option<String>, Header,
            description = "1 to 200 characters. A repeat for the same job within 24 hours \
                returns the first run and queues nothing."),
    ),
    request_body(content = Option<RunBody>, description = "Optional."),
    responses((status = 200, description = "The job (or, with `response=run`, the run).",
        body = RunQueued,
        headers(("Location" = String, description = "The new run's URL.")))))]
async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    path: PathOf<JobPath>,
    body: web::Bytes,
) -> Result<HttpResponse, ServiceError> {
    let job_id = path?.job_id;
    let query = Query::from_request(&req)?;
    let body = json_object(&body, true)?;
    let args = match body.get("args") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Some(_) => {
            return Err(ServiceError::invalid_request(
                "args must be a string of space-separated arguments.",
            ));
        }
    };
    if let Some(text) = &args
        && let Err(e) = split_args(text)
    {
        return Err(ServiceError::user(
            "SCHEDULED_JOB_INVALID_RUN_ARGS",
            format!("args cannot be split into words: {e}."),
        ));
    }
    let idempotency_key = match req.headers().get("Idempotency-Key") {
        None => None,
        Some(value) => {
            let key = value.to_str().map(str::trim).unwrap_or_default();
            if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
                return Err(ServiceError::invalid_request(format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible characters."
                )));
            }
            Some(key.to_string())
        }
    };
    let me = me.0;
    // Arguments for a query without parameters could only fail the run: refused up front. The
    // job is read for it only when there are arguments; otherwise whether the caller may see the
    // job is checked inside the write that queues the run.
    if args.is_some() {
        let viewer = me.clone();
        let job = state
            .db
            .read(move |c| visible_job(c, job_id, &viewer))
            .await?;
        if job.rt_args_provided
            && job.job_type == JobType::Query
            && let Some(query_id) = job.saved_query_id
            && let Some(mut item) = super::saved_queries::no_parameters_refusal(
                &state,
                query_id,
                &format!("Job {}", job.name),
            )
            .await?
        {
            item.message.push_str(" Run it without args.");
            return Err(ServiceError::User(vec![item]));
        }
    }
    let request = RunRequest {
        trigger: Trigger::Manual,
        run_by: me.id,
        args,
        scheduled_for: None,
        idempotency_key,
    };
    let audit = event(&me, &req, actions::RUN_REQUEST);
    let want_run = query.text("response") == Some("run");
    let files = state.files.clone();
    // The answer is read in the transaction that queued the run (it sees the new run), and
    // serialized here, off the single writer.
    let (job, enqueued, answer) = state
        .executor
        .enqueue_answered(
            job_id,
            request,
            audit,
            move |c| visible_job(c, job_id, &me),
            move |c, job, run_id| -> Result<Answer, ServiceError> {
                let mut users = UserCache::default();
                if want_run {
                    let run = c.run(run_id)?.ok_or_else(ServiceError::run_not_found)?;
                    Ok(Answer::Run(Box::new(run_view(
                        c, &run, &mut users, &files,
                    )?)))
                } else {
                    // Queuing a run leaves the job's row as `check` read it.
                    Ok(Answer::Job(Box::new(job_view(c, job, &mut users)?)))
                }
            },
        )
        .await?;
    let (run_id, answer) = match (enqueued, answer) {
        (Enqueued::Queued(id) | Enqueued::Duplicate(id), Some(answer)) => (id, answer),
        _ => {
            return Err(ServiceError::user(
                "SCHEDULED_JOB_QUEUE_FULL",
                format!(
                    "Job {} already has {} runs waiting; try again later.",
                    job.name, job.max_queued_runs
                ),
            ));
        }
    };
    let location = format!("{}/scheduled-jobs/{job_id}/runs/{run_id}", base_path(&req));
    let body = match answer {
        Answer::Run(run) => serde_json::to_value(run),
        Answer::Job(job) => serde_json::to_value(job),
    }
    .map_err(|e| ServiceError::Internal(e.into()))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::LOCATION, location))
        .json(body))
}

/// What `POST …/runs` answers with: the job, or (`response=run`) the new run.
enum Answer {
    Job(Box<JobView>),
    Run(Box<RunView>),
}

#[utoipa::path(get, path = "/scheduled-jobs/{jobId}/runs", tag = "Runs",
    operation_id = "listRuns", summary = "List a job's runs",
    description = "Newest first. `fromDate` and `toDate` bound the run's creation time and \
        accept `20220221`, `20220221T061500`, `2022-02-21 06:15`, `2022-02-21`, RFC 3339 with \
        an offset, or epoch milliseconds; a date-only `toDate` includes that whole day.",
    params(
        JobPath,
        CreatedBetween,
        ("status" = Option<RunStatus>, Query, description = "Only runs in this status."),
        Paging,
        ClientZone,
    ),
    responses((status = 200, description = "The runs.", body = Vec<RunView>)))]
async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    path: PathOf<JobPath>,
) -> Result<HttpResponse, ServiceError> {
    let job_id = path?.job_id;
    let query = Query::from_request(&req)?;
    let tz = client_tz(&req, state.settings.timezone)?;
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
    let filter = RunFilter {
        job_id,
        from: date("fromDate", Bound::From)?,
        to: Some(date("toDate", Bound::To)?.unwrap_or_else(now_ms)),
        status: query.choice::<RunStatus>("status", STATUS_NAMES)?,
    };
    let (start_at, max_results) = query.paging()?;
    let me = me.0;
    let files = state.files.clone();
    let views = state
        .db
        .read(move |c| {
            visible_job(c, job_id, &me)?;
            let runs = c.list_runs(&filter, start_at, max_results)?;
            run_views(c, &runs, &files)
        })
        .await?;
    Ok(HttpResponse::Ok().json(views))
}

/// A run of a job the caller may see; a run of another job is "not found".
fn visible_run(
    conn: &dyn Ledger,
    job_id: i64,
    run_id: i64,
    me: &User,
) -> Result<(Job, Run), ServiceError> {
    let job = visible_job(conn, job_id, me)?;
    let run = conn
        .run(run_id)?
        .filter(|r| r.job_id == job_id)
        .ok_or_else(ServiceError::run_not_found)?;
    Ok((job, run))
}

#[utoipa::path(get, path = "/scheduled-jobs/{jobId}/runs/{runId}", tag = "Runs",
    operation_id = "getRun", summary = "One run",
    params(
        RunPath,
        ("waitSeconds" = Option<i64>, Query,
            description = "Hold the answer until the run has finished or this many seconds \
                (0 to 60) have passed.", minimum = 0, maximum = 60),
    ),
    responses((status = 200, description = "The run.", body = RunView)))]
async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    path: PathOf<RunPath>,
) -> Result<HttpResponse, ServiceError> {
    let RunPath { job_id, run_id } = path?.into_inner();
    let wait = Query::from_request(&req)?.int("waitSeconds", 0)?;
    if !(0..=MAX_WAIT_SECONDS).contains(&wait) {
        return Err(ServiceError::invalid_request(format!(
            "waitSeconds must be from 0 to {MAX_WAIT_SECONDS}."
        )));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait as u64);
    let me = me.0;
    loop {
        let viewer = me.clone();
        let files = state.files.clone();
        let (finished, view) = state
            .db
            .read(move |c| -> Result<_, ServiceError> {
                let (_, run) = visible_run(c, job_id, run_id, &viewer)?;
                Ok((
                    run.status.is_finished(),
                    run_view(c, &run, &mut UserCache::default(), &files)?,
                ))
            })
            .await?;
        let now = tokio::time::Instant::now();
        if finished || now >= deadline {
            return Ok(HttpResponse::Ok().json(view));
        }
        // Woken by any run's end; re-check at least every second regardless.
        state
            .executor
            .wait_for_any_finish((deadline - now).min(Duration::from_secs(1)))
            .await;
    }
}

/// Program output is never to be sniffed into HTML or script by a browser.
pub fn nosniff() -> (header::HeaderName, HeaderValue) {
    (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    )
}

#[utoipa::path(post, path = "/scheduled-jobs/{jobId}/runs/{runId}/cancel", tag = "Runs",
    operation_id = "cancelRun", summary = "Cancel a run (ext)",
    description = "A `QUEUED` run becomes `FAILED` at once; an `IN_PROGRESS` run's process group \
        gets SIGTERM, then SIGKILL after a grace period. `message` says who cancelled it. A \
        finished run: `SCHEDULED_JOB_RUN_NOT_CANCELLABLE`.",
    params(RunPath),
    responses((status = 200, description = "The run (finished, or still stopping).", body = RunView)))]
async fn cancel(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    path: PathOf<RunPath>,
) -> Result<HttpResponse, ServiceError> {
    let RunPath { job_id, run_id } = path?.into_inner();
    let viewer = me.0.clone();
    state
        .db
        .read(move |c| visible_run(c, job_id, run_id, &viewer))
        .await?;
    let audit = event(&me.0, &req, actions::RUN_CANCEL).detail("jobId", job_id);
    if !state
        .executor
        .cancel_audited(run_id, &me.0, Some(audit))
        .await?
    {
        return Err(ServiceError::user(
            "SCHEDULED_JOB_RUN_NOT_CANCELLABLE",
            format!("Run {run_id} has already finished."),
        ));
    }
    // A running one stops within the kill grace period; answer with its end when it comes soon.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let viewer = me.0.clone();
        let files = state.files.clone();
        let (finished, view) = state
            .db
            .read(move |c| -> Result<_, ServiceError> {
                let (_, run) = visible_run(c, job_id, run_id, &viewer)?;
                Ok((
                    run.status.is_finished(),
                    run_view(c, &run, &mut UserCache::default(), &files)?,
                ))
            })
            .await?;
        if finished || tokio::time::Instant::now() >= deadline {
            return Ok(HttpResponse::Ok().json(view));
        }
        state
            .executor
            .wait_for_any_finish(Duration::from_millis(200))
            .await;
    }
}

// ---- For the document only: the bodies this module reads by hand (leniently, with messages
// naming the field) or builds with `json!`. ----

/// `POST /scheduled-jobs/{jobId}/runs` (the body is optional).
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[schema(as = RunRequest)]
struct RunBody {
    /// Runtime arguments, split into words like `command`; an unquoted `#` is rejected.
    args: Option<String>,
}

/// What `POST /scheduled-jobs/{jobId}/runs` answers: the job (OpenSpecimen's shape), or the new
/// run with `?response=run`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum RunQueued {
    Job(Box<JobView>),
    Run(Box<RunView>),
}
