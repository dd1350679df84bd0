//! Where a run's files are kept once it has them, chosen once at start-up from the ledger
//! ([`RunFiles::for_ledger`]): `Local`, the data directory (`<data>/runs/<job>/<run>/`, as with
//! SQLite), or `Database`, the ledger's own database (PostgreSQL, `store::files`), so that any
//! node serves any run's log and result without a shared file system. Either way a run executes
//! in a local directory (`RunPaths`) and labcron writes `run.log` there; with `Database` the log
//! is copied up while the run goes on (each 256 KiB slot written whole as soon as the log fills
//! it, the bytes after it at most a second later as a small piece, which the slot's whole piece
//! replaces once written: `store::files` has the layout), and at its end the rest of the log and
//! the result file follow, in pieces, before the end is recorded; then the local directory goes.
//! Everything that writes, reads or removes run files (the executor, the log and result
//! handlers, the run JSON, notifications, retention, the files cleaner) asks this, never the
//! engine. Nothing here holds a whole file in memory.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{Dir, RunPaths, list_files, open_run_file};
use crate::domain::ids::{JobId, RunId, RunOfJob};
use crate::domain::run::{Run, RunStatus};
use crate::query::csv::{Guard, Stop};
use crate::store::error::UNREACHABLE_WAITS;
use crate::store::files::{DbFiles, FileKind, PIECE_BYTES, Piece};
use crate::store::{Db, Ledger};

/// How often an executing run's log is looked at for bytes to copy up.
const LOG_POLL: Duration = Duration::from_millis(250);
/// The longest a byte of an executing run's log waits before it is copied up.
const LOG_FLUSH: Duration = Duration::from_secs(1);
/// Pieces written per transaction when copying a file up (2 MiB).
const PIECES_PER_WRITE: usize = 8;
/// Tries of each write when a run's files are copied up at its end, and the pause before the
/// first retry (doubled each time: about 6 s in all). An unreachable database is not counted
/// among them: it is waited for as long as a run's end waits (`UNREACHABLE_WAITS`).
const END_ATTEMPTS: u32 = 5;
const END_RETRY_PAUSE: Duration = Duration::from_millis(400);
/// Bytes read from the database per query when a file is streamed.
const READ_WINDOW: u64 = 1 << 20;

/// Where run files are kept. Cheap to clone.
#[derive(Clone, Debug)]
pub enum RunFiles {
    /// In the data directory: `<data>/runs/<job>/<run>/`.
    Local { data_dir: PathBuf },
    /// In the ledger's database; `data_dir` holds the executing runs' directories only.
    Database { data_dir: PathBuf, files: DbFiles },
}

/// A run whose files were removed (the files cleaner's CSV, retention's counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub job_id: i64,
    pub run_id: i64,
    pub finished_at: i64,
    pub files: u64,
    pub bytes: u64,
}

/// The copying up of an executing run's log (`RunFiles::start_log`), ended by `RunFiles::keep`.
pub struct LogUpload {
    tailer: Option<(CancellationToken, tokio::task::JoinHandle<Stored>)>,
}

impl LogUpload {
    /// An upload with nothing behind it: the run's log is copied at its end only (all of it).
    pub fn none() -> LogUpload {
        LogUpload { tailer: None }
    }
}

impl Drop for LogUpload {
    fn drop(&mut self) {
        // A run whose end was never kept (its task dropped) stops copying too.
        if let Some((stop, _)) = &self.tailer {
            stop.cancel();
        }
    }
}

/// A run's result file, opened for a download.
pub enum ResultBytes {
    /// A regular file of the run's directory (opened without following links).
    File(std::fs::File),
    /// Pieces in the database.
    Stored(StoredFile),
}

/// A result file stored in pieces: its size, and its bytes streamed by range.
pub struct StoredFile {
    files: DbFiles,
    run_id: i64,
    pub size: u64,
}

impl StoredFile {
    /// The bytes `[from, from + len)`, read a window of pieces at a time on a blocking thread a
    /// little ahead of the socket; the reader stops when the client goes away.
    pub fn stream(
        &self,
        from: u64,
        len: u64,
    ) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + 'static {
        stream_pieces(
            self.files.clone(),
            self.run_id,
            FileKind::Result,
            from,
            from + len,
        )
    }
}

