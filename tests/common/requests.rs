//! The one request-helper API: `Api`, a client of the API under `/rest/ng` with a session token
//! (what `TestApp` and a binary `Server` hand out), its use cases (users, jobs, runs), the
//! contract's checks (`ok_json`: 200 and JSON; `error_codes`: the status and a JSON array of
//! `{code, message}`), the clients themselves (`client`, and `fresh_connections` for tests that
//! block their runtime, e.g. on the CLI, while a server runs), and `raw_request` for bytes sent
//! exactly as written.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

/// How long one request may take: generous, the machine may be busy.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `wait_run` waits for a run to finish.
pub const RUN_DEADLINE: Duration = Duration::from_secs(180);

/// A client with keep-alive connections.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("client")
}

/// A client that opens a connection per request. Needed when the test blocks its runtime (the
/// CLI run with `std::process::Command`) while a server runs: the server closes idle keep-alive
/// connections meanwhile, unseen by the pool, and the next request would race that close.
pub fn fresh_connections() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// A client of the API under `/rest/ng` at `base` (`http://127.0.0.1:<port>`), signed in with
/// `token` (empty: not signed in).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub token: String,
}

impl Api {
    /// A client of `base`, not signed in.
    pub fn new(base: &str, client: reqwest::Client) -> Api {
        Api {
            base: base.to_string(),
            client,
            token: String::new(),
        }
    }

    /// Signs in to `base` with a new client (panics when sign-in fails).
    pub async fn signed_in(base: &str, login: &str, password: &str) -> Api {
        Api::new(base, client()).as_user(login, password).await
    }

    /// The same server and client, signed in as another user.
    pub async fn as_user(&self, login: &str, password: &str) -> Api {
        let token = self.sign_in(login, password).await;
        Api {
            token,
            ..self.clone()
        }
    }

    /// The same server and token with another client.
    pub fn with_client(&self, client: reqwest::Client) -> Api {
        Api {
            client,
            ..self.clone()
        }
    }

    /// Signs in and returns the token (panics when sign-in fails).
    pub async fn sign_in(&self, login: &str, password: &str) -> String {
        let session = self.session(login, password).await;
        session["token"].as_str().expect("token").to_string()
    }

    /// Signs in and returns the whole answer (the user and the token); panics when sign-in fails.
    pub async fn session(&self, login: &str, password: &str) -> Value {
        let response = self
            .client
            .post(self.url("/sessions"))
            .json(&json!({"loginName": login, "password": password}))
            .send()
            .await
            .expect("sign in");
        let status = response.status();
        let text = response.text().await.expect("sign-in body");
        assert_eq!(status, StatusCode::OK, "sign-in of {login} failed: {text}");
        serde_json::from_str(&text).expect("sign-in JSON")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/rest/ng{path}", self.base)
    }

    /// A request to `/rest/ng<path>` signed in with `token`.
    pub fn request_as(&self, token: &str, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("X-OS-API-TOKEN", token)
    }

    /// Sends a request to `/rest/ng<path>` signed in with `token`, with `body` as JSON if given.
    pub async fn send_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self.request_as(token, method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request")
    }

