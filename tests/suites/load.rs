//! Load: 200 concurrent clients for 60 s (`LABCRON_LOAD_SECONDS` changes it) send a mix of reads
//! and run requests to the real binary while five jobs fire every second. Every request must
//! answer 200 — no 5xx, no 4xx, no connection error — and the server's resident memory at the end
//! must not be far above what it was after the warm-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::Mutex;

use crate::common::{location_run_id, start_server, write_script};

const CLIENTS: usize = 200;
const JOBS: usize = 20;
const WARMUP: Duration = Duration::from_secs(10);

fn duration() -> Duration {
    let seconds = std::env::var("LABCRON_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60u64);
    Duration::from_secs(seconds.max(1))
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    runs_requested: AtomicU64,
    failures: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_get_only_200s_and_memory_stays_flat() {
    let _heavy = crate::HEAVY.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    write_script(
        &data_dir.join("scripts"),
        "quick.sh",
        "#!/bin/sh\necho \"run $LABCRON_RUN_ID\"\n",
    );
    let server = start_server(&data_dir, &[]);
    let admin = server.admin().await;
    let mut jobs = Vec::new();
    for i in 0..JOBS {
        // Enough queue room that no run request is turned away while the executor catches up.
        jobs.push(
            admin
                .create_job(&json!({"name": format!("load {i}"), "type": "EXTERNAL",
                    "command": "quick.sh", "repeatSchedule": "ONDEMAND", "maxQueuedRuns": 100000, "rtArgsProvided": true}))
                .await,
        );
    }
    for i in 0..5 {
        admin
            .create_job(
                &json!({"name": format!("tick {i}"), "type": "EXTERNAL", "command": "quick.sh",
                "repeatSchedule": "CRON", "cronExpression": "* * * * * *"}),
            )
            .await;
    }
    let (_, user) = admin.create_user_api("loaduser", false).await;
    let seed_run = admin.start_run(jobs[0], None).await;
    admin.wait_run(jobs[0], seed_run).await;

    let length = duration();
    println!(
        "load suite: {CLIENTS} clients for {} s (LABCRON_LOAD_SECONDS)",
        length.as_secs()
    );
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let end = started + length;
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        // One connection pool per client, like separate programs.
        let api = if client % 10 == 9 {
            user.clone()
        } else {
            let mut api = admin.clone();
            api.client = crate::common::client();
            api
        };
        let is_admin = client % 10 != 9;
        let jobs = jobs.clone();
        let tally = tally.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(client as u64);
            let job = jobs[client % jobs.len()];
            let mut my_runs: Vec<i64> = vec![seed_run];
            while Instant::now() < end {
                let pick = rng.random_range(0..100);
                let (label, request) = if !is_admin {
                    // A non-admin sees no job here: its reads are its own and the shared ones.
                    match pick {
                        0..=49 => (
                            "jobs as user",
                            api.request(reqwest::Method::GET, "/scheduled-jobs"),
                        ),
                        50..=79 => ("users as user", api.request(reqwest::Method::GET, "/users")),
                        _ => (
                            "count as user",
                            api.request(reqwest::Method::GET, "/scheduled-jobs/count"),
                        ),
                    }
                } else {
                    let run = my_runs[rng.random_range(0..my_runs.len())];
                    let run_job = if run == seed_run { jobs[0] } else { job };
                    match pick {
                        0..=9 => (
                            "run request",
                            api.request(
                                reqwest::Method::POST,
                                &format!("/scheduled-jobs/{job}/runs"),
                            )
                            .json(&json!({"args": format!("from client {client}")})),
                        ),
                        10..=24 => (
                            "jobs list",
                            api.request(reqwest::Method::GET, "/scheduled-jobs?maxResults=20"),
                        ),
                        25..=34 => (
                            "job",
                            api.request(reqwest::Method::GET, &format!("/scheduled-jobs/{job}")),
                        ),
                        35..=54 => (
                            "runs list",
                            api.request(
                                reqwest::Method::GET,
                                &format!("/scheduled-jobs/{job}/runs?maxResults=20"),
                            ),
                        ),
                        55..=69 => (
                            "run",
                            api.request(
                                reqwest::Method::GET,
                                &format!("/scheduled-jobs/{run_job}/runs/{run}"),
                            ),
                        ),
                        70..=77 => (
                            "log",
                            api.request(
                                reqwest::Method::GET,
                                &format!("/scheduled-jobs/{run_job}/runs/{run}/log"),
                            ),
                        ),
                        78..=83 => (
                            "next runs",
                            api.request(
                                reqwest::Method::GET,
                                &format!("/scheduled-jobs/{job}/next-runs?count=3"),
                            ),
                        ),
                        84..=89 => (
                            "count",
                            api.request(
                                reqwest::Method::GET,
                                "/scheduled-jobs/count?type=EXTERNAL",
                            ),
                        ),
                        90..=94 => ("users", api.request(reqwest::Method::GET, "/users")),
                        _ => ("health", api.client.get(format!("{}/health", api.base))),
                    }
                };
                match request.send().await {
                    Ok(response) if response.status() == 200 => {
                        if label == "run request" {
                            tally.runs_requested.fetch_add(1, Ordering::Relaxed);
                            if let Some(id) = location_run_id(&response) {
                                my_runs.push(id);
                            }
                        }
                        match response.bytes().await {
                            Ok(_) => tally.ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                tally
                                    .failures
                                    .lock()
                                    .await
                                    .push(format!("{label}: body: {e}"));
                                0
                            }
                        };
                    }
                    Ok(response) => {
                        let status = response.status();
                        let body = response.text().await.unwrap_or_default();
                        tally
                            .failures
                            .lock()
                            .await
                            .push(format!("{label}: {status} {body}"));
                    }
                    Err(e) => tally.failures.lock().await.push(format!("{label}: {e}")),
                }
                // A little think time, different for each client.
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
            }
        }));
    }

    // Memory: sampled every second; the reference is the sample at the end of the warm-up.
    let mut samples = Vec::new();
    let mut threads = Vec::new();
    let mut after_warmup = None;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = server.rss_kib();
        samples.push(rss);
        threads.push(crate::common::status_field(server.pid(), "Threads:").unwrap_or(0));
        if after_warmup.is_none() && started.elapsed() >= WARMUP.min(length / 2) {
            after_warmup = Some(rss);
        }
    }
    for client in clients {
        client.await.expect("client task");
    }
    let at_end = server.rss_kib();
    let after_warmup = after_warmup.unwrap_or(samples.first().copied().unwrap_or(at_end));
    let failures = tally.failures.lock().await;
    let ok = tally.ok.load(Ordering::Relaxed);
    println!(
        "load suite: {ok} requests answered 200 ({:.0}/s), {} runs requested, {} failures; \
         RSS after warm-up {} KiB, at the end {} KiB, samples (KiB): {samples:?}; threads: {threads:?}",
        ok as f64 / length.as_secs_f64(),
        tally.runs_requested.load(Ordering::Relaxed),
        failures.len(),
        after_warmup,
        at_end,
    );
    assert!(
        failures.is_empty(),
        "{} requests did not answer 200; the first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 0, "no request was answered");
    // Flat: at most 25% (and never less than 16 MiB of slack, for the allocator's arenas) above
    // the level after the warm-up.
    let bound = after_warmup + (after_warmup / 4).max(16 * 1024);
    assert!(
        at_end <= bound,
        "resident memory grew from {after_warmup} KiB after the warm-up to {at_end} KiB (bound {bound} KiB)"
    );
    let log = server.log_text();
    assert!(!log.contains("panicked"), "the server panicked under load");
    assert_eq!(crate::common::health_status(server.port), Some(200));
    server.terminate(Duration::from_secs(60));
}
