//! Start-up recovery after a crash. Runs left `IN_PROGRESS` cannot be finished by anyone, so they
//! become FAILED "interrupted by server restart"; before that, any process still running for them
//! (found by the `LABCRON_RESULT_DIR` each run's process carries in its environment, which names
//! this data directory and that run) is killed, so no child from before the crash lives on (and
//! the run cgroups a stopped server left are killed whole: `cgroup::end_stale`). The same search
//! ends, at the end of every run, the processes that run left outside its group.
//! `QUEUED` runs are left alone: the dispatcher runs them. With several nodes on one ledger, a
//! node recovers only its own runs (those it executed before it stopped): the others' are theirs,
//! and a lost node's are failed by whoever declares it lost (`cluster`). On SQLite every run is
//! the one node's.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::error::ServiceError;
use crate::run_files::RunPaths;
use crate::store::Db;

pub const RESTART_MESSAGE: &str = "interrupted by server restart";

/// Kills leftovers of this node's (`node`) interrupted runs and marks those runs FAILED. Returns
/// how many runs.
pub fn recover_interrupted_runs(
    db: &Db,
    data_dir: &Path,
    node: &str,
) -> Result<usize, ServiceError> {
    let interrupted = db.read_sync(|l| l.runs_in_progress_on(node))?;
    if interrupted.is_empty() {
        return Ok(0);
    }
    let markers: HashSet<String> = interrupted
        .iter()
        .map(|ids| run_marker(&RunPaths::new(data_dir, *ids)))
        .collect();
    // Not this server's children (they were the crashed one's): the passes alone.
    let killed = end_marked(&markers, &mut || true);
    if !killed.is_empty() {
        tracing::warn!(
            processes = killed.len(),
            "killed processes left over from interrupted runs"
        );
    }
    db.write_sync(|tx| {
        let now = now_ms();
        let failed = tx.fail_runs_in_progress_on(node, RESTART_MESSAGE, now)?;
        // An interrupted run is a failed one: it is retried (or ends its series) like any other.
        for ids in &failed {
            super::followup::after_end(tx, ids.run.0, now)?;
        }
        Ok(failed.len())
    })
}

/// The environment entry every process of a run carries (its `LABCRON_RESULT_DIR`), and nothing
/// else does: it names this data directory and that run.
pub fn run_marker(paths: &RunPaths) -> String {
    format!("LABCRON_RESULT_DIR={}", paths.result_dir.display())
}

/// Ends every process whose environment holds one of `markers`, wherever it is, and returns their
/// pids. Used at start-up (runs a crash interrupted) and at the end of every run (processes that
/// left the run's group). One pass over /proc cannot win against a process that forks
/// continuously (its next generation is made while the pass reads others), so each pass stops
/// every marked process it finds at once (SIGSTOP: a stopped process neither forks nor exits, so
/// its children stay its own) and kills them all at the pass's end; passes repeat until one finds
/// no marked process and `settled` agrees. A pass alone can be outrun once pids wrap around: a
/// child forked below the pass's position by a parent the pass has not reached yet, which then
/// exits, is never seen; the caller that adopts orphans checks its children (`settled`), where
/// such a child lands. Bounded (10 s): logged if it gives up.
pub fn end_marked(markers: &HashSet<String>, settled: &mut dyn FnMut() -> bool) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut killed: HashSet<i32> = HashSet::new();
    loop {
        let found = stop_marked(markers);
        if found.is_empty() && settled() {
            break;
        }
        for &pid in &found {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let new = found.iter().filter(|pid| killed.insert(**pid)).count();
        if Instant::now() >= deadline {
            tracing::warn!(
                processes = killed.len(),
                "gave up ending a run's processes: marked processes are still being found"
            );
            break;
        }
        if new == 0 {
            // Only processes killed already (still exiting), or none but not settled: a moment.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    killed.into_iter().collect()
}

/// One pass over /proc: SIGSTOPs every process (but this one) whose environment holds one of
/// `markers`; returns their pids.
fn stop_marked(markers: &HashSet<String>) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own_pid = std::process::id();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own_pid {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let matches = environ
            .split(|b| *b == 0)
            .any(|var| std::str::from_utf8(var).is_ok_and(|v| markers.contains(v)));
        if matches {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGSTOP);
            }
            found.push(pid as i32);
        }
    }
    found
}
