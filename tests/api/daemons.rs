//! No process outlives its run: a script that starts a daemon in a session of its own (`setsid`,
//! then a second fork, so the daemon is neither in the run's process group nor the script's
//! child) leaves nothing running once the run has ended — by itself, by timeout or by cancel —
//! and the daemon is reaped, not left a zombie of the server.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{AppOptions, TestApp, spawn_app_with};

/// `$1`: where to write the daemon's pid; `$2`: `stay` to keep running until stopped.
const DAEMON_SCRIPT: &str = r#"#!/bin/sh
setsid sh -c 'sleep 300 & echo $! > "$0.tmp"; mv "$0.tmp" "$0"' "$1" </dev/null >/dev/null 2>&1 &
while [ ! -s "$1" ]; do sleep 0.05; done
if [ "$2" = stay ]; then sleep 300; fi
exit 0
"#;

/// Kills the daemon when a test fails, so a failure leaves nothing behind either.
struct Daemon(Option<i32>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = self.0
            && is_our_sleep(pid)
        {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Whether `pid` is (still) the daemon: a live `sleep 300`, zombies included.
fn is_our_sleep(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"sleep\x00300\x00")
        || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains("(sleep)"))
}

async fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse::<i32>()
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "the script wrote no daemon pid");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (generously) for the daemon to be gone: no process, not even a zombie.
async fn assert_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while is_our_sleep(pid) {
        assert!(
            Instant::now() < deadline,
            "the daemon {pid} outlived its run: {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn app() -> TestApp {
    spawn_app_with(AppOptions {
        kill_grace_seconds: Some(1),
        ..AppOptions::default()
    })
    .await
}

fn pid_file(app: &TestApp, case: &str) -> PathBuf {
    app.data_dir.join(format!("daemon-{case}.pid"))
}

async fn daemon_job(app: &TestApp, case: &str, mode: &str, timeout: i64) -> i64 {
    app.write_script("daemon.sh", DAEMON_SCRIPT);
    let command = format!("daemon.sh {} {mode}", pid_file(app, case).display());
    app.create_job(
        &json!({"name": format!("daemon {case}"), "type": "EXTERNAL",
        "command": command, "repeatSchedule": "ONDEMAND", "timeoutSeconds": timeout}),
    )
    .await
}

#[tokio::test]
async fn a_daemon_started_by_a_run_ends_when_the_run_ends_by_itself() {
    let app = app().await;
    let job = daemon_job(&app, "exit", "exit", 600).await;
    let run_id = app.start_run(job, None).await;
    let run = app.wait_run(job, run_id).await;
    let daemon = Daemon(Some(read_pid(&pid_file(&app, "exit")).await));
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_gone(daemon.0.unwrap_or_default()).await;
}

#[tokio::test]
async fn a_daemon_started_by_a_run_ends_when_the_run_times_out() {
    let app = app().await;
    let job = daemon_job(&app, "timeout", "stay", 2).await;
    let run_id = app.start_run(job, None).await;
    let daemon = Daemon(Some(read_pid(&pid_file(&app, "timeout")).await));
    let pid = daemon.0.unwrap_or_default();
    assert!(is_our_sleep(pid), "the daemon runs while the run does");
    let run = app.wait_run(job, run_id).await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert!(
        run["message"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out"),
        "{run}"
    );
    assert_gone(pid).await;
}

#[tokio::test]
async fn a_daemon_started_by_a_run_ends_when_the_run_is_cancelled() {
    let app = app().await;
    let job = daemon_job(&app, "cancel", "stay", 600).await;
    let run_id = app.start_run(job, None).await;
    let daemon = Daemon(Some(read_pid(&pid_file(&app, "cancel")).await));
    let pid = daemon.0.unwrap_or_default();
    assert!(is_our_sleep(pid), "the daemon runs while the run does");
    app.cancel_run(job, run_id).await;
    let run = app.wait_run(job, run_id).await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert!(
        run["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cancelled"),
        "{run}"
    );
    assert_gone(pid).await;
}