impl RunFiles {
    /// Where the ledger `db` keeps run files: in its database when it can (PostgreSQL), else
    /// in `data_dir`.
    pub fn for_ledger(db: &Db, data_dir: PathBuf) -> RunFiles {
        match db.files_in_ledger() {
            Some(files) => RunFiles::Database { data_dir, files },
            None => RunFiles::Local { data_dir },
        }
    }

    /// The data directory (executing runs' directories are under `runs/`).
    pub fn data_dir(&self) -> &Path {
        match self {
            RunFiles::Local { data_dir } | RunFiles::Database { data_dir, .. } => data_dir,
        }
    }

    /// The local directories of a run.
    pub fn paths(&self, ids: RunOfJob) -> RunPaths {
        RunPaths::new(self.data_dir(), ids)
    }

    // ---- Writing (the executor) ----

    /// Starts copying up the log of a run that is about to execute (nothing to do locally).
    /// Call from the async runtime.
    pub fn start_log(&self, ids: RunOfJob) -> LogUpload {
        let RunFiles::Database { data_dir, files } = self else {
            return LogUpload::none();
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(tail_log(files.clone(), data_dir.clone(), ids, stop.clone()));
        LogUpload {
            tailer: Some((stop, task)),
        }
    }

    /// After a run's work, before its end is recorded: copies up the rest of its log and its
    /// result file (`result`, relative to the run directory), each write tried a few times.
    /// `Ok(Some(size))`: the result stored has this size; `Ok(None)`: nothing to change (no
    /// result, or kept locally); `Err`: the files could not be kept (the run must fail, saying so).
    pub async fn keep(
        &self,
        ids: RunOfJob,
        upload: LogUpload,
        result: Option<&str>,
    ) -> Result<Option<u64>, String> {
        let RunFiles::Database { data_dir, files } = self else {
            return Ok(None);
        };
        let mut upload = upload;
        let mut stored = Stored::default();
        if let Some((stop, task)) = upload.tailer.take() {
            stop.cancel();
            // A tailer that was lost copied nothing we can count on: start again (the pieces
            // written at slots' starts replace whatever those slots hold).
            stored = task.await.unwrap_or_default();
        }
        let (files, data_dir, result) = (files.clone(), data_dir.clone(), result.map(String::from));
        tokio::task::spawn_blocking(move || {
            keep_files(&files, &data_dir, ids, stored, result.as_deref())
        })
        .await
        .map_err(|e| format!("cannot store the run's files in the database: {e}"))?
    }

    /// After a run's end is recorded: its local directory goes when its files are kept
    /// elsewhere (locally, they are the files).
    pub async fn clear_local(&self, ids: RunOfJob) {
        if let RunFiles::Database { .. } = self {
            let run_dir = self.paths(ids).run_dir;
            let _ = tokio::fs::remove_dir_all(run_dir).await;
        }
    }

    /// Removes a failed run's (partial) result to make room when the disk is full; whether
    /// anything was removed.
    pub async fn remove_result(&self, ids: RunOfJob, result: Option<&str>) -> bool {
        let paths = self.paths(ids);
        let mut removed = tokio::fs::remove_dir_all(&paths.result_dir).await.is_ok();
        if let Some(file) = result.and_then(|rel| paths.result_file(rel)) {
            removed |= tokio::fs::remove_file(file).await.is_ok();
        }
        removed |= tokio::fs::remove_file(paths.run_dir.join("stdout.tmp"))
            .await
            .is_ok();
        if let RunFiles::Database { files, .. } = self {
            let files = files.clone();
            let run_id = ids.run.0;
            let deleted =
                tokio::task::spawn_blocking(move || files.delete(&[run_id], FileKind::Result))
                    .await;
            removed |= matches!(deleted, Ok(Ok(n)) if n > 0);
        }
        removed
    }

    // ---- Reading (the API, the pages, notifications) ----

    /// How long a run's log is now: an executing run's grows (locally on disk; in the database
    /// its run notes each piece copied up), a finished run's is in its row.
    pub fn live_log_size(&self, run: &Run) -> i64 {
        match self {
            RunFiles::Local { data_dir } if run.status == RunStatus::InProgress => {
                open_run_file(data_dir, run.job_id, run.id, "run.log")
                    .and_then(|file| file.metadata())
                    .map(|m| m.len() as i64)
                    .unwrap_or(0)
            }
            _ => run.log_size,
        }
    }

    /// Where a run's log ends now (0 when it has none).
    pub async fn log_end(&self, ids: RunOfJob) -> std::io::Result<u64> {
        match self {
            RunFiles::Local { data_dir } => {
                let data_dir = data_dir.clone();
                tokio::task::spawn_blocking(move || {
                    match open_run_file(&data_dir, ids.job.0, ids.run.0, "run.log") {
                        Ok(file) => Ok(file.metadata()?.len()),
                        // No log yet, or something else where it belongs: none.
                        Err(_) => Ok(0),
                    }
                })
                .await
                .map_err(std::io::Error::other)?
            }
            RunFiles::Database { files, .. } => {
                let files = files.clone();
                tokio::task::spawn_blocking(move || files.end(ids.run.0, FileKind::Log))
                    .await
                    .map_err(std::io::Error::other)?
                    .map(|end| end.unwrap_or(0))
                    .map_err(std::io::Error::other)
            }
        }
    }

    /// A run's log from `offset`: up to `limit` bytes and the offset after them.
    pub async fn read_log(
        &self,
        ids: RunOfJob,
        offset: u64,
        limit: usize,
    ) -> std::io::Result<(Vec<u8>, u64)> {
        match self {
            RunFiles::Local { data_dir } => read_local_log(data_dir, ids, offset, limit).await,
            RunFiles::Database { files, .. } => {
                let files = files.clone();
                let to = offset + limit as u64;
                let bytes = tokio::task::spawn_blocking(move || {
                    read_stored(&files, ids.run.0, FileKind::Log, offset, to)
                })
                .await
                .map_err(std::io::Error::other)??;
                let next = offset + bytes.len() as u64;
                Ok((bytes, next))
            }
        }
    }

    /// A run's log from `from` to `to`, a piece at a time.
    pub fn log_stream(
        &self,
        ids: RunOfJob,
        from: u64,
        to: u64,
    ) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + 'static {
        const CHUNK: usize = 256 * 1024;
        let files = self.clone();
        futures_util::stream::unfold(Some(from), move |at| {
            let files = files.clone();
            async move {
                let at = at.filter(|at| *at < to)?;
                let want = ((to - at) as usize).min(CHUNK);
                match files.read_log(ids, at, want).await {
                    Ok((bytes, _)) if bytes.is_empty() => {
                        Some((Err(std::io::ErrorKind::UnexpectedEof.into()), None))
                    }
                    Ok((bytes, next)) => Some((Ok(Bytes::from(bytes)), Some(next))),
                    Err(e) => Some((Err(e), None)),
                }
            }
        })
    }

