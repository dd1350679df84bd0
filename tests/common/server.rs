//! Starting labcron for a test, two ways. In-process: `spawn_app*` builds `Application` on
//! 127.0.0.1 port 0 with a fresh temporary data directory and hands back a `TestApp` (an `Api`
//! signed in as `admin`, plus the handle to stop and start it again). As the real binary:
//! `Launch` (`--bind 127.0.0.1:0`, `RUST_LOG=info`, the admin password, none of the caller's
//! `LABCRON_*` variables) starts `target/…/labcron` with its stderr going straight to a log file,
//! and `Server` learns the port the one way there is: the `labcron listening` line (text or JSON)
//! that this start appends to that file, then waits until `/health` answers 200. The file, not a
//! pipe, so the server never blocks on a reader, the log survives the process (a test reads it
//! after a kill), and a bench's load generator spends nothing copying it. `command` runs the
//! binary's other commands (the CLI).

use std::ffi::OsStr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use labcron::config::{Settings, SettingsArgs};
use labcron::startup::Application;
use tempfile::TempDir;

use super::ADMIN_PASSWORD;
use super::process::rss_kib;
use super::requests::{Api, client, fresh_connections, health_status};

/// The labcron binary cargo built for this test or bench.
pub const BINARY: &str = env!("CARGO_BIN_EXE_labcron");
/// How long a binary may take to listen and answer `/health` (a busy machine is slow).
pub const START_DEADLINE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// In-process

/// The application running in this test's runtime, with a data directory of its own. It derefs
/// to its `Api` (signed in as `admin`), so `app.get(…)`, `app.token` and the like work on it.
pub struct TestApp {
    pub api: Api,
    pub port: u16,
    pub data_dir: PathBuf,
    pub scripts_dir: PathBuf,
    pub handle: actix_web::dev::ServerHandle,
    /// The settings the server started with (a restart reuses them).
    pub settings: Settings,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Kept last so the directory outlives the server.
    _dir: TempDir,
}

impl Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl DerefMut for TestApp {
    fn deref_mut(&mut self) -> &mut Api {
        &mut self.api
    }
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
    let AppOptions {
        max_concurrent_runs,
        log_cap_bytes,
        max_body_bytes,
        kill_grace_seconds,
        configure,
    } = options;
    let args = SettingsArgs {
        max_concurrent_runs,
        log_cap_bytes,
        max_body_bytes,
        ..SettingsArgs::default()
    };
    start_app(args, false, move |settings| {
        if let Some(grace) = kill_grace_seconds {
            settings.runs.kill_grace_seconds = grace;
        }
        settings.example_jobs = false;
        if let Some(configure) = configure {
            configure(settings);
        }
    })
    .await
}

/// Like `spawn_app`, but `configure` may capture values, such as the addresses of test servers
/// started first (e-mail and webhook receivers). It changes the settings last, and the result
/// must be valid settings.
pub async fn spawn_app_configured(configure: impl FnOnce(&mut Settings)) -> TestApp {
    start_app(SettingsArgs::default(), true, |settings| {
        settings.example_jobs = false;
        configure(settings);
    })
    .await
}

/// Like `spawn_app`, but with the settings exactly as a first start loads them (example jobs and
/// the demo database included).
pub async fn spawn_app_as_shipped() -> TestApp {
    start_app(SettingsArgs::default(), false, |_| {}).await
}

/// Loads settings from `args` on 127.0.0.1 port 0 and a fresh data directory, lets `configure`
/// change them, starts the application and signs in as `admin`.
async fn start_app(
    args: SettingsArgs,
    validate: bool,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    // The server runs in this test binary: its query processes are the labcron binary.
    labcron::query::worker::use_program(BINARY);
    let args = SettingsArgs {
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().join("data")),
        admin_password: Some(ADMIN_PASSWORD.into()),
        ..args
    };
    let mut settings = Settings::load(&args).expect("settings");
    settings.database_url = super::ledger::database_url_for(&dir.path().join("data"));
    configure(&mut settings);
    if validate {
        settings.validate().expect("test settings are valid");
    }
    let app = Application::build(settings.clone())
        .await
        .expect("application builds");
    let port = app.port();
    let data_dir = app.data_dir().to_path_buf();
    super::ledger::same_database(&dir.path().join("data"), &data_dir);
    let handle = app.handle();
    let server = Some(tokio::spawn(app.run_until_stopped()));
    let api = Api::new(&format!("http://127.0.0.1:{port}"), client());
    let mut test_app = TestApp {
        api,
        port,
        scripts_dir: data_dir.join("scripts"),
        data_dir,
        handle,
        settings,
        server,
        _dir: dir,
    };
    test_app.api.token = test_app.sign_in("admin", ADMIN_PASSWORD).await;
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
        self.api.base = format!("http://127.0.0.1:{}", self.port);
        self.handle = app.handle();
        self.server = Some(tokio::spawn(app.run_until_stopped()));
    }

    /// The same app with a client that opens a connection per request, for a test that runs the
    /// CLI (blocking its runtime) while the server runs: see `requests::fresh_connections`.
    pub fn with_fresh_connections(mut self) -> TestApp {
        self.api.client = fresh_connections();
        self
    }

    /// Writes an executable script into the scripts directory.
    pub fn write_script(&self, name: &str, body: &str) -> PathBuf {
        super::data::write_script(&self.scripts_dir, name, body)
    }
}

