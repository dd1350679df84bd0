//! Settings for the whole server, and where each comes from: embedded defaults, then an optional
//! TOML file (`--config FILE`), then `LABCRON_*` environment variables, then command-line flags.
//! Every setting is checked here, so a wrong value stops start-up with a message naming it.

pub mod ledger; // database_url, node_name, node_timeout_seconds: where the ledger is, which node
pub mod overrides; // LABCRON_* variables and --flags for every setting, written into the TOML table
pub mod primitives; // setting values parsed when read: log format, SMTP security, time zone
pub mod sources; // what a data source setting means: SQLite file or postgres:// URL
pub mod specs; // SETTING_SPECS: every setting's key, kind and help

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::domain::user::SessionCutoffs;
use primitives::{LogFormat, SmtpSecurity};

/// All settings of a running server. Field comments are the documentation of each setting.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address and port the HTTP server listens on.
    #[serde(with = "primitives::socket")]
    pub bind: std::net::SocketAddr,
    /// Where the ledger (`labcron.db`), run logs and results (`runs/`) live.
    pub data_dir: PathBuf,
    /// The ledger on PostgreSQL: `postgres://user:password@host:5432/database` (or
    /// `postgresql://`), shared by every node. Absent: SQLite at `<data_dir>/labcron.db`.
    pub database_url: Option<String>,
    /// This node's name (recorded on the runs it executes): 1 to 64 of `A-Z a-z 0-9 . _ -`.
    /// Default: the host name.
    pub node_name: String,
    /// A node silent (no heartbeat) for longer than this is declared lost, with its runs.
    pub node_timeout_seconds: u64,
    /// The only directory EXTERNAL jobs may run programs from. Default `<data_dir>/scripts`.
    pub scripts_dir: Option<PathBuf>,
    /// IANA time zone used for jobs without a `timezone` and for dates without an offset.
    #[serde(with = "primitives::zone")]
    pub timezone: chrono_tz::Tz,
    /// Password for the `admin` user created on first start (otherwise one is generated).
    pub admin_password: Option<String>,
    /// Log format: `text` (readable) or `json` (one object per line).
    pub log_format: LogFormat,
    pub auth: AuthSettings,
    pub runs: RunSettings,
    pub http: HttpSettings,
    /// On the very first start (a new ledger), create a few example jobs (scheduled ones paused,
    /// the others on demand) so the Jobs page is not empty. Never again after that.
    pub example_jobs: bool,
    /// Data sources of saved queries: `name = "path"` of a SQLite database, opened read-only,
    /// or `name = "postgres://user@host:5432/db"` of a PostgreSQL database, read in READ ONLY
    /// transactions. Relative paths are relative to `data_dir`. `lab` defaults to
    /// `<data_dir>/lab.db`.
    pub query_sources: BTreeMap<String, PathBuf>,
    /// Passwords of PostgreSQL data sources by name (instead of one in the URL); best given as
    /// `LABCRON_QUERY_SOURCE_PASSWORDS=name=password` (a password may not hold a comma there).
    pub query_source_passwords: BTreeMap<String, String>,
    /// Files holding the password of PostgreSQL data sources by name (one line; relative paths
    /// are relative to `data_dir`), read at each use.
    pub query_source_password_files: BTreeMap<String, PathBuf>,
    pub queries: QuerySettings,
    pub notifications: NotificationSettings,
    pub retention: RetentionSettings,
}

/// E-mail and webhook notifications about finished and failed runs (`notify`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationSettings {
    /// SMTP server that sends e-mails about finished and failed runs. Empty: no e-mail is sent.
    pub smtp_host: String,
    /// SMTP port. Unset: the usual port of `smtp_security` (25 for `none`, 587 for `starttls`,
    /// 465 for `tls`).
    pub smtp_port: Option<u16>,
    /// How the SMTP connection is secured: `none` (plain SMTP), `starttls` (upgraded with
    /// STARTTLS, which the server must offer) or `tls` (TLS from the first byte).
    pub smtp_security: SmtpSecurity,
    /// User name for SMTP authentication. Empty: no authentication.
    pub smtp_username: String,
    /// Password for SMTP authentication.
    pub smtp_password: String,
    /// Sender of the e-mails, an address or `Name <address>`.
    pub from_address: String,
    /// This server's address as users reach it, for the result-file links in e-mails, e.g.
    /// `https://jobs.lab.example`. Empty: `http://<bind>` (the address the server listens on).
    pub public_base_url: String,
    /// Key of the HMAC-SHA256 signature (`X-Labcron-Signature: sha256=<hex>`) on webhook requests.
    /// Empty: webhook requests are sent unsigned.
    pub webhook_secret: String,
    /// Attempts per webhook delivery; a network error or a 5xx answer is retried after 1, 2, 4, 8 …
    /// seconds.
    pub webhook_max_attempts: u32,
}

