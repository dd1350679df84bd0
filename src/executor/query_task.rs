//! A QUERY run: loads the job's saved query from the ledger, fills its named parameters from the
//! run's arguments (`fixedArgs`, then `rtArgs`), runs it on a read-only connection to its data
//! source and streams the rows as CSV to `scheduled_query_<queryId>_<runId>.csv` in the run
//! directory, written aside and renamed so the file appears only complete. A SQLite source is
//! read in a query process of its own (`query::worker`: killed at the deadline, its memory under
//! `queries.memory_byte_limit`, no temp files); a PostgreSQL source in a READ ONLY transaction on
//! a blocking thread. It stops, FAILED and without a file, at the time limit (the smaller of the
//! job's `timeoutSeconds` and the setting `queries.time_limit_seconds`), at the row limit
//! (`queries.row_limit`), at the byte limit (`queries.result_byte_limit`), at a value longer than
//! `queries.value_byte_limit`, at the memory limit, or when cancelled. Nothing is held across an
//! `.await`. One line in the run log says what happened.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::domain::args::split_args;
use crate::domain::job::Job;
use crate::domain::run::Run;
use crate::query::csv::{ExportError, ExportStats, Guard, Limits, Stop};
use crate::query::params::{parse_args, values_by_name};
use crate::query::pg_sql;
use crate::query::postgres::{Failure as PgFailure, PgSource};
use crate::query::sources::DataSources;
use crate::query::worker::{self, Ended, Failure as WorkerFailure, Reply, Request, Work};
use crate::run_files::{RunFiles, RunPaths};
use crate::store::Db;
use crate::store::runs::Outcome;

/// What a built-in task (QUERY or INTERNAL) is given to do its run.
pub struct TaskContext<'a> {
    pub db: &'a Db,
    pub settings: &'a Settings,
    pub data_dir: &'a Path,
    /// Where run files are kept (the files cleaner removes them).
    pub files: &'a RunFiles,
    pub run: &'a Run,
    pub job: &'a Job,
    pub paths: &'a RunPaths,
    pub cancel: CancellationToken,
    /// Why the run was cancelled, set by whoever cancelled it.
    pub reason: Arc<Mutex<Option<String>>>,
}

impl TaskContext<'_> {
    /// A guard that stops work after `limit` or on cancel.
    pub fn guard(&self, limit: Duration) -> Guard {
        Guard {
            deadline: Some(Instant::now() + limit),
            cancel: Some(self.cancel.clone()),
        }
    }

    /// The message of a stopped run.
    pub fn stop_message(&self, stop: Stop, limit: Duration) -> String {
        match stop {
            Stop::TimeLimit => format!(
                "stopped: the run took longer than its time limit of {} s; no result file was kept",
                limit.as_secs()
            ),
            Stop::Cancelled => self
                .reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| "cancelled".to_string()),
        }
    }

    /// The words of the job's `fixedArgs` followed by the run's `rtArgs`.
    pub fn argument_words(&self) -> Result<Vec<String>, String> {
        let mut words = Vec::new();
        for text in [self.job.fixed_args.as_deref(), self.run.rt_args.as_deref()]
            .into_iter()
            .flatten()
        {
            words.extend(split_args(text).map_err(|e| format!("arguments cannot be split: {e}"))?);
        }
        Ok(words)
    }

    /// Appends `line` to the run log (best effort) and returns the log's size.
    pub fn log(&self, line: &str) -> i64 {
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.paths.log)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot write the run log");
        }
        std::fs::metadata(&self.paths.log)
            .map(|m| m.len() as i64)
            .unwrap_or(0)
    }

    /// The outcome of a run that produced `file` (relative to the run directory) or failed.
    pub fn finish(&self, result: Result<(String, u64), String>, log_line: &str) -> Outcome {
        let log_size = self.log(log_line);
        // A built-in task leaves no working or result directories behind.
        let _ = std::fs::remove_dir_all(&self.paths.work_dir);
        let _ = std::fs::remove_dir(&self.paths.result_dir);
        match result {
            Ok((file, size)) => Outcome {
                succeeded: true,
                result_file: Some(file),
                result_file_size: Some(size as i64),
                log_size,
                ..Outcome::default()
            },
            Err(message) => Outcome {
                message: Some(message),
                log_size,
                ..Outcome::default()
            },
        }
    }
}

