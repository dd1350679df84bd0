//! The real binary, killed with SIGKILL while runs are queued and running, then started again:
//! every accepted run is in the ledger, the interrupted one is FAILED "interrupted by server
//! restart", its processes are gone, and the queued ones still run, in order.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_PASSWORD, write_script};

/// A running `labcron` process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// Every line the server has logged so far (stderr).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_server(data_dir: &Path) -> Server {
    start_server_with(data_dir, &[])
}

/// Starts the binary on port 0 with extra arguments and waits until it listens.
pub fn start_server_with(data_dir: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_labcron"))
        .args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("LABCRON_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start labcron");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let port = loop {
        let line = lines
            .next()
            .expect("labcron exited before listening")
            .expect("read log");
        log.lock().unwrap().push(line.clone());
        if let Some(rest) = line.split("labcron listening port=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u16>()
                .expect("port");
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            kept.lock().unwrap().push(line);
        }
    });
    Server {
        child,
        base: format!("http://127.0.0.1:{port}/rest/ng"),
        log,
    }
}

fn pid_alive(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    !status.is_empty()
        && !status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
}

pub async fn sign_in(client: &reqwest::Client, server: &Server) -> String {
    let body: Value = client
        .post(format!("{}/sessions", server.base))
        .json(&json!({"loginName": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["token"].as_str().unwrap().to_string()
}

async fn get_run(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    job: i64,
    run: i64,
) -> Value {
    let response = client
        .get(format!(
            "{}/scheduled-jobs/{job}/runs/{run}?waitSeconds=5",
            server.base
        ))
        .header("X-OS-API-TOKEN", token)
        .send()
        .await
        .unwrap();
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
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    let server = start_server(&data_dir);
    let token = sign_in(&client, &server).await;
    let job: Value = client
        .post(format!("{}/scheduled-jobs", server.base))
        .header("X-OS-API-TOKEN", &token)
        .json(&json!({"name": "survivor", "type": "EXTERNAL", "command": "work.sh", "repeatSchedule": "ONDEMAND", "rtArgsProvided": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = job["id"].as_i64().unwrap();
    let mut runs = Vec::new();
    for args in ["long", "short-1", "short-2"] {
        let response = client
            .post(format!(
                "{}/scheduled-jobs/{job}/runs?response=run",
                server.base
            ))
            .header("X-OS-API-TOKEN", &token)
            .json(&json!({"args": args}))
            .send()
            .await
            .unwrap();
        let run: Value = response.json().await.unwrap();
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
    assert_eq!(
        get_run(&client, &server, &token, job, runs[1]).await["status"],
        "QUEUED"
    );

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
    let token = sign_in(&client, &server).await;
    let interrupted = get_run(&client, &server, &token, job, runs[0]).await;
    assert_eq!(interrupted["status"], "FAILED");
    assert_eq!(interrupted["message"], "interrupted by server restart");
    for run in &runs[1..] {
        let mut finished = get_run(&client, &server, &token, job, *run).await;
        for _ in 0..10 {
            if finished["status"] == "SUCCEEDED" {
                break;
            }
            finished = get_run(&client, &server, &token, job, *run).await;
        }
        assert_eq!(finished["status"], "SUCCEEDED", "{finished}");
    }
    assert_eq!(
        std::fs::read_to_string(&trace).unwrap(),
        "short-1\nshort-2\n"
    );
    drop(server);

    let conn = rusqlite::Connection::open(data_dir.join("labcron.db")).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let total: i64 = conn
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(total, 3);
}
