//! Saved queries on a PostgreSQL data source (`query_sources.NAME = "postgres://…"`): how such a
//! source is configured (its password from the URL, `query_source_password_files` or
//! `query_source_passwords`), connected to (the synchronous `postgres` crate, TLS as the URL's
//! `sslmode` says through `pg_connect`, a connect timeout inside the run's time limit), checked (one query that compiles and returns rows) and
//! read. Every statement runs in a `READ ONLY` transaction whose `statement_timeout` is what is
//! left of the run's time limit, and a watchdog thread sends PostgreSQL a cancel request when the
//! run is cancelled or its deadline passes, whatever the statement is doing. Rows are streamed
//! (the crate reads the socket only as fast as rows are taken) into the same CSV writer, with the
//! same row, byte and value limits as SQLite sources. Values are fetched as PostgreSQL's own text
//! form (the query is wrapped as `SELECT q.c1::text … FROM (<sql>) AS q(c1 …)`, in a session set
//! to UTC and ISO dates), except `bool` (`true`/`false`) and `bytea` (base64, as SQLite blobs).
//! Parameters are bound as text and typed by the server (see `pg_sql`). No message a user sees
//! holds the source's password, host or URL; the server's log names host, port, database and
//! user, never the password.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Statement, Transaction};
use rusqlite::types::ValueRef;

use super::csv::{CsvWriter, ExportError, ExportStats, Guard, Limits, Stop};
use super::pg_sql::{PgSql, rewrite};
use crate::pg_connect::{PgTarget, error_text};

/// Longest wait for a connection, when the run's time limit leaves more.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A configured PostgreSQL data source.
#[derive(Clone)]
pub struct PgSource {
    name: String,
    /// The server and its TLS connector (`None`: the URL is not usable, see `password_error`).
    target: Option<PgTarget>,
    /// Why the source cannot be used: its URL, or a password file that cannot be read.
    password_error: Option<String>,
    /// The password, to keep it out of every message.
    password: Option<String>,
    /// Longest single value, in bytes.
    value_limit: Option<u64>,
}

impl std::fmt::Debug for PgSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSource")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "(hidden)"))
            .finish_non_exhaustive()
    }
}

/// Where a source's password comes from besides its URL.
#[derive(Debug, Clone, Default)]
pub struct PasswordFrom {
    /// `query_source_passwords.NAME` (e.g. from `LABCRON_QUERY_SOURCE_PASSWORDS`).
    pub value: Option<String>,
    /// `query_source_password_files.NAME`: a file holding the password (one line).
    pub file: Option<std::path::PathBuf>,
}

impl PgSource {
    /// Source `name` at `url`, its password taken from `from` when given there.
    pub fn new(name: &str, url: &str, from: &PasswordFrom, value_limit: Option<u64>) -> Self {
        let (mut target, mut password_error) = match PgTarget::open(url) {
            Ok(target) => (Some(target), None),
            // Checked when the settings are loaded; a source built otherwise fails at use.
            // The reason may name the CA file (a path): the log has it, users the gist.
            Err(e) => {
                tracing::warn!(source = name, error = %e, "a data source's URL cannot be used");
                (
                    None,
                    Some("its URL cannot be used (the server's log says why)".into()),
                )
            }
        };
        let mut set_password = |password: &str| {
            if let Some(target) = &mut target {
                target.config_mut().password(password);
            }
        };
        if let Some(value) = &from.value {
            set_password(value);
        } else if let Some(file) = &from.file {
            match std::fs::read_to_string(file) {
                Ok(text) => {
                    set_password(text.trim_end_matches(['\r', '\n']));
                }
                Err(e) => {
                    tracing::warn!(source = name, path = %file.display(), error = %e,
                        "cannot read a data source's password file");
                    password_error =
                        Some("its password file cannot be read (the server's log names it)".into());
                }
            }
        }
        let password = target
            .as_ref()
            .and_then(|t| t.config().get_password())
            .map(|p| String::from_utf8_lossy(p).into_owned());
        if let Some(target) = &mut target {
            target
                .config_mut()
                .application_name("labcron")
                .keepalives(true)
                .keepalives_idle(Duration::from_secs(60));
        }
        PgSource {
            name: name.to_string(),
            target,
            password_error,
            password,
            value_limit,
        }
    }

