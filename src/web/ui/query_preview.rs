//! The saved-query form's "Try it": runs SQL that is being edited (not stored) against its data
//! source and returns the first rows as JSON. It goes through the same gate as a QUERY run — the
//! read-only connection of `query::sources`, the one-statement check, named parameters filled from
//! `name=value` words — with a short time limit (10 s, or `queries.time_limit_seconds` if less)
//! and a row cap. On a SQLite source it runs in a query process (`query::worker`), killed at the
//! time limit, its memory under `queries.memory_byte_limit`. A PostgreSQL source is read the same
//! way as its QUERY runs (a READ ONLY transaction). At most `PREVIEWS_AT_ONCE` try-outs run at
//! once on a server and one per user; beyond that the answer is 503
//! `SAVED_QUERY_PREVIEW_BUSY`, at once. Stores nothing, changes nothing.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use rusqlite::types::ValueRef;
use serde::Serialize;
use serde_json::Value;

use crate::domain::args::split_args;
use crate::domain::errors::ErrorItem;
use crate::domain::input::Fields;
use crate::domain::saved_query::DEFAULT_SOURCE;
use crate::domain::saved_query::{MAX_SQL_CHARS, invalid_data_source, invalid_sql};
use crate::error::ServiceError;
use crate::query::csv::Guard;
use crate::query::params::{parse_args, values_by_name};
use crate::query::pg_sql::rewrite;
use crate::query::postgres::{Failure as PgFailure, PgSource};
use crate::query::sources::DataSources;
use crate::query::worker::{self, Ended, Failure, Reply, Request, Work, cell};
use crate::web::AppState;
use crate::web::api::auth::CurrentUser;
use crate::web::api::params::json_object;

/// Rows a try-out shows at most.
const PREVIEW_ROWS: usize = 50;
/// How long a try-out may run (or `queries.time_limit_seconds`, if less).
const TIME_LIMIT: Duration = Duration::from_secs(10);
/// Longest text of one cell sent back (the rest is cut with "…").
const MAX_CELL_CHARS: usize = 500;
/// Try-outs running at once on this server, whoever runs them.
pub const PREVIEWS_AT_ONCE: usize = 4;

/// Who is running a try-out now: at most `PREVIEWS_AT_ONCE`, one per user.
#[derive(Debug, Default)]
pub struct PreviewSlots {
    users: Mutex<HashSet<i64>>,
}

/// A running try-out's place; it is given back when dropped.
struct Slot<'a> {
    slots: &'a PreviewSlots,
    user: i64,
}

impl PreviewSlots {
    fn take(&self, user: i64) -> Result<Slot<'_>, ServiceError> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let busy = if users.contains(&user) {
            "Your previous try-out is still running; wait for its answer."
        } else if users.len() >= PREVIEWS_AT_ONCE {
            "Too many try-outs are running on the server; try again in a few seconds."
        } else {
            users.insert(user);
            return Ok(Slot { slots: self, user });
        };
        Err(ServiceError::Unavailable(ErrorItem::new(
            "SAVED_QUERY_PREVIEW_BUSY",
            busy,
        )))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots
            .users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.user);
    }
}

#[derive(Serialize)]
struct Preview {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
    /// More rows exist than were returned.
    truncated: bool,
}

fn user_error(item: ErrorItem) -> ServiceError {
    ServiceError::User(vec![item])
}

fn invalid_args(message: impl Into<String>) -> ServiceError {
    ServiceError::user("SAVED_QUERY_INVALID_ARGS", message)
}

/// Runs the statement on a SQLite source in a query process; the error is already the API's.
async fn preview_sqlite(
    state: &AppState,
    sources: &DataSources,
    source: String,
    sql: String,
    args: BTreeMap<String, String>,
    limit: Duration,
) -> Result<Preview, ServiceError> {
    let path = sources
        .sqlite_file(&source)
        .map_err(|e| user_error(invalid_data_source(&e)))?;
    let request = Request {
        source,
        path,
        value_limit: sources.value_limit(),
        memory_limit: state.settings.queries.memory_byte_limit,
        cpu_seconds: limit.as_secs() + 5,
        sql,
        args,
        upstream: None,
        work: Work::Preview {
            rows: PREVIEW_ROWS,
            cell_chars: MAX_CELL_CHARS,
        },
    };
    let memory_limit = state.settings.queries.memory_byte_limit;
    match worker::run(&request, Instant::now() + limit, None).await {
        Ended::Reply(Reply::Preview {
            columns,
            rows,
            truncated,
        }) => Ok(Preview {
            columns,
            rows,
            truncated,
        }),
        Ended::Reply(Reply::Failed(failure)) => Err(match failure {
            Failure::Source(m) => user_error(invalid_data_source(&m)),
            Failure::Sql(m) | Failure::Query(m) => user_error(invalid_sql(&m)),
            Failure::NotReadOnly => user_error(invalid_sql(
                "only read-only statements (SELECT, WITH … SELECT, VALUES) are allowed",
            )),
            Failure::Args(m) => invalid_args(m),
            Failure::ValueTooBig => user_error(invalid_sql(&format!(
                "a value is longer than {} bytes, the value limit (setting queries.value_byte_limit)",
                state.settings.queries.value_byte_limit
            ))),
            Failure::Memory => user_error(invalid_sql(&format!(
                "the try-out needed more than {memory_limit} bytes of memory, the memory limit (setting queries.memory_byte_limit)"
            ))),
            other => ServiceError::Internal(anyhow::anyhow!("a try-out failed: {other:?}")),
        }),
        Ended::TimeLimit => Err(stopped(limit)),
        Ended::Reply(Reply::Exported { .. }) | Ended::Cancelled => Err(ServiceError::Internal(
            anyhow::anyhow!("a try-out's query process answered out of turn"),
        )),
        Ended::Died(how) => Err(user_error(invalid_sql(&format!(
            "the try-out's process ended without an answer ({how}); it may have reached the memory limit of {memory_limit} bytes (setting queries.memory_byte_limit)"
        )))),
    }
}