/// The daily pass that removes old run files (and, when asked, old run rows) (`retention`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// The result files and logs of runs that finished more than this many days ago are removed
    /// (the rows stay; a download then answers `SCHEDULED_JOB_RESULT_DATA_FILE_NOT_FOUND`).
    /// 0: files are never removed by the daily pass.
    pub files_days: u64,
    /// When set, the ledger rows of runs that finished more than this many days ago are deleted
    /// too (with their files). Unset: run rows are kept for ever, as OpenSpecimen does.
    pub runs_days: Option<u64>,
    /// Audit events older than this many days are deleted by the daily pass. 0: kept for ever.
    pub audit_days: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuerySettings {
    /// A QUERY run stops (FAILED) after this many seconds, or the job's `timeoutSeconds` if less.
    pub time_limit_seconds: u64,
    /// A QUERY run stops (FAILED, no file) when its result would have more rows than this.
    pub row_limit: u64,
    /// A QUERY run stops (FAILED, no file) when its CSV would be larger than this many bytes;
    /// no more than this is ever written.
    pub result_byte_limit: u64,
    /// Longest single value (text or blob, before CSV encoding) a saved query may produce or
    /// read, in bytes; a longer one fails the run (and is never built in memory). At most
    /// 1,000,000,000 (SQLite's own limit).
    pub value_byte_limit: u64,
    /// Most memory, in bytes, one QUERY run or "Try it" preview on a SQLite source may use: its
    /// process's `RLIMIT_DATA`, sorts and temporary tables included (they never go to disk).
    pub memory_byte_limit: u64,
    /// On the very first start, when `lab` is not configured and `<data_dir>/lab.db` does not
    /// exist, create it with a demo biobank (sites, participants, visits, specimens).
    pub demo_database: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// A session token expires after this many minutes without use.
    pub session_timeout_minutes: u64,
    /// A session token expires this many hours after sign-in, however often it is used.
    pub session_max_hours: u64,
    /// Failed sign-ins allowed per login name and client address within `lockout_minutes`.
    pub max_failed_logins: u32,
    /// Window (and lockout time) for failed sign-ins.
    pub lockout_minutes: u64,
    /// Directory sign-in (`[auth.ldap]`); off while `url` is empty.
    pub ldap: LdapSettings,
}

/// Directory sign-in over LDAP (issue 15): users without a local account sign in with their
/// directory password, and get a labcron account (source LDAP) at the first success.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LdapSettings {
    /// `ldap://host:389` or `ldaps://host:636`. Empty: directory sign-in is off.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before anything is sent.
    pub start_tls: bool,
    /// A PEM file of the CA certificate(s) that sign the directory's certificate. Set, only
    /// these CAs are trusted for `ldaps://` and StartTLS; empty: the system's trust store.
    pub ca_file: String,
    /// The account that searches for users (empty: an anonymous search).
    pub bind_dn: String,
    /// That account's password (prefer `bind_password_file` or LABCRON_AUTH_LDAP_BIND_PASSWORD).
    pub bind_password: String,
    /// A file holding that password (its first line); used when `bind_password` is empty.
    pub bind_password_file: String,
    /// Where users are searched for (the whole subtree).
    pub user_search_base: String,
    /// The search filter; `{login}` is replaced by the login name, escaped per RFC 4515.
    pub user_filter: String,
    /// The attribute holding the user's login name (`uid`; `sAMAccountName` on Active
    /// Directory): a directory account is named by its value, never by the spelling typed.
    pub login_attribute: String,
    /// The attribute holding the first name.
    pub first_name_attribute: String,
    /// The attribute holding the last name.
    pub last_name_attribute: String,
    /// The attribute holding the e-mail address.
    pub email_attribute: String,
    /// DN of a group whose members are admins (by `member`, `uniqueMember`, `memberUid` or the
    /// user's `memberOf`). Empty: directory users are never admins.
    pub admin_group: String,
    /// A sign-in gives up on the directory after this many seconds (503).
    pub timeout_seconds: u64,
}

