//! Running one program for a run: no shell, a cleared environment, its own process group, stdout
//! and stderr drained concurrently into a capped log (or stdout into the result file), and every
//! process of the run killed on timeout, cancel, or once the program itself has exited, wherever
//! it moved. Three lines, each enough where it applies: the run's cgroup (`cgroup`, where the
//! machine lets the server make one), killed whole; the run's process group; and, for what left
//! the group (`setsid`, a double fork), the run's marker in the environment: every marked process
//! is stopped and killed, pass after pass until a pass finds none (`recovery::end_marked`). The
//! server is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so orphans of a run become its
//! children rather than init's, and it reaps them as they end (`reap_adopted_loop`), not only
//! when a run ends.
//!
//! Looking for leftovers costs at every run's end, so the look is narrow but cannot be fooled:
//! orphans come to the server's main thread (or, on kernels before 4.11, to the thread that
//! started the run's program), so the topmost live process of anything a run left outside its
//! group is always one of those threads' children. Only those are read (the live programs of
//! other runs among them are known, registered from spawn to wait, and skipped unread), and
//! while they are read nothing reaps them (`ADOPTION`): a process that forks and exits at once
//! is seen either alive or as the zombie it left, and either sends the look through all of
//! /proc.

use std::collections::{BTreeSet, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, RwLock};
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

/// Held by whoever reads the server's children to decide about them and reaps them: the run-end
/// look (`end_leftovers`) and the reaper (`reap_adopted_loop`). The look relies on it: a child it
/// listed stays readable (alive or a zombie) until it is done.
static ADOPTION: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Read-held from a run's spawn until its program is registered, write-held while children are
/// reaped: a run's program is never taken for an orphan in between (its exit status is tokio's).
static SPAWNING: RwLock<()> = RwLock::new(());

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
    /// The run log, created by the caller before the program starts and written only through
    /// this descriptor, so whatever the program puts at the log's name later is never written
    /// to (`None`: it could not be created; the output is drained and dropped).
    pub log_file: Option<std::fs::File>,
    /// When set, stdout is written to this file (uncapped, through this descriptor) instead of
    /// to the log.
    pub stdout_file: Option<std::fs::File>,
    pub timeout: Duration,
    pub kill_grace: Duration,
    pub log_cap: u64,
    /// An `env` entry (`NAME=value`) that only this run's processes carry: at the end, every
    /// process that has it is killed, wherever it moved.
    pub marker: Option<String>,
    /// The run's id for `crate::timeline` stamps (0: none).
    pub timeline_run: i64,
    /// Put the run in a cgroup of its own where one can be made (`runs.cgroups`).
    pub cgroup: bool,
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
/// It writes through the descriptor it was given and never opens the log by its name.
struct LogSink {
    /// `None`: the log could not be created; the output is drained and dropped.
    file: Option<tokio::fs::File>,
    written: u64,
    cap: u64,
    truncated: bool,
}

impl LogSink {
    fn new(file: Option<std::fs::File>, cap: u64) -> LogSink {
        LogSink {
            file: file.map(tokio::fs::File::from_std),
            written: 0,
            cap,
            truncated: false,
        }
    }

