//! `GET` and `HEAD /scheduled-jobs/{jobId}/runs/{runId}/result-file`: the file a run left, to
//! whoever may download it (`service::access::can_download_result`), opened through `RunFiles`:
//! in the data directory without following a link on any component and only if it is a regular
//! file, or as pieces in the database (a Range reads only the pieces it overlaps); sent in pieces
//! read ahead of the socket.

use actix_files::NamedFile;
use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::audit::actions;
use crate::error::ServiceError;
use crate::run_files::{ResultBytes, StoredFile};
use crate::web::AppState;
use crate::web::api::audit_trail::{event, record_alone};
use crate::web::api::auth::CurrentUser;
use crate::web::api::params::{PathOf, RunPath};
use crate::web::error::ErrorList;

use super::nosniff;

#[utoipa::path(get, path = "/scheduled-jobs/{jobId}/runs/{runId}/result-file", tag = "Runs",
    operation_id = "getResultFile", summary = "Download a run's result file",
    description = "The result as an attachment: CSV, a zip of several files, or whatever the \
        job wrote. Range requests work. No result: \
        `SCHEDULED_JOB_RESULT_DATA_FILE_NOT_AVAILABLE`; removed by retention: \
        `SCHEDULED_JOB_RESULT_DATA_FILE_NOT_FOUND`. Also allowed to the job's recipients \
        and the run's runner.",
    params(
        RunPath,
        ("Range" = Option<String>, Header, description = "A byte range, e.g. `bytes=0-99`."),
    ),
    responses(
        (status = 200, description = "The file.",
            content((FileBytes = "text/csv"), (FileBytes = "application/zip"),
                (FileBytes = "application/octet-stream"), (FileBytes = "*/*")),
            headers(
                ("Content-Disposition" = String, description = "`attachment; filename=…` \
                    (ASCII), plus `filename*=UTF-8''…` (RFC 6266) for other names"),
                ("X-Content-Type-Options" = String, description = "`nosniff`"),
            )),
        (status = 206, description = "The requested range of the file.",
            content((FileBytes = "text/csv"), (FileBytes = "application/zip"),
                (FileBytes = "application/octet-stream"), (FileBytes = "*/*"))),
        (status = 416, description = "The range is outside the file.", body = ErrorList),
    ))]
pub async fn result_file(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    path: PathOf<RunPath>,
) -> Result<HttpResponse, ServiceError> {
    let RunPath { job_id, run_id } = path?.into_inner();
    let me = me.0;
    let me_for_audit = me.clone();
    let run = state
        .db
        .read(move |c| {
            let job = c
                .live_job(job_id)?
                .ok_or_else(ServiceError::job_not_found)?;
            let run = c
                .run(run_id)?
                .filter(|r| r.job_id == job_id)
                .ok_or_else(ServiceError::run_not_found)?;
            let allowed = crate::service::access::can_download_result(c, &run, &job, &me)?;
            if allowed {
                Ok(run)
            } else {
                Err(ServiceError::op_not_allowed())
            }
        })
        .await?;
    let not_available = || {
        ServiceError::user(
            "SCHEDULED_JOB_RESULT_DATA_FILE_NOT_AVAILABLE",
            "Job run result data file is not generated.",
        )
    };
    let not_found = || {
        ServiceError::user(
            "SCHEDULED_JOB_RESULT_DATA_FILE_NOT_FOUND",
            "Job run result data file is damaged or replaced.",
        )
    };
    if run.result_file.is_none() {
        return Err(not_available());
    }
    // Locally, opened without following links on any component, and only if it is a regular
    // file: a script could have replaced its result by a link to the ledger.
    let opened = state
        .files
        .open_result(&run)
        .await
        .map_err(|_| not_found())?;
    let file_name = run.result_file_name().unwrap_or("result").to_string();
    let content_type = content_type_of(&file_name);
    // A download is a sensitive read (result files hold sample data); HEAD reads nothing.
    if req.method() == actix_web::http::Method::GET {
        let audit = event(&me_for_audit, &req, actions::RESULT_DOWNLOAD)
            .object("RUN", run.id)
            .detail("jobId", run.job_id)
            .detail("file", file_name.clone());
        record_alone(&state, audit).await;
    }
    let std_file = match opened {
        ResultBytes::File(file) => file,
        ResultBytes::Stored(stored) => {
            let validators = Validators::of_stored(&run, stored.size);
            return Ok(stored_response(
                &req,
                &stored,
                &validators,
                &file_name,
                content_type,
            ));
        }
    };
    let file = NamedFile::from_file(std_file, &file_name)
        .map_err(|_| not_found())?
        // The type is `content_type_of`'s, on both engines.
        .prefer_utf8(false);
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

#[utoipa::path(head, path = "/scheduled-jobs/{jobId}/runs/{runId}/result-file", tag = "Runs",
    operation_id = "headResultFile", summary = "A run's result file: headers only",
    description = "What `GET` answers (status, size, type, name), without the body.",
    params(RunPath),
    responses(
        (status = 200, description = "The file exists; no body.",
            headers(
                ("Content-Length" = i64, description = "The file's size in bytes."),
                ("Content-Disposition" = String, description = "`attachment; filename=…`"),
                ("X-Content-Type-Options" = String, description = "`nosniff`"),
            )),
    ))]
