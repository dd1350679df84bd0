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

/// Finding 4 of issue #11: scripts that fight back. `$1`: a file for the run's marker (and, in
/// `$1.cgroup`, the script's cgroup); `$2`: `stay` to keep running until stopped; `$3`: the
/// attack, `forker` (a process in a session of its own that forks continuously, each generation
/// exiting at once, named `forker-$4`), `scatter` (twenty double forks with `setsid`, each
/// leaving a `sleep 1003`) or `lone` (one daemon, `lone-$4`, that ends by itself after 2 s). The forker is bounded (6000 generations, 5 ms apart: it stops by
/// itself within a minute) so that a failing test cannot take the machine down.
const ATTACK_SCRIPT: &str = r#"#!/bin/sh
cat /proc/self/cgroup > "$1.cgroup"
printf 'LABCRON_RESULT_DIR=%s' "$LABCRON_RESULT_DIR" > "$1.tmp"; mv "$1.tmp" "$1"
if [ "$3" = forker ]; then
  perl -e 'use POSIX; $0 = "forker-$ARGV[0]"; setsid();
    for (1..6000) { my $p = fork(); exit 1 unless defined $p; exit 0 if $p;
      select(undef, undef, undef, 0.005) }' "$4" </dev/null >/dev/null 2>&1 &
  sleep 0.5
elif [ "$3" = lone ]; then
  ( setsid perl -e '$0 = "lone-$ARGV[0]"; select(undef, undef, undef, 2)' "$4" </dev/null >/dev/null 2>&1 & )
else
  for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    ( setsid sh -c 'sleep 1003 & exit' </dev/null >/dev/null 2>&1 & )
  done
  sleep 0.2
fi
if [ "$2" = stay ]; then sleep 300; fi
exit 0
"#;

/// Every pid whose environment holds `marker` (an exact `NAME=value` entry).
fn marked(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
        })
        .collect()
}

/// Zombies whose parent is this process (the server runs in it) and whose name is `name`.
fn our_zombies(name: &str) -> Vec<i32> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let Some((head, rest)) = stat.rsplit_once(')') else {
                    return false;
                };
                let fields: Vec<&str> = rest.split_whitespace().collect();
                head.ends_with(&format!("({name}"))
                    && fields.first() == Some(&"Z")
                    && fields.get(1) == Some(&me.as_str())
            })
        })
        .collect()
}

/// Pids of live processes (not zombies) named `name`.
fn alive_named(name: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let Some((head, rest)) = stat.rsplit_once(')') else {
                    return false;
                };
                head.ends_with(&format!("({name}")) && rest.split_whitespace().next() != Some("Z")
            })
        })
        .collect()
}

/// Kills whatever still carries the marker when a test fails, so a failure leaves nothing
/// behind either (bounded: the forker stops by itself anyway).
struct Marked(String);

impl Drop for Marked {
    fn drop(&mut self) {
        for _ in 0..200 {
            let pids = marked(&self.0);
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Whether this process may make a child cgroup of its own (cgroup v2): then the server puts
/// each run in one.
fn cgroups_here() -> bool {
    let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
        return false;
    };
    let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
        return false;
    };
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            return false;
        };
        if fields.get(dash + 1) != Some(&"cgroup2") || fields.get(3) != Some(&"/") {
            return false;
        }
        let probe = std::path::Path::new(fields[4])
            .join(path.trim_start_matches('/'))
            .join(format!("labcron-test-probe-{}", std::process::id()));
        let made = std::fs::create_dir(&probe).is_ok();
        let _ = std::fs::remove_dir(&probe);
        made
    })
}

fn no_cgroups(settings: &mut labcron::config::Settings) {
    settings.runs.cgroups = false;
}