    /// `message` with the password (if any) replaced by `***`.
    fn redact(&self, message: String) -> String {
        match &self.password {
            Some(pw) if !pw.is_empty() => message.replace(pw.as_str(), "***"),
            _ => message,
        }
    }

    /// A message about this source for users: its name, never its address or password.
    fn problem(&self, what: &str, e: &postgres::Error) -> String {
        self.redact(format!(
            "data source `{}`: {what}: {}",
            self.name,
            error_text(e)
        ))
    }

    /// Host, port, database and user, for the server's log.
    fn address(&self) -> String {
        let Some(config) = self.target.as_ref().map(PgTarget::config) else {
            return "(no usable URL)".into();
        };
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => String::new(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{host}:{port}/{} as {}",
            config.get_dbname().unwrap_or(""),
            config.get_user().unwrap_or("")
        )
    }

    /// Connects within `guard`'s deadline.
    fn connect(&self, guard: &Guard) -> Result<Client, Failure> {
        let target = match (&self.target, &self.password_error) {
            (Some(target), None) => target,
            (_, Some(e)) => {
                return Err(Failure::Source(format!("data source `{}`: {e}", self.name)));
            }
            (None, None) => {
                return Err(Failure::Source(format!(
                    "data source `{}`: its URL is invalid",
                    self.name
                )));
            }
        };
        let mut target = target.clone();
        let timeout = guard
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(CONNECT_TIMEOUT)
            .clamp(Duration::from_millis(100), CONNECT_TIMEOUT);
        target.config_mut().connect_timeout(timeout);
        target.connect().map_err(|e| {
            tracing::warn!(source = %self.name, address = %self.address(), error = %self.redact(target.explain(&e)),
                "cannot connect to a PostgreSQL data source");
            if let Some(stop) = guard.check() {
                return Failure::Stopped(stop);
            }
            // The full reason names the host and the CA file: the log has it, the user the gist.
            if let Some(refusal) = PgTarget::tls_refusal(&e) {
                return Failure::Source(format!(
                    "data source `{}`: TLS refused: {refusal} (the server's log says more)",
                    self.name
                ));
            }
            let what = match e.code() {
                Some(c) if *c == SqlState::INVALID_PASSWORD
                    || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
                {
                    "cannot sign in"
                }
                Some(_) => "refused the connection",
                None => "cannot connect (the server's log names the address)",
            };
            Failure::Source(self.problem(what, &e))
        })
    }

    /// Checks that `sql` is one query that returns rows and compiles here; returns the names
    /// of its parameters.
    pub fn check_sql(&self, sql: &str) -> Result<Vec<String>, Failure> {
        let rewritten = rewrite(sql).map_err(Failure::Sql)?;
        let guard = Guard {
            deadline: Some(Instant::now() + CONNECT_TIMEOUT),
            cancel: None,
        };
        let mut client = self.connect(&guard)?;
        let mut tx = begin(&mut client, &guard).map_err(|e| self.failure(e, &guard))?;
        prepare(&mut tx, &rewritten).map_err(|e| self.failure_of(e, &guard))?;
        Ok(rewritten.names)
    }

    /// Runs `sql` with `values` (one per named parameter, in `PgSql::names` order) and streams
    /// its rows to `out` as CSV, inside `limits` and `guard`.
    pub fn export_csv<W: std::io::Write>(
        &self,
        sql: &PgSql,
        values: &[&str],
        out: W,
        limits: Limits,
        guard: &Guard,
    ) -> Result<ExportStats, Failure> {
        let mut client = self.connect(guard)?;
        let token = client.cancel_token();
        let _watchdog = Watchdog::start(token.clone(), guard.clone(), self.target.clone());
        let mut tx = begin(&mut client, guard).map_err(|e| self.failure(e, guard))?;
        let prepared = prepare(&mut tx, sql).map_err(|e| self.failure_of(e, guard))?;
        let mut csv = CsvWriter::new(out).with_limits(limits.bytes, guard.clone());
        for (index, name) in prepared.names.iter().enumerate() {
            if index > 0 {
                csv.separator();
            }
            csv.text(name.as_bytes())?;
        }
        csv.end_record()?;
        let params: Vec<TextParam<'_>> = values.iter().map(|v| TextParam(v)).collect();
        let mut rows = tx
            .query_raw(&prepared.statement, params.iter())
            .map_err(|e| self.failure(e, guard))?;
        let mut written: u64 = 0;
        let streamed = (|| {
            while let Some(row) = rows.next().map_err(|e| self.failure(e, guard))? {
                if limits.rows.is_some_and(|max| written >= max) {
                    return Err(Failure::Export(ExportError::RowLimit(written)));
                }
                for (index, kind) in prepared.kinds.iter().enumerate() {
                    if index > 0 {
                        csv.separator();
                    }
                    self.write_value(&mut csv, &row, index, *kind)?;
                }
                csv.end_record()?;
                written += 1;
                if let Some(stop) = guard.check() {
                    return Err(Failure::Stopped(stop));
                }
            }
            Ok(())
        })();
        if streamed.is_err() {
            self.stop_sending(&token);
        }
        drop(rows);
        // Nothing was written; ending the transaction either way changes nothing.
        let _ = tx.rollback();
        streamed?;
        let bytes = csv.finish()?;
        Ok(ExportStats {
            rows: written,
            bytes,
        })
    }