    /// A request to `/rest/ng<path>` with this client's token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_as(&self.token, method, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path)
            .send()
            .await
            .expect("request")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.request(Method::PUT, path)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path)
            .send()
            .await
            .expect("request")
    }

    /// A request that must answer 200 with JSON; returns the body.
    pub async fn ok(&self, method: Method, path: &str, body: Option<&Value>) -> Value {
        let mut request = self.request(method.clone(), path);
        if let Some(body) = body {
            request = request.json(body);
        }
        ok_json(request.send().await.expect("request")).await
    }

    /// Creates a user (as this client) with the password `<login>-password`; returns (id, token).
    pub async fn create_user(&self, login: &str, admin: bool) -> (i64, String) {
        let (id, user) = self.create_user_api(login, admin).await;
        (id, user.token)
    }

    /// Like `create_user`, but returns a client signed in as the new user.
    pub async fn create_user_api(&self, login: &str, admin: bool) -> (i64, Api) {
        let password = format!("{login}-password");
        let created = self
            .ok(
                Method::POST,
                "/users",
                Some(&json!({"loginName": login, "password": password, "firstName": login,
                    "lastName": "Tester", "emailAddress": format!("{login}@lab.example"), "admin": admin})),
            )
            .await;
        let user = self.as_user(login, &password).await;
        (created["id"].as_i64().expect("user id"), user)
    }

    /// Creates a job and returns its id.
    pub async fn create_job(&self, body: &Value) -> i64 {
        self.ok(Method::POST, "/scheduled-jobs", Some(body)).await["id"]
            .as_i64()
            .expect("job id")
    }

    /// Creates an on-demand EXTERNAL job for `command` and returns its id.
    pub async fn create_external_job(&self, name: &str, command: &str) -> i64 {
        self.create_job(&json!({"name": name, "type": "EXTERNAL", "command": command, "repeatSchedule": "ONDEMAND"}))
            .await
    }

    /// Queues a run and returns its id (read from the Location header).
    pub async fn start_run(&self, job_id: i64, args: Option<&str>) -> i64 {
        let body = args.map_or_else(|| json!({}), |a| json!({"args": a}));
        let response = self
            .post(&format!("/scheduled-jobs/{job_id}/runs"), &body)
            .await;
        let status = response.status();
        let id = location_run_id(&response);
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "run request failed: {text}");
        id.expect("run id in Location")
    }

    /// A run's log, as text.
    pub async fn run_log(&self, job_id: i64, run_id: i64) -> String {
        self.get(&format!("/scheduled-jobs/{job_id}/runs/{run_id}/log"))
            .await
            .text()
            .await
            .unwrap()
    }

    /// Waits (long-polling) until the run has finished and returns it.
    pub async fn wait_run(&self, job_id: i64, run_id: i64) -> Value {
        let deadline = Instant::now() + RUN_DEADLINE;
        loop {
            let run = self
                .ok(
                    Method::GET,
                    &format!("/scheduled-jobs/{job_id}/runs/{run_id}?waitSeconds=10"),
                    None,
                )
                .await;
            if matches!(run["status"].as_str(), Some("SUCCEEDED" | "FAILED")) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} did not finish in {RUN_DEADLINE:?}: {run}"
            );
        }
    }

    /// Queues a run, waits until it has finished and returns it.
    pub async fn run_to_end(&self, job_id: i64, args: Option<&str>) -> Value {
        let run_id = self.start_run(job_id, args).await;
        self.wait_run(job_id, run_id).await
    }

    /// Cancels a run (must answer 200) and returns the answer.
    pub async fn cancel_run(&self, job_id: i64, run_id: i64) -> Value {
        ok_json(
            self.post(
                &format!("/scheduled-jobs/{job_id}/runs/{run_id}/cancel"),
                &json!({}),
            )
            .await,
        )
        .await
    }

    pub async fn run_status(&self, job_id: i64, run_id: i64) -> String {
        let run = ok_json(
            self.get(&format!("/scheduled-jobs/{job_id}/runs/{run_id}"))
                .await,
        )
        .await;
        run["status"].as_str().expect("status").to_string()
    }
}

/// Asserts that a run failed with all of `words` in its message and kept no result file.
pub fn assert_failed_with(run: &Value, words: &[&str]) {
    assert_eq!(run["status"], "FAILED", "{run}");
    let message = run["message"].as_str().unwrap_or_default();
    for word in words {
        assert!(message.contains(word), "message `{message}` lacks `{word}`");
    }
    assert!(run["logFilePath"].is_null(), "no result is kept: {run}");
}

/// The run id at the end of a response's Location header, if it has one.
pub fn location_run_id(response: &Response) -> Option<i64> {
    response
        .headers()
        .get("location")?
        .to_str()
        .ok()?
        .rsplit('/')
        .next()?
        .parse()
        .ok()
}

/// The run id of a response's Location header (panics without one).
pub fn run_id_from_location(response: &Response) -> i64 {
    location_run_id(response).expect("run id in Location")
}

/// Asserts 200 and returns the JSON body.
pub async fn ok_json(response: Response) -> Value {
    let status = response.status();
    let url = response.url().to_string();
    let text = response.text().await.expect("body");
    assert_eq!(
        status,
        StatusCode::OK,
        "unexpected status from {url}, body: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("{url}: not JSON: {text}"))
}

/// Asserts the status and the contract's error shape (a JSON array of `{code, message}` with a
/// message in each) and returns the codes.
pub async fn error_codes(response: Response, status: StatusCode) -> Vec<String> {
    let actual = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(actual, status, "unexpected status, body: {text}");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is not JSON: {text}"));
    body.as_array()
        .unwrap_or_else(|| panic!("error body is not an array: {text}"))
        .iter()
        .map(|e| {
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "error without message: {e}"
            );
            e["code"].as_str().expect("code").to_string()
        })
        .collect()
}

/// A reply read off the wire by `raw_request`.
pub struct RawReply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends exactly `request` (which should ask for `Connection: close`) to 127.0.0.1:`port` and
/// reads the reply to the end. None when the connection fails or nothing parsable comes back.
pub fn raw_request(port: u16, request: &[u8]) -> Option<RawReply> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    // The server may answer (and close) before it has read a big request: that is fine.
    let _ = stream.write_all(request);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let split = reply.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&reply[..split]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut body = reply[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Some(RawReply { status, head, body })
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..line_end]).into_owned();
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        let start = line_end + 2;
        if size == 0 || raw.len() < start + size {
            break;
        }
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    out
}

/// A GET with a token, path sent byte for byte.
pub fn raw_get(port: u16, path: &str, token: &str) -> Option<RawReply> {
    raw_request(
        port,
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-OS-API-TOKEN: {token}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

/// The status of `GET /health` on a fresh connection, or None when nothing answers yet.
pub fn health_status(port: u16) -> Option<u16> {
    raw_request(
        port,
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .map(|r| r.status)
}