impl Default for LdapSettings {
    fn default() -> Self {
        LdapSettings {
            url: String::new(),
            start_tls: false,
            ca_file: String::new(),
            bind_dn: String::new(),
            bind_password: String::new(),
            bind_password_file: String::new(),
            user_search_base: String::new(),
            user_filter: "(uid={login})".into(),
            login_attribute: "uid".into(),
            first_name_attribute: "givenName".into(),
            last_name_attribute: "sn".into(),
            email_attribute: "mail".into(),
            admin_group: String::new(),
            timeout_seconds: 10,
        }
    }
}

impl LdapSettings {
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// Rejects settings that cannot work, naming the setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        let url = self.url.trim();
        if !(url.starts_with("ldap://") || url.starts_with("ldaps://"))
            || url::Url::parse(url).is_err()
        {
            bail!("setting `auth.ldap.url`: `{url}` is not an ldap:// or ldaps:// address");
        }
        if self.start_tls && url.starts_with("ldaps://") {
            bail!(
                "setting `auth.ldap.start_tls` is for ldap:// addresses; ldaps:// is TLS already"
            );
        }
        if !self.ca_file.is_empty() {
            // A CA file with a plain ldap:// address would look safe and send passwords in clear.
            if !(self.start_tls || url.starts_with("ldaps://")) {
                bail!(
                    "setting `auth.ldap.ca_file` is for TLS: use an ldaps:// `auth.ldap.url` or \
                     set `auth.ldap.start_tls = true`"
                );
            }
            self.ca_roots()?;
        }
        if self.user_search_base.trim().is_empty() {
            bail!("setting `auth.ldap.user_search_base` is required when `auth.ldap.url` is set");
        }
        if !self.user_filter.contains("{login}") {
            bail!("setting `auth.ldap.user_filter` must contain {{login}}, e.g. (uid={{login}})");
        }
        if !(1..=300).contains(&self.timeout_seconds) {
            bail!("setting `auth.ldap.timeout_seconds` must be from 1 to 300");
        }
        if !self.bind_password.is_empty() && !self.bind_password_file.is_empty() {
            bail!(
                "settings `auth.ldap.bind_password` and `auth.ldap.bind_password_file`: set one, not both"
            );
        }
        Ok(())
    }

    /// The CAs of `ca_file` as a trust store (`None` when it is empty). Read at each call, so a
    /// renewed file is used without a restart; an unreadable file, or one without a certificate,
    /// is an error naming the setting.
    pub fn ca_roots(&self) -> anyhow::Result<Option<rustls::RootCertStore>> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        if self.ca_file.is_empty() {
            return Ok(None);
        }
        let file = &self.ca_file;
        // Read first, so a missing file says "cannot read" rather than a PEM error.
        let text = std::fs::read(file)
            .with_context(|| format!("setting `auth.ldap.ca_file`: cannot read {file}"))?;
        let mut roots = rustls::RootCertStore::empty();
        for (n, cert) in CertificateDer::pem_slice_iter(&text).enumerate() {
            let cert = cert.map_err(|e| {
                anyhow::anyhow!("setting `auth.ldap.ca_file`: {file} is not valid PEM: {e}")
            })?;
            roots.add(cert).map_err(|e| {
                anyhow::anyhow!(
                    "setting `auth.ldap.ca_file`: certificate {} in {file} is not usable as a CA: {e}",
                    n + 1
                )
            })?;
        }
        if roots.is_empty() {
            bail!(
                "setting `auth.ldap.ca_file`: {file} holds no certificate \
                 (expected PEM blocks `-----BEGIN CERTIFICATE-----`)"
            );
        }
        Ok(Some(roots))
    }

    /// The search account's password: `bind_password`, else the first line of `bind_password_file`.
    pub fn bind_password(&self) -> anyhow::Result<String> {
        if self.bind_password_file.is_empty() {
            return Ok(self.bind_password.clone());
        }
        let text = std::fs::read_to_string(&self.bind_password_file).with_context(|| {
            format!(
                "setting `auth.ldap.bind_password_file`: cannot read {}",
                self.bind_password_file
            )
        })?;
        Ok(text.lines().next().unwrap_or_default().to_string())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Each run in a cgroup of its own (killed whole at the run's end) where the machine lets
    /// the server make one; off: the process group, subreaper and marker only.
    pub cgroups: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Seconds a client gets to send a whole request body; a slower one is refused.
    pub body_timeout_seconds: u64,
    /// Origins allowed to call the API from a browser (CORS). Empty: CORS off.
    pub cors_origins: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bind: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            node_name: ledger::default_node_name(),
            node_timeout_seconds: 30,
            scripts_dir: None,
            timezone: chrono_tz::UTC,
            admin_password: None,
            log_format: LogFormat::Text,
            auth: AuthSettings::default(),
            runs: RunSettings::default(),
            http: HttpSettings::default(),
            example_jobs: true,
            query_sources: BTreeMap::new(),
            query_source_passwords: BTreeMap::new(),
            query_source_password_files: BTreeMap::new(),
            queries: QuerySettings::default(),
            notifications: NotificationSettings::default(),
            retention: RetentionSettings::default(),
        }
    }
}