// ---------------------------------------------------------------------------------------------
// The real binary

/// The binary with `args`, for its commands other than serving (`user`, `backup`, `jobs`, …):
/// stdin closed, none of the caller's `LABCRON_*` variables (set what the test needs after).
/// On PostgreSQL (`LABCRON_TEST_LEDGER`), `--data-dir DIR` is followed by the `--database-url`
/// of DIR's servers.
pub fn command<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut command = clean_command(BINARY);
    let mut args = args.iter().map(|a| a.as_ref().to_os_string()).peekable();
    while let Some(arg) = args.next() {
        let dir = (arg == "--data-dir")
            .then(|| args.peek().cloned())
            .flatten();
        command.arg(arg);
        if let Some(dir) = dir {
            command.arg(args.next().unwrap_or_default());
            if let Some(url) = super::ledger::known_database_url(Path::new(&dir)) {
                command.arg("--database-url").arg(url);
            }
        }
    }
    command.stdin(Stdio::null());
    command
}

/// A command without any of the caller's `LABCRON_*` variables (a newcomer has none, and a
/// developer's own settings must not leak into a test).
pub fn clean_command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LABCRON_") {
            command.env_remove(name);
        }
    }
    command
}

/// The binary on `data_dir` with `extra` flags and no example jobs (the tests' usual server), its
/// log appended to `server.log` beside the data directory.
pub fn start_server(data_dir: &Path, extra: &[&str]) -> Server {
    Launch::new(data_dir).no_example_jobs().args(extra).start()
}

/// How to start the binary as a server; `start` (or `try_start`) starts it.
pub struct Launch {
    command: Command,
    log: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    /// A data directory of its own, when the test names none.
    own_dir: Option<TempDir>,
}

impl Launch {
    /// `labcron --bind 127.0.0.1:0 --data-dir <data_dir>`, admin password `ADMIN_PASSWORD`.
    /// On PostgreSQL (`LABCRON_TEST_LEDGER`), with the `--database-url` of `data_dir`'s servers.
    pub fn new(data_dir: &Path) -> Launch {
        let mut launch = Launch::bare();
        launch.command.arg("--data-dir").arg(data_dir);
        if let Some(url) = super::ledger::database_url_for(data_dir) {
            launch.command.arg("--database-url").arg(url);
        }
        launch.data_dir = Some(data_dir.to_path_buf());
        launch
    }

    /// Like `new`, on a temporary data directory the server owns.
    pub fn on_own_dir() -> Launch {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut launch = Launch::new(&dir.path().join("data"));
        launch.own_dir = Some(dir);
        launch
    }

    /// `labcron --bind 127.0.0.1:0` without `--data-dir` (the default, from the working directory).
    pub fn bare() -> Launch {
        let mut command = clean_command(BINARY);
        command
            .args(["--bind", "127.0.0.1:0"])
            .env("LABCRON_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        Launch {
            command,
            log: None,
            data_dir: None,
            own_dir: None,
        }
    }

