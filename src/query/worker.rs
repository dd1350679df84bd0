//! The query process: a QUERY run or a "Try it" preview on a SQLite source runs in a child
//! process (this binary again, `labcron query-worker`, hidden), so the operating system bounds
//! it whatever SQLite does inside one step. Inside the server SQLite could not be bounded: one
//! `randomblob(60e6)` is one virtual-machine step (the progress handler never sees it), a result
//! row holds every column at once (50 columns under a 64 MiB value cap are 3 GB, and
//! `SQLITE_LIMIT_LENGTH` caps only one value or one stored record, never a result row), a sort
//! spills to temp files that SQLite does not limit, and SQLite has no per-connection memory
//! limit (its heap limit is the whole process's, the ledger's connections included). Here:
//! - time: the server kills the process at the deadline or on cancel (`run`), whatever step it
//!   is in; nothing it does can stretch that;
//! - memory: `RLIMIT_DATA` (`queries.memory_byte_limit`) bounds the heap and every anonymous
//!   mapping; SQLite answers SQLITE_NOMEM past it, anything else aborts the process;
//! - disk: temporary tables and sorts stay in memory (`PRAGMA temp_store = MEMORY`, set by
//!   `sources::open_read_only`), so they count against that limit and never make temp files;
//!   the only file written is the CSV, under `RLIMIT_FSIZE` (the result byte limit and a little)
//!   beside the writer's own exact limit;
//! - CPU: `RLIMIT_CPU` a little past the time limit, should the server be gone.
//!
//! The cost is one process start per run or preview (a few milliseconds, against runs that read
//! a database), and the server's memory no longer grows with what a query builds. The request
//! goes to the child as JSON on its stdin, the reply comes back as JSON on its stdout; the CSV
//! is written by the child straight to the file the server names. PostgreSQL sources are not run
//! here: their server does the work (under `statement_timeout`) and rows stream one at a time.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::csv::{ExportError, Guard, Limits, export_csv};
use super::params::{bare_name, bind_params};
use super::sources::{check_sql, open_capped, prepare_single};

/// The hidden subcommand that makes this binary a query process.
pub const SUBCOMMAND: &str = "query-worker";

/// The named argument a chained QUERY run gets: its upstream run's id.
pub const UPSTREAM_ARG: &str = "upstreamRunId";

/// Bytes of a reply the server reads at most (a preview is far smaller: see `PREVIEW_TEXT`).
const MAX_REPLY: u64 = 16 * 1024 * 1024;
/// Bytes of a request the query process reads at most (the SQL is at most 100,000 characters).
const MAX_REQUEST: u64 = 4 * 1024 * 1024;
/// Characters of cell text a preview collects before it stops taking rows.
const PREVIEW_TEXT: usize = 1024 * 1024;
/// File bytes a preview may write (none but SQLite's shared-memory index of a WAL source).
const PREVIEW_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// What the query process is asked to do.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The source's name, for messages.
    pub source: String,
    /// Its SQLite file.
    pub path: PathBuf,
    /// Longest value in bytes (`SQLITE_LIMIT_LENGTH`).
    pub value_limit: Option<u64>,
    /// `RLIMIT_DATA` of the process, in bytes.
    pub memory_limit: u64,
    /// Seconds of CPU before the kernel stops the process (a backstop to the server's kill).
    pub cpu_seconds: u64,
    pub sql: String,
    pub args: BTreeMap<String, String>,
    /// Offered as `upstreamRunId` when the SQL names that parameter and no argument fills it.
    pub upstream: Option<i64>,
    pub work: Work,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Work {
    /// Write the rows as CSV to a new file `out` (mode 0600).
    Export { out: PathBuf, limits: Limits },
    /// Return the first `rows` rows as JSON, text cut at `cell_chars` characters.
    Preview { rows: usize, cell_chars: usize },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Exported {
        rows: u64,
        bytes: u64,
    },
    Preview {
        columns: Vec<String>,
        rows: Vec<Vec<Value>>,
        /// More rows exist than were returned.
        truncated: bool,
    },
    Failed(Failure),
}

/// Why the query process did not do its work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// The source cannot be opened.
    Source(String),
    /// The SQL does not compile there, or is not one statement returning rows.
    Sql(String),
    /// The statement would change the database.
    NotReadOnly,
    /// The arguments do not fill the parameters.
    Args(String),
    RowLimit(u64),
    ByteLimit(u64),
    ValueTooBig,
    /// The memory limit was reached.
    Memory,
    /// SQLite failed while running the statement.
    Query(String),
    /// The CSV file could not be written.
    Io(String),
}

