//! `GET /scheduled-jobs/{jobId}/runs/{runId}/log`: the run's log from an offset, or followed while
//! the run goes on, as plain text or Server-Sent Events, read through `RunFiles` (the data
//! directory without following links, or the pieces in the database), a piece at a time. `HEAD`
//! answers the headers of the plain answer (length, offset, status) without reading the log.
//! A followed log waits out an unreachable ledger (PostgreSQL down) and goes on when it is back;
//! only after `FOLLOW_OUTAGE` does it give up, saying so (an `error` event in SSE).

use std::time::{Duration, Instant};

use actix_web::http::Method;
use actix_web::http::header::{self};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;

use crate::domain::audit::actions;
use crate::domain::ids::RunOfJob;
use crate::domain::run::RunStatus;
use crate::error::ServiceError;
use crate::run_files::RunFiles;
use crate::store;
use crate::web::AppState;
use crate::web::api::audit_trail::{event, record_alone};
use crate::web::api::auth::CurrentUser;
use crate::web::api::params::{PathOf, Query, RunPath};

use super::{nosniff, visible_run};

const LOG_CHUNK: usize = 256 * 1024;
/// How long a followed log waits for an unreachable ledger before it gives up.
const FOLLOW_OUTAGE: Duration = Duration::from_secs(600);
/// How often it asks again meanwhile (each ask itself waits for a connection a while).
const FOLLOW_RETRY: Duration = Duration::from_secs(1);

#[utoipa::path(head, path = "/scheduled-jobs/{jobId}/runs/{runId}/log", tag = "Runs",
    operation_id = "headRunLog", summary = "A run's output: headers only (ext)",
    description = "What a plain `GET` from `offset` answers now (status, length, offset, run \
        status), without the body.",
    params(
        RunPath,
        ("offset" = Option<i64>, Query, description = "Start at this byte (0 or more)."),
    ),
    responses(
        (status = 200, description = "The log's headers; no body.",
            headers(
                ("Content-Length" = i64, description = "The bytes from `offset` to the log's end."),
                ("X-Log-Offset" = i64, description = "The log's end now."),
                ("X-Run-Status" = String, description = "The run's status."),
                ("X-Content-Type-Options" = String, description = "`nosniff`"),
            )),
    ))]
/// The same handler (it answers a `HEAD` without a body itself), apart so that each method has
/// its own documented operation.
pub async fn log_head(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    path: PathOf<RunPath>,
) -> Result<HttpResponse, ServiceError> {
    log(state, req, me, path).await
}

#[utoipa::path(get, path = "/scheduled-jobs/{jobId}/runs/{runId}/log", tag = "Runs",
    operation_id = "getRunLog", summary = "A run's output (ext)",
    description = "The combined stdout and stderr from `offset`. With `follow=true` the \
        response stays open and streams new output until the run ends; as Server-Sent Events \
        (`log` events, then an `end` event with the final status) when asked for \
        `text/event-stream`.",
    params(
        RunPath,
        ("offset" = Option<i64>, Query, description = "Start at this byte (0 or more).",
            minimum = 0),
        ("follow" = Option<bool>, Query, description = "Stream until the run ends."),
    ),
    responses((status = 200, description = "The output.",
        content((String = "text/plain"), (String = "text/event-stream")),
        headers(
            ("X-Log-Offset" = i64, description = "The offset after the bytes sent (not when following)."),
            ("X-Run-Status" = String, description = "The run's status (not when following)."),
        ))))]