    /// `--example-jobs false`.
    pub fn no_example_jobs(self) -> Launch {
        self.args(["--example-jobs", "false"])
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Launch {
        self.command.args(args);
        self
    }

    pub fn env(mut self, name: &str, value: impl AsRef<OsStr>) -> Launch {
        self.command.env(name, value);
        self
    }

    pub fn env_remove(mut self, name: &str) -> Launch {
        self.command.env_remove(name);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Launch {
        self.command.current_dir(dir);
        self
    }

    /// Appends the log to `path` (default: `server.log` beside the data directory, or in a
    /// temporary directory of the server's own).
    pub fn log_file(mut self, path: &Path) -> Launch {
        self.log = Some(path.to_path_buf());
        self
    }

    /// Starts the binary, waits for its port and for `/health` to answer 200; panics on failure.
    pub fn start(self) -> Server {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// `start`, with failures as a message (the benches skip a figure instead of panicking).
    pub fn try_start(self) -> Result<Server, String> {
        let Launch {
            mut command,
            log,
            data_dir,
            own_dir,
        } = self;
        let mut log_dir = None;
        let log = match (log, data_dir.as_deref().and_then(Path::parent)) {
            (Some(log), _) => log,
            (None, Some(beside)) => {
                std::fs::create_dir_all(beside).map_err(|e| format!("create {beside:?}: {e}"))?;
                beside.join("server.log")
            }
            (None, None) => {
                let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
                let log = dir.path().join("server.log");
                log_dir = Some(dir);
                log
            }
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("open the server log {log:?}: {e}"))?;
        // Only what this start appends counts (a restart may share the file).
        let log_from = file.metadata().map(|m| m.len()).unwrap_or(0);
        let started = Instant::now();
        let child = command
            .stderr(file)
            .spawn()
            .map_err(|e| format!("start labcron: {e}"))?;
        let mut server = Server {
            child,
            port: 0,
            base: String::new(),
            log,
            log_from,
            data_dir,
            start_up: Duration::ZERO,
            _log_dir: log_dir,
            _own_dir: own_dir,
        };
        server.port = server.wait_for_port(started + START_DEADLINE)?;
        server.base = format!("http://127.0.0.1:{}", server.port);
        server.wait_healthy(started + START_DEADLINE)?;
        server.start_up = started.elapsed();
        Ok(server)
    }
}

/// The port in a `labcron listening` log line, text (`… port=8080 …`) or JSON
/// (`{"fields":{"message":"labcron listening","port":8080,…}}`).
pub fn listening_port(line: &str) -> Option<u16> {
    if let Some(rest) = line.split("labcron listening port=").nth(1) {
        return rest.split_whitespace().next()?.parse().ok();
    }
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value["fields"]["message"] != "labcron listening" {
        return None;
    }
    u16::try_from(value["fields"]["port"].as_u64()?).ok()
}

/// A running `labcron` binary, SIGKILLed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The file its stderr goes to (this start's part begins at `log_from`).
    pub log: PathBuf,
    log_from: u64,
    pub data_dir: Option<PathBuf>,
    /// From the spawn to the first 200 from `/health`.
    pub start_up: Duration,
    _log_dir: Option<TempDir>,
    _own_dir: Option<TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Polls the log for the listening line; fails early when the process exits first.
    fn wait_for_port(&mut self, deadline: Instant) -> Result<u16, String> {
        loop {
            if let Some(port) = self.log_lines().iter().find_map(|l| listening_port(l)) {
                return Ok(port);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "labcron exited with {status} before listening; its log:\n{}",
                    self.log_text()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "labcron did not start listening; its log:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Polls `/health` (a new connection each time) until it answers 200.
    fn wait_healthy(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            if health_status(self.port) == Some(200) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "labcron exited with {status} before it was healthy; its log:\n{}",
                    self.log_text()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "labcron never became healthy; its log:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client of its API, not signed in.
    pub fn api(&self) -> Api {
        Api::new(&self.base, client())
    }

    /// A client of its API signed in as `admin`.
    pub async fn admin(&self) -> Api {
        Api::signed_in(&self.base, "admin", ADMIN_PASSWORD).await
    }

    /// What this start has logged so far.
    pub fn log_text(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        let from = (self.log_from as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[from..]).into_owned()
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log_text().lines().map(str::to_string).collect()
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let lines = self.log_lines();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    /// Waits (at most a minute) for a log line `find` picks something from.
    pub async fn wait_log<T>(&self, what: &str, find: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(found) = self.log_lines().iter().find_map(|l| find(l)) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in the log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (at most `limit`) for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait (at most `grace`) for it to exit; on a timeout it is SIGKILLed (dropped).
    pub fn stop(mut self, grace: Duration) -> Result<ExitStatus, String> {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.wait_exit(grace)
            .ok_or_else(|| format!("labcron did not stop within {grace:?} of SIGTERM (killed)"))
    }

    /// SIGTERM, and assert a clean exit within `limit`.
    pub fn terminate(self, limit: Duration) {
        let status = self.stop(limit).unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "labcron exited with {status} on SIGTERM");
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid()).expect("VmRSS of the server")
    }
}
