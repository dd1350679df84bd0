//! `/scheduled-jobs/{jobId}/runs`: queue a run, list and read runs (with long-poll), download the
//! result file, read or follow the run log, cancel. Who may: admins, the job's creator and the users
//! it is shared with; the result file also its recipients and the run's `runBy`.

use std::path::PathBuf;
use std::time::Duration;

use actix_files::NamedFile;
use actix_web::http::header::{
    self, ContentDisposition, DispositionParam, DispositionType, HeaderValue,
};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::audit_trail::{event, record_alone};
use super::auth::CurrentUser;
use super::params::{Query, client_tz, json_object, path_id};
use crate::clock::now_ms;
use crate::domain::args::split_args;
use crate::domain::audit::actions;
use crate::domain::dates::{ACCEPTED_FORMATS, Bound, parse_date_param};
use crate::domain::job::{Job, JobType};
use crate::domain::run::{Run, RunStatus, Trigger};
use crate::domain::user::User;
use crate::error::ApiError;
use crate::executor::RunRequest;
use crate::present::{UserCache, job_view, run_view};
use crate::run_files::open_run_file;
use crate::service::access::visible_job;
use crate::store;
use crate::store::runs::{Enqueued, RunFilter};
use crate::web::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/scheduled-jobs/{jobId}/runs")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(web::resource("/scheduled-jobs/{jobId}/runs/{runId}").route(web::get().to(get)))
    .service(
        web::resource("/scheduled-jobs/{jobId}/runs/{runId}/result-file")
            .route(web::get().to(result_file))
            .route(web::head().to(result_file)),
    )
    .service(web::resource("/scheduled-jobs/{jobId}/runs/{runId}/log").route(web::get().to(log)))
    .service(
        web::resource("/scheduled-jobs/{jobId}/runs/{runId}/cancel").route(web::post().to(cancel)),
    );
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

async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let job_id = path_id(&req, "jobId")?;
    let query = Query::from_request(&req)?;
    let body = json_object(&body, true)?;
    let args = match body.get("args") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Some(_) => {
            return Err(ApiError::invalid_request(
                "args must be a string of space-separated arguments.",
            ));
        }
    };
    if let Some(text) = &args
        && let Err(e) = split_args(text)
    {
        return Err(ApiError::user(
            "SCHEDULED_JOB_INVALID_RUN_ARGS",
            format!("args cannot be split into words: {e}."),
        ));
    }
    let idempotency_key = match req.headers().get("Idempotency-Key") {
        None => None,
        Some(value) => {
            let key = value.to_str().map(str::trim).unwrap_or_default();
            if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
                return Err(ApiError::invalid_request(format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible characters."
                )));
            }
            Some(key.to_string())
        }
    };
    let me = me.0;
    let viewer = me.clone();
    let job = state
        .db
        .read(move |c| visible_job(c, job_id, &viewer))
        .await?;
    // Arguments for a query without parameters could only fail the run: refused up front.
    if args.is_some()
        && job.rt_args_provided
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
        return Err(ApiError::User(vec![item]));
    }
    let request = RunRequest {
        trigger: Trigger::Manual,
        run_by: me.id,
        args,
        scheduled_for: None,
        idempotency_key,
    };
    let audit = event(&me, &req, actions::RUN_REQUEST);
    let run_id = match state
        .executor
        .enqueue_audited(job_id, request, Some(audit))
        .await?
    {
        Enqueued::Queued(id) | Enqueued::Duplicate(id) => id,
        Enqueued::QueueFull => {
            return Err(ApiError::user(
                "SCHEDULED_JOB_QUEUE_FULL",
                format!(
                    "Job {} already has {} runs waiting; try again later.",
                    job.name, job.max_queued_runs
                ),
            ));
        }
    };
    let location = format!("{}/scheduled-jobs/{job_id}/runs/{run_id}", base_path(&req));
    let want_run = query.text("response") == Some("run");
    let data_dir = state.data_dir.clone();
    let body = state
        .db
        .read(move |c| {
            let mut users = UserCache::default();
            if want_run {
                let run = store::runs::get(c, run_id)?.ok_or_else(ApiError::run_not_found)?;
                Ok(serde_json::to_value(run_view(
                    c, &run, &mut users, &data_dir,
                )?))
            } else {
                let job = store::jobs::get_any(c, job_id)?.ok_or_else(ApiError::job_not_found)?;
                Ok(serde_json::to_value(job_view(c, &job, &mut users)?))
            }
        })
        .await?
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::LOCATION, location))
        .json(body))
}

