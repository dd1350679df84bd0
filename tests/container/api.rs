//! A small client of labcron's REST API for the image tests: sign in, jobs, runs, result files,
//! all through the port a container published on 127.0.0.1.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::engine::Container;

pub struct Api {
    pub base: String,
    client: reqwest::Client,
    token: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .expect("http client")
}

/// Polls `/health` on `port` until it answers 200 (generous deadline: the machine is busy);
/// fails early, with the container's log, when the container stops.
pub async fn wait_for_health(container: &Container, port: u16) -> Value {
    let url = format!("http://127.0.0.1:{port}/health");
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(response) = client.get(&url).send().await
            && response.status() == StatusCode::OK
        {
            return response.json().await.expect("health JSON");
        }
        assert!(
            container.is_running(),
            "{} stopped before /health answered:\n{}",
            container.name,
            container.logs()
        );
        assert!(
            Instant::now() < deadline,
            "/health on {port} never answered 200:\n{}",
            container.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `POST /sessions`: the status, and the token on success.
pub async fn sign_in_status(port: u16, password: &str) -> (StatusCode, Option<String>) {
    let response = client()
        .post(format!("http://127.0.0.1:{port}/rest/ng/sessions"))
        .json(&json!({"loginName": "admin", "password": password}))
        .send()
        .await
        .expect("sign in");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["token"].as_str().map(str::to_string))
}

impl Api {
    pub async fn sign_in(port: u16, password: &str) -> Api {
        let (status, token) = sign_in_status(port, password).await;
        assert_eq!(status, StatusCode::OK, "admin could not sign in");
        Api {
            base: format!("http://127.0.0.1:{port}/rest/ng"),
            client: client(),
            token: token.expect("a token"),
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header("X-OS-API-TOKEN", &self.token)
            .send()
            .await
            .expect("GET")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.expect("JSON")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Value {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("X-OS-API-TOKEN", &self.token)
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = response.status();
        let text = response.text().await.expect("body");
        assert_eq!(status, StatusCode::OK, "POST {path}: {text}");
        serde_json::from_str(&text).expect("JSON")
    }

    /// An on-demand EXTERNAL job running `command` from the scripts directory.
    pub async fn external_job(&self, name: &str, command: &str) -> Value {
        self.post_json(
            "/scheduled-jobs",
            &json!({"name": name, "type": "EXTERNAL", "command": command,
                    "repeatSchedule": "ONDEMAND", "timezone": "Europe/Berlin"}),
        )
        .await
    }

    /// Queues a run of `job` and returns its id.
    pub async fn queue_run(&self, job: i64) -> i64 {
        let run = self
            .post_json(
                &format!("/scheduled-jobs/{job}/runs?response=run"),
                &json!({}),
            )
            .await;
        run["id"].as_i64().expect("a run id")
    }

    pub async fn run(&self, job: i64, run: i64) -> Value {
        self.get_json(&format!("/scheduled-jobs/{job}/runs/{run}"))
            .await
    }

    /// Waits (long-polling, up to a few minutes) until the run has ended.
    pub async fn finished_run(&self, job: i64, run: i64) -> Value {
        for _ in 0..5 {
            let body = self
                .get_json(&format!("/scheduled-jobs/{job}/runs/{run}?waitSeconds=60"))
                .await;
            if matches!(body["status"].as_str(), Some("SUCCEEDED" | "FAILED")) {
                return body;
            }
        }
        panic!("run {run} of job {job} did not end in five minutes");
    }

    /// Polls until the run is IN_PROGRESS (its program has started).
    pub async fn wait_in_progress(&self, job: i64, run: i64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let body = self.run(job, run).await;
            match body["status"].as_str() {
                Some("IN_PROGRESS") => return,
                Some("QUEUED") => {}
                other => panic!("run {run} is {other:?} before it was seen running: {body}"),
            }
            assert!(Instant::now() < deadline, "run {run} never started");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn result_file(&self, job: i64, run: i64) -> String {
        let path = format!("/scheduled-jobs/{job}/runs/{run}/result-file");
        let response = self.get(&path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.expect("result file")
    }
}