    /// Appends `bytes` to the log file; whether they were written.
    async fn append(&mut self, bytes: &[u8]) -> bool {
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
    mut spec: ProcessSpec,
    cancel: CancellationToken,
    after: F,
) -> (ProcessReport, Option<T>)
where
    T: Send + 'static,
    F: FnOnce(&ProcessEnd) -> T + Send + 'static,
{
    let stdout_to_file = spec.stdout_file.is_some();
    let stdout_file = spec.stdout_file.take().map(tokio::fs::File::from_std);
    let sink = Arc::new(Mutex::new(LogSink::new(spec.log_file.take(), spec.log_cap)));

    // Made before the spawn, entered by the child before it executes anything: nothing the
    // program starts can be outside it.
    let mut cgroup = if spec.cgroup {
        super::cgroup::RunCgroup::create()
    } else {
        None
    };
    // The thread that starts the program is its parent (see `children`).
    // SAFETY: gettid has no preconditions.
    let spawner = unsafe { libc::gettid() };
    let timeline_run = spec.timeline_run;
    crate::timeline::mark(timeline_run, "spawn0");
    let spawned = {
        let _spawning = SPAWNING.read().unwrap_or_else(|p| p.into_inner());
        Program::start(&spec, cgroup.as_ref()).map(|child| {
            let registered = child.id().map(|pid| Registered::new(pid as i32));
            (child, registered)
        })
    };
    let (mut child, registered) = match spawned {
        Ok(spawned) => spawned,
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
    let (Some(pgid), Some(registered)) = (child.id(), registered) else {
        return spawn_failed(
            "the program exited before it could be supervised".into(),
            after,
        )
        .await;
    };
    crate::timeline::mark(timeline_run, "spawned");
    locked(&SPAWNERS).insert(spawner);

    let (stdout, stderr) = child.take_pipes();
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
    // Whatever the program left running goes too: its cgroup, its group, and whatever left the
    // group but still carries the run's marker; then their pipes close, and the server reaps them.
    signal_group(pgid, libc::SIGKILL);
    let marker = spec.marker.clone();
    // Stdout as the result file: `after` waits for the copy below to finish.
    let mut after = Some(after);
    let after_now = if !stdout_to_file { after.take() } else { None };
    let end_now = end.clone();
    let ended = tokio::task::spawn_blocking(move || {
        // `after` runs whatever happened to the search.
        let killed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if let Some(cgroup) = cgroup.as_mut() {
                cgroup.end();
            }
            end_leftovers(pgid, marker.as_deref())
        }))
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
/// to another process. Logged, not fatal, where the kernel refuses. Returns whether it is one.
pub fn become_subreaper() -> bool {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot become a child subreaper: orphans of runs go to init"
        );
    }
    rc == 0
}

