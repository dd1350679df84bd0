//! Running one program for a run: no shell, a cleared environment, its own process group, stdout
//! and stderr drained concurrently into a capped log (or stdout into the result file), and the
//! whole group killed on timeout, cancel, or once the program itself has exited. Processes that
//! left the group (`setsid`, a double fork) are found by the run's marker in their environment
//! and killed too, and every leftover this server adopted is reaped: the server is a child
//! subreaper (`PR_SET_CHILD_SUBREAPER`), so orphans of a run become its children rather than
//! init's, and none is left running or a zombie once the run has ended.
//!
//! Looking for leftovers costs at every run's end, so the look is narrow: orphans come to the
//! server's main thread or to the thread that started the run's program (which of the two
//! depends on the kernel), so only those threads' children are read, and the live programs of
//! other runs among them are known (registered from spawn to wait) and skipped unread.

use std::collections::{BTreeSet, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// The pids of runs' programs that are running now (from spawn until they have been waited for):
/// children of this server that are known, so the leftover search need not read them.
static RUN_PROGRAMS: std::sync::Mutex<BTreeSet<i32>> = std::sync::Mutex::new(BTreeSet::new());

/// The threads (tids) that have started runs' programs: a thread's orphaned grandchildren may
/// come to it (see `children`).
static SPAWNERS: std::sync::Mutex<BTreeSet<i32>> = std::sync::Mutex::new(BTreeSet::new());

fn locked<T>(set: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

/// A run's program in `RUN_PROGRAMS`, taken out when this is dropped (once it has been waited for,
/// or if the run's task is dropped).
struct Registered(i32);

impl Registered {
    fn new(pid: i32) -> Registered {
        locked(&RUN_PROGRAMS).insert(pid);
        Registered(pid)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        locked(&RUN_PROGRAMS).remove(&self.0);
    }
}

/// Everything needed to start the program.
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub work_dir: PathBuf,
    pub log_path: PathBuf,
    /// When set, stdout is written here (uncapped) instead of to the log.
    pub stdout_path: Option<PathBuf>,
    pub timeout: Duration,
    pub kill_grace: Duration,
    pub log_cap: u64,
    /// An `env` entry (`NAME=value`) that only this run's processes carry: at the end, every
    /// process that has it is killed, wherever it moved.
    pub marker: Option<String>,
    /// The run's id for `crate::timeline` stamps (0: none).
    pub timeline_run: i64,
}

/// How the program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEnd {
    Exited(i32),
    Signalled(i32),
    TimedOut,
    Cancelled,
    SpawnFailed(String),
}

#[derive(Debug, Clone)]
pub struct ProcessReport {
    pub end: ProcessEnd,
    pub log_size: u64,
    pub log_truncated: bool,
    /// The last non-empty line the program wrote to stderr (for the failure message).
    pub last_stderr_line: Option<String>,
    /// Why stdout could not be written to its result file (a full disk, say), if it could not.
    pub stdout_error: Option<String>,
}

/// The run log: keeps at most `cap` bytes, then notes the truncation once and counts the rest.
/// The file is created at the program's first byte of output: a run that writes nothing leaves
/// no log file (one file fewer to create per run; the API reads a missing log as empty).
struct LogSink {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    /// The log could not be created: the output is drained and dropped.
    unavailable: bool,
    written: u64,
    cap: u64,
    truncated: bool,
}

impl LogSink {
    fn new(path: PathBuf, cap: u64) -> LogSink {
        LogSink {
            path,
            file: None,
            unavailable: false,
            written: 0,
            cap,
            truncated: false,
        }
    }

    /// Appends `bytes` to the log file (created on first use); whether they were written.
    async fn append(&mut self, bytes: &[u8]) -> bool {
        if self.file.is_none() && !self.unavailable {
            let opened = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await;
            match opened {
                Ok(file) => self.file = Some(file),
                Err(e) => {
                    self.unavailable = true;
                    tracing::warn!(error = %e, "cannot create the run log: the run's output is dropped");
                }
            }
        }
        match self.file.as_mut() {
            Some(file) => file.write_all(bytes).await.is_ok(),
            None => false,
        }
    }

