//! Settings for the whole server, and where each comes from: embedded defaults, then an optional
//! TOML file (`--config FILE`), then `LABCRON_*` environment variables, then command-line flags.
//! Every setting is checked here, so a wrong value stops start-up with a message naming it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

/// All settings of a running server. Field comments are the documentation of each setting.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address and port the HTTP server listens on.
    pub bind: String,
    /// Where the ledger (`labcron.db`), run logs and results (`runs/`) live.
    pub data_dir: PathBuf,
    /// The only directory EXTERNAL jobs may run programs from. Default `<data_dir>/scripts`.
    pub scripts_dir: Option<PathBuf>,
    /// IANA time zone used for jobs without a `timezone` and for dates without an offset.
    pub timezone: String,
    /// Password for the `admin` user created on first start (otherwise one is generated).
    pub admin_password: Option<String>,
    pub auth: AuthSettings,
    pub runs: RunSettings,
    pub http: HttpSettings,
    /// On the very first start (a new ledger), create a few example jobs (scheduled ones paused,
    /// the others on demand) so the Jobs page is not empty. Never again after that.
    pub example_jobs: bool,
    /// Data sources of saved queries: `name = "path"` of a SQLite database, opened read-only.
    /// Relative paths are relative to `data_dir`. `lab` defaults to `<data_dir>/lab.db`.
    pub query_sources: BTreeMap<String, PathBuf>,
    pub queries: QuerySettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuerySettings {
    /// A QUERY run stops (FAILED) after this many seconds, or the job's `timeoutSeconds` if less.
    pub time_limit_seconds: u64,
    /// A QUERY run stops (FAILED, no file) when its result would have more rows than this.
    pub row_limit: u64,
    /// On the very first start, when `lab` is not configured and `<data_dir>/lab.db` does not
    /// exist, create it with a demo biobank (sites, participants, visits, specimens).
    pub demo_database: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// A session token expires after this many minutes without use.
    pub session_timeout_minutes: u64,
    /// Failed sign-ins allowed per login name and client address within `lockout_minutes`.
    pub max_failed_logins: u32,
    /// Window (and lockout time) for failed sign-ins.
    pub lockout_minutes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSettings {
    /// Runs executing at the same time across all jobs.
    pub max_concurrent: usize,
    /// Time limit of a run when the job sets no `timeoutSeconds`.
    pub default_timeout_seconds: u64,
    /// Waiting runs allowed per job when the job sets no `maxQueuedRuns`.
    pub default_max_queued_runs: u32,
    /// A run's log keeps at most this many bytes; the rest is drained and counted.
    pub log_cap_bytes: u64,
    /// After SIGTERM on timeout or cancel, the process group gets this long before SIGKILL.
    pub kill_grace_seconds: u64,
    /// On shutdown, running runs get this long to finish before they are stopped.
    pub shutdown_grace_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Origins allowed to call the API from a browser (CORS). Empty: CORS off.
    pub cors_origins: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bind: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            scripts_dir: None,
            timezone: "UTC".into(),
            admin_password: None,
            auth: AuthSettings::default(),
            runs: RunSettings::default(),
            http: HttpSettings::default(),
            example_jobs: true,
            query_sources: BTreeMap::new(),
            queries: QuerySettings::default(),
        }
    }
}

impl Default for QuerySettings {
    fn default() -> Self {
        QuerySettings {
            time_limit_seconds: 1800,
            row_limit: 10_000_000,
            demo_database: true,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            session_timeout_minutes: 60,
            max_failed_logins: 5,
            lockout_minutes: 15,
        }
    }
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            max_concurrent: 8,
            default_timeout_seconds: 3600,
            default_max_queued_runs: 100,
            log_cap_bytes: 10 * 1024 * 1024,
            kill_grace_seconds: 5,
            shutdown_grace_seconds: 30,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            max_body_bytes: 1024 * 1024,
            cors_origins: Vec::new(),
        }
    }
}

/// Command-line flags (each also read from its `LABCRON_*` variable; a flag beats the variable).
#[derive(Debug, Clone, Default, Args)]
pub struct SettingsArgs {
    /// TOML configuration file.
    #[arg(long, env = "LABCRON_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "LABCRON_BIND", global = true)]
    pub bind: Option<String>,
    /// Data directory [default: ./data].
    #[arg(long, env = "LABCRON_DATA_DIR", value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Directory EXTERNAL jobs may run programs from [default: <data dir>/scripts].
    #[arg(long, env = "LABCRON_SCRIPTS_DIR", value_name = "DIR", global = true)]
    pub scripts_dir: Option<PathBuf>,
    /// Server time zone (IANA name) [default: UTC].
    #[arg(long, env = "LABCRON_TIMEZONE", global = true)]
    pub timezone: Option<String>,
    /// Password of the admin user created on first start.
    #[arg(
        long,
        env = "LABCRON_ADMIN_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    pub admin_password: Option<String>,
    /// Minutes of inactivity after which a session token expires [default: 60].
    #[arg(long, env = "LABCRON_SESSION_TIMEOUT_MINUTES", global = true)]
    pub session_timeout_minutes: Option<u64>,
    /// Runs executing at once across all jobs [default: 8].
    #[arg(long, env = "LABCRON_MAX_CONCURRENT_RUNS", global = true)]
    pub max_concurrent_runs: Option<usize>,
    /// Run time limit for jobs without timeoutSeconds [default: 3600].
    #[arg(long, env = "LABCRON_DEFAULT_TIMEOUT_SECONDS", global = true)]
    pub default_timeout_seconds: Option<u64>,
    /// Bytes of output kept in a run log [default: 10485760].
    #[arg(long, env = "LABCRON_LOG_CAP_BYTES", global = true)]
    pub log_cap_bytes: Option<u64>,
    /// Largest request body in bytes [default: 1048576].
    #[arg(long, env = "LABCRON_MAX_BODY_BYTES", global = true)]
    pub max_body_bytes: Option<usize>,
    /// Time limit of a QUERY run in seconds [default: 1800].
    #[arg(long, env = "LABCRON_QUERY_TIME_LIMIT_SECONDS", global = true)]
    pub query_time_limit_seconds: Option<u64>,
    /// Most rows a QUERY run may write [default: 10000000].
    #[arg(long, env = "LABCRON_QUERY_ROW_LIMIT", global = true)]
    pub query_row_limit: Option<u64>,
}

