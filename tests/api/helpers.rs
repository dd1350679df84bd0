//! Test harness: `spawn_app` starts the real application in-process on 127.0.0.1 port 0 with a
//! fresh temporary data directory, and `TestApp` wraps an HTTP client signed in as `admin`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use labcron::config::{Settings, SettingsArgs};
use labcron::startup::Application;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const ADMIN_PASSWORD: &str = "admin-password-1";

pub struct TestApp {
    pub base: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub token: String,
    pub data_dir: PathBuf,
    pub scripts_dir: PathBuf,
    pub handle: actix_web::dev::ServerHandle,
    /// The settings the server started with (a restart reuses them).
    pub settings: Settings,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Kept last so the directory outlives the server.
    _dir: TempDir,
}

/// Options for `spawn_app_with`.
#[derive(Default)]
pub struct AppOptions {
    pub max_concurrent_runs: Option<usize>,
    pub log_cap_bytes: Option<u64>,
    pub max_body_bytes: Option<usize>,
    pub kill_grace_seconds: Option<u64>,
    /// Changes the settings last. (Test apps start without example jobs; set `example_jobs` here.)
    pub configure: Option<fn(&mut Settings)>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let args = SettingsArgs {
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(data_dir.clone()),
        admin_password: Some(ADMIN_PASSWORD.into()),
        max_concurrent_runs: options.max_concurrent_runs,
        log_cap_bytes: options.log_cap_bytes,
        max_body_bytes: options.max_body_bytes,
        ..SettingsArgs::default()
    };
    let mut settings = Settings::load(&args).expect("settings");
    if let Some(grace) = options.kill_grace_seconds {
        settings.runs.kill_grace_seconds = grace;
    }
    settings.example_jobs = false;
    if let Some(configure) = options.configure {
        configure(&mut settings);
    }
    let app = Application::build(settings.clone())
        .await
        .expect("application builds");
    let port = app.port();
    let data_dir = app.data_dir().to_path_buf();
    let handle = app.handle();
    let server = Some(tokio::spawn(app.run_until_stopped()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .expect("client");
    let base = format!("http://127.0.0.1:{port}");
    let mut test_app = TestApp {
        base,
        port,
        client,
        token: String::new(),
        scripts_dir: data_dir.join("scripts"),
        data_dir,
        handle,
        settings,
        server,
        _dir: dir,
    };
    test_app.token = test_app.sign_in("admin", ADMIN_PASSWORD).await;
    test_app
}

impl TestApp {
    /// Stops the server the way a shutdown does (scheduler, HTTP, executor) and waits for it.
    pub async fn stop(&mut self) {
        self.handle.stop(true).await;
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }

    /// Starts a new server on the same data directory (after `stop`); the session token survives.
    pub async fn start_again(&mut self) {
        let app = Application::build(self.settings.clone())
            .await
            .expect("application builds again");
        self.port = app.port();
        self.base = format!("http://127.0.0.1:{}", self.port);
        self.handle = app.handle();
        self.server = Some(tokio::spawn(app.run_until_stopped()));
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/rest/ng{}", self.base, path)
    }

    /// A request to `/rest/ng<path>` signed in with `token`.
    pub fn request_as(&self, token: &str, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("X-OS-API-TOKEN", token)
    }

    /// A request to `/rest/ng<path>` as admin.
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

    /// Signs in and returns the token (panics when sign-in fails).
    pub async fn sign_in(&self, login: &str, password: &str) -> String {
        let response = self
            .client
            .post(self.url("/sessions"))
            .json(&json!({"loginName": login, "password": password}))
            .send()
            .await
            .expect("sign in");
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "sign-in of {login} failed"
        );
        let body: Value = response.json().await.expect("json");
        body["token"].as_str().expect("token").to_string()
    }

    /// Creates a user (as admin) and returns (id, token).
    pub async fn create_user(&self, login: &str, admin: bool) -> (i64, String) {
        let password = format!("{login}-password");
        let created = ok_json(
            self.post(
                "/users",
                &json!({"loginName": login, "password": password, "firstName": login, "lastName": "Tester",
                        "emailAddress": format!("{login}@lab.example"), "admin": admin}),
            )
            .await,
        )
        .await;
        let token = self.sign_in(login, &password).await;
        (created["id"].as_i64().expect("user id"), token)
    }

    /// Writes an executable script into the scripts directory.
    pub fn write_script(&self, name: &str, body: &str) -> PathBuf {
        write_script(&self.scripts_dir, name, body)
    }

    /// Creates an on-demand EXTERNAL job for `command` and returns its id.
    pub async fn create_external_job(&self, name: &str, command: &str) -> i64 {
        self.create_job(&json!({"name": name, "type": "EXTERNAL", "command": command, "repeatSchedule": "ONDEMAND"}))
            .await
    }

    pub async fn create_job(&self, body: &Value) -> i64 {
        let job = ok_json(self.post("/scheduled-jobs", body).await).await;
        job["id"].as_i64().expect("job id")
    }

    /// Queues a run and returns its id (read from the Location header).
    pub async fn start_run(&self, job_id: i64, args: Option<&str>) -> i64 {
        let body = match args {
            Some(a) => json!({"args": a}),
            None => json!({}),
        };
        let response = self
            .post(&format!("/scheduled-jobs/{job_id}/runs"), &body)
            .await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "run request failed: {:?}",
            response.text().await
        );
        run_id_from_location(&response)
    }

    /// Waits (long-polling) until the run has finished and returns it.
    pub async fn wait_run(&self, job_id: i64, run_id: i64) -> Value {
        for _ in 0..12 {
            let run = ok_json(
                self.get(&format!(
                    "/scheduled-jobs/{job_id}/runs/{run_id}?waitSeconds=10"
                ))
                .await,
            )
            .await;
            if matches!(run["status"].as_str(), Some("SUCCEEDED") | Some("FAILED")) {
                return run;
            }
        }
        panic!("run {run_id} did not finish in two minutes");
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

pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("scripts dir");
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

pub fn run_id_from_location(response: &Response) -> i64 {
    let location = response
        .headers()
        .get("location")
        .expect("Location header")
        .to_str()
        .expect("ascii");
    location
        .rsplit('/')
        .next()
        .and_then(|id| id.parse().ok())
        .expect("run id in Location")
}

/// Asserts 200 and returns the JSON body.
pub async fn ok_json(response: Response) -> Value {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "unexpected status, body: {text}");
    serde_json::from_str(&text).expect("JSON body")
}

/// Asserts the status and returns the error codes of an error array.
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

/// Like `spawn_app`, but `configure` may capture values, such as the addresses of test servers
/// started first (e-mail and webhook receivers). It changes the settings last.
pub async fn spawn_app_configured(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = SettingsArgs {
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().join("data")),
        admin_password: Some(ADMIN_PASSWORD.into()),
        ..SettingsArgs::default()
    };
    let mut settings = Settings::load(&args).expect("settings");
    settings.example_jobs = false;
    configure(&mut settings);
    settings.validate().expect("test settings are valid");
    let app = Application::build(settings.clone())
        .await
        .expect("application builds");
    let port = app.port();
    let data_dir = app.data_dir().to_path_buf();
    let handle = app.handle();
    let server = Some(tokio::spawn(app.run_until_stopped()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .expect("client");
    let mut test_app = TestApp {
        base: format!("http://127.0.0.1:{port}"),
        port,
        client,
        token: String::new(),
        scripts_dir: data_dir.join("scripts"),
        data_dir,
        handle,
        settings,
        server,
        _dir: dir,
    };
    test_app.token = test_app.sign_in("admin", ADMIN_PASSWORD).await;
    test_app
}