impl Default for NotificationSettings {
    fn default() -> Self {
        NotificationSettings {
            smtp_host: String::new(),
            smtp_port: None,
            smtp_security: SmtpSecurity::StartTls,
            smtp_username: String::new(),
            smtp_password: String::new(),
            from_address: "labcron <labcron@localhost>".into(),
            public_base_url: String::new(),
            webhook_secret: String::new(),
            webhook_max_attempts: 5,
        }
    }
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            files_days: 30,
            runs_days: None,
            audit_days: 730,
        }
    }
}

impl Default for QuerySettings {
    fn default() -> Self {
        QuerySettings {
            time_limit_seconds: 1800,
            row_limit: 10_000_000,
            result_byte_limit: 4 * 1024 * 1024 * 1024,
            value_byte_limit: 64 * 1024 * 1024,
            memory_byte_limit: 1024 * 1024 * 1024,
            demo_database: true,
        }
    }
}

impl AuthSettings {
    /// When sessions expire at `now` (ms): the one rule sign-in, each request and the retention
    /// pass apply.
    pub fn session_cutoffs(&self, now: i64) -> SessionCutoffs {
        SessionCutoffs {
            idle_before: now - self.session_timeout_minutes as i64 * 60_000,
            created_before: now - self.session_max_hours as i64 * 3_600_000,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            session_timeout_minutes: 60,
            session_max_hours: 24,
            max_failed_logins: 5,
            lockout_minutes: 15,
            ldap: LdapSettings::default(),
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
            cgroups: true,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            max_body_bytes: 1024 * 1024,
            body_timeout_seconds: 30,
            cors_origins: Vec::new(),
        }
    }
}

/// Settings given programmatically (tests, the CLI's subcommands): a config file and overrides
/// by key, applied like environment variables and flags.
#[derive(Debug, Clone, Default)]
pub struct SettingsArgs {
    pub config: Option<PathBuf>,
    pub bind: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub scripts_dir: Option<PathBuf>,
    pub timezone: Option<String>,
    pub admin_password: Option<String>,
    pub max_concurrent_runs: Option<usize>,
    pub log_cap_bytes: Option<u64>,
    pub max_body_bytes: Option<usize>,
    /// Any other setting by key (`runs.kill_grace_seconds` → `1`).
    pub overrides: Vec<(String, String)>,
}