    async fn write(&mut self, chunk: &[u8]) {
        if self.truncated {
            return;
        }
        let room = self.cap.saturating_sub(self.written) as usize;
        let take = chunk.len().min(room);
        // A failing log write must not stop the draining, or the program would block on a full pipe.
        if take > 0 && self.append(&chunk[..take]).await {
            self.written += take as u64;
        }
        if take < chunk.len() {
            self.truncated = true;
            let marker = format!("\n[labcron: log truncated at {} bytes]\n", self.cap);
            if self.append(marker.as_bytes()).await {
                self.written += marker.len() as u64;
            }
        }
    }
}

/// Reads a pipe to its end, passing chunks to `sink`. Keeps reading after the log is full.
async fn drain<R: AsyncRead + Unpin>(
    mut pipe: R,
    sink: Arc<Mutex<LogSink>>,
    mut last_line: Option<&mut String>,
) {
    // Read into spare capacity (`read_buf`), never zeroed: most runs' programs write little or
    // nothing, and zeroing two 16 KiB buffers per run touched fresh pages each time.
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut line = Vec::<u8>::new();
    loop {
        buf.clear();
        match pipe.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        sink.lock().await.write(&buf).await;
        if let Some(last) = last_line.as_deref_mut() {
            track_last_line(&buf, &mut line, last);
        }
    }
    if let Some(last) = last_line {
        let tail = String::from_utf8_lossy(&line).trim().to_string();
        if !tail.is_empty() {
            *last = tail;
        }
    }
}

/// Keeps the last complete non-empty line seen (bounded to 500 bytes).
fn track_last_line(chunk: &[u8], partial: &mut Vec<u8>, last: &mut String) {
    for &b in chunk {
        if b == b'\n' {
            let text = String::from_utf8_lossy(partial).trim().to_string();
            if !text.is_empty() {
                *last = text;
            }
            partial.clear();
        } else if partial.len() < 500 {
            partial.push(b);
        }
    }
}

/// Writes a pipe to a file, uncapped (the result of a `resultFromStdout` job).
async fn copy_to_file<R: AsyncRead + Unpin>(
    mut pipe: R,
    mut file: tokio::fs::File,
) -> std::io::Result<()> {
    tokio::io::copy(&mut pipe, &mut file).await?;
    file.flush().await?;
    file.sync_all().await
}

fn signal_group(pgid: u32, signal: i32) {
    // SAFETY: killpg has no memory-safety preconditions; a stale or absent group gives ESRCH.
    unsafe {
        libc::killpg(pgid as libc::pid_t, signal);
    }
}