    fn write_value<W: std::io::Write>(
        &self,
        csv: &mut CsvWriter<W>,
        row: &postgres::Row,
        index: usize,
        kind: Kind,
    ) -> Result<(), Failure> {
        let decode =
            |e: postgres::Error| Failure::Query(format!("cannot read column {}: {e}", index + 1));
        match kind {
            Kind::Bool => match row.try_get::<_, Option<bool>>(index).map_err(decode)? {
                Some(true) => csv.text(b"true")?,
                Some(false) => csv.text(b"false")?,
                None => {}
            },
            Kind::Bytes => {
                if let Some(bytes) = row.try_get::<_, Option<&[u8]>>(index).map_err(decode)? {
                    self.check_length(bytes.len())?;
                    csv.value(ValueRef::Blob(bytes))?;
                }
            }
            Kind::Text => {
                if let Some(text) = row.try_get::<_, Option<&str>>(index).map_err(decode)? {
                    self.check_length(text.len())?;
                    csv.text(text.as_bytes())?;
                }
            }
        }
        Ok(())
    }

    fn check_length(&self, len: usize) -> Result<(), Failure> {
        if self.value_limit.is_some_and(|max| len as u64 > max) {
            return Err(Failure::Export(ExportError::ValueTooBig));
        }
        Ok(())
    }

    /// The first `max_rows` rows as text (`None` for NULL; bytea as a note of its size), and
    /// whether there were more. Text is kept to its first `max_chars + 1` characters (enough
    /// to show that it was cut) and a value over the value cap fails as for an export, so rows
    /// held for the answer stay small whatever the query makes.
    pub fn preview(
        &self,
        sql: &PgSql,
        values: &[&str],
        max_rows: usize,
        max_chars: usize,
        guard: &Guard,
    ) -> Result<PgPreview, Failure> {
        let mut client = self.connect(guard)?;
        let token = client.cancel_token();
        let _watchdog = Watchdog::start(token.clone(), guard.clone(), self.target.clone());
        let mut tx = begin(&mut client, guard).map_err(|e| self.failure(e, guard))?;
        let prepared = prepare(&mut tx, sql).map_err(|e| self.failure_of(e, guard))?;
        let params: Vec<TextParam<'_>> = values.iter().map(|v| TextParam(v)).collect();
        let mut rows = tx
            .query_raw(&prepared.statement, params.iter())
            .map_err(|e| self.failure(e, guard))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.failure(e, guard))? {
            if out.len() == max_rows {
                self.stop_sending(&token);
                return Ok(PgPreview {
                    columns: prepared.names,
                    rows: out,
                    truncated: true,
                });
            }
            let mut cells = Vec::with_capacity(prepared.kinds.len());
            for (index, kind) in prepared.kinds.iter().enumerate() {
                let decode = |e: postgres::Error| Failure::Query(e.to_string());
                cells.push(match kind {
                    Kind::Bool => row
                        .try_get::<_, Option<bool>>(index)
                        .map_err(decode)?
                        .map(|b| b.to_string()),
                    Kind::Bytes => match row.try_get::<_, Option<&[u8]>>(index).map_err(decode)? {
                        Some(b) => {
                            self.check_length(b.len())?;
                            Some(format!("({} bytes of binary data)", b.len()))
                        }
                        None => None,
                    },
                    Kind::Text => match row.try_get::<_, Option<&str>>(index).map_err(decode)? {
                        Some(text) => {
                            self.check_length(text.len())?;
                            Some(text.chars().take(max_chars.saturating_add(1)).collect())
                        }
                        None => None,
                    },
                });
            }
            out.push(cells);
        }
        Ok(PgPreview {
            columns: prepared.names,
            rows: out,
            truncated: false,
        })
    }

    /// What a PostgreSQL error means for the run.
    fn failure(&self, e: postgres::Error, guard: &Guard) -> Failure {
        if e.code() == Some(&SqlState::QUERY_CANCELED) {
            // Our own cancel request, or the server's statement_timeout (set from the deadline).
            return Failure::Stopped(guard.check().unwrap_or(Stop::TimeLimit));
        }
        if let Some(stop) = guard.check() {
            return Failure::Stopped(stop);
        }
        let message = self.redact(error_text(&e));
        match e.code() {
            Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => Failure::Query(format!(
                "refused: the query tried to change the database, which labcron reads only in a \
                 READ ONLY transaction ({message})"
            )),
            Some(c) if c.code().starts_with("42") || c.code().starts_with("0A") => {
                Failure::Sql(message)
            }
            Some(_) => Failure::Query(message),
            None if e.is_closed() => Failure::Source(format!(
                "data source `{}`: the connection was lost: {message}",
                self.name
            )),
            None => Failure::Query(message),
        }
    }
}