async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ApiError> {
    let job_id = path_id(&req, "jobId")?;
    let query = Query::from_request(&req)?;
    let tz = client_tz(&req, state.settings.tz())?;
    let date = |name: &str, bound: Bound| -> Result<Option<i64>, ApiError> {
        match query.text(name) {
            None => Ok(None),
            Some(text) => parse_date_param(text, tz, bound).map(Some).ok_or_else(|| {
                ApiError::invalid_request(format!(
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
    let (start_at, max_results) = query.paging(100, 1000)?;
    let me = me.0;
    let data_dir = state.data_dir.clone();
    let views = state
        .db
        .read(move |c| {
            visible_job(c, job_id, &me)?;
            let runs = store::runs::list(c, &filter, start_at, max_results)?;
            let mut users = UserCache::default();
            runs.iter()
                .map(|r| run_view(c, r, &mut users, &data_dir))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    Ok(HttpResponse::Ok().json(views))
}

/// A run of a job the caller may see; a run of another job is "not found".
fn visible_run(
    conn: &rusqlite::Connection,
    job_id: i64,
    run_id: i64,
    me: &User,
) -> Result<(Job, Run), ApiError> {
    let job = visible_job(conn, job_id, me)?;
    let run = store::runs::get(conn, run_id)?
        .filter(|r| r.job_id == job_id)
        .ok_or_else(ApiError::run_not_found)?;
    Ok((job, run))
}

async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ApiError> {
    let job_id = path_id(&req, "jobId")?;
    let run_id = path_id(&req, "runId")?;
    let wait = Query::from_request(&req)?.int("waitSeconds", 0)?;
    if !(0..=MAX_WAIT_SECONDS).contains(&wait) {
        return Err(ApiError::invalid_request(format!(
            "waitSeconds must be from 0 to {MAX_WAIT_SECONDS}."
        )));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait as u64);
    let me = me.0;
    loop {
        let viewer = me.clone();
        let data_dir = state.data_dir.clone();
        let (finished, view) = state
            .db
            .read(move |c| {
                let (_, run) = visible_run(c, job_id, run_id, &viewer)?;
                Ok((
                    run.status.is_finished(),
                    run_view(c, &run, &mut UserCache::default(), &data_dir)?,
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

async fn result_file(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ApiError> {
    let job_id = path_id(&req, "jobId")?;
    let run_id = path_id(&req, "runId")?;
    let me = me.0;
    let me_for_audit = me.clone();
    let run = state
        .db
        .read(move |c| {
            let job = store::jobs::get_live(c, job_id)?.ok_or_else(ApiError::job_not_found)?;
            let run = store::runs::get(c, run_id)?
                .filter(|r| r.job_id == job_id)
                .ok_or_else(ApiError::run_not_found)?;
            let allowed = crate::service::access::can_download_result(c, &run, &job, &me)?;
            if allowed {
                Ok(run)
            } else {
                Err(ApiError::op_not_allowed())
            }
        })
        .await?;
    let not_available = || {
        ApiError::user(
            "SCHEDULED_JOB_RESULT_DATA_FILE_NOT_AVAILABLE",
            "Job run result data file is not generated.",
        )
    };
    let not_found = || {
        ApiError::user(
            "SCHEDULED_JOB_RESULT_DATA_FILE_NOT_FOUND",
            "Job run result data file is damaged or replaced.",
        )
    };
    let relative = run.result_file.clone().ok_or_else(not_available)?;
    // Opened without following links on any component, and only if it is a regular file: a
    // script could have replaced its result by a link to the ledger.
    let data_dir = state.data_dir.clone();
    let (job_of_run, id_of_run) = (run.job_id, run.id);
    let opened = web::block(move || open_run_file(&data_dir, job_of_run, id_of_run, &relative))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let std_file = opened.map_err(|_| not_found())?;
    let file_name = run.result_file_name().unwrap_or("result").to_string();
    let content_type = match std::path::Path::new(&file_name)
        .extension()
        .and_then(|e| e.to_str())
    {
        Some("csv") => mime::TEXT_CSV_UTF_8,
        Some("zip") => "application/zip"
            .parse()
            .unwrap_or(mime::APPLICATION_OCTET_STREAM),
        Some(ext) => actix_files::file_extension_to_mime(ext),
        None => mime::APPLICATION_OCTET_STREAM,
    };
    let file = NamedFile::from_file(std_file, &file_name).map_err(|_| not_found())?;
    // A download is a sensitive read (result files hold sample data); HEAD reads nothing.
    if req.method() == actix_web::http::Method::GET {
        let audit = event(&me_for_audit, &req, actions::RESULT_DOWNLOAD)
            .object("RUN", run.id)
            .detail("jobId", run.job_id)
            .detail("file", file_name.clone());
        record_alone(&state, audit).await;
    }
    // A second handle for the whole-file path below.
    let whole = file.file().try_clone().ok();
    let size = file.metadata().len();
    let mut response = file
        .set_content_type(content_type)
        .set_content_disposition(attachment(&file_name))
        .into_response(&req);
    // The whole file (a 200 to a GET; not a Range, a 304 or a HEAD): read in big pieces on one
    // blocking thread rather than actix-files' 64 KiB per blocking task, several times faster for
    // big results. Everything else keeps actix-files' answer.
    if response.status() == actix_web::http::StatusCode::OK
        && req.method() == actix_web::http::Method::GET
        && let Some(whole) = whole
    {
        response = response
            .set_body(actix_web::body::SizedStream::new(
                size,
                read_whole_file(whole, size),
            ))
            .map_into_boxed_body();
    }
    let (name, value) = nosniff();
    response.headers_mut().insert(name, value);
    Ok(response)
}

/// `Content-Disposition: attachment` for a name a script chose: control characters (CR, LF…)
/// become `_` and bidi controls are dropped, so the header is always valid and the name cannot be
/// shown reversed; `filename` carries an ASCII fallback, `filename*` (RFC 6266) the UTF-8 name.
fn attachment(name: &str) -> ContentDisposition {
    let is_bidi = |c: char| matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    let shown: String = name
        .chars()
        .filter(|c| !is_bidi(*c))
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    let shown = if shown.trim().is_empty() {
        "result".to_string()
    } else {
        shown
    };
    let ascii: String = shown
        .chars()
        .map(|c| {
            if c.is_ascii() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut parameters = vec![DispositionParam::Filename(ascii.clone())];
    if ascii != shown {
        parameters.push(DispositionParam::FilenameExt(header::ExtendedValue {
            charset: header::Charset::Ext("UTF-8".to_string()),
            language_tag: None,
            value: shown.into_bytes(),
        }));
    }
    ContentDisposition {
        disposition: DispositionType::Attachment,
        parameters,
    }
}

/// Pieces a whole result file is sent in.
const FILE_CHUNK: u64 = 1 << 20;

/// The file from its start, read on one blocking thread a piece ahead of the socket. The reader
/// stops when the client goes away (the channel closes).
fn read_whole_file(
    file: std::fs::File,
    size: u64,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    use std::io::{Read, Seek};
    let (pieces, received) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        if let Err(e) = file.seek(std::io::SeekFrom::Start(0)) {
            let _ = pieces.blocking_send(Err(e));
            return;
        }
        let mut sent = 0u64;
        while sent < size {
            let want = (size - sent).min(FILE_CHUNK);
            let mut piece = Vec::with_capacity(want as usize);
            let read = match (&mut file).take(want).read_to_end(&mut piece) {
                Ok(0) => Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => Ok(n),
                Err(e) => Err(e),
            };
            let failed = read.is_err();
            let item = read.map(|n| {
                sent += n as u64;
                Bytes::from(piece)
            });
            if pieces.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    futures_util::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|item| (item, received))
    })
}

/// Where a run's log is: the run it belongs to, read through `open_run_file` (no links).
#[derive(Clone)]
struct LogSource {
    data_dir: PathBuf,
    job_id: i64,
    run_id: i64,
}

/// Reads the log from `offset`: the bytes (up to `limit`) and the new offset.
async fn read_log_from(
    source: &LogSource,
    offset: u64,
    limit: usize,
) -> std::io::Result<(Vec<u8>, u64)> {
    let LogSource {
        data_dir,
        job_id,
        run_id,
    } = source.clone();
    let opened =
        tokio::task::spawn_blocking(move || open_run_file(&data_dir, job_id, run_id, "run.log"))
            .await
            .map_err(std::io::Error::other)?;
    let mut file = match opened {
        Ok(f) => tokio::fs::File::from_std(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        // A link or other non-file where the log belongs is never read; the log is empty.
        Err(e) => {
            tracing::warn!(run_id = source.run_id, error = %e, "the run's log is not a regular file");
            return Ok((Vec::new(), offset));
        }
    };
    // Nothing at or past the end; seeking far past it fails (EINVAL) on some file systems.
    if offset >= file.metadata().await?.len() {
        return Ok((Vec::new(), offset));
    }
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut buf = Vec::new();
    (&mut file).take(limit as u64).read_to_end(&mut buf).await?;
    let next = offset + buf.len() as u64;
    Ok((buf, next))
}

const LOG_CHUNK: usize = 256 * 1024;

async fn log(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ApiError> {
    let job_id = path_id(&req, "jobId")?;
    let run_id = path_id(&req, "runId")?;
    let query = Query::from_request(&req)?;
    let offset = query.int("offset", 0)?;
    if offset < 0 {
        return Err(ApiError::invalid_request("offset must be 0 or more."));
    }
    let follow = query.bool("follow", false)?;
    let me = me.0;
    let viewer = me.clone();
    let (_, run) = state
        .db
        .read(move |c| visible_run(c, job_id, run_id, &viewer))
        .await?;
    // Reading a log from its start is one event; the pages' polls for more (offset > 0) are not.
    if offset == 0 {
        let audit = event(&me, &req, actions::LOG_DOWNLOAD)
            .object("RUN", run.id)
            .detail("jobId", run.job_id)
            .detail("follow", follow);
        record_alone(&state, audit).await;
    }
    let log_path = LogSource {
        data_dir: state.data_dir.clone(),
        job_id: run.job_id,
        run_id: run.id,
    };
    let sse = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));

    if !follow || run.status.is_finished() && !sse {
        let mut out = Vec::new();
        let mut position = offset as u64;
        loop {
            let (chunk, next) = read_log_from(&log_path, position, LOG_CHUNK).await?;
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
            position = next;
        }
        return Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .insert_header(nosniff())
            .insert_header(("X-Log-Offset", position.to_string()))
            .insert_header(("X-Run-Status", run.status.as_str()))
            .body(out));
    }

    let db = state.db.clone();
    let follow_state = Some(Follow {
        offset: offset as u64,
        log_path,
        db,
        run_id,
        sse,
        ended: false,
    });
    let stream = futures_util::stream::unfold(follow_state, |state| async move {
        let mut st = state?;
        loop {
            match read_log_from(&st.log_path, st.offset, LOG_CHUNK).await {
                Ok((chunk, next)) if !chunk.is_empty() => {
                    st.offset = next;
                    let bytes = if st.sse {
                        sse_event("log", &String::from_utf8_lossy(&chunk))
                    } else {
                        chunk
                    };
                    return Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), Some(st)));
                }
                Ok(_) if st.ended => {
                    // The run had ended before this last read found nothing more: finish.
                    let status = run_status(&st.db, st.run_id).await;
                    if st.sse {
                        let end = sse_event("end", status.map_or("", |s| s.as_str()));
                        return Some((Ok(Bytes::from(end)), None));
                    }
                    return None;
                }
                Ok(_) => {
                    if run_status(&st.db, st.run_id)
                        .await
                        .is_none_or(|s| s.is_finished())
                    {
                        // Read once more: output written just before the end must not be lost.
                        st.ended = true;
                        continue;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Some((Err(e), None)),
            }
        }
    });
    let content_type = if sse {
        "text/event-stream"
    } else {
        "text/plain; charset=utf-8"
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(nosniff())
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}

/// Program output is never to be sniffed into HTML or script by a browser.
fn nosniff() -> (header::HeaderName, HeaderValue) {
    (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    )
}

struct Follow {
    offset: u64,
    log_path: LogSource,
    db: crate::store::Db,
    run_id: i64,
    sse: bool,
    ended: bool,
}

async fn run_status(db: &crate::store::Db, run_id: i64) -> Option<RunStatus> {
    db.read(move |c| Ok(store::runs::get(c, run_id)?.map(|r| r.status)))
        .await
        .ok()
        .flatten()
}

/// One Server-Sent Event; every line of `data` becomes its own `data:` line.
fn sse_event(event: &str, data: &str) -> Vec<u8> {
    let mut out = format!("event: {event}\n");
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.trim_end_matches('\r'));
        out.push('\n');
    }
    out.push('\n');
    out.into_bytes()
}

async fn cancel(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ApiError> {
    let job_id = path_id(&req, "jobId")?;
    let run_id = path_id(&req, "runId")?;
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
        return Err(ApiError::user(
            "SCHEDULED_JOB_RUN_NOT_CANCELLABLE",
            format!("Run {run_id} has already finished."),
        ));
    }
    // A running one stops within the kill grace period; answer with its end when it comes soon.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let viewer = me.0.clone();
        let data_dir = state.data_dir.clone();
        let (finished, view) = state
            .db
            .read(move |c| {
                let (_, run) = visible_run(c, job_id, run_id, &viewer)?;
                Ok((
                    run.status.is_finished(),
                    run_view(c, &run, &mut UserCache::default(), &data_dir)?,
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