impl Settings {
    /// Defaults, then the file named by `--config`, then env/flags (clap merged those two already).
    pub fn load(args: &SettingsArgs) -> anyhow::Result<Settings> {
        let mut settings = match &args.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        settings.apply(args);
        settings.validate()?;
        Ok(settings)
    }

    fn from_file(path: &Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    fn apply(&mut self, args: &SettingsArgs) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *target = v.clone();
            }
        }
        set(&mut self.bind, &args.bind);
        set(&mut self.data_dir, &args.data_dir);
        if args.scripts_dir.is_some() {
            self.scripts_dir = args.scripts_dir.clone();
        }
        set(&mut self.timezone, &args.timezone);
        if args.admin_password.is_some() {
            self.admin_password = args.admin_password.clone();
        }
        set(
            &mut self.auth.session_timeout_minutes,
            &args.session_timeout_minutes,
        );
        set(&mut self.runs.max_concurrent, &args.max_concurrent_runs);
        set(
            &mut self.runs.default_timeout_seconds,
            &args.default_timeout_seconds,
        );
        set(&mut self.runs.log_cap_bytes, &args.log_cap_bytes);
        set(&mut self.http.max_body_bytes, &args.max_body_bytes);
        set(
            &mut self.queries.time_limit_seconds,
            &args.query_time_limit_seconds,
        );
        set(&mut self.queries.row_limit, &args.query_row_limit);
    }

    /// Rejects values that cannot work, naming the setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.bind.parse::<std::net::SocketAddr>().is_err() {
            bail!(
                "setting `bind`: `{}` is not an address like 127.0.0.1:8080",
                self.bind
            );
        }
        if chrono_tz::Tz::from_str(&self.timezone).is_err() {
            bail!(
                "setting `timezone`: `{}` is not an IANA time zone name",
                self.timezone
            );
        }
        if self.runs.max_concurrent == 0 {
            bail!("setting `runs.max_concurrent` must be at least 1");
        }
        if self.runs.default_timeout_seconds == 0 {
            bail!("setting `runs.default_timeout_seconds` must be at least 1");
        }
        if self.auth.session_timeout_minutes == 0 {
            bail!("setting `auth.session_timeout_minutes` must be at least 1");
        }
        if self.http.max_body_bytes < 1024 {
            bail!("setting `http.max_body_bytes` must be at least 1024");
        }
        if self.queries.time_limit_seconds == 0 {
            bail!("setting `queries.time_limit_seconds` must be at least 1");
        }
        if self.queries.row_limit == 0 {
            bail!("setting `queries.row_limit` must be at least 1");
        }
        for (name, path) in &self.query_sources {
            if !crate::query::sources::valid_source_name(name) {
                bail!(
                    "setting `query_sources`: `{name}` is not a valid data source name \
                     (1 to 64 letters, digits, `_`, `-` or `.`)"
                );
            }
            if path.as_os_str().is_empty() {
                bail!("setting `query_sources.{name}`: the path is empty");
            }
        }
        Ok(())
    }

    /// The scripts directory, defaulting to `<data_dir>/scripts`.
    pub fn scripts_dir(&self) -> PathBuf {
        self.scripts_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("scripts"))
    }

    /// Every data source of saved queries by name, with `lab` defaulting to `<data_dir>/lab.db`
    /// and relative paths taken relative to `data_dir` (pass the canonical one when known).
    pub fn query_source_paths(&self, data_dir: &Path) -> BTreeMap<String, PathBuf> {
        let mut sources: BTreeMap<String, PathBuf> = self
            .query_sources
            .iter()
            .map(|(name, path)| (name.clone(), data_dir.join(path)))
            .collect();
        sources
            .entry(crate::query::sources::DEFAULT_SOURCE.to_string())
            .or_insert_with(|| data_dir.join(crate::query::sources::DEMO_FILE));
        sources
    }

    /// The server's time zone (validated at load).
    pub fn tz(&self) -> chrono_tz::Tz {
        chrono_tz::Tz::from_str(&self.timezone).unwrap_or(chrono_tz::UTC)
    }
}