    /// The last `max` bytes of a run's log (or all of it), and whether it was cut at the front.
    pub async fn log_tail(&self, ids: RunOfJob, max: u64) -> (Vec<u8>, bool) {
        let Ok(end) = self.log_end(ids).await else {
            return (Vec::new(), false);
        };
        let start = end.saturating_sub(max);
        let mut out = Vec::new();
        let mut at = start;
        while at < end {
            match self.read_log(ids, at, (end - at) as usize).await {
                Ok((bytes, next)) if !bytes.is_empty() => {
                    out.extend_from_slice(&bytes);
                    at = next;
                }
                _ => break,
            }
        }
        (out, start > 0)
    }

    /// The result file of a finished run (which names one), for a download: `NotFound` when its
    /// bytes are gone (retention, the files cleaner) or are not a regular file.
    pub async fn open_result(&self, run: &Run) -> std::io::Result<ResultBytes> {
        let relative = run
            .result_file
            .clone()
            .ok_or(std::io::ErrorKind::NotFound)?;
        let (job_id, run_id) = (run.job_id, run.id);
        match self {
            RunFiles::Local { data_dir } => {
                let data_dir = data_dir.clone();
                tokio::task::spawn_blocking(move || {
                    open_run_file(&data_dir, job_id, run_id, &relative).map(ResultBytes::File)
                })
                .await
                .map_err(std::io::Error::other)?
            }
            RunFiles::Database { files, .. } => {
                let stored = files.clone();
                let end = tokio::task::spawn_blocking(move || stored.end(run_id, FileKind::Result))
                    .await
                    .map_err(std::io::Error::other)?
                    .map_err(std::io::Error::other)?;
                // A result of 0 bytes has no piece; one with bytes and no piece was removed.
                let size = match (end, run.result_file_size) {
                    (Some(end), _) => end,
                    (None, Some(0)) => 0,
                    (None, _) => return Err(std::io::ErrorKind::NotFound.into()),
                };
                Ok(ResultBytes::Stored(StoredFile {
                    files: files.clone(),
                    run_id,
                    size,
                }))
            }
        }
    }