/// Runs the program to its end (or until timeout/cancel), then `after` (blocking: the caller's
/// work on the run's files, given how the program ended), and reports how it went with what
/// `after` returned (`None` if it panicked). `after` runs once every process of the run is gone;
/// when stdout is the result file it also waits for that file to be complete. Otherwise it
/// shares its trip to the blocking pool with the search for leftovers: a trip is a hand-off to
/// another thread and back, and these hand-offs were a good part of the server's CPU per run.
pub async fn run_process<T, F>(
    spec: ProcessSpec,
    cancel: CancellationToken,
    after: F,
) -> (ProcessReport, Option<T>)
where
    T: Send + 'static,
    F: FnOnce(&ProcessEnd) -> T + Send + 'static,
{
    let sink = Arc::new(Mutex::new(LogSink::new(
        spec.log_path.clone(),
        spec.log_cap,
    )));

    let stdout_file = match &spec.stdout_path {
        Some(path) => match tokio::fs::File::create(path).await {
            Ok(f) => Some(f),
            Err(e) => {
                return spawn_failed(format!("cannot create the result file: {e}"), after).await;
            }
        },
        None => None,
    };

    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&spec.work_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // The thread that starts the program is its parent (see `children`).
    // SAFETY: gettid has no preconditions.
    let spawner = unsafe { libc::gettid() };
    let timeline_run = spec.timeline_run;
    crate::timeline::mark(timeline_run, "spawn0");
    let mut child = match command.spawn() {
        Ok(child) => child,
        // The program's name only: run messages are read by every user the job is shared with.
        Err(e) => {
            let name = spec
                .program
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            return spawn_failed(format!("cannot start {name}: {e}"), after).await;
        }
    };
    let Some(pgid) = child.id() else {
        return spawn_failed(
            "the program exited before it could be supervised".into(),
            after,
        )
        .await;
    };
    crate::timeline::mark(timeline_run, "spawned");
    locked(&SPAWNERS).insert(spawner);
    let registered = Registered::new(pgid as i32);

    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out_task = {
        let sink = sink.clone();
        tokio::spawn(async move {
            match (stdout, stdout_file) {
                // A failed write ends the copy: the program then gets SIGPIPE and stops.
                (Some(pipe), Some(file)) => {
                    copy_to_file(pipe, file).await.err().map(|e| e.to_string())
                }
                (Some(pipe), None) => {
                    drain(pipe, sink, None).await;
                    None
                }
                _ => None,
            }
        })
    };
    let err_task = {
        let sink = sink.clone();
        tokio::spawn(async move {
            let mut last = String::new();
            if let Some(pipe) = stderr {
                drain(pipe, sink, Some(&mut last)).await;
            }
            last
        })
    };

    let end = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => exit_of(status),
            Err(e) => ProcessEnd::SpawnFailed(format!("lost the program: {e}")),
        },
        _ = tokio::time::sleep(spec.timeout) => {
            stop_group(&mut child, pgid, spec.kill_grace).await;
            ProcessEnd::TimedOut
        }
        _ = cancel.cancelled() => {
            stop_group(&mut child, pgid, spec.kill_grace).await;
            ProcessEnd::Cancelled
        }
    };
    crate::timeline::mark(timeline_run, "exited");
    // Waited for (or lost): its pid may be reused from here on.
    drop(registered);
    // Whatever the program left running in its group goes too, and whatever left the group but
    // still carries the run's marker; then their pipes close, and the server reaps them.
    signal_group(pgid, libc::SIGKILL);
    let marker = spec.marker.clone();
    // Stdout as the result file: `after` waits for the copy below to finish.
    let mut after = Some(after);
    let after_now = if spec.stdout_path.is_none() {
        after.take()
    } else {
        None
    };
    let end_now = end.clone();
    let ended = tokio::task::spawn_blocking(move || {
        // `after` runs whatever happened to the search.
        let killed =
            std::panic::catch_unwind(AssertUnwindSafe(|| end_leftovers(pgid, marker.as_deref())))
                .unwrap_or(0);
        let value = after_now
            .map(|after| std::panic::catch_unwind(AssertUnwindSafe(|| after(&end_now))).ok());
        (killed, value)
    })
    .await;
    crate::timeline::mark(timeline_run, "swept");
    let mut done = None;
    if let Ok((killed, value)) = ended {
        done = value;
        if killed > 0 {
            tracing::info!(
                processes = killed,
                "killed processes the run left outside its process group"
            );
        }
    }

    // A process that left the group (setsid) could hold a pipe open forever: stop waiting then.
    let drain_limit = Duration::from_secs(5);
    let stdout_error = tokio::time::timeout(drain_limit, out_task)
        .await
        .ok()
        .and_then(|r| r.ok())
        .flatten();
    let last_stderr_line = tokio::time::timeout(drain_limit, err_task)
        .await
        .ok()
        .and_then(|r| r.ok())
        .filter(|s| !s.is_empty());

    crate::timeline::mark(timeline_run, "drained");
    let mut sink = sink.lock().await;
    if let Some(file) = sink.file.as_mut() {
        let _ = file.flush().await;
    }
    let report = ProcessReport {
        end,
        log_size: sink.written,
        log_truncated: sink.truncated,
        last_stderr_line,
        stdout_error,
    };
    let value = match (done, after) {
        (Some(value), _) => value,
        // Stdout is the result: its copy has ended (or was given up) above.
        (None, Some(after)) => run_after(after, report.end.clone()).await,
        // The trip that took `after` was lost (the runtime shutting down).
        (None, None) => None,
    };
    (report, value)
}