impl PgSource {
    /// Asks the server to stop a statement whose rows are no longer wanted: otherwise ending the
    /// transaction would first read every row left (the protocol has no other way to drop them).
    fn stop_sending(&self, token: &postgres::CancelToken) {
        if let Some(target) = &self.target {
            cancel(target, token);
        }
    }
}

/// Sends a cancel request (over TLS when the source's sessions use it).
fn cancel(target: &PgTarget, token: &postgres::CancelToken) {
    if let Err(e) = target.cancel(token) {
        tracing::warn!(error = %e, "cannot send a cancel request to a PostgreSQL data source");
    }
}

/// The first rows of a query, as text (`None`: NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgPreview {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
    /// More rows exist than were returned.
    pub truncated: bool,
}

/// How a column's values are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Bytes,
    Text,
}

struct Prepared {
    statement: Statement,
    /// The query's own column names.
    names: Vec<String>,
    kinds: Vec<Kind>,
}

/// Starts the READ ONLY transaction every statement runs in, its statement_timeout what is left
/// of the deadline, its session settings those the text forms depend on.
fn begin<'c>(client: &'c mut Client, guard: &Guard) -> Result<Transaction<'c>, postgres::Error> {
    let mut tx = client.build_transaction().read_only(true).start()?;
    let timeout_ms = guard
        .deadline
        .map(|d| {
            d.saturating_duration_since(Instant::now())
                .as_millis()
                .max(1)
        })
        .unwrap_or(0);
    // Only numbers and constants here: nothing of a user reaches this text.
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {timeout_ms}; SET LOCAL TimeZone = 'UTC'; \
         SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL IntervalStyle = 'postgres'; \
         SET LOCAL extra_float_digits = 1"
    ))?;
    Ok(tx)
}

/// Compiles the query (it must return columns), then the wrapper that reads it as text.
fn prepare(tx: &mut Transaction<'_>, sql: &PgSql) -> Result<Prepared, PrepareError> {
    if sql.text.trim().is_empty() {
        return Err(PrepareError::Message("the SQL holds no statement".into()));
    }
    let inner = tx.prepare(&sql.text)?;
    if inner.columns().is_empty() {
        return Err(PrepareError::Message(
            "the statement returns no columns; write a SELECT".into(),
        ));
    }
    let mut kinds = Vec::new();
    let mut select = String::from("SELECT ");
    let mut aliases = String::new();
    for (index, column) in inner.columns().iter().enumerate() {
        let n = index + 1;
        if index > 0 {
            select.push_str(", ");
            aliases.push_str(", ");
        }
        let kind = match *column.type_() {
            Type::BOOL => Kind::Bool,
            Type::BYTEA => Kind::Bytes,
            _ => Kind::Text,
        };
        kinds.push(kind);
        select.push_str(&format!("q.c{n}"));
        if kind == Kind::Text {
            select.push_str("::text");
        }
        aliases.push_str(&format!("c{n}"));
    }
    // The new lines keep a final `--` comment of the query from eating the wrapper's end.
    let wrapped = format!("{select} FROM (\n{}\n) AS q({aliases})", sql.text);
    let statement = tx.prepare(&wrapped).map_err(|e| match e.code() {
        Some(c) if *c == SqlState::SYNTAX_ERROR || *c == SqlState::FEATURE_NOT_SUPPORTED => {
            PrepareError::Message(
                "only queries (SELECT, WITH … SELECT, VALUES, TABLE) are allowed; this statement \
                 would change the database or is not a query"
                    .into(),
            )
        }
        _ => PrepareError::Pg(e),
    })?;
    Ok(Prepared {
        statement,
        names: inner
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect(),
        kinds,
    })
}

