//! The built-in INTERNAL tasks, chosen by the job's `taskImplFqn` (API.md §5). Each writes a
//! result file saying what it did and a summary line to the run log:
//! - `files-cleaner` (alias `FilesBacklogCleaner`), argument `filesRetentionDays=30` (a bare
//!   number means the same): removes the files (result file and log: the run's directory, and
//!   its pieces when run files are kept in the database, `run_files::RunFiles::remove_old`) of
//!   every run that finished more than that many days ago; the runs' rows stay in the ledger, and downloading
//!   such a result later answers `SCHEDULED_JOB_RESULT_DATA_FILE_NOT_FOUND`. Result: a CSV of the
//!   runs whose files were removed. Directories the ledger does not know are left alone.
//! - `database-backup`: a consistent online copy of the ledger (`VACUUM INTO` from a read-only
//!   connection, checked with `PRAGMA quick_check`), a plain SQLite file `sqlite3` opens.
//! - `runs-report`, argument `days=7` (or a bare number): a CSV of every run queued in the last
//!   that many days.
//!
//! Work runs on blocking threads, stops at the job's `timeoutSeconds` or on cancel, and never
//! touches the run rows except through the executor's outcome.

use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;

use super::query_task::{TaskContext, write_aside};
use crate::clock::{from_ms, now_ms};
use crate::domain::job::InternalTask;
use crate::error::ServiceError;
use crate::query::csv::{CsvWriter, ExportError, ExportStats, Guard, Stop};
use crate::store;
use crate::store::ledger::{Cell, ReportSink};
use crate::store::runs::Outcome;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Runs an INTERNAL job's run and says how it ended.
pub async fn perform(ctx: TaskContext<'_>) -> Outcome {
    let started = Instant::now();
    let limit = Duration::from_secs(ctx.job.timeout_seconds.max(1) as u64);
    let task = ctx.job.task_impl_fqn.clone().unwrap_or_default();
    let result = match InternalTask::parse(&task) {
        Some(InternalTask::FilesCleaner) => files_cleaner(&ctx, limit).await,
        Some(InternalTask::DatabaseBackup) => database_backup(&ctx, limit).await,
        Some(InternalTask::RunsReport) => runs_report(&ctx, limit).await,
        None => Err(TaskError::Message(format!(
            "`{task}` is not a built-in task ({})",
            InternalTask::NAMES
        ))),
    };
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(done) => {
            let line = format!("{task}: {} in {seconds:.2} s", done.summary);
            ctx.finish(Ok((done.file, done.size)), &line)
        }
        Err(e) => {
            let message = match e {
                TaskError::Message(m) => m,
                TaskError::Stopped(stop) => ctx.stop_message(stop, limit),
            };
            let line = format!("{task} failed after {seconds:.2} s: {message}");
            ctx.finish(Err(message), &line)
        }
    }
}

/// What a task produced.
struct Done {
    /// Result file, relative to the run directory.
    file: String,
    size: u64,
    summary: String,
}

enum TaskError {
    Message(String),
    Stopped(Stop),
}

impl From<String> for TaskError {
    fn from(m: String) -> Self {
        TaskError::Message(m)
    }
}

impl From<std::io::Error> for TaskError {
    fn from(e: std::io::Error) -> Self {
        TaskError::Message(format!("file error: {e}"))
    }
}

impl From<ServiceError> for TaskError {
    fn from(e: ServiceError) -> Self {
        TaskError::Message(format!("ledger error: {e}"))
    }
}

impl From<store::Error> for TaskError {
    fn from(e: store::Error) -> Self {
        TaskError::Message(format!("ledger error: {e}"))
    }
}

impl From<ExportError> for TaskError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::Stopped(stop) => TaskError::Stopped(stop),
            other => TaskError::Message(other.to_string()),
        }
    }
}

/// Runs blocking work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TaskError> + Send + 'static,
) -> Result<T, TaskError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| TaskError::Message(format!("the task failed: {e}")))?
}