impl SettingsArgs {
    fn all_overrides(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut add = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                out.push((key.to_string(), v));
            }
        };
        add("bind", self.bind.clone());
        add(
            "data_dir",
            self.data_dir.as_ref().map(|p| p.display().to_string()),
        );
        add(
            "scripts_dir",
            self.scripts_dir.as_ref().map(|p| p.display().to_string()),
        );
        add("timezone", self.timezone.clone());
        add("admin_password", self.admin_password.clone());
        add(
            "runs.max_concurrent",
            self.max_concurrent_runs.map(|v| v.to_string()),
        );
        add(
            "runs.log_cap_bytes",
            self.log_cap_bytes.map(|v| v.to_string()),
        );
        add(
            "http.max_body_bytes",
            self.max_body_bytes.map(|v| v.to_string()),
        );
        out.extend(self.overrides.iter().cloned());
        out
    }
}

impl Settings {
    /// Defaults, then the config file, then the overrides in order (environment before flags).
    pub fn load(args: &SettingsArgs) -> anyhow::Result<Settings> {
        Settings::load_from(args.config.as_deref(), &args.all_overrides())
    }

    /// Defaults < `config` file < `overrides` (key, text) in order; then validated.
    pub fn load_from(
        config: Option<&Path>,
        overrides: &[(String, String)],
    ) -> anyhow::Result<Settings> {
        let mut table = match config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("config file {} is not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        for (key, text) in overrides {
            overrides::apply_override(&mut table, key, text)?;
        }
        let settings: Settings =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    anyhow::anyhow!("{}", overrides::describe_error(&e, config))
                })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Rejects values that cannot work, naming the setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        ledger::validate_database_url(self.database_url.as_deref())?;
        ledger::validate_node_name(&self.node_name)?;
        ledger::validate_node_timeout(self.node_timeout_seconds)?;
        if self.runs.max_concurrent == 0 {
            bail!("setting `runs.max_concurrent` must be at least 1");
        }
        if self.runs.default_timeout_seconds == 0 {
            bail!("setting `runs.default_timeout_seconds` must be at least 1");
        }
        if self.auth.session_timeout_minutes == 0 {
            bail!("setting `auth.session_timeout_minutes` must be at least 1");
        }
        if self.auth.session_max_hours == 0 {
            bail!("setting `auth.session_max_hours` must be at least 1");
        }
        self.auth.ldap.validate()?;
        if self.auth.ldap.enabled() {
            self.auth.ldap.bind_password()?;
        }
        if self.http.body_timeout_seconds == 0 {
            bail!("setting `http.body_timeout_seconds` must be at least 1");
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
        if self.queries.result_byte_limit < 1024 {
            bail!("setting `queries.result_byte_limit` must be at least 1024");
        }
        if !(1024..=1_000_000_000).contains(&self.queries.value_byte_limit) {
            bail!("setting `queries.value_byte_limit` must be from 1024 to 1000000000");
        }
        if self.queries.memory_byte_limit < 64 * 1024 * 1024 {
            bail!("setting `queries.memory_byte_limit` must be at least 67108864 (64 MiB)");
        }
        self.notifications.validate()?;
        self.retention.validate()?;
        for (name, path) in &self.query_sources {
            if !crate::domain::saved_query::valid_source_name(name) {
                bail!(
                    "setting `query_sources`: `{name}` is not a valid data source name \
                     (1 to 64 letters, digits, `_`, `-` or `.`)"
                );
            }
            if path.as_os_str().is_empty() {
                bail!("setting `query_sources.{name}`: the path is empty");
            }
            if let Some(url) = path.to_str().filter(|p| sources::is_postgres_url(p)) {
                // The message never repeats the URL: it may hold a password.
                if let Err(e) = crate::pg_connect::PgTarget::open(url) {
                    bail!("setting `query_sources.{name}`: not a usable PostgreSQL URL: {e}");
                }
            }
        }
        let postgres_names: Vec<&String> = self
            .query_sources
            .iter()
            .filter(|(_, p)| p.to_str().is_some_and(sources::is_postgres_url))
            .map(|(name, _)| name)
            .collect();
        for (setting, name) in self
            .query_source_passwords
            .keys()
            .map(|n| ("query_source_passwords", n))
            .chain(
                self.query_source_password_files
                    .keys()
                    .map(|n| ("query_source_password_files", n)),
            )
        {
            if !postgres_names.contains(&name) {
                bail!(
                    "setting `{setting}`: `{name}` is not a PostgreSQL data source \
                     (query_sources.{name} = \"postgres://…\")"
                );
            }
        }
        Ok(())
    }

    /// Where the ledger is: PostgreSQL when `database_url` is set, else `<data_dir>/labcron.db`
    /// (pass the canonical data directory when known).
    pub fn ledger_location(&self, data_dir: &Path) -> ledger::LedgerLocation {
        ledger::location(self.database_url.as_deref(), data_dir)
    }

    /// Whether the ledger is on PostgreSQL (`database_url` is set).
    pub fn uses_postgres(&self) -> bool {
        matches!(
            self.ledger_location(&self.data_dir),
            ledger::LedgerLocation::Postgres(_)
        )
    }

    /// The scripts directory, defaulting to `<data_dir>/scripts`.
    pub fn scripts_dir(&self) -> PathBuf {
        self.scripts_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("scripts"))
    }

    /// Every SQLite data source of saved queries by name, with `lab` defaulting to `<data_dir>/lab.db`
    /// and relative paths taken relative to `data_dir` (pass the canonical one when known).
    pub fn query_source_paths(&self, data_dir: &Path) -> BTreeMap<String, PathBuf> {
        let mut sources: BTreeMap<String, PathBuf> = self
            .query_sources
            .iter()
            // PostgreSQL sources are not files (`query::sources` builds them).
            .filter(|(_, path)| !path.to_str().is_some_and(sources::is_postgres_url))
            .map(|(name, path)| (name.clone(), data_dir.join(path)))
            .collect();
        sources
            .entry(crate::domain::saved_query::DEFAULT_SOURCE.to_string())
            .or_insert_with(|| data_dir.join(sources::DEMO_FILE));
        sources
    }
}