fn stopped(limit: Duration) -> ServiceError {
    ServiceError::user(
        "SAVED_QUERY_PREVIEW_TIMEOUT",
        format!(
            "The try-out stopped at its time limit of {} seconds; a scheduled run may have a longer one.",
            limit.as_secs()
        ),
    )
}

/// The same on a PostgreSQL source (its READ ONLY transaction and text forms; see
/// `query::postgres`).
fn preview_postgres(
    source: &PgSource,
    sql: &str,
    args: &BTreeMap<String, String>,
    limit: Duration,
    value_limit: u64,
) -> Result<Preview, ServiceError> {
    let sql = rewrite(sql).map_err(|e| user_error(invalid_sql(&e)))?;
    let values = values_by_name(&sql.names, args).map_err(invalid_args)?;
    let guard = Guard {
        deadline: Some(Instant::now() + limit),
        cancel: None,
    };
    let preview = source
        .preview(&sql, &values, PREVIEW_ROWS, MAX_CELL_CHARS, &guard)
        .map_err(|e| match e {
            PgFailure::Stopped(_) => stopped(limit),
            PgFailure::Source(m) => user_error(invalid_data_source(&m)),
            PgFailure::Sql(m) | PgFailure::Query(m) => user_error(invalid_sql(&m)),
            PgFailure::Export(crate::query::csv::ExportError::ValueTooBig) => {
                user_error(invalid_sql(&format!(
                    "a value is longer than {value_limit} bytes, the value limit (setting queries.value_byte_limit)"
                )))
            }
            PgFailure::Export(e) => ServiceError::Internal(e.into()),
        })?;
    let rows = preview
        .rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|value| match value {
                    Some(text) => cell(ValueRef::Text(text.as_bytes()), MAX_CELL_CHARS),
                    None => Value::Null,
                })
                .collect()
        })
        .collect();
    Ok(Preview {
        columns: preview.columns,
        rows,
        truncated: preview.truncated,
    })
}

/// `POST /ui/api/saved-query-preview` `{"sql", "dataSource"?, "args"?}` → `{"columns", "rows",
/// "truncated"}`: the first rows of the SQL, or the API's error array (`SAVED_QUERY_INVALID_SQL`,
/// `SAVED_QUERY_INVALID_DATA_SOURCE`, `SAVED_QUERY_INVALID_ARGS`, `SAVED_QUERY_PREVIEW_TIMEOUT`;
/// 503 `SAVED_QUERY_PREVIEW_BUSY`).
pub async fn saved_query_preview(
    state: web::Data<AppState>,
    me: CurrentUser,
    body: web::Bytes,
) -> Result<HttpResponse, ServiceError> {
    let body = json_object(&body, false)?;
    let fields = Fields::new(&body);
    let sql = body
        .get("sql")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if sql.trim().is_empty() {
        return Err(ServiceError::user(
            "SAVED_QUERY_SQL_REQUIRED",
            "Write the SQL to try.",
        ));
    }
    if sql.chars().count() > MAX_SQL_CHARS {
        return Err(user_error(invalid_sql(&format!(
            "it is longer than {MAX_SQL_CHARS} characters"
        ))));
    }
    let source = fields
        .string("dataSource")
        .unwrap_or_else(|| DEFAULT_SOURCE.to_string());
    let args = fields.string("args").unwrap_or_default();
    let words = split_args(&args)
        .map_err(|e| invalid_args(format!("The parameters cannot be split into words: {e}.")))?;
    let args = parse_args(&words).map_err(invalid_args)?;
    let _slot = state.previews.take(me.0.id)?;
    let limit = TIME_LIMIT.min(Duration::from_secs(
        state.settings.queries.time_limit_seconds,
    ));
    let sources = DataSources::from_settings(&state.settings, &state.data_dir);
    let value_limit = state.settings.queries.value_byte_limit;
    let preview = match sources.postgres(&source).cloned() {
        Some(pg) => {
            tokio::task::spawn_blocking(move || {
                preview_postgres(&pg, &sql, &args, limit, value_limit)
            })
            .await??
        }
        None => preview_sqlite(&state, &sources, source, sql, args, limit).await?,
    };
    Ok(HttpResponse::Ok().json(preview))
}