/// Reaps the orphans this server adopted as they end (each end sends SIGCHLD), so that none is
/// left a zombie while runs go on: a process that forks continuously would otherwise fill the
/// process table with them. At most one sweep per 10 ms (a fork storm sends SIGCHLD without
/// pause); a sweep that finds the children being looked at by a run's end (`ADOPTION`) or a
/// spawn under way comes back shortly. Never blocks its thread.
pub async fn reap_adopted_loop() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(sigchld) => sigchld,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGCHLD: adopted orphans are reaped only when runs end");
            return;
        }
    };
    let mut again = false;
    loop {
        if again {
            tokio::select! {
                _ = sigchld.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        } else if sigchld.recv().await.is_none() {
            return;
        }
        // After a sweep that reaped, one more: the children file may miss children that change
        // while it is read (proc(5)), and their SIGCHLD has been had.
        again = match ADOPTION.try_lock() {
            Ok(_adoption) => reap_adopted(false) != Some(0),
            Err(std::sync::TryLockError::Poisoned(p)) => {
                let _adoption = p.into_inner();
                reap_adopted(false) != Some(0)
            }
            Err(std::sync::TryLockError::WouldBlock) => true,
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reaps the zombies among the server's children that are orphans it adopted (they had moved out
/// of their group: see `Ids::moved`); the runs' programs are tokio's to wait for, and whatever
/// else the server started stays in its group. The caller holds `ADOPTION`. `wait`: wait for a
/// spawn under way; otherwise give up (`None`) if one is. Returns how many were reaped.
fn reap_adopted(wait: bool) -> Option<usize> {
    let spawning = if wait {
        SPAWNING.write().unwrap_or_else(|p| p.into_inner())
    } else {
        match SPAWNING.try_write() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        }
    };
    let mut reaped = 0;
    let own = Ids::own();
    let kids: Vec<i32> = {
        let running = locked(&RUN_PROGRAMS);
        children()
            .into_iter()
            .filter(|pid| !running.contains(pid))
            .collect()
    };
    // The list is what needed it: a listed pid is reaped by no one else, so it cannot be reused.
    drop(spawning);
    for pid in kids {
        if Ids::of(pid).is_some_and(|ids| ids.zombie && ids.moved(pid, &own)) {
            // SAFETY: waitpid with a null status pointer has no memory-safety preconditions.
            if unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } > 0 {
                reaped += 1;
            }
        }
    }
    Some(reaped)
}

/// After a run's group was killed: kills every process still carrying `marker` (it left the group)
/// and reaps what this server adopted. Returns how many marked processes were killed.
fn end_leftovers(pgid: u32, marker: Option<&str>) -> usize {
    // Nothing reaps the children from here on but this look (see `may_have_left_the_group`).
    let _adoption = locked(&ADOPTION);
    let own = Ids::own();
    let kids = adopted();
    let mut killed = Vec::new();
    if let Some(marker) = marker
        && may_have_left_the_group(&kids, marker, &own)
    {
        let mut confirm = || settled(marker, &own);
        killed = super::recovery::end_marked(&HashSet::from([marker.to_string()]), &mut confirm);
    }
    reap(pgid, &killed);
    reap_adopted(true);
    killed.len()
}

/// Whether a clean pass over /proc is confirmed by the server's children: the topmost live process
/// of anything the run left is one of them, so none may carry the marker. A child that became a
/// zombie after the list was read handed its children on first: its zombie is reaped and the
/// list read again, until a list holds no new zombie (bounded: another pass then).
/// A marked child is killed at once (it is this server's child, not reaped: its pid is its own).
fn settled(marker: &str, own: &Ids) -> bool {
    for _ in 0..50 {
        reap_adopted(true);
        let mut zombie = false;
        let mut marked = false;
        for pid in adopted() {
            match Ids::of(pid) {
                Some(ids) if ids.zombie => zombie |= ids.moved(pid, own),
                Some(_) if carries(pid, marker) => {
                    marked = true;
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
                _ => {}
            }
        }
        if marked {
            return false;
        }
        if !zombie {
            return true;
        }
    }
    false
}

/// Whether process `pid`'s environment holds the entry `marker`.
fn carries(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
}

/// The server's children that may be adopted orphans: all but the runs' programs still running
/// (other runs'; this one's was waited for), which are left out unread. One being spawned is
/// registered first.
fn adopted() -> Vec<i32> {
    let _spawning = SPAWNING.write().unwrap_or_else(|p| p.into_inner());
    let running = locked(&RUN_PROGRAMS);
    children()
        .into_iter()
        .filter(|pid| !running.contains(pid))
        .collect()
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
/// of them is this server's child (orphans come to a subreaper; a process's children are handed
/// on before it becomes a zombie), so only the children are looked at: one with the run's
/// marker, one without any run's marker that moved out of its group, or a zombie that had moved
/// (its children, adopted after the list was read, may be a forker's next generation) sends the
/// caller searching every process. The caller holds `ADOPTION`, so a listed child cannot vanish
/// before it is read. Saves a walk over all of /proc per run.
fn may_have_left_the_group(kids: &[i32], marker: &str, own: &Ids) -> bool {
    kids.iter().copied().any(|pid| {
        let Some(ids) = Ids::of(pid) else {
            return false;
        };
        if ids.zombie {
            return ids.moved(pid, own);
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
fn reap(pgid: u32, killed: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut pending: Vec<i32> = killed.to_vec();
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

/// SIGTERM to the group, then SIGKILL after the grace period; always reaps the child.
async fn stop_group(child: &mut Program, pgid: u32, grace: Duration) {
    signal_group(pgid, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(pgid, libc::SIGKILL);
        let _ = child.wait().await;
    }
}

/// A pipe from the program (its stdout or stderr).
type Output = Box<dyn AsyncRead + Send + Unpin>;

/// A run's program, from its start until it has been waited for (killed if dropped before).
enum Program {
    /// Started by `spawn`: the server is not copied, and the child enters the cgroup itself.
    Cloned(super::spawn::Child),
    /// Started by tokio where the kernel has no pidfds: `posix_spawn`, or a fork where the child
    /// must enter a cgroup first.
    Tokio(tokio::process::Child),
}

impl Program {
    fn start(
        spec: &ProcessSpec,
        cgroup: Option<&super::cgroup::RunCgroup>,
    ) -> std::io::Result<Program> {
        if super::spawn::available() {
            match Program::cloned(spec, cgroup) {
                // The kernel refused the clone: tokio starts this one and the rest.
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
                started => return started,
            }
        }
        Program::forked(spec, cgroup)
    }

    fn cloned(
        spec: &ProcessSpec,
        cgroup: Option<&super::cgroup::RunCgroup>,
    ) -> std::io::Result<Program> {
        let start = super::spawn::Start {
            program: &spec.program,
            args: &spec.args,
            env: &spec.env,
            work_dir: &spec.work_dir,
            cgroup: cgroup.map(|c| c.entry()),
        };
        super::spawn::spawn(&start).map(Program::Cloned)
    }

    fn forked(
        spec: &ProcessSpec,
        cgroup: Option<&super::cgroup::RunCgroup>,
    ) -> std::io::Result<Program> {
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
        if let Some(cgroup) = cgroup {
            let procs = cgroup.procs().clone();
            // SAFETY: `enter` makes only async-signal-safe calls (open, write, close).
            unsafe {
                command.pre_exec(move || {
                    super::cgroup::enter(&procs);
                    Ok(())
                });
            }
        }
        command.spawn().map(Program::Tokio)
    }

    /// The program's pid, until it has been waited for.
    fn id(&self) -> Option<u32> {
        match self {
            Program::Cloned(child) => Some(child.id()),
            Program::Tokio(child) => child.id(),
        }
    }

    fn take_pipes(&mut self) -> (Option<Output>, Option<Output>) {
        fn boxed<R: AsyncRead + Send + Unpin + 'static>(pipe: Option<R>) -> Option<Output> {
            pipe.map(|p| Box::new(p) as Output)
        }
        match self {
            Program::Cloned(child) => (boxed(child.stdout.take()), boxed(child.stderr.take())),
            Program::Tokio(child) => (boxed(child.stdout.take()), boxed(child.stderr.take())),
        }
    }

    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Program::Cloned(child) => child.wait().await,
            Program::Tokio(child) => child.wait().await,
        }
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

    /// Runs the program to its end: what it wrote to stdout, and its pid.
    async fn output_of(started: std::io::Result<Program>) -> (String, u32) {
        let mut program = started.expect("started");
        let pid = program.id().expect("a pid");
        let (stdout, _) = program.take_pipes();
        let mut out = String::new();
        stdout
            .expect("stdout")
            .read_to_string(&mut out)
            .await
            .expect("read");
        let status = program.wait().await.expect("wait");
        assert!(status.success());
        (out, pid)
    }

    type Starter =
        fn(&ProcessSpec, Option<&super::super::cgroup::RunCgroup>) -> std::io::Result<Program>;

    #[tokio::test]
    async fn cloned_and_forked_programs_start_in_the_same_place() {
        let spec = ProcessSpec {
            program: "/bin/cat".into(),
            args: ["stat", "cgroup", "environ"]
                .map(|f| format!("/proc/self/{f}"))
                .to_vec(),
            env: vec![("ONLY".into(), "this".into())],
            work_dir: "/".into(),
            log_file: None,
            stdout_file: None,
            timeout: Duration::from_secs(60),
            kill_grace: Duration::from_secs(1),
            log_cap: 1 << 20,
            marker: None,
            timeline_run: 0,
            cgroup: true,
        };
        let mut ways: Vec<(&str, Starter)> = vec![("forked", Program::forked)];
        if super::super::spawn::available() {
            ways.push(("cloned", Program::cloned));
        }
        for (way, start) in ways {
            let mut cgroup = super::super::cgroup::RunCgroup::create();
            let (out, pid) = output_of(start(&spec, cgroup.as_ref())).await;
            // stat: pid (name) state ppid pgrp …; the cgroup v2 line; the environment last.
            let lines: Vec<&str> = out.lines().collect();
            let (_, after_name) = lines[0].rsplit_once(") ").expect("stat line");
            let pgrp = after_name.split(' ').nth(2).expect("pgrp");
            assert_eq!(pgrp, pid.to_string(), "{way}: its own process group");
            if let Some(cgroup) = cgroup.as_mut() {
                let name = cgroup.dir().file_name().expect("name").to_string_lossy();
                let v2 = lines.iter().find(|l| l.starts_with("0::")).expect("0::");
                assert!(v2.ends_with(&format!("/{name}")), "{way}: {v2}");
                assert!(cgroup.end());
            }
            let environ = lines.last().expect("environ");
            assert_eq!(*environ, "ONLY=this\0", "{way}");
        }
    }

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