impl NotificationSettings {
    /// Rejects notification settings that cannot work, naming the setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.smtp_host.trim() != self.smtp_host || self.smtp_host.contains(char::is_whitespace) {
            bail!(
                "setting `notifications.smtp_host`: `{}` is not a host name",
                self.smtp_host
            );
        }
        if self.smtp_port == Some(0) {
            bail!("setting `notifications.smtp_port` must be from 1 to 65535");
        }
        if self
            .from_address
            .parse::<lettre::message::Mailbox>()
            .is_err()
        {
            bail!(
                "setting `notifications.from_address`: `{}` is not an e-mail address \
                 (`name@host` or `Name <name@host>`)",
                self.from_address
            );
        }
        if !self.public_base_url.is_empty() {
            let ok = reqwest::Url::parse(&self.public_base_url).is_ok_and(|url| {
                matches!(url.scheme(), "http" | "https") && url.host_str().is_some()
            });
            if !ok {
                bail!(
                    "setting `notifications.public_base_url`: `{}` is not an http(s) URL \
                     like https://jobs.lab.example",
                    self.public_base_url
                );
            }
        }
        if !(1..=20).contains(&self.webhook_max_attempts) {
            bail!("setting `notifications.webhook_max_attempts` must be from 1 to 20");
        }
        Ok(())
    }

    /// The SMTP port: the configured one, else the usual one for `smtp_security`.
    pub fn smtp_port(&self) -> u16 {
        self.smtp_port.unwrap_or(self.smtp_security.default_port())
    }
}

