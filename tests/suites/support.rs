//! What the suites share: the real `labcron` binary started on 127.0.0.1 (port 0) with a data
//! directory of the test's own, its log kept in a file (so a panic can be looked for), an HTTP
//! client signed in as `admin`, a raw HTTP/1.1 request for inputs a URL library would normalise
//! away (`%2e%2e`, `..`), process checks through `/proc`, and ledger checks with rusqlite.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

pub const ADMIN_PASSWORD: &str = "suites-admin-password";

/// A running `labcron`, SIGKILLed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub base: String,
    pub log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary on port 0 (no example jobs) and waits until it listens and `/health`
    /// answers 200. Its log is appended to `<data dir>/../server.log`.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let log = data_dir
            .parent()
            .expect("data dir has a parent")
            .join("server.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_labcron"))
            .args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--example-jobs", "false"])
            .args(extra)
            .env("LABCRON_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start labcron");
        let stderr = child.stderr.take().expect("stderr");
        let (port_tx, port_rx) = mpsc::channel();
        let log_path = log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("server log file");
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                if let Some(rest) = line.split("labcron listening port=").nth(1)
                    && let Some(tx) = port_tx.take()
                {
                    let port = rest
                        .split_whitespace()
                        .next()
                        .and_then(|p| p.parse::<u16>().ok());
                    let _ = tx.send(port);
                }
            }
        });
        let port = match port_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(port)) => port,
            _ => {
                let _ = child.kill();
                panic!(
                    "labcron did not start listening; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let server = Server {
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while raw_request(
            port,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .map(|r| r.status)
            != Some(200)
        {
            assert!(Instant::now() < deadline, "labcron never became healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait (at most `limit`) for a clean exit.
    pub fn terminate(mut self, limit: Duration) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "labcron exited with {status} on SIGTERM");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "labcron did not stop within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid()).expect("VmRSS of the server")
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An HTTP client signed in as `admin`.
    pub async fn admin(&self) -> Api {
        Api::sign_in(&self.base, "admin", ADMIN_PASSWORD).await
    }
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// A numeric field of `/proc/<pid>/status` (`VmRSS:`, `Threads:`).
pub fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether a process exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    !status.is_empty()
        && !status
            .lines()
            .any(|l| l.starts_with("State:") && (l.contains('Z') || l.contains('X')))
}

/// The environment of a live process, as `NAME=value` strings.
pub fn process_env(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// A client of the API under `/rest/ng`, signed in.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub token: String,
}

impl Api {
    pub fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client")
    }

    pub async fn sign_in(base: &str, login: &str, password: &str) -> Api {
        let client = Api::client();
        let response = client
            .post(format!("{base}/rest/ng/sessions"))
            .json(&json!({"loginName": login, "password": password}))
            .send()
            .await
            .expect("sign in");
        assert_eq!(response.status(), StatusCode::OK, "sign-in of {login}");
        let body: Value = response.json().await.expect("sign-in JSON");
        Api {
            base: base.to_string(),
            client,
            token: body["token"].as_str().expect("token").to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/rest/ng{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("X-OS-API-TOKEN", &self.token)
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

    pub async fn ok(&self, method: Method, path: &str, body: Option<&Value>) -> Value {
        let mut request = self.request(method.clone(), path);
        if let Some(body) = body {
            request = request.json(body);
        }
        ok_json(
            request.send().await.expect("request"),
            &format!("{method} {path}"),
        )
        .await
    }

    /// Creates a user (as admin) and signs them in.
    pub async fn create_user(&self, login: &str, admin: bool) -> (i64, Api) {
        let password = format!("{login}-password-1");
        let user = self
            .ok(
                Method::POST,
                "/users",
                Some(&json!({"loginName": login, "password": password, "firstName": login,
                    "lastName": "Tester", "emailAddress": format!("{login}@lab.example"), "admin": admin})),
            )
            .await;
        let api = Api::sign_in(&self.base, login, &password).await;
        (user["id"].as_i64().expect("user id"), api)
    }

    pub async fn create_job(&self, body: &Value) -> i64 {
        self.ok(Method::POST, "/scheduled-jobs", Some(body)).await["id"]
            .as_i64()
            .expect("job id")
    }

    /// Queues a run and returns its id (from the Location header).
    pub async fn start_run(&self, job: i64, args: Option<&str>) -> i64 {
        let body = args.map_or_else(|| json!({}), |a| json!({"args": a}));
        let response = self
            .post(&format!("/scheduled-jobs/{job}/runs"), &body)
            .await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "run request for job {job}"
        );
        run_id_from_location(&response).expect("run id in Location")
    }

    /// Long-polls until the run has finished (at most three minutes) and returns it.
    pub async fn wait_run(&self, job: i64, run: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let view = self
                .ok(
                    Method::GET,
                    &format!("/scheduled-jobs/{job}/runs/{run}?waitSeconds=10"),
                    None,
                )
                .await;
            if matches!(view["status"].as_str(), Some("SUCCEEDED" | "FAILED")) {
                return view;
            }
            assert!(
                Instant::now() < deadline,
                "run {run} never finished: {view}"
            );
        }
    }
}

pub fn run_id_from_location(response: &Response) -> Option<i64> {
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

/// Asserts 200 and returns the JSON body.
pub async fn ok_json(response: Response, what: &str) -> Value {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "{what}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"))
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

/// Sends exactly `request` (which should ask for `Connection: close`) and reads the reply to the
/// end. None when the connection fails or nothing parsable comes back.
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

/// Opens the ledger of a data directory (the server may be running: WAL allows it).
pub fn ledger(data_dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(data_dir.join("labcron.db")).expect("open the ledger");
    conn.busy_timeout(Duration::from_secs(30))
        .expect("busy timeout");
    conn
}

pub fn integrity_check(data_dir: &Path) -> String {
    ledger(data_dir)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

/// Writes an executable script into `<data dir>/scripts`.
pub fn write_script(data_dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir.join("scripts");
    std::fs::create_dir_all(&dir).expect("scripts dir");
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// The routes the API registers, read from its source: every `web::resource("…")` in
/// `src/web/api/*.rs`, with the methods routed on it and the paths it is served
/// at (under both base paths when its module is configured inside the base-path scope).
#[derive(Debug, Clone)]
pub struct Route {
    pub template: String,
    pub methods: Vec<Method>,
    /// Full paths (templates) it is served at.
    pub paths: Vec<String>,
}

pub fn discover_routes() -> Vec<Route> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let api_mod =
        std::fs::read_to_string(root.join("src/web/api/mod.rs")).expect("src/web/api/mod.rs");
    // Modules configured inside `web::scope(base)` are served under every base path.
    let scoped: Vec<String> = api_mod
        .split("web::scope(")
        .nth(1)
        .map(|rest| rest.split("cfg.configure(").next().unwrap_or(""))
        .unwrap_or("")
        .split(".configure(")
        .skip(1)
        .filter_map(|s| s.split("::configure").next())
        .map(|s| s.trim().to_string())
        .collect();
    let bases: Vec<String> = api_mod
        .split("BASE_PATHS: &[&str] = &[")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    assert!(
        !scoped.is_empty() && !bases.is_empty(),
        "cannot read the scope of src/web/api/mod.rs"
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("src/web/api"))
        .expect("src/web/api")
        .filter_map(|e| e.ok().map(|e| e.path()))
        // A resource module is a file or a folder with its routes in mod.rs.
        .map(|p| if p.is_dir() { p.join("mod.rs") } else { p })
        .filter(|p| p.extension().is_some_and(|e| e == "rs") && p.exists())
        .collect();
    files.sort();
    let mut routes = Vec::new();
    for file in files {
        let named = if file.ends_with("mod.rs") {
            file.parent().and_then(|p| p.file_name())
        } else {
            file.file_stem()
        };
        let module = named
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let source = std::fs::read_to_string(&file).expect("read source");
        let is_scoped = scoped.contains(&module);
        let pieces: Vec<&str> = source.split("web::resource(\"").collect();
        for piece in pieces.iter().skip(1) {
            let Some((template, rest)) = piece.split_once('"') else {
                continue;
            };
            // The routes of this resource: up to the end of its `.service(...)`, roughly the
            // first blank line or the end of the configure function.
            let scope_end = rest.find("\n}").unwrap_or(rest.len());
            let rest = &rest[..scope_end];
            let mut methods = Vec::new();
            for (word, method) in [
                ("web::get()", Method::GET),
                ("web::post()", Method::POST),
                ("web::put()", Method::PUT),
                ("web::delete()", Method::DELETE),
                ("web::patch()", Method::PATCH),
            ] {
                if rest.contains(word) {
                    methods.push(method);
                }
            }
            let paths = if is_scoped {
                bases.iter().map(|b| format!("{b}{template}")).collect()
            } else {
                vec![template.to_string()]
            };
            routes.push(Route {
                template: template.to_string(),
                methods,
                paths,
            });
        }
    }
    assert!(routes.len() >= 10, "found only {} routes", routes.len());
    routes
}

/// The path parameters (`{jobId}`) of a template.
pub fn parameters(template: &str) -> Vec<String> {
    template
        .split('{')
        .skip(1)
        .filter_map(|s| s.split('}').next())
        .map(|s| s.split(':').next().unwrap_or(s).to_string())
        .collect()
}

/// Fills a template's parameters with `values` (by name; missing ones get `fallback`).
pub fn fill(template: &str, values: &[(&str, String)], fallback: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
        let name = rest[open + 1..close].split(':').next().unwrap_or("");
        let value = values
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(fallback.to_string(), |(_, v)| v.clone());
        out.push_str(&value);
        rest = &rest[(close + 1).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// Prints a line on the real stdout, past the test harness's capture, so it shows even when the
/// test passes (the crash seed, a skipped suite).
pub fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