/// The value of a whole-number argument given as `name=N` or a bare `N`; the last one wins.
pub fn days_argument(words: &[String], name: &str, default: i64) -> Result<i64, String> {
    let mut value = default;
    for word in words {
        let text = match word.split_once('=') {
            Some((key, text)) if key == name => text,
            Some(_) => {
                return Err(format!(
                    "unknown argument `{word}` (this task takes {name}=<days>)"
                ));
            }
            None => word.as_str(),
        };
        value = match text.trim().parse::<i64>() {
            Ok(n) if (0..=36_500).contains(&n) => n,
            _ => {
                return Err(format!(
                    "{name} must be a whole number of days from 0 to 36500, not `{text}`"
                ));
            }
        };
    }
    Ok(value)
}

fn iso(ms: i64) -> String {
    from_ms(ms).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn files_cleaner(ctx: &TaskContext<'_>, limit: Duration) -> Result<Done, TaskError> {
    let days = days_argument(&ctx.argument_words()?, "filesRetentionDays", 30)?;
    let cutoff = now_ms() - days * DAY_MS;
    let db = ctx.db.clone();
    let files = ctx.files.clone();
    let own_run = ctx.run.of_job();
    let guard = ctx.guard(limit);
    let file = format!("files-cleaner_{}.csv", ctx.run.id);
    let target = ctx.paths.run_dir.join(&file);
    blocking(move || {
        let removed = files.remove_old(&db, cutoff, Some(own_run), &guard);
        let removed = match removed {
            Ok(Ok(removed)) => removed,
            Ok(Err(stop)) => return Err(TaskError::Stopped(stop)),
            Err(e) => return Err(e.into()),
        };
        let size = write_aside(&target, |tmp| -> Result<u64, ExportError> {
            let mut csv = CsvWriter::new(std::fs::File::create(tmp)?);
            let header = ["jobId", "runId", "finishedAt", "files", "bytes"];
            let header: Vec<ValueRef> = header.iter().map(|h| ValueRef::from(*h)).collect();
            csv.record(&header)?;
            for r in &removed {
                let finished = iso(r.finished_at);
                csv.record(&[
                    ValueRef::Integer(r.job_id),
                    ValueRef::Integer(r.run_id),
                    ValueRef::from(finished.as_str()),
                    ValueRef::Integer(r.files as i64),
                    ValueRef::Integer(r.bytes as i64),
                ])?;
            }
            csv.finish()
        })?;
        let (files, bytes) = removed
            .iter()
            .fold((0, 0), |(f, b), r| (f + r.files, b + r.bytes));
        Ok(Done {
            file,
            size,
            summary: format!(
                "removed the files of {} runs that finished before {} ({files} files, {bytes} bytes); their rows stay in the ledger",
                removed.len(),
                iso(cutoff)
            ),
        })
    })
    .await
}

async fn database_backup(ctx: &TaskContext<'_>, limit: Duration) -> Result<Done, TaskError> {
    let words = ctx.argument_words()?;
    if let Some(word) = words.first() {
        return Err(format!("unknown argument `{word}` (database-backup takes none)").into());
    }
    let db = ctx.db.clone();
    let file = format!("labcron-backup_{}.db", ctx.run.id);
    let target = ctx.paths.run_dir.join(&file);
    let guard = ctx.guard(limit);
    let done = blocking(move || {
        let (jobs, runs) = write_aside(&target, |tmp| -> Result<(i64, i64), TaskError> {
            db.backup_for_task(tmp, interrupt(&guard))
                .map_err(|e| match guard.check() {
                    Some(stop) => TaskError::Stopped(stop),
                    None => e.into(),
                })
        })?;
        let size = std::fs::metadata(&target)?.len();
        Ok(Done {
            file,
            size,
            summary: format!(
                "copied the ledger ({jobs} jobs, {runs} runs, {size} bytes); the copy passes PRAGMA quick_check"
            ),
        })
    })
    .await?;
    // The audit trail names who took the copy (the run's runner) and which run holds it.
    let (run_id, job_id, run_by) = (ctx.run.id, ctx.run.job_id, ctx.run.run_by);
    let (file, size) = (done.file.clone(), done.size);
    ctx.db
        .write(move |tx| {
            let actor = tx.user(run_by)?.map(|u| u.login_name).unwrap_or_default();
            let event = crate::store::audit::Event::new(&actor, "BACKUP_TAKEN", None)
                .object("RUN", run_id)
                .detail("jobId", job_id)
                .detail("file", file)
                .detail("bytes", size);
            tx.record_audit(&event, crate::clock::now_ms())
        })
        .await?;
    Ok(done)
}

/// The guard as the ledger's interrupt: long ledger work stops when the run is cancelled or out
/// of time.
fn interrupt(guard: &Guard) -> store::ledger::Interrupt {
    let guard = guard.clone();
    std::sync::Arc::new(move || guard.check().is_some())
}

/// The runs report's rows written as CSV, as `export_csv` writes a query's.
struct CsvSink<'g> {
    csv: CsvWriter<std::fs::File>,
    rows: u64,
    guard: &'g Guard,
    /// Why the sink stopped the report (a write failed, or the guard said stop).
    failed: Option<ExportError>,
}