    /// The path a chained run reads its upstream run's result at (`LABCRON_UPSTREAM_RESULT`),
    /// made read-only: the upstream run's own file, or, when files are kept in the database, a
    /// copy in the chained run's directory (`upstream/<name>`). `None` when there is none. The
    /// file is opened no-follow (a regular file with one link, `nofollow`) and its mode changed
    /// by its descriptor, so a link the upstream run left never lends its target's mode.
    pub async fn upstream_result(&self, upstream: &Run, into: &RunPaths) -> Option<PathBuf> {
        let relative = upstream.result_file.as_deref()?.to_string();
        match self {
            RunFiles::Local { data_dir } => {
                let file = RunPaths::new(data_dir, upstream.of_job()).result_file(&relative)?;
                let (data_dir, ids) = (data_dir.clone(), upstream.of_job());
                let made = tokio::task::spawn_blocking(move || {
                    open_run_file(&data_dir, ids.job.0, ids.run.0, &relative)
                        .and_then(|opened| read_only(&opened))
                })
                .await;
                match made {
                    Ok(Ok(())) => Some(file),
                    Ok(Err(e)) => {
                        tracing::warn!(upstream = upstream.id, error = %e, "the upstream run's result is not handed on");
                        None
                    }
                    Err(_) => None,
                }
            }
            RunFiles::Database { .. } => {
                let name = Path::new(&relative).file_name()?.to_owned();
                let target = into.run_dir.join("upstream").join(&name);
                let ResultBytes::Stored(stored) = self.open_result(upstream).await.ok()? else {
                    return None;
                };
                let (into, size) = (into.clone(), stored.size);
                let copied = tokio::task::spawn_blocking(move || {
                    let dir = into.open_dir()?.make_dir("upstream".as_ref())?;
                    download(&stored.files, stored.run_id, size, &dir, &name)
                })
                .await;
                if !matches!(copied, Ok(Ok(()))) {
                    tracing::warn!(
                        upstream = upstream.id,
                        "cannot copy the upstream run's result from the database"
                    );
                    return None;
                }
                Some(target)
            }
        }
    }

    // ---- Removing (the files cleaner, retention) ----

    /// Removes the files of every run that finished before `cutoff` (but `own_run`): in the
    /// database, by kind and in batches, and every run directory the ledger knows of such a run.
    /// The rows stay. The inner `Result` says whether `guard` stopped the work. Blocking.
    pub fn remove_old(
        &self,
        db: &Db,
        cutoff: i64,
        own_run: Option<RunOfJob>,
        guard: &Guard,
    ) -> std::io::Result<Result<Vec<Removed>, Stop>> {
        let mut removed = Vec::new();
        if let RunFiles::Database { files, .. } = self {
            let mut after = RunId(0);
            loop {
                if let Some(stop) = guard.check() {
                    return Ok(Err(stop));
                }
                let (page, last) = files
                    .finished_before(cutoff, after, 500)
                    .map_err(std::io::Error::other)?;
                let Some(last) = last else { break };
                after = last;
                let page: Vec<_> = page
                    .into_iter()
                    .filter(|r| Some(r.ids) != own_run)
                    .collect();
                let ids: Vec<i64> = page.iter().map(|r| r.ids.run.0).collect();
                for kind in FileKind::ALL {
                    files.delete(&ids, kind).map_err(std::io::Error::other)?;
                }
                removed.extend(page.into_iter().map(|r| Removed {
                    job_id: r.ids.job.0,
                    run_id: r.ids.run.0,
                    finished_at: r.finished_at,
                    files: r.files,
                    bytes: r.bytes,
                }));
            }
        }
        let data_dir = self.data_dir().to_path_buf();
        let local = db
            .read_sync(|c| {
                Ok::<_, crate::store::Error>(remove_old_dirs(c, &data_dir, cutoff, own_run, guard))
            })
            .map_err(std::io::Error::other)??;
        match local {
            Ok(local) => removed.extend(local),
            Err(stop) => return Ok(Err(stop)),
        }
        // A run with pieces and a directory left over (a crash) is one run removed.
        removed.sort_by_key(|r| (r.job_id, r.run_id));
        removed.dedup_by(|later, first| {
            let same = (later.job_id, later.run_id) == (first.job_id, first.run_id);
            if same {
                first.files += later.files;
                first.bytes += later.bytes;
            }
            same
        });
        Ok(Ok(removed))
    }