/// Runs the attack and ends the run as `end` says (`exit`, `timeout`, `cancel`); then nothing
/// that carries the run's marker may be left, nor a zombie of it under the server.
async fn attack(case: &str, attack: &str, end: &str, cgroups: bool) {
    let app = spawn_app_with(AppOptions {
        kill_grace_seconds: Some(1),
        configure: if cgroups { None } else { Some(no_cgroups) },
        ..AppOptions::default()
    })
    .await;
    app.write_script("attack.sh", ATTACK_SCRIPT);
    let file = app.data_dir.join(format!("attack-{case}.marker"));
    let mode = if end == "exit" { "exit" } else { "stay" };
    let timeout = if end == "timeout" { 3 } else { 600 };
    let command = format!("attack.sh {} {mode} {attack} {case}", file.display());
    let job = app
        .create_job(
            &json!({"name": format!("attack {case}"), "type": "EXTERNAL",
            "command": command, "repeatSchedule": "ONDEMAND", "timeoutSeconds": timeout}),
        )
        .await;
    let run_id = app.start_run(job, None).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let marker = loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            break text;
        }
        assert!(Instant::now() < deadline, "the script wrote no marker");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _cleanup = Marked(marker.clone());
    if end == "cancel" {
        // The attack is under way before the run is stopped.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !marked(&marker).is_empty(),
            "the attack runs while the run does"
        );
        app.cancel_run(job, run_id).await;
    }
    let run = app.wait_run(job, run_id).await;
    let expected = match end {
        "exit" => "SUCCEEDED",
        _ => "FAILED",
    };
    assert_eq!(run["status"], expected, "{run}");
    let left = marked(&marker);
    assert!(
        left.is_empty(),
        "processes of run {run_id} outlived it: {left:?}"
    );
    let name = if attack == "forker" {
        format!("forker-{case}")
    } else {
        "sleep".to_string()
    };
    // Zombies of the run are reaped by the server soon after (not a timing assert: generous).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let zombies = our_zombies(&name);
        if zombies.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "zombies of run {run_id} left under the server: {zombies:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And nothing came back meanwhile (a forker that outran the search would be seen here).
    for _ in 0..10 {
        let left = marked(&marker);
        assert!(
            left.is_empty(),
            "processes of run {run_id} came back: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cgroup = std::fs::read_to_string(format!("{}.cgroup", file.display())).unwrap_or_default();
    let in_run_cgroup = cgroup
        .lines()
        .any(|l| l.starts_with("0::") && l.contains("labcron-run-"));
    if cgroups && cgroups_here() {
        assert!(in_run_cgroup, "the run had no cgroup of its own: {cgroup}");
    } else {
        assert!(
            !in_run_cgroup,
            "the run had a cgroup with cgroups off: {cgroup}"
        );
    }
}

#[tokio::test]
async fn a_continuous_forker_in_its_own_session_ends_when_the_run_ends_by_itself() {
    attack("fx", "forker", "exit", false).await;
}

#[tokio::test]
async fn a_continuous_forker_in_its_own_session_ends_when_the_run_times_out() {
    attack("ft", "forker", "timeout", false).await;
}

#[tokio::test]
async fn a_continuous_forker_in_its_own_session_ends_when_the_run_is_cancelled() {
    attack("fc", "forker", "cancel", false).await;
}

#[tokio::test]
async fn a_continuous_forker_in_a_run_cgroup_ends_when_the_run_ends_by_itself() {
    attack("gx", "forker", "exit", true).await;
}

#[tokio::test]
async fn twenty_double_forks_with_setsid_end_when_the_run_ends_by_itself() {
    attack("sx", "scatter", "exit", false).await;
}

#[tokio::test]
async fn twenty_double_forks_with_setsid_in_a_run_cgroup_end_when_the_run_is_cancelled() {
    attack("gc", "scatter", "cancel", true).await;
}

/// An orphan the server adopted that ends by itself while its run goes on is reaped then, not
/// left a zombie until the run ends.
#[tokio::test]
async fn an_adopted_daemon_that_ends_is_reaped_while_its_run_goes_on() {
    let app = spawn_app_with(AppOptions {
        kill_grace_seconds: Some(1),
        configure: Some(no_cgroups),
        ..AppOptions::default()
    })
    .await;
    app.write_script("attack.sh", ATTACK_SCRIPT);
    let file = app.data_dir.join("attack-lone.marker");
    let command = format!("attack.sh {} stay lone lr", file.display());
    let job = app
        .create_job(&json!({"name": "lone", "type": "EXTERNAL",
            "command": command, "repeatSchedule": "ONDEMAND", "timeoutSeconds": 600}))
        .await;
    let run_id = app.start_run(job, None).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let marker = loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            break text;
        }
        assert!(Instant::now() < deadline, "the script wrote no marker");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _cleanup = Marked(marker.clone());
    // The daemon runs, then ends by itself; then no zombie of it is left, while the run runs on.
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive_named("lone-lr").is_empty() {
        assert!(Instant::now() < deadline, "the daemon never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alive = alive_named("lone-lr");
        let zombies = our_zombies("lone-lr");
        if alive.is_empty() && zombies.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon's zombie was not reaped: {zombies:?} (alive: {alive:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = app
        .ok(
            reqwest::Method::GET,
            &format!("/scheduled-jobs/{job}/runs/{run_id}"),
            None,
        )
        .await;
    assert_eq!(run["status"], "IN_PROGRESS", "{run}");
    app.cancel_run(job, run_id).await;
    let run = app.wait_run(job, run_id).await;
    assert_eq!(run["status"], "FAILED", "{run}");
}
