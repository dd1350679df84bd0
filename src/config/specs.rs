//! Every setting that can be given by file, `LABCRON_*` environment variable and `--flag`: its
//! TOML key, the kind of value (how its text becomes TOML) and its help line (`labcron --help`).
//! A unit test checks `labcron.example.toml` and the settings' defaults against this list.

/// How a setting's text (from the environment or a flag) becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingKind {
    Text,
    Integer,
    Boolean,
    /// Comma-separated list of texts.
    List,
    /// Comma-separated `name=value` pairs (a TOML table of texts).
    Map,
}

/// One setting that can be given by file, `LABCRON_*` environment variable and flag.
pub struct SettingSpec {
    /// The TOML key, dotted for sections: `runs.max_concurrent`.
    pub key: &'static str,
    pub kind: SettingKind,
    pub help: &'static str,
    /// Secrets are never echoed back (in `--help` or errors).
    pub secret: bool,
}

const fn spec(key: &'static str, kind: SettingKind, help: &'static str) -> SettingSpec {
    SettingSpec {
        key,
        kind,
        help,
        secret: false,
    }
}

const fn secret(key: &'static str, help: &'static str) -> SettingSpec {
    SettingSpec {
        key,
        kind: SettingKind::Text,
        help,
        secret: true,
    }
}

use SettingKind::{Boolean, Integer, List, Map, Text};