/// How a query process ended, as the server sees it.
#[derive(Debug)]
pub enum Ended {
    Reply(Reply),
    /// Killed at the deadline.
    TimeLimit,
    /// Killed because the run was cancelled.
    Cancelled,
    /// It ended without a reply: killed by the kernel at a limit, or it could not start.
    Died(String),
}

static PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Names the labcron binary that runs query processes, for a server embedded in another program
/// (the tests); the first call wins. Unset, this binary runs them.
pub fn use_program(path: impl Into<PathBuf>) {
    let _ = PROGRAM.set(path.into());
}

fn program() -> std::io::Result<PathBuf> {
    match PROGRAM.get() {
        Some(path) => Ok(path.clone()),
        None => std::env::current_exe(),
    }
}

/// Runs `request` in a query process until it replies, `deadline` passes or `cancel` fires
/// (then it is killed). Nothing it does runs in this process.
pub async fn run(request: &Request, deadline: Instant, cancel: Option<CancellationToken>) -> Ended {
    let input = match serde_json::to_vec(request) {
        Ok(input) => input,
        Err(e) => return Ended::Died(format!("cannot encode the request: {e}")),
    };
    let spawned = program().and_then(|program| {
        tokio::process::Command::new(program)
            .arg(SUBCOMMAND)
            // It needs nothing from the server's environment (and gets none of its secrets).
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
    });
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Ended::Died(format!("cannot start the query process: {e}")),
    };
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Ended::Died("the query process has no pipes".into());
    };
    let cancelled = async {
        match &cancel {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let work = async {
        let send = async {
            // Closing stdin tells the process the request is whole.
            let sent = stdin.write_all(&input).await;
            drop(stdin);
            sent
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut stdout = stdout.take(MAX_REPLY);
        let mut stderr = stderr.take(64 * 1024);
        let (_, _, _, status) = tokio::join!(
            send,
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            child.wait()
        );
        (out, err, status)
    };
    let finished = tokio::select! {
        done = work => Some(done),
        _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => None,
        _ = cancelled => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Ended::Cancelled;
        }
    };
    let Some((out, err, status)) = finished else {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Ended::TimeLimit;
    };
    let err = String::from_utf8_lossy(&err);
    match serde_json::from_slice::<Reply>(&out) {
        Ok(reply) if status.as_ref().is_ok_and(|s| s.success()) => Ended::Reply(reply),
        _ => {
            let how = match status {
                Ok(status) => status.to_string(),
                Err(e) => format!("cannot be waited for: {e}"),
            };
            tracing::warn!(status = %how, stderr = %err.trim(), "a query process ended without a reply");
            // Rust's allocator aborts with this line when the memory limit refuses it.
            if err.contains("memory allocation of") {
                Ended::Reply(Reply::Failed(Failure::Memory))
            } else {
                Ended::Died(how)
            }
        }
    }
}

/// `labcron query-worker`: reads a request on stdin, limits itself, does the work, writes the
/// reply on stdout.
pub fn main() -> ExitCode {
    let mut input = Vec::new();
    if std::io::stdin()
        .take(MAX_REQUEST)
        .read_to_end(&mut input)
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    let request: Request = match serde_json::from_slice(&input) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("labcron query-worker: a bad request: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = limit_self(&request) {
        eprintln!("labcron query-worker: cannot set its limits: {e}");
        return ExitCode::FAILURE;
    }
    drop(input);
    let reply = match &request.work {
        Work::Export { out, limits } => export(&request, out, *limits),
        Work::Preview { rows, cell_chars } => preview(&request, *rows, *cell_chars),
    }
    .unwrap_or_else(Reply::Failed);
    let written = serde_json::to_vec(&reply)
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()
        });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// The type of `setrlimit`'s resource argument, which differs between C libraries.
#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