/// Writes a file through `write` under a temporary name beside `target`, then renames it, so it
/// appears only complete. On failure the temporary file is removed.
pub fn write_aside<T, E>(target: &Path, write: impl FnOnce(&Path) -> Result<T, E>) -> Result<T, E>
where
    E: From<std::io::Error>,
{
    let tmp = aside(target);
    let _ = std::fs::remove_file(&tmp);
    match write(&tmp) {
        Ok(value) => {
            std::fs::rename(&tmp, target)?;
            Ok(value)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Runs a QUERY job's run and says how it ended.
pub async fn perform(ctx: TaskContext<'_>) -> Outcome {
    let started = Instant::now();
    let limit = Duration::from_secs(
        (ctx.job.timeout_seconds.max(1) as u64).min(ctx.settings.queries.time_limit_seconds),
    );
    let limits = Limits {
        rows: Some(ctx.settings.queries.row_limit),
        bytes: Some(ctx.settings.queries.result_byte_limit),
    };
    let result = export_saved_query(&ctx, limit, limits).await;
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok((file, stats, query_line)) => {
            let line = format!(
                "{query_line}: {} rows ({} bytes) written to {file} in {seconds:.2} s",
                stats.rows, stats.bytes
            );
            ctx.finish(Ok((file, stats.bytes)), &line)
        }
        Err(message) => {
            let line = format!("query run failed after {seconds:.2} s: {message}");
            ctx.finish(Err(message), &line)
        }
    }
}

pub use crate::query::worker::UPSTREAM_ARG;

async fn export_saved_query(
    ctx: &TaskContext<'_>,
    limit: Duration,
    limits: Limits,
) -> Result<(String, ExportStats, String), String> {
    let query_id = ctx
        .job
        .saved_query_id
        .ok_or("the job names no saved query")?;
    let query = ctx
        .db
        .read(move |c| c.live_saved_query(query_id))
        .await
        .map_err(|e| format!("cannot read saved query {query_id}: {e}"))?
        .ok_or_else(|| format!("saved query {query_id} does not exist (it was deleted)"))?;
    let args = parse_args(&ctx.argument_words()?)?;
    let upstream = ctx.run.chained_from;
    let sources = DataSources::from_settings(ctx.settings, ctx.data_dir);
    let file = format!("scheduled_query_{}_{}.csv", query.id, ctx.run.id);
    let target = ctx.paths.run_dir.join(&file);
    let guard = ctx.guard(limit);
    let query_line = format!(
        "saved query {} \"{}\" on data source {}",
        query.id, query.title, query.data_source
    );

    let job_result = if let Some(source) = sources.postgres(&query.data_source).cloned() {
        tokio::task::spawn_blocking(move || {
            export_postgres(&source, &query.sql, args, upstream, &target, limits, &guard)
        })
        .await
    } else {
        Ok(export_sqlite(ctx, &sources, query, args, upstream, &target, limit, limits).await)
    };
    match job_result {
        Ok(Ok(stats)) => Ok((file, stats, query_line)),
        Ok(Err(Failure::Message(m))) => Err(m),
        Ok(Err(Failure::Export(ExportError::Stopped(stop)))) => Err(ctx.stop_message(stop, limit)),
        Ok(Err(Failure::Export(ExportError::RowLimit(rows)))) => Err(format!(
            "stopped: the query returned more than {rows} rows, the row limit (setting queries.row_limit); no result file was kept"
        )),
        Ok(Err(Failure::Export(ExportError::ByteLimit(bytes)))) => Err(format!(
            "stopped: the CSV would be larger than {bytes} bytes, the size limit (setting queries.result_byte_limit); no result file was kept"
        )),
        Ok(Err(Failure::Export(ExportError::ValueTooBig))) => Err(format!(
            "stopped: a value (or a row to sort) is longer than {} bytes, the value limit (setting queries.value_byte_limit); no result file was kept",
            ctx.settings.queries.value_byte_limit
        )),
        Ok(Err(Failure::Memory)) => Err(format!(
            "stopped: the query needed more than {} bytes of memory, the memory limit (setting queries.memory_byte_limit); no result file was kept",
            ctx.settings.queries.memory_byte_limit
        )),
        Ok(Err(Failure::Export(e))) => Err(format!("the query failed: {e}")),
        Err(e) => Err(format!("the query task failed: {e}")),
    }
}

/// The SQLite side of `export_saved_query`: the query runs in a query process
/// (`query::worker`) that writes the CSV beside `target`; killed at the time limit or on cancel.
#[allow(clippy::too_many_arguments)]
async fn export_sqlite(
    ctx: &TaskContext<'_>,
    sources: &DataSources,
    query: crate::domain::saved_query::SavedQuery,
    args: BTreeMap<String, String>,
    upstream: Option<i64>,
    target: &Path,
    limit: Duration,
    limits: Limits,
) -> Result<ExportStats, Failure> {
    let path = sources
        .sqlite_file(&query.data_source)
        .map_err(Failure::Message)?;
    let tmp = aside(target);
    let _ = std::fs::remove_file(&tmp);
    let request = Request {
        source: query.data_source,
        path,
        value_limit: sources.value_limit(),
        memory_limit: ctx.settings.queries.memory_byte_limit,
        cpu_seconds: limit.as_secs() + 5,
        sql: query.sql,
        args,
        upstream,
        work: Work::Export {
            out: tmp.clone(),
            limits,
        },
    };
    let deadline = Instant::now() + limit;
    let ended = worker::run(&request, deadline, Some(ctx.cancel.clone())).await;
    let result = match ended {
        Ended::Reply(Reply::Exported { rows, bytes }) => {
            std::fs::rename(&tmp, target).map_err(|e| Failure::Export(e.into()))?;
            return Ok(ExportStats { rows, bytes });
        }
        Ended::Reply(Reply::Failed(failure)) => Err(match failure {
            WorkerFailure::Source(m) => Failure::Message(m),
            WorkerFailure::Sql(m) => Failure::Message(format!("the saved query cannot run: {m}")),
            WorkerFailure::NotReadOnly => {
                Failure::Message("refused: the saved query is not a read-only statement".into())
            }
            WorkerFailure::Args(m) => Failure::Message(m),
            WorkerFailure::RowLimit(rows) => Failure::Export(ExportError::RowLimit(rows)),
            WorkerFailure::ByteLimit(bytes) => Failure::Export(ExportError::ByteLimit(bytes)),
            WorkerFailure::ValueTooBig => Failure::Export(ExportError::ValueTooBig),
            WorkerFailure::Memory => Failure::Memory,
            WorkerFailure::Query(m) => Failure::Message(format!("the query failed: {m}")),
            WorkerFailure::Io(m) => {
                Failure::Message(format!("the query failed: cannot write the CSV file: {m}"))
            }
        }),
        Ended::Reply(Reply::Preview { .. }) => Err(Failure::Message(
            "the query process answered a preview to an export".into(),
        )),
        Ended::TimeLimit => Err(Failure::Export(ExportError::Stopped(Stop::TimeLimit))),
        Ended::Cancelled => Err(Failure::Export(ExportError::Stopped(Stop::Cancelled))),
        Ended::Died(how) => Err(Failure::Message(format!(
            "the query failed: its process ended without an answer ({how}); it may have reached \
             the memory limit of {} bytes (setting queries.memory_byte_limit)",
            ctx.settings.queries.memory_byte_limit
        ))),
    };
    let _ = std::fs::remove_file(&tmp);
    result
}

/// The temporary name beside `target` that a file is written under before it is renamed.
fn aside(target: &Path) -> PathBuf {
    let mut tmp = target.as_os_str().to_owned();
    tmp.push(".partial");
    PathBuf::from(tmp)
}

/// The PostgreSQL side of `export_saved_query` (blocking): parameters by name, then the CSV.
fn export_postgres(
    source: &PgSource,
    sql: &str,
    mut args: BTreeMap<String, String>,
    upstream: Option<i64>,
    target: &Path,
    limits: Limits,
    guard: &Guard,
) -> Result<ExportStats, Failure> {
    let sql = pg_sql::rewrite(sql)
        .map_err(|e| Failure::Message(format!("the saved query cannot run: {e}")))?;
    if let Some(upstream) = upstream
        && sql.names.iter().any(|n| n == UPSTREAM_ARG)
    {
        args.entry(UPSTREAM_ARG.to_string())
            .or_insert_with(|| upstream.to_string());
    }
    let values = values_by_name(&sql.names, &args).map_err(Failure::Message)?;
    write_aside(target, |tmp| {
        let mut out = std::fs::File::create(tmp)?;
        let stats = source.export_csv(&sql, &values, &mut out, limits, guard)?;
        out.sync_all()?;
        Ok(stats)
    })
}

impl From<PgFailure> for Failure {
    fn from(e: PgFailure) -> Self {
        match e {
            PgFailure::Source(m) => Failure::Message(m),
            PgFailure::Sql(m) => Failure::Message(format!("the saved query cannot run: {m}")),
            PgFailure::Query(m) => Failure::Message(format!("the query failed: {m}")),
            PgFailure::Stopped(stop) => Failure::Export(ExportError::Stopped(stop)),
            PgFailure::Export(e) => Failure::Export(e),
        }
    }
}

/// Why an export did not happen.
enum Failure {
    Message(String),
    Export(ExportError),
    /// The query process reached `queries.memory_byte_limit`.
    Memory,
}

impl From<ExportError> for Failure {
    fn from(e: ExportError) -> Self {
        Failure::Export(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Export(ExportError::Io(e))
    }
}