impl CsvSink<'_> {
    fn write(&mut self, cells: &mut dyn Iterator<Item = ValueRef<'_>>) -> bool {
        let written = (|| {
            for (index, cell) in cells.enumerate() {
                if index > 0 {
                    self.csv.separator();
                }
                self.csv.value(cell)?;
            }
            self.csv.end_record()
        })();
        match written {
            Ok(()) => true,
            Err(e) => {
                self.failed = Some(e);
                false
            }
        }
    }
}

impl ReportSink for CsvSink<'_> {
    fn columns(&mut self, names: &[&str]) -> bool {
        self.write(&mut names.iter().map(|n| ValueRef::Text(n.as_bytes())))
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> bool {
        let values = cells.iter().map(|cell| match *cell {
            Cell::Null => ValueRef::Null,
            Cell::Integer(i) => ValueRef::Integer(i),
            Cell::Real(r) => ValueRef::Real(r),
            Cell::Text(t) => ValueRef::Text(t),
            Cell::Blob(b) => ValueRef::Blob(b),
        });
        if !self.write(&mut values.into_iter()) {
            return false;
        }
        self.rows += 1;
        // The progress handler covers the ledger's work, the encoder long values; this, every row.
        if let Some(stop) = self.guard.check() {
            self.failed = Some(ExportError::Stopped(stop));
            return false;
        }
        true
    }
}

impl From<&str> for TaskError {
    fn from(m: &str) -> Self {
        TaskError::Message(m.to_string())
    }
}

async fn runs_report(ctx: &TaskContext<'_>, limit: Duration) -> Result<Done, TaskError> {
    let days = days_argument(&ctx.argument_words()?, "days", 7)?;
    let since = now_ms() - days * DAY_MS;
    let db = ctx.db.clone();
    let file = format!("runs-report_{}.csv", ctx.run.id);
    let target = ctx.paths.run_dir.join(&file);
    let guard = ctx.guard(limit);
    blocking(move || {
        let stats = write_aside(&target, |tmp| -> Result<_, TaskError> {
            let out = std::fs::File::create(tmp)?;
            let mut sink = CsvSink {
                csv: CsvWriter::new(out).with_limits(None, guard.clone()),
                rows: 0,
                guard: &guard,
                failed: None,
            };
            let streamed = db.read_sync(|l| l.runs_report(since, interrupt(&guard), &mut sink));
            if let Some(e) = sink.failed {
                return Err(e.into());
            }
            if let Err(e) = streamed {
                return Err(match guard.check() {
                    Some(stop) => TaskError::Stopped(stop),
                    None => e.into(),
                });
            }
            let bytes = sink.csv.finish()?;
            Ok(ExportStats {
                rows: sink.rows,
                bytes,
            })
        })?;
        Ok(Done {
            file,
            size: stats.bytes,
            summary: format!("{} runs queued since {}", stats.rows, iso(since)),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        crate::domain::args::split_args(text).unwrap()
    }

    #[test]
    fn day_arguments_take_a_name_or_a_bare_number() {
        let name = "filesRetentionDays";
        assert_eq!(days_argument(&words(""), name, 30), Ok(30));
        assert_eq!(
            days_argument(&words("filesRetentionDays=7"), name, 30),
            Ok(7)
        );
        assert_eq!(days_argument(&words("14"), name, 30), Ok(14));
        assert_eq!(
            days_argument(&words("10 filesRetentionDays=0"), name, 30),
            Ok(0)
        );
        assert!(
            days_argument(&words("days=3"), name, 30)
                .unwrap_err()
                .contains("unknown argument")
        );
        assert!(
            days_argument(&words("filesRetentionDays=x"), name, 30)
                .unwrap_err()
                .contains("whole number")
        );
        assert!(days_argument(&words("-1"), name, 30).is_err());
    }
}
