//! Settings for the whole server, and where each comes from: embedded defaults, then an optional
//! TOML file (`--config FILE`), then `LABCRON_*` environment variables, then command-line flags.
//! Every setting is checked here, so a wrong value stops start-up with a message naming it.

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
        Ok(())
    }

    /// The scripts directory, defaulting to `<data_dir>/scripts`.
    pub fn scripts_dir(&self) -> PathBuf {
        self.scripts_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("scripts"))
    }

    /// The server's time zone (validated at load).
    pub fn tz(&self) -> chrono_tz::Tz {
        chrono_tz::Tz::from_str(&self.timezone).unwrap_or(chrono_tz::UTC)
    }
}