/// Every setting. The environment variable is `LABCRON_` + the key in capitals with `.` as `_`
/// (`LABCRON_RUNS_MAX_CONCURRENT`), the flag is `--` + the key with `.` and `_` as `-`
/// (`--runs-max-concurrent`). A unit test checks this table against the structs above and
/// `labcron.example.toml`.
pub const SETTING_SPECS: &[SettingSpec] = &[
    spec(
        "bind",
        Text,
        "Address and port to listen on [default: 127.0.0.1:8080]",
    ),
    spec(
        "data_dir",
        Text,
        "Data directory: ledger, run logs and results [default: ./data]",
    ),
    // Secret: the URL may hold the database password.
    secret(
        "database_url",
        "The ledger on PostgreSQL, postgres://user:password@host:5432/db, shared by every node \
         [default: unset, SQLite at <data dir>/labcron.db]",
    ),
    spec(
        "node_name",
        Text,
        "This node's name, recorded on the runs it executes [default: the host name]",
    ),
    spec(
        "node_timeout_seconds",
        Integer,
        "Seconds without a heartbeat after which a node and its runs are declared lost \
         [default: 30]",
    ),
    spec(
        "scripts_dir",
        Text,
        "The only directory EXTERNAL jobs run programs from [default: <data dir>/scripts]",
    ),
    spec(
        "timezone",
        Text,
        "Server time zone, an IANA name [default: UTC]",
    ),
    secret(
        "admin_password",
        "Password of the `admin` user created on first start [default: generated]",
    ),
    spec(
        "log_format",
        Text,
        "Log format: text or json [default: text]",
    ),
    spec(
        "example_jobs",
        Boolean,
        "Create example jobs on the very first start [default: true]",
    ),
    // Secret: a PostgreSQL source's URL may hold its password.
    SettingSpec {
        key: "query_sources",
        kind: Map,
        help: "Saved-query data sources, name=path,… (SQLite files, opened read-only) or \
               name=postgres://user@host/db (read in READ ONLY transactions)",
        secret: true,
    },
    SettingSpec {
        key: "query_source_passwords",
        kind: Map,
        help: "Passwords of PostgreSQL data sources, name=password,… [default: none]",
        secret: true,
    },
    spec(
        "query_source_password_files",
        Map,
        "Files holding the passwords of PostgreSQL data sources, name=path,… [default: none]",
    ),
    spec(
        "auth.session_timeout_minutes",
        Integer,
        "Minutes without use after which a session token expires [default: 60]",
    ),
    spec(
        "auth.session_max_hours",
        Integer,
        "Hours after sign-in after which a session token expires, even in use [default: 24]",
    ),
    spec(
        "auth.max_failed_logins",
        Integer,
        "Failed sign-ins per login name and address before a lockout [default: 5]",
    ),
    spec(
        "auth.lockout_minutes",
        Integer,
        "Window and length of a sign-in lockout in minutes [default: 15]",
    ),
    spec(
        "auth.ldap.url",
        Text,
        "Directory sign-in: ldap://host:389 or ldaps://host:636; empty: off [default: empty]",
    ),
    spec(
        "auth.ldap.start_tls",
        Boolean,
        "Upgrade ldap:// with StartTLS [default: false]",
    ),
    spec(
        "auth.ldap.ca_file",
        Text,
        "PEM file of the CAs that sign the directory's certificate; only they are trusted for \
         ldaps:// and StartTLS; empty: the system's trust store [default: empty]",
    ),
    spec(
        "auth.ldap.bind_dn",
        Text,
        "DN of the account that searches for users; empty: anonymous [default: empty]",
    ),
    secret(
        "auth.ldap.bind_password",
        "Password of the search account [default: empty]",
    ),
    spec(
        "auth.ldap.bind_password_file",
        Text,
        "File whose first line is the search account's password [default: empty]",
    ),
    spec(
        "auth.ldap.user_search_base",
        Text,
        "Where users are searched for (subtree) [default: empty]",
    ),
    spec(
        "auth.ldap.user_filter",
        Text,
        "User search filter; {login} is the escaped login name [default: (uid={login})]",
    ),
    spec(
        "auth.ldap.login_attribute",
        Text,
        "Attribute of the login name; it names the account [default: uid]",
    ),
    spec(
        "auth.ldap.first_name_attribute",
        Text,
        "Attribute of the first name [default: givenName]",
    ),
    spec(
        "auth.ldap.last_name_attribute",
        Text,
        "Attribute of the last name [default: sn]",
    ),
    spec(
        "auth.ldap.email_attribute",
        Text,
        "Attribute of the e-mail address [default: mail]",
    ),
    spec(
        "auth.ldap.admin_group",
        Text,
        "DN of the group whose members are admins; empty: none [default: empty]",
    ),
    spec(
        "auth.ldap.timeout_seconds",
        Integer,
        "A sign-in gives up on the directory after this long (503) [default: 10]",
    ),
    spec(
        "runs.max_concurrent",
        Integer,
        "Runs executing at once across all jobs [default: 8]",
    ),
    spec(
        "runs.default_timeout_seconds",
        Integer,
        "Run time limit of jobs without timeoutSeconds [default: 3600]",
    ),
    spec(
        "runs.default_max_queued_runs",
        Integer,
        "Waiting runs per job when the job sets no maxQueuedRuns [default: 100]",
    ),
    spec(
        "runs.log_cap_bytes",
        Integer,
        "Bytes of output kept in a run log [default: 10485760]",
    ),
    spec(
        "runs.kill_grace_seconds",
        Integer,
        "Seconds between SIGTERM and SIGKILL on timeout or cancel [default: 5]",
    ),
    spec(
        "runs.shutdown_grace_seconds",
        Integer,
        "Seconds running runs get to finish on shutdown [default: 30]",
    ),
    spec(
        "runs.cgroups",
        Boolean,
        "Each run in a cgroup of its own where the machine delegates one [default: true]",
    ),
    spec(
        "http.max_body_bytes",
        Integer,
        "Largest request body in bytes [default: 1048576]",
    ),
    spec(
        "http.body_timeout_seconds",
        Integer,
        "Seconds a client gets to send a whole request body [default: 30]",
    ),
    spec(
        "http.cors_origins",
        List,
        "Origins allowed to call the API from a browser, comma-separated [default: none]",
    ),
    spec(
        "queries.time_limit_seconds",
        Integer,
        "Time limit of a QUERY run in seconds [default: 1800]",
    ),
    spec(
        "queries.row_limit",
        Integer,
        "Most rows a QUERY run may write [default: 10000000]",
    ),
    spec(
        "queries.result_byte_limit",
        Integer,
        "Most bytes of CSV a QUERY run may write [default: 4294967296]",
    ),
    spec(
        "queries.value_byte_limit",
        Integer,
        "Longest value in bytes a saved query may produce or read [default: 67108864]",
    ),
    spec(
        "queries.memory_byte_limit",
        Integer,
        "Most memory in bytes a QUERY run or preview on SQLite may use [default: 1073741824]",
    ),
    spec(
        "queries.demo_database",
        Boolean,
        "Create the demo lab database on the very first start [default: true]",
    ),
    spec(
        "notifications.smtp_host",
        Text,
        "SMTP server for run e-mails; empty: no e-mail [default: empty]",
    ),
    spec(
        "notifications.smtp_port",
        Integer,
        "SMTP port [default: 25 for none, 587 for starttls, 465 for tls]",
    ),
    spec(
        "notifications.smtp_security",
        Text,
        "SMTP security: none, starttls or tls [default: starttls]",
    ),
    spec(
        "notifications.smtp_username",
        Text,
        "SMTP user name; empty: no authentication [default: empty]",
    ),
    secret(
        "notifications.smtp_password",
        "SMTP password [default: empty]",
    ),
    spec(
        "notifications.from_address",
        Text,
        "Sender of run e-mails [default: labcron <labcron@localhost>]",
    ),
    spec(
        "notifications.public_base_url",
        Text,
        "This server's URL for links in e-mails [default: http://<bind>]",
    ),
    secret(
        "notifications.webhook_secret",
        "HMAC-SHA256 key that signs webhook requests; empty: unsigned [default: empty]",
    ),
    spec(
        "notifications.webhook_max_attempts",
        Integer,
        "Attempts per webhook delivery, backing off 1, 2, 4, 8 … s [default: 5]",
    ),
    spec(
        "retention.files_days",
        Integer,
        "Days after which run result files and logs are removed; 0: never [default: 30]",
    ),
    spec(
        "retention.runs_days",
        Integer,
        "Days after which finished runs' rows are deleted too [default: unset, rows kept]",
    ),
    spec(
        "retention.audit_days",
        Integer,
        "Days after which audit events are deleted; 0: never [default: 730, two years]",
    ),
];
