//! Crash: the real binary is SIGKILLed at random moments (seeded; the seed is printed, and
//! `LABCRON_CRASH_SEED` replays one) under a steady load of on-demand runs and seconds-resolution
//! CRON jobs, five times. After each restart: every run whose POST got 200 is in the ledger, none
//! is left IN_PROGRESS from before the restart, no (job, scheduled instant) has two runs, no
//! process of a finished run lives on, and `PRAGMA integrity_check` is ok.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::json;

use crate::common::ledger::{sql_i64, sql_rows};
use crate::common::{
    integrity_check, location_run_id, on_postgres, pid_alive, process_env, start_server,
    write_script,
};

const CRASHES: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_accepted_run_and_leaves_no_orphan() {
    let _heavy = crate::HEAVY.lock().await;
    let seed: u64 = std::env::var("LABCRON_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    crate::common::announce(&format!(
        "crash suite seed: {seed} (replay with LABCRON_CRASH_SEED={seed})"
    ));
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let pids = dir.path().join("pids");
    // `long` runs leave a background child behind them and wait: they are what a crash interrupts.
    write_script(
        &data_dir.join("scripts"),
        "work.sh",
        &format!(
            "#!/bin/sh\necho \"$LABCRON_RUN_ID $$\" >> {pids}\n\
             if [ \"$1\" = long ]; then sleep 8 & echo \"$LABCRON_RUN_ID $!\" >> {pids}; wait; else sleep 0.05; fi\n",
            pids = pids.display()
        ),
    );
    // A short shutdown grace: the last stop should not wait for `long` runs.
    let flags = [
        "--runs-shutdown-grace-seconds",
        "1",
        "--runs-kill-grace-seconds",
        "1",
    ];

    let mut server = start_server(&data_dir, &flags);
    let admin = server.admin().await;
    let mut on_demand = Vec::new();
    for i in 0..3 {
        on_demand.push(
            admin
                .create_job(
                    &json!({"name": format!("on demand {i}"), "type": "EXTERNAL",
                    "command": "work.sh", "repeatSchedule": "ONDEMAND", "maxQueuedRuns": 1000, "rtArgsProvided": true}),
                )
                .await,
        );
    }
    for i in 0..3 {
        admin
            .create_job(
                &json!({"name": format!("every second {i}"), "type": "EXTERNAL",
                "command": "work.sh", "fixedArgs": "short", "repeatSchedule": "CRON",
                "cronExpression": "*/1 * * * * *"}),
            )
            .await;
    }

    let accepted: Arc<Mutex<HashSet<i64>>> = Arc::default();
    for crash in 1..=CRASHES {
        let token = admin.token.clone();
        let base = server.base.clone();
        let mut clients = Vec::new();
        for client in 0..4u64 {
            let (accepted, jobs, token, base) = (
                accepted.clone(),
                on_demand.clone(),
                token.clone(),
                base.clone(),
            );
            let mut client_rng = StdRng::seed_from_u64(seed ^ (crash as u64 * 1000 + client));
            clients.push(tokio::spawn(async move {
                let http = crate::common::client();
                loop {
                    let job = jobs[client_rng.random_range(0..jobs.len())];
                    let args = if client_rng.random_ratio(1, 10) {
                        "long"
                    } else {
                        "short"
                    };
                    let sent = http
                        .post(format!("{base}/rest/ng/scheduled-jobs/{job}/runs"))
                        .header("X-OS-API-TOKEN", &token)
                        .json(&json!({"args": args}))
                        .send()
                        .await;
                    // Only a 200 is an accepted run; a crash may cut any request short.
                    if let Ok(response) = sent
                        && response.status() == 200
                        && let Some(id) = location_run_id(&response)
                    {
                        accepted.lock().expect("accepted").insert(id);
                    }
                    let pause = client_rng.random_range(20..120);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }));
        }
        let before_kill = rng.random_range(1_500..4_000);
        tokio::time::sleep(Duration::from_millis(before_kill)).await;
        // What the recovery will have to clean up (shows the process check sees processes at all).
        let alive_at_kill = live_run_processes(&pids, &data_dir).len();
        server.kill();
        for client in &clients {
            client.abort();
        }
        for client in clients {
            let _ = client.await;
        }
        let restarted_at = now_ms();
        server = start_server(&data_dir, &flags);
        check_after_restart(&data_dir, &pids, &accepted, restarted_at, crash, seed).await;
        println!(
            "crash {crash}: killed after {before_kill} ms with {alive_at_kill} run processes alive; \
             {} accepted runs so far, all in the ledger",
            accepted.lock().expect("accepted").len()
        );
    }

    // A clean stop at the end: the executor stops its runs, and nothing of any run lives on.
    let admin = server.admin().await;
    let health = admin
        .client
        .get(format!("{}/health", admin.base))
        .send()
        .await;
    assert_eq!(health.expect("health").status(), 200);
    admin
        .ok(Method::GET, "/scheduled-jobs?maxResults=10", None)
        .await;
    let log = server.log.clone();
    let stopped_at = now_ms();
    server.terminate(Duration::from_secs(60));
    let leftovers = live_run_processes(&pids, &data_dir);
    assert!(
        leftovers.is_empty(),
        "processes outlive a stopped server (seed {seed}): {leftovers:?}"
    );
    assert_ledger_sound(&data_dir, &format!("seed {seed}"));
    let recorded = std::fs::read_to_string(&pids)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(
        recorded > 0,
        "no run recorded its process: the orphan check saw nothing"
    );
    let interrupted = sql_i64(
        &data_dir,
        "SELECT count(*) FROM runs WHERE message = 'interrupted by server restart'",
    );
    println!("{recorded} run processes recorded; {interrupted} runs interrupted by the crashes");
    let stuck = sql_rows(
        &data_dir,
        "SELECT id, job_id, started_at, queued_at FROM runs WHERE status = 'IN_PROGRESS'",
    );
    assert!(
        stuck.is_empty(),
        "runs left IN_PROGRESS after a clean stop at {stopped_at} (seed {seed}): {stuck:?}\n{}",
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

async fn check_after_restart(
    data_dir: &std::path::Path,
    pids: &std::path::Path,
    accepted: &Mutex<HashSet<i64>>,
    restarted_at: i64,
    crash: usize,
    seed: u64,
) {
    let in_ledger: HashSet<i64> = sql_rows(data_dir, "SELECT id FROM runs")
        .into_iter()
        .map(|row| number(&row[0]))
        .collect();
    let accepted: Vec<i64> = accepted.lock().expect("accepted").iter().copied().collect();
    let lost: Vec<&i64> = accepted
        .iter()
        .filter(|id| !in_ledger.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "crash {crash} (seed {seed}): accepted runs missing from the ledger: {lost:?}"
    );
    // Recovery runs before the server listens: anything IN_PROGRESS now was started after it.
    let stuck = sql_rows(
        data_dir,
        &format!(
            "SELECT id, started_at FROM runs WHERE status = 'IN_PROGRESS' \
             AND (started_at IS NULL OR started_at < {restarted_at})"
        ),
    );
    assert!(
        stuck.is_empty(),
        "crash {crash} (seed {seed}): runs still IN_PROGRESS from before the restart: {stuck:?}"
    );
    let duplicates = sql_rows(
        data_dir,
        "SELECT job_id, scheduled_for, count(*) FROM runs WHERE scheduled_for IS NOT NULL
         GROUP BY job_id, scheduled_for HAVING count(*) > 1",
    );
    assert!(
        duplicates.is_empty(),
        "crash {crash} (seed {seed}): two runs for one scheduled instant: {duplicates:?}"
    );
    let scheduled = sql_i64(
        data_dir,
        "SELECT count(*) FROM runs WHERE run_trigger = 'SCHEDULED'",
    );
    assert!(scheduled > 0, "the CRON jobs never fired (seed {seed})");
    // Processes of runs that are over (finished, or failed by the recovery) must be gone. A run's
    // group is killed before its end is recorded, so give a killed process a moment to vanish.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let orphans = orphans(pids, data_dir);
        if orphans.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "crash {crash} (seed {seed}): processes of finished runs still alive: {orphans:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ledger_sound(data_dir, &format!("crash {crash} (seed {seed})"));
}

/// The ledger is sound: SQLite's `PRAGMA integrity_check` answers ok; on PostgreSQL the
/// constraints are the database's own and always hold, so what is checked is that the one
/// run per job IN_PROGRESS (its partial unique index) and every run's job are there.
fn assert_ledger_sound(data_dir: &std::path::Path, when: &str) {
    if on_postgres() {
        let doubled = sql_i64(
            data_dir,
            "SELECT count(*) FROM (SELECT job_id FROM runs WHERE status = 'IN_PROGRESS' \
             GROUP BY job_id HAVING count(*) > 1) AS d",
        );
        assert_eq!(doubled, 0, "{when}: a job with two runs IN_PROGRESS");
        let orphaned = sql_i64(
            data_dir,
            "SELECT count(*) FROM runs r WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = r.job_id)",
        );
        assert_eq!(orphaned, 0, "{when}: runs of no job");
    } else {
        assert_eq!(integrity_check(data_dir), "ok", "{when}");
    }
}

/// A ledger value that must be a number.
fn number(value: &Option<String>) -> i64 {
    value
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a number: {value:?}"))
}

/// Recorded (run, pid) pairs whose process is still that run's and alive.
fn live_run_processes(pids: &std::path::Path, data_dir: &std::path::Path) -> Vec<(i64, i32)> {
    let text = std::fs::read_to_string(pids).unwrap_or_default();
    let marker = format!(
        "LABCRON_RESULT_DIR={}",
        data_dir.canonicalize().expect("canonical").display()
    );
    text.lines()
        .filter_map(|line| {
            let (run, pid) = line.split_once(' ')?;
            Some((run.parse().ok()?, pid.trim().parse().ok()?))
        })
        .filter(|&(run, pid): &(i64, i32)| {
            // The pid may have been reused since: it counts only while it is still this run's.
            pid_alive(pid)
                && process_env(pid)
                    .iter()
                    .any(|v| v == &format!("LABCRON_RUN_ID={run}"))
                && process_env(pid).iter().any(|v| v.starts_with(&marker))
        })
        .collect()
}

/// Live processes of runs the ledger says are over.
fn orphans(pids: &std::path::Path, data_dir: &std::path::Path) -> Vec<(i64, i32, String)> {
    let live = live_run_processes(pids, data_dir);
    let mut status_of: HashMap<i64, String> = HashMap::new();
    live.into_iter()
        .filter_map(|(run, pid)| {
            let status = status_of
                .entry(run)
                .or_insert_with(|| {
                    sql_rows(
                        data_dir,
                        &format!("SELECT status FROM runs WHERE id = {run}"),
                    )
                    .into_iter()
                    .next()
                    .and_then(|row| row.into_iter().next().flatten())
                    .unwrap_or_else(|| "MISSING".into())
                })
                .clone();
            matches!(status.as_str(), "SUCCEEDED" | "FAILED" | "MISSING")
                .then_some((run, pid, status))
        })
        .collect()
}