    /// Removes the files of these runs (their rows are about to be deleted): for each, the files
    /// and bytes removed (`None`: it had none), or why they could not be (its row must stay).
    /// Blocking.
    pub fn remove_runs(&self, runs: &[RunOfJob]) -> Vec<std::io::Result<Option<(u64, u64)>>> {
        let mut stored = std::collections::HashMap::new();
        if let RunFiles::Database { files, .. } = self {
            let ids: Vec<i64> = runs.iter().map(|r| r.run.0).collect();
            let deleted = files.totals(&ids).and_then(|totals| {
                for kind in FileKind::ALL {
                    files.delete(&ids, kind)?;
                }
                Ok(totals)
            });
            match deleted {
                Ok(totals) => stored.extend(totals.into_iter().map(|(id, f, b)| (id, (f, b)))),
                Err(e) => {
                    let why = e.to_string();
                    return runs
                        .iter()
                        .map(|_| Err(std::io::Error::other(why.clone())))
                        .collect();
                }
            }
        }
        runs.iter()
            .map(|ids| {
                let run_dir = self.paths(*ids).run_dir;
                let local = remove_run_dir(&run_dir)?;
                if let Some(job_dir) = run_dir.parent() {
                    // An emptied job directory goes too (this fails, harmlessly, when not empty).
                    let _ = std::fs::remove_dir(job_dir);
                }
                Ok(match (stored.get(&ids.run.0), local) {
                    (Some((f, b)), Some((lf, lb))) => Some((f + lf, b + lb)),
                    (Some(kept), None) => Some(*kept),
                    (None, local) => local,
                })
            })
            .collect()
    }
}

/// How much of a run's file is stored: its end, and whether the open slot (the one `end` is in)
/// is split, holding small pieces after the one at its start, until it is written whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stored {
    end: u64,
    split: bool,
}

/// Copies up an executing run's log: every `LOG_POLL` it looks at the local log and copies up
/// the slots the log has filled (each whole), and everything when `LOG_FLUSH` has passed since
/// the last copy. A failed copy is tried again at the next look. Answers what it has stored when
/// stopped.
async fn tail_log(
    files: DbFiles,
    data_dir: PathBuf,
    ids: RunOfJob,
    stop: CancellationToken,
) -> Stored {
    let slot = PIECE_BYTES as u64;
    let mut stored = Stored::default();
    let mut copied_at = Instant::now();
    let mut warned = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LOG_POLL) => {}
            _ = stop.cancelled() => return stored,
        }
        // The length of the server's own log (never through a link the script planted).
        let (dir, at) = (data_dir.clone(), ids);
        let len = tokio::task::spawn_blocking(move || {
            open_run_file(&dir, at.job.0, at.run.0, "run.log").and_then(|f| f.metadata())
        })
        .await
        .ok()
        .and_then(Result::ok)
        .map_or(0, |m| m.len());
        let to = if copied_at.elapsed() >= LOG_FLUSH {
            len
        } else {
            len / slot * slot
        };
        if to <= stored.end {
            continue;
        }
        let (files, data_dir) = (files.clone(), data_dir.clone());
        let copied = tokio::task::spawn_blocking(move || {
            let mut now = stored;
            let copied = copy_up(
                &files,
                &data_dir,
                ids,
                FileKind::Log,
                "run.log",
                &mut now,
                (to, false),
                1,
                0,
            );
            (now, copied)
        })
        .await;
        match copied {
            Ok((now, result)) => {
                stored = now;
                if result.is_ok() {
                    copied_at = Instant::now();
                } else if let Err(e) = result
                    && !warned
                {
                    warned = true;
                    tracing::warn!(run_id = ids.run.0, error = %e, "cannot copy the run's log to the database yet; trying again");
                }
            }
            Err(_) => return stored,
        }
    }
}