fn set_limit(resource: Resource, value: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value as libc::rlim_t,
        rlim_max: value as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct it is given; it has no other memory-safety preconditions.
    if unsafe { libc::setrlimit(resource, &limit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn limit_self(request: &Request) -> std::io::Result<()> {
    let file_bytes = match &request.work {
        Work::Export { limits, .. } => limits
            .bytes
            .map_or(libc::RLIM_INFINITY, |b| b.saturating_add(1024 * 1024)),
        Work::Preview { .. } => PREVIEW_FILE_BYTES,
    };
    // SAFETY: umask and signal only set process attributes; SIG_IGN is a valid disposition.
    // A write past RLIMIT_FSIZE then fails (EFBIG) instead of killing the process.
    unsafe {
        libc::umask(0o077);
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    set_limit(libc::RLIMIT_CORE, 0)?;
    set_limit(libc::RLIMIT_CPU, request.cpu_seconds.max(1))?;
    set_limit(libc::RLIMIT_FSIZE, file_bytes)?;
    set_limit(libc::RLIMIT_DATA, request.memory_limit)
}

/// The statement of `request`, compiled and its parameters bound.
fn statement<'c>(
    conn: &'c Connection,
    request: &Request,
) -> Result<rusqlite::Statement<'c>, Failure> {
    let mut stmt = prepare_single(conn, &request.sql).map_err(Failure::Sql)?;
    if !stmt.readonly() {
        return Err(Failure::NotReadOnly);
    }
    let mut args = request.args.clone();
    // A chained run offers its upstream run's id as `upstreamRunId`, used when the query names
    // that parameter (an argument of the same name wins).
    if let Some(upstream) = request.upstream
        && (1..=stmt.parameter_count()).any(|i| {
            stmt.parameter_name(i)
                .is_some_and(|n| bare_name(n) == UPSTREAM_ARG)
        })
    {
        args.entry(UPSTREAM_ARG.to_string())
            .or_insert_with(|| upstream.to_string());
    }
    bind_params(&mut stmt, &args).map_err(Failure::Args)?;
    Ok(stmt)
}

fn open(request: &Request) -> Result<Connection, Failure> {
    open_capped(&request.source, &request.path, request.value_limit).map_err(Failure::Source)
}

fn sqlite_failure(e: rusqlite::Error) -> Failure {
    match e.sqlite_error_code() {
        Some(ErrorCode::OutOfMemory) => Failure::Memory,
        Some(ErrorCode::TooBig) => Failure::ValueTooBig,
        _ => Failure::Query(super::sqlite_message(&e)),
    }
}

fn export(request: &Request, out: &Path, limits: Limits) -> Result<Reply, Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let conn = open(request)?;
    let mut stmt = statement(&conn, request)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| Failure::Io(e.to_string()))?;
    // No guard: the server kills this process at the deadline or on cancel.
    let stats =
        export_csv(&mut stmt, &mut file, limits, &Guard::default()).map_err(|e| match e {
            ExportError::RowLimit(rows) => Failure::RowLimit(rows),
            ExportError::ByteLimit(bytes) => Failure::ByteLimit(bytes),
            ExportError::ValueTooBig => Failure::ValueTooBig,
            ExportError::Sqlite(e) => sqlite_failure(e),
            ExportError::Io(e) => Failure::Io(e.to_string()),
            ExportError::Stopped(stop) => Failure::Query(format!("stopped: {stop:?}")),
        })?;
    file.sync_all().map_err(|e| Failure::Io(e.to_string()))?;
    Ok(Reply::Exported {
        rows: stats.rows,
        bytes: stats.bytes,
    })
}

fn preview(request: &Request, max_rows: usize, cell_chars: usize) -> Result<Reply, Failure> {
    let conn = open(request)?;
    check_sql(&conn, &request.sql).map_err(Failure::Sql)?;
    let mut stmt = statement(&conn, request)?;
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let width = columns.len();
    let mut rows = Vec::new();
    let mut text = 0;
    let mut truncated = false;
    let mut raw = stmt.raw_query();
    while let Some(row) = raw.next().map_err(sqlite_failure)? {
        if rows.len() == max_rows || text > PREVIEW_TEXT {
            truncated = true;
            break;
        }
        let mut values = Vec::with_capacity(width);
        for index in 0..width {
            let value = cell(row.get_ref(index).map_err(sqlite_failure)?, cell_chars);
            text += value.as_str().map_or(8, str::len);
            values.push(value);
        }
        rows.push(values);
    }
    Ok(Reply::Preview {
        columns,
        rows,
        truncated,
    })
}

/// A preview's cell: text cut at `max_chars` characters (with "…"), a blob as its size.
pub fn cell(value: ValueRef<'_>, max_chars: usize) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(r) => serde_json::Number::from_f64(r)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(r.to_string())),
        ValueRef::Text(bytes) => {
            // Only the start is decoded (enough bytes for one character more than is shown), so
            // a long text is never copied whole.
            let head = &bytes[..bytes
                .len()
                .min(max_chars.saturating_add(1).saturating_mul(4))];
            let text = String::from_utf8_lossy(head);
            let mut chars = text.chars();
            let cut: String = chars.by_ref().take(max_chars).collect();
            if chars.next().is_some() {
                Value::String(format!("{cut}…"))
            } else {
                Value::String(cut)
            }
        }
        ValueRef::Blob(bytes) => Value::String(format!("({} bytes of binary data)", bytes.len())),
    }
}