/// The same handler (it leaves the body out of a `HEAD` itself), apart so that each method has
/// its own documented operation.
pub async fn result_file_head(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    path: PathOf<RunPath>,
) -> Result<HttpResponse, ServiceError> {
    result_file(state, req, me, path).await
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

/// The type a result is sent as, by its name's extension, the same on both engines: text is
/// UTF-8 (what scripts write), a CSV always.
fn content_type_of(file_name: &str) -> mime::Mime {
    let by_extension = match std::path::Path::new(file_name)
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
    if by_extension.type_() == mime::TEXT && by_extension.get_param(mime::CHARSET).is_none() {
        format!("{by_extension}; charset=utf-8")
            .parse()
            .unwrap_or(by_extension)
    } else {
        by_extension
    }
}

/// A stored result's validators. Its bytes never change once its run has ended, so the run, the
/// size and the end name them; the end is its modification time, to the second.
struct Validators {
    etag: header::EntityTag,
    last_modified: std::time::SystemTime,
}

impl Validators {
    fn of_stored(run: &crate::domain::run::Run, size: u64) -> Validators {
        let ended_ms = run.finished_at.unwrap_or(run.queued_at).max(0) as u64;
        Validators {
            etag: header::EntityTag::new_strong(format!("r{:x}-{size:x}-{ended_ms:x}", run.id)),
            last_modified: std::time::UNIX_EPOCH + std::time::Duration::from_secs(ended_ms / 1000),
        }
    }

    /// `If-Match` / `If-Unmodified-Since` say the client's copy is not this one (412).
    fn precondition_fails(&self, req: &HttpRequest) -> bool {
        use actix_web::HttpMessage;
        match req.get_header::<header::IfMatch>() {
            Some(header::IfMatch::Any) => false,
            Some(header::IfMatch::Items(tags)) => !tags.iter().any(|t| t.strong_eq(&self.etag)),
            None => req
                .get_header::<header::IfUnmodifiedSince>()
                .is_some_and(|since| self.last_modified > std::time::SystemTime::from(since.0)),
        }
    }

    /// `If-None-Match` / `If-Modified-Since` say the client has this copy (304).
    fn not_modified(&self, req: &HttpRequest) -> bool {
        use actix_web::HttpMessage;
        match req.get_header::<header::IfNoneMatch>() {
            Some(header::IfNoneMatch::Any) => true,
            Some(header::IfNoneMatch::Items(tags)) => tags.iter().any(|t| t.weak_eq(&self.etag)),
            None if req.headers().contains_key(header::IF_NONE_MATCH) => false,
            None => req
                .get_header::<header::IfModifiedSince>()
                .is_some_and(|since| self.last_modified <= std::time::SystemTime::from(since.0)),
        }
    }

    /// Whether a `Range` applies: no `If-Range`, or one naming this copy.
    fn range_applies(&self, req: &HttpRequest) -> bool {
        use actix_web::HttpMessage;
        if !req.headers().contains_key(header::IF_RANGE) {
            return true;
        }
        match req.get_header::<header::IfRange>() {
            Some(header::IfRange::EntityTag(tag)) => tag.strong_eq(&self.etag),
            Some(header::IfRange::Date(date)) => {
                std::time::SystemTime::from(date) == self.last_modified
            }
            None => false,
        }
    }
}

/// A result stored in pieces, answered as actix-files answers a file: validators (`ETag`,
/// `Last-Modified`) and the conditions on them (412, 304, `If-Range`), the whole file (200), or
/// the first range of a GET's `Range: bytes=…` (206, read from the pieces it overlaps; 416 when
/// it is outside the file), with `Accept-Ranges`, `Content-Disposition` and nosniff.
fn stored_response(
    req: &HttpRequest,
    stored: &StoredFile,
    validators: &Validators,
    file_name: &str,
    content_type: mime::Mime,
) -> HttpResponse {
    use actix_web::http::{Method, StatusCode};
    let size = stored.size;
    let mut answer = HttpResponse::Ok();
    answer
        .content_type(content_type)
        .insert_header(attachment(file_name))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header(header::ETag(validators.etag.clone()))
        .insert_header(header::LastModified(validators.last_modified.into()))
        .insert_header(nosniff());
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let not_modified = validators.not_modified(req);
    if validators.precondition_fails(req) || (not_modified && !read) {
        return answer.status(StatusCode::PRECONDITION_FAILED).finish();
    }
    if not_modified {
        return answer.status(StatusCode::NOT_MODIFIED).finish();
    }
    let range = req
        .headers()
        .get(header::RANGE)
        .filter(|_| req.method() == Method::GET && validators.range_applies(req))
        .and_then(|v| v.to_str().ok())
        // Unknown range units are ignored (RFC 9110 14.2).
        .filter(|v| {
            v.split_once('=')
                .is_none_or(|(unit, _)| unit.trim().eq_ignore_ascii_case("bytes"))
        });
    let (from, len) = match range {
        Some(value) => {
            match actix_files::HttpRange::parse(value, size)
                .ok()
                .and_then(|ranges| ranges.first().copied())
            {
                Some(r) => {
                    answer.status(StatusCode::PARTIAL_CONTENT).insert_header((
                        header::CONTENT_RANGE,
                        format!("bytes {}-{}/{size}", r.start, r.start + r.length - 1),
                    ));
                    (r.start, r.length)
                }
                None => {
                    return answer
                        .status(StatusCode::RANGE_NOT_SATISFIABLE)
                        .insert_header((header::CONTENT_RANGE, format!("bytes */{size}")))
                        .finish();
                }
            }
        }
        None => (0, size),
    };
    if req.method() == Method::HEAD {
        // The length is announced; nothing is read.
        let nothing = futures_util::stream::empty::<std::io::Result<Bytes>>();
        return answer.body(actix_web::body::SizedStream::new(len, nothing));
    }
    answer.body(actix_web::body::SizedStream::new(
        len,
        stored.stream(from, len),
    ))
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

/// A file's bytes (a result file or a log).
struct FileBytes;
impl PartialSchema for FileBytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::String).into()
    }
}
impl ToSchema for FileBytes {}