/// The end of a run's work, on a blocking thread: the log from what is `stored` and the result
/// file (see `RunFiles::keep`).
fn keep_files(
    files: &DbFiles,
    data_dir: &Path,
    ids: RunOfJob,
    stored: Stored,
    result: Option<&str>,
) -> Result<Option<u64>, String> {
    let log_end = match open_run_file(data_dir, ids.job.0, ids.run.0, "run.log") {
        Ok(file) => file.metadata().map_or(0, |m| m.len()),
        // No output, or something that is not labcron's log where it belongs: nothing to copy.
        Err(_) => 0,
    };
    // More stored than there is (it cannot shrink): copy it all again.
    let mut log = if stored.end <= log_end {
        stored
    } else {
        Stored::default()
    };
    copy_up(
        files,
        data_dir,
        ids,
        FileKind::Log,
        "run.log",
        &mut log,
        (log_end, true),
        END_ATTEMPTS,
        UNREACHABLE_WAITS,
    )
    .map_err(|e| format!("cannot store the run's log in the database: {e}"))?;
    let Some(relative) = result else {
        return Ok(None);
    };
    let size = open_run_file(data_dir, ids.job.0, ids.run.0, relative)
        .and_then(|f| f.metadata())
        .map_err(|e| format!("cannot keep the result file: {e}"))?
        .len();
    copy_up(
        files,
        data_dir,
        ids,
        FileKind::Result,
        relative,
        &mut Stored::default(),
        (size, true),
        END_ATTEMPTS,
        UNREACHABLE_WAITS,
    )
    .map_err(|e| format!("cannot store the result file in the database: {e}"))?;
    Ok(Some(size))
}

/// Copies bytes of a run's file (`relative` in its directory, opened without following links)
/// up to `to` (`(to, last)`; `last`: nothing will follow) as pieces, one per slot,
/// `PIECES_PER_WRITE` per transaction, each write tried up to `attempts` times, and besides up to
/// `unreachable_waits` times (a second apart) while the database is unreachable; `stored` follows
/// what is stored. It goes on from `stored.end`, except that a slot which holds a piece already
/// and which this write fills, or which is split when this is the `last` write, is written whole
/// from its start (the bytes from the local file): one piece, replacing its small ones.
#[allow(clippy::too_many_arguments)]
fn copy_up(
    files: &DbFiles,
    data_dir: &Path,
    ids: RunOfJob,
    kind: FileKind,
    relative: &str,
    stored: &mut Stored,
    (to, last): (u64, bool),
    attempts: u32,
    unreachable_waits: u32,
) -> Result<(), String> {
    let slot = PIECE_BYTES as u64;
    let pending = |stored: &Stored| stored.end < to || last && stored.split;
    if !pending(stored) {
        return Ok(());
    }
    let mut file =
        open_run_file(data_dir, ids.job.0, ids.run.0, relative).map_err(|e| e.to_string())?;
    while pending(stored) {
        let open = stored.end / slot * slot;
        let whole = stored.end > open && (to >= open + slot || last);
        let from = if whole { open } else { stored.end };
        file.seek(std::io::SeekFrom::Start(from))
            .map_err(|e| e.to_string())?;
        let mut batch: Vec<(u64, Vec<u8>)> = Vec::with_capacity(PIECES_PER_WRITE);
        let mut next = from;
        while batch.len() < PIECES_PER_WRITE && next < to {
            // A piece never crosses a slot's end.
            let want = (to.min(next / slot * slot + slot) - next) as usize;
            let mut data = vec![0u8; want];
            file.read_exact(&mut data).map_err(|e| e.to_string())?;
            batch.push((next, data));
            next += want as u64;
        }
        let pieces: Vec<(u64, &[u8])> = batch.iter().map(|(s, d)| (*s, d.as_slice())).collect();
        let mut pause = END_RETRY_PAUSE;
        let (mut tries, mut waits) = (0, 0);
        loop {
            match files.put(ids.run.0, kind, &pieces) {
                Ok(()) => break,
                // The database is down: the file stays here, and is copied when it is back.
                Err(e) if e.is_unreachable() && waits < unreachable_waits => {
                    waits += 1;
                    if waits == 1 {
                        tracing::warn!(run_id = ids.run.0, error = %e, "the ledger is unreachable: the run's files are stored when it is back");
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) if tries + 1 >= attempts => return Err(e.to_string()),
                Err(e) => {
                    tries += 1;
                    tracing::warn!(run_id = ids.run.0, error = %e, "a run file's piece was not stored; trying again");
                    std::thread::sleep(pause);
                    pause *= 2;
                }
            }
        }
        // A last piece that starts a slot replaced the slot's others; one after the slot's
        // start, ending inside it, is a small one.
        let last_start = batch.last().map_or(from, |(start_at, _)| *start_at);
        *stored = Stored {
            end: next,
            split: !last_start.is_multiple_of(slot) && !next.is_multiple_of(slot),
        };
    }
    Ok(())
}

/// The stored bytes of `[from, to)` of a run's file (fewer at its end). Blocking.
fn read_stored(
    files: &DbFiles,
    run_id: i64,
    kind: FileKind,
    from: u64,
    to: u64,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        let pieces = files
            .pieces(run_id, kind, at, to)
            .map_err(std::io::Error::other)?;
        let before = at;
        cut_into(&pieces, &mut at, to, |bytes| out.extend_from_slice(bytes));
        if at == before {
            break;
        }
    }
    Ok(out)
}