/// Runs `after` on the blocking pool; `None` if it panicked.
async fn run_after<T, F>(after: F, end: ProcessEnd) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(&ProcessEnd) -> T + Send + 'static,
{
    tokio::task::spawn_blocking(move || after(&end)).await.ok()
}

/// Makes this process the reaper of its descendants' orphans (instead of init), so that a run's
/// daemons stay within reach: they can be waited for, and nothing this server started is left
/// to another process. Logged, not fatal, where the kernel refuses.
pub fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot become a child subreaper: orphans of runs go to init"
        );
    }
}

/// After a run's group was killed: kills every process still carrying `marker` (it left the group)
/// and reaps what this server adopted. Returns how many marked processes were killed.
fn end_leftovers(pgid: u32, marker: Option<&str>) -> usize {
    let mut killed: HashSet<i32> = HashSet::new();
    let own = Ids::own();
    // One look at the children serves both questions below. Runs' programs still running are
    // other runs' (this one's was waited for) and are left out unread.
    let kids: Vec<i32> = {
        let running = locked(&RUN_PROGRAMS);
        children()
            .into_iter()
            .filter(|pid| !running.contains(pid))
            .collect()
    };
    if let Some(marker) = marker
        && may_have_left_the_group(&kids, marker, &own)
    {
        let markers = HashSet::from([marker.to_string()]);
        // A process may fork between being read and being killed: look until none is new.
        for _ in 0..10 {
            let before = killed.len();
            killed.extend(super::recovery::kill_processes_with_env(&markers));
            if killed.len() == before {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    reap(pgid, &killed);
    reap_departed_zombies(&kids, &own);
    killed.len()
}

/// A process's state, group and session, from `/proc/<pid>/stat`.
struct Ids {
    zombie: bool,
    pgid: i32,
    session: i32,
}

impl Ids {
    fn of(pid: i32) -> Option<Ids> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the parenthesised name: state ppid pgrp session …
        let (_, rest) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(Ids {
            zombie: *fields.first()? == "Z",
            pgid: fields.get(2)?.parse().ok()?,
            session: fields.get(3)?.parse().ok()?,
        })
    }

    fn own() -> Ids {
        // SAFETY: getpgid(0) and getsid(0) have no preconditions.
        unsafe {
            Ids {
                zombie: false,
                pgid: libc::getpgid(0),
                session: libc::getsid(0),
            }
        }
    }

    /// Whether process `pid` with these ids moved out of the group it was started in: runs'
    /// programs lead their own group, everything else this server starts stays in its group.
    fn moved(&self, pid: i32, own: &Ids) -> bool {
        self.session != own.session || (self.pgid != pid && self.pgid != own.pgid)
    }
}

/// The children of the threads of this process that can have adopted a run's orphans: runs'
/// programs, and the orphans it adopted as a subreaper. A process orphaned below a subreaper goes
/// to one of the subreaper's live threads: since Linux 4.11 the first one, the main thread; before
/// that, the thread that started the run's program (while it lives). Children are listed per
/// thread (`/proc/self/task/<tid>/children`), and reading only these few instead of every thread
/// (the blocking pools keep dozens) made this look a tenth of what it cost.
fn children() -> Vec<i32> {
    let mut threads: Vec<i32> = locked(&SPAWNERS).iter().copied().collect();
    let main = std::process::id() as i32;
    if !threads.contains(&main) {
        threads.push(main);
    }
    let mut pids = Vec::new();
    for tid in threads {
        match std::fs::read_to_string(format!("/proc/self/task/{tid}/children")) {
            Ok(list) => pids.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            ),
            // A thread that has ended passed its children to a live one (the main thread).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                locked(&SPAWNERS).remove(&tid);
            }
            Err(_) => {}
        }
    }
    pids
}

