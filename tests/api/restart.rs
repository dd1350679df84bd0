//! The real binary, killed with SIGKILL while runs are queued and running, then started again:
//! every accepted run is in the ledger, the interrupted one is FAILED "interrupted by server
//! restart", its processes are gone, and the queued ones still run, in order.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Api, Launch, Server, integrity_check, pid_alive, write_script};

/// Starts the binary on `data_dir` (port 0) and waits until it answers.
pub fn start_server(data_dir: &Path) -> Server {
    Launch::new(data_dir).start()
}

async fn get_run(api: &Api, job: i64, run: i64) -> Value {
    let response = api
        .get(&format!("/scheduled-jobs/{job}/runs/{run}?waitSeconds=5"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_loses_no_run_and_leaves_no_child() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let pids = dir.path().join("pids");
    let trace = dir.path().join("trace");
    write_script(
        &data_dir.join("scripts"),
        "work.sh",
        &format!(
            "#!/bin/sh\nif [ \"$1\" = long ]; then sleep 300 & echo $! >> {pids}; echo $$ >> {pids}; wait; fi\necho \"$1\" >> {trace}\n",
            pids = pids.display(),
            trace = trace.display()
        ),
    );

    let server = start_server(&data_dir);
    let api = server.admin().await;
    let job = api
        .create_job(&json!({"name": "survivor", "type": "EXTERNAL", "command": "work.sh", "repeatSchedule": "ONDEMAND", "rtArgsProvided": true}))
        .await;
    let mut runs = Vec::new();
    for args in ["long", "short-1", "short-2"] {
        let run = api
            .ok(
                Method::POST,
                &format!("/scheduled-jobs/{job}/runs?response=run"),
                Some(&json!({"args": args})),
            )
            .await;
        runs.push(run["id"].as_i64().unwrap());
    }
    // Wait until the long run's processes exist.
    let deadline = Instant::now() + Duration::from_secs(60);
    let child_pids: Vec<i32> = loop {
        let text = std::fs::read_to_string(&pids).unwrap_or_default();
        let found: Vec<i32> = text.lines().filter_map(|l| l.parse().ok()).collect();
        if found.len() == 2 {
            break found;
        }
        assert!(Instant::now() < deadline, "the long run never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(get_run(&api, job, runs[1]).await["status"], "QUEUED");

    drop(server); // SIGKILL
    assert!(
        child_pids.iter().any(|p| pid_alive(*p)),
        "the run's processes outlive a SIGKILLed server"
    );

    let server = start_server(&data_dir);
    for pid in &child_pids {
        assert!(
            !pid_alive(*pid),
            "process {pid} from before the crash is still running"
        );
    }
    let api = server.admin().await;
    let interrupted = get_run(&api, job, runs[0]).await;
    assert_eq!(interrupted["status"], "FAILED");
    assert_eq!(interrupted["message"], "interrupted by server restart");
    for run in &runs[1..] {
        let mut finished = get_run(&api, job, *run).await;
        for _ in 0..10 {
            if finished["status"] == "SUCCEEDED" {
                break;
            }
            finished = get_run(&api, job, *run).await;
        }
        assert_eq!(finished["status"], "SUCCEEDED", "{finished}");
    }
    assert_eq!(
        std::fs::read_to_string(&trace).unwrap(),
        "short-1\nshort-2\n"
    );
    drop(server);

    // PostgreSQL keeps its own integrity; SQLite's file is checked after the kill.
    if !crate::common::on_postgres() {
        assert_eq!(integrity_check(&data_dir), "ok");
    }
    let total = crate::common::ledger::sql_i64(&data_dir, "SELECT count(*) FROM runs");
    assert_eq!(total, 3);
}
