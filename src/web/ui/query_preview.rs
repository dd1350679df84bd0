//! The saved-query form's "Try it": runs SQL that is being edited (not stored) against its data
//! source and returns the first rows as JSON. It goes through the same gate as a QUERY run — the
//! read-only connection of `query::sources`, the one-statement check, named parameters filled from
//! `name=value` words — with a short time limit and a row cap. Stores nothing, changes nothing.
//! A PostgreSQL source is read the same way as its QUERY runs (a READ ONLY transaction).

use std::collections::BTreeMap;
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
use crate::query::params::{bind_params, parse_args, values_by_name};
use crate::query::pg_sql::rewrite;
use crate::query::postgres::{Failure, PgSource};
use crate::query::sources::{DataSources, check_sql, prepare_single};
use crate::web::AppState;
use crate::web::api::auth::CurrentUser;
use crate::web::api::params::json_object;

/// Rows a try-out shows at most.
const PREVIEW_ROWS: usize = 50;
/// How long a try-out may run.
const TIME_LIMIT: Duration = Duration::from_secs(10);
/// Longest text of one cell sent back (the rest is cut with "…").
const MAX_CELL_CHARS: usize = 500;

#[derive(Serialize)]
struct Preview {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
    /// More rows exist than were returned.
    truncated: bool,
}

fn cell(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(r) => serde_json::Number::from_f64(r)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(r.to_string())),
        ValueRef::Text(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            if text.chars().count() > MAX_CELL_CHARS {
                let cut: String = text.chars().take(MAX_CELL_CHARS).collect();
                Value::String(format!("{cut}…"))
            } else {
                Value::String(text.into_owned())
            }
        }
        ValueRef::Blob(bytes) => Value::String(format!("({} bytes of binary data)", bytes.len())),
    }
}

fn user_error(item: ErrorItem) -> ServiceError {
    ServiceError::User(vec![item])
}

/// Runs the statement on a blocking thread; the error is already the API's.
fn run_preview(
    sources: &DataSources,
    source: &str,
    sql: &str,
    args: &str,
) -> Result<Preview, ServiceError> {
    let words = split_args(args).map_err(|e| {
        ServiceError::user(
            "SAVED_QUERY_INVALID_ARGS",
            format!("The parameters cannot be split into words: {e}."),
        )
    })?;
    let args = parse_args(&words).map_err(|e| ServiceError::user("SAVED_QUERY_INVALID_ARGS", e))?;
    if let Some(pg) = sources.postgres(source) {
        return preview_postgres(pg, sql, &args);
    }
    let conn = sources
        .open(source)
        .map_err(|e| user_error(invalid_data_source(&e)))?;
    check_sql(&conn, sql).map_err(|e| user_error(invalid_sql(&e)))?;
    let guard = Guard {
        deadline: Some(Instant::now() + TIME_LIMIT),
        cancel: None,
    };
    guard
        .install(&conn)
        .map_err(|e| ServiceError::Internal(e.into()))?;
    let mut stmt = prepare_single(&conn, sql).map_err(|e| user_error(invalid_sql(&e)))?;
    bind_params(&mut stmt, &args).map_err(|e| ServiceError::user("SAVED_QUERY_INVALID_ARGS", e))?;
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let width = columns.len();
    let mut rows = Vec::new();
    let mut truncated = false;
    let mut raw = stmt.raw_query();
    loop {
        let row = match raw.next() {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(_) if guard.check().is_some() => return Err(stopped()),
            Err(e) => {
                return Err(user_error(invalid_sql(&crate::query::sqlite_message(&e))));
            }
        };
        if rows.len() == PREVIEW_ROWS {
            truncated = true;
            break;
        }
        let mut values = Vec::with_capacity(width);
        for index in 0..width {
            values.push(cell(
                row.get_ref(index)
                    .map_err(|e| ServiceError::Internal(e.into()))?,
            ));
        }
        rows.push(values);
    }
    Ok(Preview {
        columns,
        rows,
        truncated,
    })
}

fn stopped() -> ServiceError {
    ServiceError::user(
        "SAVED_QUERY_PREVIEW_TIMEOUT",
        format!(
            "The try-out stopped after {} seconds; a scheduled run has a longer time limit.",
            TIME_LIMIT.as_secs()
        ),
    )
}

/// The same on a PostgreSQL source (its READ ONLY transaction and text forms; see
/// `query::postgres`).
fn preview_postgres(
    source: &PgSource,
    sql: &str,
    args: &BTreeMap<String, String>,
) -> Result<Preview, ServiceError> {
    let sql = rewrite(sql).map_err(|e| user_error(invalid_sql(&e)))?;
    let values = values_by_name(&sql.names, args)
        .map_err(|e| ServiceError::user("SAVED_QUERY_INVALID_ARGS", e))?;
    let guard = Guard {
        deadline: Some(Instant::now() + TIME_LIMIT),
        cancel: None,
    };
    let preview = source
        .preview(&sql, &values, PREVIEW_ROWS, &guard)
        .map_err(|e| match e {
            Failure::Stopped(_) => stopped(),
            Failure::Source(m) => user_error(invalid_data_source(&m)),
            Failure::Sql(m) | Failure::Query(m) => user_error(invalid_sql(&m)),
            Failure::Export(e) => ServiceError::Internal(e.into()),
        })?;
    let rows = preview
        .rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|value| match value {
                    Some(text) => cell(ValueRef::Text(text.as_bytes())),
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
/// `SAVED_QUERY_INVALID_DATA_SOURCE`, `SAVED_QUERY_INVALID_ARGS`).
pub async fn saved_query_preview(
    state: web::Data<AppState>,
    _me: CurrentUser,
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
    let sources = DataSources::from_settings(&state.settings, &state.data_dir);
    let preview =
        tokio::task::spawn_blocking(move || run_preview(&sources, &source, &sql, &args)).await??;
    Ok(HttpResponse::Ok().json(preview))
}