impl RetentionSettings {
    /// Rejects retention periods that cannot work, naming the setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.files_days > 36_500 {
            bail!("setting `retention.files_days` must be from 0 to 36500 days");
        }
        if let Some(days) = self.runs_days
            && !(1..=36_500).contains(&days)
        {
            bail!("setting `retention.runs_days` must be from 1 to 36500 days");
        }
        if self.audit_days > 36_500 {
            bail!("setting `retention.audit_days` must be from 0 to 36500 days");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ldaps_with_ca(ca_file: &Path) -> LdapSettings {
        LdapSettings {
            url: "ldaps://ldap.lab.example:636".into(),
            user_search_base: "ou=people,dc=lab,dc=example".into(),
            ca_file: ca_file.display().to_string(),
            ..LdapSettings::default()
        }
    }

    fn error_of(settings: &LdapSettings) -> String {
        format!("{:#}", settings.validate().expect_err("refused"))
    }

    /// A self-signed CA certificate made by `openssl` in `dir` (PEM), as an institution's CA is.
    fn make_ca(dir: &Path, name: &str) -> PathBuf {
        let pem = dir.join(format!("{name}.pem"));
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
            .arg("-addext")
            .arg("basicConstraints=critical,CA:TRUE")
            .arg("-keyout")
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(&pem)
            .output()
            .expect("openssl (Debian: apt-get install openssl; scripts/test does it)");
        assert!(out.status.success(), "openssl: {out:?}");
        pem
    }

    #[test]
    fn ldap_ca_file_must_be_readable_hold_certificates_and_go_with_tls() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-ca.pem");
        let error = error_of(&ldaps_with_ca(&missing));
        assert!(
            error.contains("setting `auth.ldap.ca_file`: cannot read")
                && error.contains(&missing.display().to_string()),
            "{error}"
        );

        // A file without any certificate: prose, or a key alone.
        let ca = make_ca(dir.path(), "Lab CA");
        let key = dir.path().join("Lab CA.key");
        for file in [&key, &dir.path().join("notes.txt")] {
            if !file.exists() {
                std::fs::write(file, "the CA is on the wiki\n").unwrap();
            }
            let error = error_of(&ldaps_with_ca(file));
            assert!(
                error.contains("setting `auth.ldap.ca_file`")
                    && error.contains("holds no certificate"),
                "{}: {error}",
                file.display()
            );
        }
        // A certificate block that is not base64, and one that is base64 but no certificate.
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n#!%\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let error = error_of(&ldaps_with_ca(&broken));
        assert!(
            error.contains("setting `auth.ldap.ca_file`") && error.contains("not valid PEM"),
            "{error}"
        );
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let error = error_of(&ldaps_with_ca(&broken));
        assert!(
            error.contains("setting `auth.ldap.ca_file`")
                && error.contains("certificate 1")
                && error.contains("not usable as a CA"),
            "{error}"
        );

        // A real CA: accepted with ldaps:// and with StartTLS, refused with plain ldap://.
        let settings = ldaps_with_ca(&ca);
        settings
            .validate()
            .expect("an ldaps:// address with a CA file");
        assert_eq!(settings.ca_roots().unwrap().map(|r| r.len()), Some(1));
        let start_tls = LdapSettings {
            url: "ldap://ldap.lab.example:389".into(),
            start_tls: true,
            ..settings.clone()
        };
        start_tls.validate().expect("StartTLS with a CA file");
        let plain = LdapSettings {
            start_tls: false,
            ..start_tls
        };
        let error = error_of(&plain);
        assert!(
            error.contains("setting `auth.ldap.ca_file` is for TLS"),
            "{error}"
        );
        // A bundle: every CA in it is trusted; a key in between is skipped.
        let other = make_ca(dir.path(), "Old Lab CA");
        let bundle = dir.path().join("bundle.pem");
        let text: String = [&ca, &key, &other]
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        std::fs::write(&bundle, text).unwrap();
        assert_eq!(
            ldaps_with_ca(&bundle).ca_roots().unwrap().map(|r| r.len()),
            Some(2)
        );
        // Empty: no CA file, the system's store (nothing to read).
        assert!(LdapSettings::default().ca_roots().unwrap().is_none());

        // The whole load (a flag or LABCRON_AUTH_LDAP_CA_FILE) stops on a bad file, naming it.
        let overrides = [
            (
                "auth.ldap.url".to_string(),
                "ldaps://ldap.lab.example".to_string(),
            ),
            (
                "auth.ldap.user_search_base".into(),
                "dc=lab,dc=example".into(),
            ),
            ("auth.ldap.ca_file".into(), missing.display().to_string()),
        ];
        let error = format!("{:#}", Settings::load_from(None, &overrides).unwrap_err());
        assert!(error.contains("auth.ldap.ca_file"), "{error}");
    }
}