/// Whether the run may have left a process outside its group. If it did, the topmost live one
/// of them is this server's child (orphans come to a subreaper), so only the children are
/// looked at: one with the run's marker, or one without any run's marker that moved out of its
/// group, sends the caller searching every process. Saves a walk over all of /proc per run.
fn may_have_left_the_group(kids: &[i32], marker: &str, own: &Ids) -> bool {
    kids.iter().copied().any(|pid| {
        let Some(ids) = Ids::of(pid) else {
            return false;
        };
        if ids.zombie {
            return false;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            return ids.moved(pid, own);
        };
        let mut vars = environ.split(|b| *b == 0);
        let mut any_marker = false;
        let ours = vars.any(|var| {
            any_marker |= var.starts_with(b"LABCRON_RESULT_DIR=");
            var == marker.as_bytes()
        });
        ours || (!any_marker && ids.moved(pid, own))
    })
}

/// Waits (a little) for the killed processes this server adopted: members of the run's group and
/// `killed`. A pid that is not this server's child (ECHILD) is another process's to reap.
fn reap(pgid: u32, killed: &HashSet<i32>) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut pending: Vec<i32> = killed.iter().copied().collect();
    loop {
        let group_done = loop {
            // SAFETY: waitpid with a null status pointer has no memory-safety preconditions.
            let pid = unsafe {
                libc::waitpid(-(pgid as libc::pid_t), std::ptr::null_mut(), libc::WNOHANG)
            };
            match pid {
                pid if pid > 0 => continue,
                0 => break false,
                _ => break true,
            }
        };
        // SAFETY: as above.
        pending
            .retain(|&pid| unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) == 0 });
        if (group_done && pending.is_empty()) || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Reaps zombies this server adopted that had moved out of their group (a run's daemon that ended
/// by itself while its run went on, when nothing was left to find it by). The runs' programs are
/// never touched (tokio waits for them), nor anything else started in the server's own group.
fn reap_departed_zombies(kids: &[i32], own: &Ids) {
    for &pid in kids {
        if Ids::of(pid).is_some_and(|ids| ids.zombie && ids.moved(pid, own)) {
            // SAFETY: waitpid with a null status pointer has no memory-safety preconditions.
            unsafe {
                libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
            }
        }
    }
}

/// SIGTERM to the group, then SIGKILL after the grace period; always reaps the child.
async fn stop_group(child: &mut tokio::process::Child, pgid: u32, grace: Duration) {
    signal_group(pgid, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(pgid, libc::SIGKILL);
        let _ = child.wait().await;
    }
}

fn exit_of(status: std::process::ExitStatus) -> ProcessEnd {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ProcessEnd::Exited(code),
        (None, Some(signal)) => ProcessEnd::Signalled(signal),
        (None, None) => ProcessEnd::Exited(-1),
    }
}

async fn spawn_failed<T, F>(message: String, after: F) -> (ProcessReport, Option<T>)
where
    T: Send + 'static,
    F: FnOnce(&ProcessEnd) -> T + Send + 'static,
{
    let end = ProcessEnd::SpawnFailed(message);
    let value = run_after(after, end.clone()).await;
    let report = ProcessReport {
        end,
        log_size: 0,
        log_truncated: false,
        last_stderr_line: None,
        stdout_error: None,
    };
    (report, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_ignores_blank_lines_and_spans_chunks() {
        let mut partial = Vec::new();
        let mut last = String::new();
        track_last_line(b"first\nsec", &mut partial, &mut last);
        assert_eq!(last, "first");
        track_last_line(b"ond\n\n  \n", &mut partial, &mut last);
        assert_eq!(last, "second");
    }
}