enum PrepareError {
    Pg(postgres::Error),
    Message(String),
}

impl From<postgres::Error> for PrepareError {
    fn from(e: postgres::Error) -> Self {
        PrepareError::Pg(e)
    }
}

impl PgSource {
    fn failure_of(&self, e: PrepareError, guard: &Guard) -> Failure {
        match e {
            PrepareError::Pg(e) => {
                if e.code() == Some(&SqlState::SYNTAX_ERROR)
                    && error_text(&e).contains("multiple commands")
                {
                    return Failure::Sql(
                        "only one statement is allowed (remove everything after the first `;`)"
                            .into(),
                    );
                }
                self.failure(e, guard)
            }
            PrepareError::Message(m) => Failure::Sql(m),
        }
    }
}

/// Why a PostgreSQL query did not produce its CSV.
#[derive(Debug)]
pub enum Failure {
    /// The source cannot be reached or signed in to (or is misconfigured).
    Source(String),
    /// The SQL is not a valid query for this source.
    Sql(String),
    /// The query failed while it ran.
    Query(String),
    Stopped(Stop),
    Export(ExportError),
}

impl From<ExportError> for Failure {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::Stopped(stop) => Failure::Stopped(stop),
            other => Failure::Export(other),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Export(ExportError::Io(e))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Source(m) | Failure::Sql(m) | Failure::Query(m) => f.write_str(m),
            Failure::Stopped(Stop::TimeLimit) => f.write_str("stopped at the time limit"),
            Failure::Stopped(Stop::Cancelled) => f.write_str("cancelled"),
            Failure::Export(e) => write!(f, "{e}"),
        }
    }
}

/// A parameter sent in text form, whatever type the server inferred for it, as psql does.
#[derive(Debug)]
struct TextParam<'a>(&'a str);

impl ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// Sends the server a cancel request once the guard says stop (deadline or cancel), so a
/// statement stops even while it yields no row and the client waits.
struct Watchdog {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often the watchdog looks at the guard.
const WATCH_EVERY: Duration = Duration::from_millis(50);

impl Watchdog {
    fn start(token: postgres::CancelToken, guard: Guard, target: Option<PgTarget>) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let seen = done.clone();
        let thread = std::thread::Builder::new()
            .name("pg-watchdog".into())
            .spawn(move || {
                while !seen.load(Ordering::Relaxed) {
                    if guard.check().is_some() {
                        if let Some(target) = &target {
                            cancel(target, &token);
                        }
                        return;
                    }
                    std::thread::sleep(WATCH_EVERY);
                }
            })
            .ok();
        Watchdog { done, thread }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_comes_from_the_value_then_the_file_then_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let url = "postgres://r:from-url@h/db";
        let pw = |from: &PasswordFrom| PgSource::new("s", url, from, None).password;
        assert_eq!(pw(&PasswordFrom::default()).as_deref(), Some("from-url"));
        let from = PasswordFrom {
            value: None,
            file: Some(file.clone()),
        };
        assert_eq!(pw(&from).as_deref(), Some("from-file"));
        let from = PasswordFrom {
            value: Some("from-env".into()),
            file: Some(file),
        };
        assert_eq!(pw(&from).as_deref(), Some("from-env"));
        let missing = PasswordFrom {
            value: None,
            file: Some(dir.path().join("absent")),
        };
        let source = PgSource::new("s", url, &missing, None);
        let err = source.password_error.clone().unwrap();
        assert!(!err.contains("absent"), "{err}");
        assert!(!format!("{source:?}").contains("from-url"));
        assert_eq!(source.redact("x from-url y".into()), "x *** y".to_string());
    }
}
