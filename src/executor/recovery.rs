//! Start-up recovery after a crash. Runs left `IN_PROGRESS` cannot be finished by anyone, so they
//! become FAILED "interrupted by server restart"; before that, any process still running for them
//! (found by the `LABCRON_RESULT_DIR` each run's process carries in its environment, which names
//! this data directory and that run) is killed, so no child from before the crash lives on. The
//! same search ends, at the end of every run, the processes that run left outside its group.
//! `QUEUED` runs are left alone: the dispatcher runs them. With several nodes on one ledger, a
//! node recovers only its own runs (those it executed before it stopped): the others' are theirs,
//! and a lost node's are failed by whoever declares it lost (`cluster`). On SQLite every run is
//! the one node's.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

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
    // Killed processes may take a moment to disappear; a few passes catch children forked late.
    for _ in 0..5 {
        let killed = kill_processes_with_env(&markers);
        if killed.is_empty() {
            break;
        }
        for pid in killed {
            tracing::warn!(pid, "killed a process left over from an interrupted run");
        }
        std::thread::sleep(Duration::from_millis(100));
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

/// SIGKILLs every process whose environment contains one of `markers`; returns their pids. Used
/// at start-up (runs a crash interrupted) and at the end of every run (processes that left the
/// run's group).
pub fn kill_processes_with_env(markers: &HashSet<String>) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own_pid = std::process::id();
    let mut killed = Vec::new();
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
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            killed.push(pid as i32);
        }
    }
    killed
}