/// Passes the bytes of `pieces` from `*at` (up to `to`) to `take`, in order, stopping at a gap;
/// `*at` ends past the last byte passed.
fn cut_into(pieces: &[Piece], at: &mut u64, to: u64, mut take: impl FnMut(&[u8])) {
    for piece in pieces {
        if piece.start_at > *at || piece.end() <= *at {
            if piece.start_at > *at {
                return;
            }
            continue;
        }
        let from = (*at - piece.start_at) as usize;
        let until = (piece.end().min(to) - piece.start_at) as usize;
        take(&piece.data[from..until]);
        *at = piece.start_at + until as u64;
        if *at >= to {
            return;
        }
    }
}

/// The bytes `[from, to)` of a stored file as a stream, read `READ_WINDOW` at a time on one
/// blocking thread, a window ahead of the socket.
fn stream_pieces(
    files: DbFiles,
    run_id: i64,
    kind: FileKind,
    from: u64,
    to: u64,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + 'static {
    let (sender, received) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
    tokio::task::spawn_blocking(move || {
        let mut at = from;
        while at < to {
            let until = (at + READ_WINDOW).min(to);
            let item = read_stored(&files, run_id, kind, at, until).and_then(|bytes| {
                if bytes.is_empty() {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                } else {
                    Ok(bytes)
                }
            });
            let failed = item.is_err();
            let item = item.map(|bytes| {
                at += bytes.len() as u64;
                Bytes::from(bytes)
            });
            if sender.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    futures_util::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|item| (item, received))
    })
}

/// Writes a stored result (`size` bytes) to a new file `name` in `dir` (created there, never
/// through a link), made read-only by its descriptor. Blocking.
fn download(
    files: &DbFiles,
    run_id: i64,
    size: u64,
    dir: &Dir,
    name: &std::ffi::OsStr,
) -> std::io::Result<()> {
    use std::io::Write;
    dir.remove_file(name)?;
    let file = dir.create_new(name)?;
    read_only(&file)?;
    let mut out = std::io::BufWriter::new(file);
    let mut at = 0;
    while at < size {
        let until = (at + READ_WINDOW).min(size);
        let bytes = read_stored(files, run_id, FileKind::Result, at, until)?;
        if bytes.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        out.write_all(&bytes)?;
        at += bytes.len() as u64;
    }
    out.flush()
}

