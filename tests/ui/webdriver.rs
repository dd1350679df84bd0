//! A small W3C WebDriver client over `reqwest`: starts `chromedriver` on a free loopback port,
//! opens a headless Chromium session with a fresh profile, and offers the few commands the UI tests
//! need (navigate, find, click, type, run a script, screenshot). Chromium and chromedriver come from
//! Debian (`chromium`, `chromium-driver`); `LABCRON_CHROMIUM` / `LABCRON_CHROMEDRIVER` override the
//! paths. Missing binaries fail the test with a message saying what to install.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The zone the browser runs in: one with daylight saving time, so DST shows in the previews.
pub const BROWSER_TZ: &str = "Europe/Berlin";

/// A WebDriver error: the `error` code (e.g. `no such element`) and its message.
#[derive(Debug, Clone)]
pub struct WdError {
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.error,
            self.message.lines().next().unwrap_or_default()
        )
    }
}

pub type WdResult<T> = Result<T, WdError>;

fn binary(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

fn require(path: &Path, package: &str) {
    assert!(
        path.exists(),
        "The browser tests need {} (Debian package `{package}`), which is not installed. \
         Install Chromium and its driver with `apt-get install -y chromium chromium-driver`, \
         or point LABCRON_CHROMIUM / LABCRON_CHROMEDRIVER at them.",
        path.display()
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A Chromium session driven through its own chromedriver process.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
    driver_log: PathBuf,
    pub download_dir: PathBuf,
    // Kept last: removed after the browser is gone.
    _profile: TempDir,
}

/// A found element (valid until the page replaces it).
#[derive(Debug, Clone)]
pub struct Element(pub String);

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width` × `height` pixels.
    pub async fn start(width: u32, height: u32) -> Browser {
        let chromium = binary("LABCRON_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = binary("LABCRON_CHROMEDRIVER", "/usr/bin/chromedriver");
        require(&chromium, "chromium");
        require(&chromedriver, "chromium-driver");
        let profile = tempfile::tempdir().expect("browser profile dir");
        let download_dir = profile.path().join("downloads");
        std::fs::create_dir_all(&download_dir).expect("download dir");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("http client");

        let mut last_problem = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let driver_log = profile.path().join(format!("chromedriver-{port}.log"));
            let mut driver = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", driver_log.display()))
                .env("TZ", BROWSER_TZ)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
            let base = format!("http://127.0.0.1:{port}");
            if let Err(problem) = wait_ready(&http, &base, &mut driver).await {
                last_problem = problem;
                let _ = driver.kill().await;
                continue;
            }
            let user_data = profile.path().join("profile");
            let capabilities = json!({
                "capabilities": { "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "goog:loggingPrefs": { "browser": "ALL" },
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [
                            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            "--disable-quic", "--no-first-run", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync", "--disable-extensions",
                            "--disable-default-apps", "--password-store=basic", "--hide-scrollbars",
                            format!("--user-data-dir={}", user_data.display()),
                            format!("--window-size={width},{height}"),
                        ],
                        "prefs": {
                            "download.default_directory": download_dir,
                            "download.prompt_for_download": false,
                            "credentials_enable_service": false,
                            "profile.password_manager_enabled": false,
                        },
                    },
                }}
            });
            let response = http
                .post(format!("{base}/session"))
                .json(&capabilities)
                .send()
                .await;
            let session = match response {
                Ok(r) => match value_of(r).await {
                    Ok(v) => v["sessionId"].as_str().map(str::to_string),
                    Err(e) => {
                        last_problem = e.to_string();
                        None
                    }
                },
                Err(e) => {
                    last_problem = e.to_string();
                    None
                }
            };
            let Some(session) = session else {
                let _ = driver.kill().await;
                continue;
            };
            let browser = Browser {
                http,
                session: format!("{base}/session/{session}"),
                driver,
                driver_log,
                download_dir,
                _profile: profile,
            };
            browser
                .command(
                    "POST",
                    "/timeouts",
                    json!({"implicit": 0, "pageLoad": 90_000, "script": 60_000}),
                )
                .await
                .expect("set timeouts");
            browser.set_window_size(width, height).await;
            return browser;
        }
        panic!("chromedriver/Chromium did not start a session: {last_problem}");
    }

    async fn command(&self, method: &str, path: &str, body: Value) -> WdResult<Value> {
        let url = format!("{}{path}", self.session);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        match request.send().await {
            Ok(response) => value_of(response).await,
            Err(e) => Err(WdError {
                error: "transport".into(),
                message: e.to_string(),
            }),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", json!({ "url": url }))
            .await
            .unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
    }

    pub async fn current_url(&self) -> String {
        self.command("GET", "/url", Value::Null)
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    pub async fn set_window_size(&self, width: u32, height: u32) {
        let _ = self
            .command(
                "POST",
                "/window/rect",
                json!({"width": width, "height": height}),
            )
            .await;
    }

    pub async fn find(&self, css: &str) -> WdResult<Element> {
        let value = self
            .command(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await?;
        element_of(&value)
    }

    pub async fn click(&self, element: &Element) -> WdResult<()> {
        self.command("POST", &format!("/element/{}/click", element.0), json!({}))
            .await
            .map(|_| ())
    }

    pub async fn clear(&self, element: &Element) -> WdResult<()> {
        self.command("POST", &format!("/element/{}/clear", element.0), json!({}))
            .await
            .map(|_| ())
    }

    pub async fn send_keys(&self, element: &Element, text: &str) -> WdResult<()> {
        self.command(
            "POST",
            &format!("/element/{}/value", element.0),
            json!({"text": text}),
        )
        .await
        .map(|_| ())
    }

    /// Presses keys on whatever has the focus (e.g. "\u{E004}" is Tab, "\u{E00C}" Escape).
    pub async fn press(&self, keys: &str) -> WdResult<()> {
        let mut actions = Vec::new();
        for key in keys.chars() {
            actions.push(json!({"type": "keyDown", "value": key.to_string()}));
            actions.push(json!({"type": "keyUp", "value": key.to_string()}));
        }
        self.command(
            "POST",
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        )
        .await
        .map(|_| ())
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its result.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> WdResult<Value> {
        self.command(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> WdResult<Vec<u8>> {
        let value = self.command("GET", "/screenshot", Value::Null).await?;
        let text = value.as_str().unwrap_or_default();
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| WdError {
                error: "screenshot".into(),
                message: e.to_string(),
            })
    }

    /// Console messages since the last call (chromedriver's log endpoint; empty if unsupported).
    pub async fn console_messages(&self) -> Vec<String> {
        let Ok(value) = self
            .command("POST", "/se/log", json!({"type": "browser"}))
            .await
        else {
            return Vec::new();
        };
        value
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["level"].as_str().unwrap_or(""),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The last lines of chromedriver's log, for failure reports.
    pub fn driver_log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.driver_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(20),
            self.command("DELETE", "", Value::Null),
        )
        .await;
        let _ = self.driver.kill().await;
    }
}

async fn wait_ready(http: &reqwest::Client, base: &str, driver: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = driver.try_wait() {
            return Err(format!("chromedriver exited with {status}"));
        }
        if let Ok(response) = http
            .get(format!("{base}/status"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            && let Ok(body) = response.json::<Value>().await
            && body["value"]["ready"].as_bool() == Some(true)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("chromedriver did not become ready within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn value_of(response: reqwest::Response) -> WdResult<Value> {
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| WdError {
        error: "invalid response".into(),
        message: e.to_string(),
    })?;
    let value = body.get("value").cloned().unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    Err(WdError {
        error: value["error"]
            .as_str()
            .unwrap_or("unknown error")
            .to_string(),
        message: value["message"].as_str().unwrap_or_default().to_string(),
    })
}

fn element_of(value: &Value) -> WdResult<Element> {
    value[ELEMENT_KEY]
        .as_str()
        .map(|id| Element(id.to_string()))
        .ok_or_else(|| WdError {
            error: "no element".into(),
            message: value.to_string(),
        })
}