pub async fn log(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    path: PathOf<RunPath>,
) -> Result<HttpResponse, ServiceError> {
    let RunPath { job_id, run_id } = path?.into_inner();
    let query = Query::from_request(&req)?;
    let offset = query.int("offset", 0)?;
    if offset < 0 {
        return Err(ServiceError::invalid_request("offset must be 0 or more."));
    }
    let follow = query.bool("follow", false)?;
    let me = me.0;
    let viewer = me.clone();
    let (_, run) = state
        .db
        .read(move |c| visible_run(c, job_id, run_id, &viewer))
        .await?;
    let ids = run.of_job();
    if req.method() == Method::HEAD {
        // What the plain answer would carry now; nothing is read, so nothing is audited.
        let from = offset as u64;
        let to = state.files.log_end(ids).await?.max(from);
        let nothing = futures_util::stream::empty::<std::io::Result<Bytes>>();
        return Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .insert_header(nosniff())
            .insert_header(("X-Log-Offset", to.to_string()))
            .insert_header(("X-Run-Status", run.status.as_str()))
            .body(actix_web::body::SizedStream::new(to - from, nothing)));
    }
    // Reading a log from its start is one event; the pages' polls for more (offset > 0) are not.
    if offset == 0 {
        let audit = event(&me, &req, actions::LOG_DOWNLOAD)
            .object("RUN", run.id)
            .detail("jobId", run.job_id)
            .detail("follow", follow);
        record_alone(&state, audit).await;
    }
    let files = state.files.clone();
    let sse = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));

    if !follow || run.status.is_finished() && !sse {
        // The log as far as it goes now, streamed a piece at a time.
        let from = offset as u64;
        let to = files.log_end(ids).await?.max(from);
        let body = actix_web::body::SizedStream::new(to - from, files.log_stream(ids, from, to));
        return Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .insert_header(nosniff())
            .insert_header(("X-Log-Offset", to.to_string()))
            .insert_header(("X-Run-Status", run.status.as_str()))
            .body(body));
    }

    let db = state.db.clone();
    let follow_state = Some(Follow {
        offset: offset as u64,
        files,
        ids,
        db,
        run_id,
        sse,
        ended: false,
        unreachable_since: None,
    });
    let stream = futures_util::stream::unfold(follow_state, |state| async move {
        let mut st = state?;
        loop {
            match st.files.read_log(st.ids, st.offset, LOG_CHUNK).await {
                Ok((chunk, next)) if !chunk.is_empty() => {
                    st.unreachable_since = None;
                    st.offset = next;
                    let bytes = if st.sse {
                        sse_event("log", &String::from_utf8_lossy(&chunk))
                    } else {
                        chunk
                    };
                    return Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), Some(st)));
                }
                Ok(_) => match run_status(&st.db, st.run_id).await {
                    Ok(status) if st.ended => {
                        // The run had ended before this last read found nothing more: finish.
                        if st.sse {
                            let end = sse_event("end", status.map_or("", |s| s.as_str()));
                            return Some((Ok(Bytes::from(end)), None));
                        }
                        return None;
                    }
                    // Ended (or gone): read once more, as output written just before the end
                    // must not be lost.
                    Ok(status) if status.is_none_or(|s| s.is_finished()) => st.ended = true,
                    Ok(_) => {
                        st.unreachable_since = None;
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) if e.is_unreachable() => {
                        if !st.wait_for_ledger().await {
                            return Some(st.give_up(&e.to_string()));
                        }
                    }
                    Err(e) => return Some(st.give_up(&e.to_string())),
                },
                Err(e) if is_unreachable(&e) => {
                    if !st.wait_for_ledger().await {
                        return Some(st.give_up(&e.to_string()));
                    }
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

struct Follow {
    offset: u64,
    files: RunFiles,
    ids: RunOfJob,
    db: crate::store::Db,
    run_id: i64,
    sse: bool,
    ended: bool,
    /// Since when the ledger has been unreachable (None while it answers).
    unreachable_since: Option<Instant>,
}

impl Follow {
    /// Waits a little for an unreachable ledger; false once it has been unreachable for
    /// `FOLLOW_OUTAGE`.
    async fn wait_for_ledger(&mut self) -> bool {
        let since = *self.unreachable_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= FOLLOW_OUTAGE {
            return false;
        }
        tokio::time::sleep(FOLLOW_RETRY).await;
        true
    }

    /// The stream's last item when it cannot go on: an `error` event in SSE, else a cut body.
    fn give_up(&self, why: &str) -> (std::io::Result<Bytes>, Option<Follow>) {
        let why = format!("the log can no longer be followed: {why}");
        if self.sse {
            (Ok(Bytes::from(sse_event("error", &why))), None)
        } else {
            (Err(std::io::Error::other(why)), None)
        }
    }
}

/// Whether a log read failed because the ledger's database could not be reached.
fn is_unreachable(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<store::Error>())
        .is_some_and(store::Error::is_unreachable)
}

async fn run_status(db: &crate::store::Db, run_id: i64) -> Result<Option<RunStatus>, store::Error> {
    db.read(move |c| Ok::<_, store::Error>(c.run(run_id)?.map(|r| r.status)))
        .await
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