/// Reads a local log from `offset` (through `open_run_file`: no links).
async fn read_local_log(
    data_dir: &Path,
    ids: RunOfJob,
    offset: u64,
    limit: usize,
) -> std::io::Result<(Vec<u8>, u64)> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let data_dir = data_dir.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || {
        open_run_file(&data_dir, ids.job.0, ids.run.0, "run.log")
    })
    .await
    .map_err(std::io::Error::other)?;
    let mut file = match opened {
        Ok(f) => tokio::fs::File::from_std(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        // A link or other non-file where the log belongs is never read; the log is empty.
        Err(e) => {
            tracing::warn!(run_id = ids.run.0, error = %e, "the run's log is not a regular file");
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

/// Walks `<data>/runs/<job>/<run>/` and removes the directories of runs that finished before
/// `cutoff`; directories the ledger does not know are left alone, and one another pass removed
/// first is skipped. The outer `Result` is the file system's; the inner says whether the guard
/// stopped it.
fn remove_old_dirs(
    conn: &dyn Ledger,
    data_dir: &Path,
    cutoff: i64,
    own_run: Option<RunOfJob>,
    guard: &Guard,
) -> std::io::Result<Result<Vec<Removed>, Stop>> {
    let mut removed = Vec::new();
    let runs_root = data_dir.join("runs");
    for (job_id, job_dir) in numbered_dirs(&runs_root)? {
        for (run_id, _) in numbered_dirs(&job_dir)? {
            if let Some(stop) = guard.check() {
                return Ok(Err(stop));
            }
            let ids = RunOfJob::new(JobId(job_id), RunId(run_id));
            if Some(ids) == own_run {
                continue;
            }
            let finished_at = match conn.run_finished_at(ids) {
                Ok(Some(at)) if at < cutoff => at,
                Ok(_) => continue,
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            };
            let run_dir = RunPaths::new(data_dir, ids).run_dir;
            let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
            let (files, bytes) = match tree_size(&run_dir) {
                Err(e) if gone(&e) => continue,
                size => size?,
            };
            match std::fs::remove_dir_all(&run_dir) {
                Err(e) if gone(&e) => continue,
                done => done?,
            }
            removed.push(Removed {
                job_id,
                run_id,
                finished_at,
                files,
                bytes,
            });
        }
        // An emptied job directory goes too (this fails, harmlessly, when it is not empty).
        let _ = std::fs::remove_dir(&job_dir);
    }
    Ok(Ok(removed))
}

/// Subdirectories of `dir` whose names are numbers (ids), with their paths.
fn numbered_dirs(dir: &Path) -> std::io::Result<Vec<(i64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        // Symlinks are never followed: only real directories named by an id.
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            found.push((id, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Files and bytes under `dir`.
fn tree_size(dir: &Path) -> std::io::Result<(u64, u64)> {
    let listed = list_files(dir)?;
    Ok((
        listed.len() as u64,
        listed.iter().map(|(_, size)| size).sum(),
    ))
}

/// Makes an open file read-only (0444) by its descriptor (`fchmod`).
fn read_only(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o444))
}

/// Removes a run directory: the files and bytes it held, or None when there was none.
fn remove_run_dir(run_dir: &Path) -> std::io::Result<Option<(u64, u64)>> {
    let listed = match list_files(run_dir) {
        Ok(listed) => listed,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bytes = listed.iter().map(|(_, size)| size).sum();
    match std::fs::remove_dir_all(run_dir) {
        Ok(()) => Ok(Some((listed.len() as u64, bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(start_at: u64, data: &[u8]) -> Piece {
        Piece {
            start_at,
            data: data.to_vec(),
        }
    }

    #[test]
    fn pieces_are_cut_to_the_range_and_stop_at_a_gap() {
        let pieces = [piece(0, b"abcd"), piece(4, b"efgh"), piece(10, b"kl")];
        let cut = |from: u64, to: u64| {
            let mut out = Vec::new();
            let mut at = from;
            cut_into(&pieces, &mut at, to, |b| out.extend_from_slice(b));
            (String::from_utf8(out).unwrap(), at)
        };
        assert_eq!(cut(0, 8), ("abcdefgh".into(), 8));
        assert_eq!(cut(2, 6), ("cdef".into(), 6));
        assert_eq!(cut(3, 100), ("defgh".into(), 8), "stops at the gap");
        assert_eq!(cut(10, 100), ("kl".into(), 12));
        assert_eq!(cut(12, 100), ("".into(), 12));
    }
}
