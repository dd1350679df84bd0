//! The engine work of `labcron migrate-ledger --to postgres://…` (`cli::migrate_ledger`): copies a
//! SQLite ledger (`<data>/labcron.db`) and its run files (`<data>/runs/`) into an empty PostgreSQL
//! ledger, checked. It knows both engines, so it lives in the store. The data directory's lock is
//! held throughout (a server running on it refuses the migration, and none can start meanwhile)
//! and the SQLite file is opened read-only, in one read transaction (one consistent view, even if a
//! `labcron user` command wrote beside it). The target's schema is the PostgreSQL store's own
//! (`PgLedgerDb::open` applies it). Everything is written in one PostgreSQL transaction: every
//! table with its ids (binary `COPY … FROM STDIN`, rows streamed from SQLite, never all in memory),
//! each run's log and result file in pieces of at most 256 KiB (`run_files`, streamed from the
//! files, opened without following links), the identity sequences moved past the highest ids;
//! then each table's row count and checksums are compared on both sides, and any difference, or
//! `--dry-run`, rolls all of it back. The SQLite ledger and the run files are left as they were.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use postgres::Transaction;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use rusqlite::OpenFlags;
use rusqlite::types::ValueRef;

use super::guard::DataDirLock;
use super::postgres::PgLedgerDb;
use crate::pg_connect::PgTarget;

/// Opens a run's file: (job id, run id, name relative to the run's directory).
pub type OpenRunFile<'a> = &'a dyn Fn(i64, i64, &str) -> std::io::Result<std::fs::File>;

/// The largest piece of a run file in `run_files`: the PostgreSQL run-file store's own size.
pub use super::postgres::files::PIECE_BYTES;

/// The ledger's tables in the order their foreign keys need (a row's references come first).
/// A table of the SQLite ledger not named here is copied after these.
const TABLE_ORDER: &[&str] = &[
    "users",
    "sessions",
    "api_tokens",
    "saved_queries",
    "jobs",
    "job_recipients",
    "job_shared_users",
    "job_chains",
    "runs",
    "audit_events",
];

/// Tables only the PostgreSQL ledger has; the target's must be empty too.
const PG_ONLY: &[&str] = &["nodes", "run_files"];

/// Integer columns are checked by the sum of their values modulo this prime: cheap, and it cannot
/// overflow (SQLite's `sum` fails on an overflow) whatever the ledger's size.
const MODULUS: i64 = 1_000_003;

/// How many skipped or missing files the summary names (it counts them all).
const EXAMPLES: usize = 20;

/// What a column holds, by its PostgreSQL type (SQLite's INTEGER flags become BOOLEAN there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Boolean,
    Text,
}

impl Kind {
    fn from_pg(data_type: &str) -> Option<Kind> {
        match data_type {
            "bigint" => Some(Kind::Integer),
            "boolean" => Some(Kind::Boolean),
            "text" => Some(Kind::Text),
            _ => None,
        }
    }

    fn pg_type(self) -> Type {
        match self {
            Kind::Integer => Type::INT8,
            Kind::Boolean => Type::BOOL,
            Kind::Text => Type::TEXT,
        }
    }
}

/// A table to copy: the SQLite ledger's columns, each with the type it has in PostgreSQL.
#[derive(Debug)]
struct Table {
    name: String,
    columns: Vec<(String, Kind)>,
}

/// Files the migration did not copy: how many, and the first few by name.
#[derive(Debug, Default)]
pub struct Reported {
    pub count: u64,
    pub examples: Vec<String>,
}

impl Reported {
    fn add(&mut self, what: String) {
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(what);
        }
    }
}

/// What a migration copied (and checked).
#[derive(Debug)]
pub struct Summary {
    /// The target without its password.
    pub target: String,
    /// Rows copied per table, in the order copied.
    pub tables: Vec<(String, u64)>,
    /// Run files (logs and results) copied, their pieces and bytes.
    pub files: u64,
    pub pieces: u64,
    pub bytes: u64,
    /// Links and files that are not regular files: not copied.
    pub skipped: Reported,
    /// Result files the ledger names that are not there (removed by the files cleaner, say).
    pub missing: Reported,
    pub elapsed: Duration,
    /// How long the parts took: the tables, the run files, the checks.
    pub stages: Vec<(&'static str, Duration)>,
    /// Rolled back at the end (`--dry-run`).
    pub dry_run: bool,
}

impl Summary {
    /// The summary as the command prints it.
    pub fn report(&self) -> String {
        let mut out = format!(
            "{} {} (checked: each table's row count and checksums, each run file's bytes)\n",
            if self.dry_run {
                "dry run: copied into"
            } else {
                "copied into"
            },
            self.target
        );
        for (table, rows) in &self.tables {
            out.push_str(&format!("  {table:<18} {rows} rows\n"));
        }
        out.push_str(&format!(
            "  {:<18} {} files in {} pieces, {} bytes\n",
            "run files", self.files, self.pieces, self.bytes
        ));
        for (what, reported) in [
            ("skipped (a link or not a regular file)", &self.skipped),
            ("result files missing", &self.missing),
        ] {
            if reported.count > 0 {
                out.push_str(&format!("{what}: {}\n", reported.count));
                for example in &reported.examples {
                    out.push_str(&format!("  {example}\n"));
                }
                if reported.count > reported.examples.len() as u64 {
                    out.push_str("  …\n");
                }
            }
        }
        let stages: Vec<String> = self
            .stages
            .iter()
            .map(|(what, took)| format!("{what} {:.3} s", took.as_secs_f64()))
            .collect();
        out.push_str(&format!(
            "took {:.3} s ({})\n",
            self.elapsed.as_secs_f64(),
            stages.join(", ")
        ));
        if self.dry_run {
            out.push_str("dry run: rolled back, the target database is as it was\n");
        } else {
            out.push_str(
                "committed; the SQLite ledger is left as it was. Start the nodes with --database-url.\n",
            );
        }
        out
    }
}

/// `"name"`: an identifier quoted the same way for both engines.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Copies the ledger of the data directory `data_dir` into the empty PostgreSQL database at `to`,
/// checked; with `dry_run` everything is done and checked, then rolled back. `open_run_file` opens
/// a run's file (job id, run id, name relative to the run's directory) without following links:
/// the caller's, since where run files live is not the store's to know. Blocking.
pub fn migrate(
    data_dir: &Path,
    to: &str,
    dry_run: bool,
    open_run_file: OpenRunFile<'_>,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let path = data_dir.join("labcron.db");
    if !path.is_file() {
        bail!(
            "no ledger at {} (set data_dir to the directory that holds labcron.db)",
            path.display()
        );
    }
    // Held until the end: no server works on the ledger or the run files meanwhile.
    let _lock = DataDirLock::acquire(data_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sqlite = rusqlite::Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {} read-only", path.display()))?;
    sqlite.busy_timeout(Duration::from_secs(5))?;
    // One read transaction: every table, file list and checksum comes from one state.
    let sqlite = sqlite.unchecked_transaction()?;
    let version: i64 = sqlite.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let expected = super::sqlite_schema_version();
    if version != expected {
        bail!(
            "the ledger {} is at schema version {version}, this labcron's is {expected}: {}",
            path.display(),
            if version < expected {
                "start this version's server on it once (it upgrades the ledger), stop it, then migrate"
            } else {
                "migrate it with the labcron version that wrote it"
            }
        );
    }

    let ledger = PgLedgerDb::open(to).context("cannot open the target database")?;
    let shown = ledger.url().to_string();
    drop(ledger);
    let target =
        PgTarget::open(to).map_err(|e| anyhow::anyhow!("the target database's URL: {e}"))?;
    let mut client = target
        .connect()
        .map_err(|e| anyhow::anyhow!("cannot connect to {shown}: {}", target.explain(&e)))?;
    let mut tx = client.transaction()?;

    let tables = plan(&sqlite, &mut tx)?;
    lock_and_refuse_unless_empty(&mut tx, &tables, &shown)?;
    // The schema's own system user goes: the ledger's (with its id) takes its place, and nothing
    // refers to it in an empty ledger.
    tx.execute("DELETE FROM users", &[])?;

    let mut stages = Vec::new();
    let mut stage = started;
    let mut lap = |what: &'static str| {
        stages.push((what, stage.elapsed()));
        stage = Instant::now();
    };
    lap("opening both ledgers");
    let mut copied = Vec::new();
    for table in &tables {
        let rows = copy_table(&sqlite, &mut tx, table)
            .with_context(|| format!("copying table {}", table.name))?;
        copied.push((table.name.clone(), rows));
    }
    lap("tables");
    let mut files = FileTotals::default();
    if tables.iter().any(|t| t.name == "runs") {
        copy_run_files(&sqlite, &mut tx, open_run_file, &mut files).context("copying run files")?;
    }
    lap("run files");
    move_sequences(&mut tx)?;
    for table in &tables {
        check_table(&sqlite, &mut tx, table)?;
    }
    check_run_files(&mut tx, &files)?;
    lap("checks");

    if dry_run {
        tx.rollback()?;
    } else {
        tx.commit()
            .with_context(|| format!("cannot commit the copy into {shown}"))?;
    }
    lap("commit");
    Ok(Summary {
        target: shown,
        tables: copied,
        files: files.files,
        pieces: files.pieces,
        bytes: files.bytes,
        skipped: files.skipped,
        missing: files.missing,
        elapsed: started.elapsed(),
        stages,
        dry_run,
    })
}

/// The tables to copy and their columns' PostgreSQL types. Refuses (before anything is written) a
/// SQLite table or column the PostgreSQL schema has no place for, or a type it cannot map.
fn plan(sqlite: &rusqlite::Connection, tx: &mut Transaction<'_>) -> anyhow::Result<Vec<Table>> {
    let mut pg_columns: std::collections::HashMap<String, Vec<(String, String)>> =
        Default::default();
    for row in tx.query(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns
          WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position",
        &[],
    )? {
        pg_columns
            .entry(row.try_get(0)?)
            .or_default()
            .push((row.try_get(1)?, row.try_get(2)?));
    }
    let mut names: Vec<String> = sqlite
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let position = |name: &str| {
        TABLE_ORDER
            .iter()
            .position(|t| *t == name)
            .unwrap_or(TABLE_ORDER.len())
    };
    names.sort_by(|a, b| position(a).cmp(&position(b)).then(a.cmp(b)));
    let mut tables = Vec::new();
    for name in names {
        let Some(target) = pg_columns.get(&name) else {
            bail!("the SQLite ledger's table {name} has no place in the PostgreSQL schema");
        };
        let sqlite_columns: Vec<String> = sqlite
            .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?
            .query_map([&name], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut columns = Vec::new();
        for column in sqlite_columns {
            let Some((_, data_type)) = target.iter().find(|(c, _)| *c == column) else {
                bail!("column {name}.{column} of the SQLite ledger has no place in PostgreSQL");
            };
            let Some(kind) = Kind::from_pg(data_type) else {
                bail!("column {name}.{column} is {data_type} in PostgreSQL, which is not mapped");
            };
            columns.push((column, kind));
        }
        tables.push(Table { name, columns });
    }
    Ok(tables)
}

/// Locks the ledger's tables for the transaction (nothing reads or writes them until it ends) and
/// refuses a target that already holds anything beyond the empty schema's system user.
fn lock_and_refuse_unless_empty(
    tx: &mut Transaction<'_>,
    tables: &[Table],
    shown: &str,
) -> anyhow::Result<()> {
    let mut names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    names.extend(PG_ONLY);
    let list: Vec<String> = names.iter().map(|n| ident(n)).collect();
    // A node running on the target holds locks only briefly; a long wait means it is busy.
    // A statement_timeout set for the role would cut a long copy short.
    tx.batch_execute("SET LOCAL lock_timeout = '30s'; SET LOCAL statement_timeout = 0")?;
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        list.join(", ")
    ))
    .with_context(|| format!("cannot lock the ledger's tables in {shown} (a node using it?)"))?;
    let mut held = Vec::new();
    for name in &names {
        let filter = if *name == "users" {
            " WHERE NOT is_system"
        } else {
            ""
        };
        let rows: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM {}{filter}", ident(name)),
                &[],
            )?
            .try_get(0)?;
        if rows > 0 {
            held.push(format!("{name}: {rows}"));
        }
    }
    if !held.is_empty() {
        bail!(
            "the target database {shown} is not empty ({}); migrate-ledger fills only a new, \
             empty ledger. Nothing was written",
            held.join(", ")
        );
    }
    Ok(())
}

/// One value of a row on its way to PostgreSQL, borrowed from the SQLite row where it can be.
enum Cell<'r> {
    Integer(Option<i64>),
    Boolean(Option<bool>),
    Text(Option<&'r str>),
}

impl Cell<'_> {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Cell::Integer(v) => v,
            Cell::Boolean(v) => v,
            Cell::Text(v) => v,
        }
    }
}

/// A SQLite value as the PostgreSQL column's type wants it.
fn cell(value: ValueRef<'_>, kind: Kind) -> Result<Cell<'_>, String> {
    Ok(match (value, kind) {
        (ValueRef::Null, Kind::Integer) => Cell::Integer(None),
        (ValueRef::Null, Kind::Boolean) => Cell::Boolean(None),
        (ValueRef::Null, Kind::Text) => Cell::Text(None),
        (ValueRef::Integer(i), Kind::Integer) => Cell::Integer(Some(i)),
        (ValueRef::Integer(i), Kind::Boolean) => Cell::Boolean(Some(i != 0)),
        (ValueRef::Text(bytes), Kind::Text) => Cell::Text(Some(
            std::str::from_utf8(bytes).map_err(|_| "text that is not UTF-8".to_string())?,
        )),
        (other, kind) => {
            return Err(format!(
                "a {:?} value where PostgreSQL wants {kind:?}",
                other.data_type()
            ));
        }
    })
}

/// Copies one table's rows, streamed from SQLite into a binary `COPY`; how many.
fn copy_table(
    sqlite: &rusqlite::Connection,
    tx: &mut Transaction<'_>,
    table: &Table,
) -> anyhow::Result<u64> {
    let columns: Vec<String> = table.columns.iter().map(|(c, _)| ident(c)).collect();
    let columns = columns.join(", ");
    let types: Vec<Type> = table.columns.iter().map(|(_, k)| k.pg_type()).collect();
    let mut select = sqlite.prepare(&format!("SELECT {columns} FROM {}", ident(&table.name)))?;
    let mut rows = select.query([])?;
    let copy = tx.copy_in(&format!(
        "COPY {} ({columns}) FROM STDIN (FORMAT binary)",
        ident(&table.name)
    ))?;
    let mut writer = BinaryCopyInWriter::new(copy, &types);
    let mut count = 0u64;
    while let Some(row) = rows.next()? {
        let mut cells = Vec::with_capacity(table.columns.len());
        for (index, (column, kind)) in table.columns.iter().enumerate() {
            let value = row.get_ref(index)?;
            cells.push(cell(value, *kind).map_err(|e| {
                anyhow::anyhow!("{}.{column} of row {}: {e}", table.name, count + 1)
            })?);
        }
        let values: Vec<&(dyn ToSql + Sync)> = cells.iter().map(Cell::as_sql).collect();
        writer.write(&values)?;
        count += 1;
    }
    let written = writer.finish()?;
    if written != count {
        bail!("{} rows read but {written} written", count);
    }
    Ok(count)
}

/// What was copied of the run files, for the summary and the check.
#[derive(Debug, Default)]
struct FileTotals {
    files: u64,
    pieces: u64,
    bytes: u64,
    /// Σ over pieces of (run id mod p) × (1 for a log, 2 for a result) × its length: ties each
    /// run's bytes to the run and the kind, checked against the same sum in PostgreSQL.
    weighted: i128,
    /// Σ over pieces of (start_at mod p): the pieces' offsets.
    starts: i128,
    skipped: Reported,
    missing: Reported,
}

/// The `kind` of a run file in `run_files`, and its weight in the checksum.
const LOG: (&str, i128) = ("LOG", 1);
const RESULT: (&str, i128) = ("RESULT", 2);

/// Copies every run's log and result file into `run_files`, piece by piece.
fn copy_run_files(
    sqlite: &rusqlite::Connection,
    tx: &mut Transaction<'_>,
    open_run_file: OpenRunFile<'_>,
    totals: &mut FileTotals,
) -> anyhow::Result<()> {
    let mut select = sqlite.prepare("SELECT id, job_id, result_file FROM runs ORDER BY id")?;
    let mut rows = select.query([])?;
    let copy =
        tx.copy_in("COPY run_files (run_id, kind, start_at, data) FROM STDIN (FORMAT binary)")?;
    let mut writer =
        BinaryCopyInWriter::new(copy, &[Type::INT8, Type::TEXT, Type::INT8, Type::BYTEA]);
    let mut buffer = vec![0u8; PIECE_BYTES];
    while let Some(row) = rows.next()? {
        let (run_id, job_id): (i64, i64) = (row.get(0)?, row.get(1)?);
        let result: Option<String> = row.get(2)?;
        let mut wanted = vec![("run.log".to_string(), LOG)];
        wanted.extend(result.map(|r| (r, RESULT)));
        for (relative, kind) in wanted {
            let shown = format!("runs/{job_id}/{run_id}/{relative}");
            let file = match open_run_file(job_id, run_id, &relative) {
                Ok(file) => file,
                // A run that wrote nothing has no log; that is not worth a line.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if kind == RESULT {
                        totals.missing.add(shown);
                    }
                    continue;
                }
                Err(e) if refused(&e) => {
                    let why = if e.raw_os_error() == Some(libc::ELOOP) {
                        "a symbolic link, not followed".to_string()
                    } else {
                        e.to_string()
                    };
                    totals.skipped.add(format!("{shown}: {why}"));
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("cannot open {shown}")),
            };
            copy_file(file, &mut writer, &mut buffer, run_id, kind, totals)
                .with_context(|| format!("copying {shown}"))?;
        }
    }
    writer.finish()?;
    Ok(())
}

/// Whether opening a run file failed because it is a link or not a regular file (or its path
/// leaves the run directory): such a file is skipped and reported, not an error.
fn refused(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR))
        || e.kind() == std::io::ErrorKind::InvalidInput
}

/// Streams one file into `run_files` in pieces of at most `PIECE_BYTES`.
fn copy_file(
    mut file: std::fs::File,
    writer: &mut BinaryCopyInWriter<'_>,
    buffer: &mut [u8],
    run_id: i64,
    (kind, weight): (&str, i128),
    totals: &mut FileTotals,
) -> anyhow::Result<()> {
    let mut start_at: i64 = 0;
    loop {
        let length = fill(&mut file, buffer)?;
        if length == 0 {
            break;
        }
        let data: &[u8] = &buffer[..length];
        writer.write(&[&run_id, &kind, &start_at, &data])?;
        totals.pieces += 1;
        totals.bytes += length as u64;
        totals.weighted += i128::from(run_id % MODULUS) * weight * length as i128;
        totals.starts += i128::from(start_at % MODULUS);
        start_at += length as i64;
        if length < buffer.len() {
            break;
        }
    }
    totals.files += 1;
    Ok(())
}

/// Reads until `buffer` is full or the file ends; how much was read.
fn fill(file: &mut std::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Moves every identity sequence of the schema past its table's highest id, so the nodes' next
/// rows do not collide with the copied ones.
fn move_sequences(tx: &mut Transaction<'_>) -> anyhow::Result<()> {
    let identities: Vec<(String, String)> = tx
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
              WHERE table_schema = current_schema() AND is_identity = 'YES'",
            &[],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, postgres::Error>>()?;
    for (table, column) in identities {
        tx.query_one(
            &format!(
                "SELECT setval(pg_get_serial_sequence($1, $2), coalesce(max({}), 0) + 1, false) FROM {}",
                ident(&column),
                ident(&table)
            ),
            &[&ident(&table), &column],
        )
        .with_context(|| format!("moving the sequence of {table}.{column}"))?;
    }
    Ok(())
}

/// The checksums of a table, as one query both engines answer the same way when the copy is
/// right, with each figure's name: the row count, then per column the count of non-NULL values
/// and the sum of its values (mod p), of its true flags, or of its texts' lengths in bytes.
fn checksum_query(table: &Table) -> (String, Vec<String>) {
    let mut parts = vec!["count(*)".to_string()];
    let mut labels = vec!["the row count".to_string()];
    for (column, kind) in &table.columns {
        let c = ident(column);
        parts.push(format!("count({c})"));
        labels.push(format!("the count of {column} values"));
        parts.push(match kind {
            Kind::Integer => format!("CAST(coalesce(sum({c} % {MODULUS}), 0) AS BIGINT)"),
            Kind::Boolean => format!("count(CASE WHEN {c} THEN 1 END)"),
            Kind::Text => format!("CAST(coalesce(sum(octet_length({c})), 0) AS BIGINT)"),
        });
        labels.push(format!("the checksum of {column}"));
    }
    (
        format!("SELECT {} FROM {}", parts.join(", "), ident(&table.name)),
        labels,
    )
}

/// Compares a table's checksums in SQLite and in the copy; a difference fails the migration (and
/// rolls it back), naming the table and the figure.
fn check_table(
    sqlite: &rusqlite::Connection,
    tx: &mut Transaction<'_>,
    table: &Table,
) -> anyhow::Result<()> {
    let (sql, labels) = checksum_query(table);
    let expected: Vec<i64> = sqlite.query_row(&sql, [], |r| {
        (0..labels.len()).map(|i| r.get::<_, i64>(i)).collect()
    })?;
    let row = tx.query_one(&sql, &[])?;
    let found: Vec<i64> = (0..labels.len())
        .map(|i| row.try_get::<_, i64>(i))
        .collect::<Result<_, _>>()?;
    for ((label, e), f) in labels.iter().zip(&expected).zip(&found) {
        if e != f {
            bail!(
                "the copy of table {} differs from the SQLite ledger in {label} ({e} there, {f} in \
                 PostgreSQL); rolled back, nothing was written",
                table.name
            );
        }
    }
    Ok(())
}

/// Compares what was read of the run files with what `run_files` holds now.
fn check_run_files(tx: &mut Transaction<'_>, totals: &FileTotals) -> anyhow::Result<()> {
    let row = tx.query_one(
        &format!(
            "SELECT count(DISTINCT (run_id, kind)), count(*),
                    coalesce(sum(octet_length(data)), 0)::text,
                    coalesce(sum((run_id % {MODULUS}) * CASE kind WHEN 'LOG' THEN 1 ELSE 2 END
                                 * octet_length(data)), 0)::text,
                    coalesce(sum(start_at % {MODULUS}), 0)::text,
                    coalesce(max(octet_length(data)), 0)
               FROM run_files"
        ),
        &[],
    )?;
    let number =
        |i: usize| -> anyhow::Result<i128> { Ok(row.try_get::<_, String>(i)?.parse::<i128>()?) };
    let found = [
        i128::from(row.try_get::<_, i64>(0)?),
        i128::from(row.try_get::<_, i64>(1)?),
        number(2)?,
        number(3)?,
        number(4)?,
    ];
    let expected = [
        i128::from(totals.files),
        i128::from(totals.pieces),
        i128::from(totals.bytes),
        totals.weighted,
        totals.starts,
    ];
    let labels = [
        "the count of files",
        "the count of pieces",
        "the total of bytes",
        "the bytes per run",
        "the pieces' offsets",
    ];
    for ((label, e), f) in labels.iter().zip(expected).zip(found) {
        if e != f {
            bail!(
                "the copy of the run files (table run_files) differs from the files in {label} \
                 ({e} read, {f} in PostgreSQL); rolled back, nothing was written"
            );
        }
    }
    let largest: i32 = row.try_get(5)?;
    if largest as usize > PIECE_BYTES {
        bail!("a piece of {largest} bytes in run_files (at most {PIECE_BYTES}); rolled back");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_map_to_the_postgresql_types_and_a_wrong_one_is_named() {
        assert!(matches!(
            cell(ValueRef::Integer(1), Kind::Boolean),
            Ok(Cell::Boolean(Some(true)))
        ));
        assert!(matches!(
            cell(ValueRef::Integer(0), Kind::Boolean),
            Ok(Cell::Boolean(Some(false)))
        ));
        assert!(matches!(
            cell(ValueRef::Integer(-7), Kind::Integer),
            Ok(Cell::Integer(Some(-7)))
        ));
        assert!(matches!(
            cell(ValueRef::Text(b"abc"), Kind::Text),
            Ok(Cell::Text(Some("abc")))
        ));
        assert!(matches!(
            cell(ValueRef::Null, Kind::Text),
            Ok(Cell::Text(None))
        ));
        let wrong = cell(ValueRef::Text(b"x"), Kind::Integer).err().unwrap();
        assert!(wrong.contains("Integer"), "{wrong}");
        assert!(cell(ValueRef::Text(b"\xff"), Kind::Text).is_err());
    }

    #[test]
    fn the_checksum_query_names_each_figure() {
        let table = Table {
            name: "runs".into(),
            columns: vec![
                ("id".into(), Kind::Integer),
                ("series_end".into(), Kind::Boolean),
                ("message".into(), Kind::Text),
            ],
        };
        let (sql, labels) = checksum_query(&table);
        assert_eq!(labels.len(), 7);
        assert!(sql.ends_with("FROM \"runs\""), "{sql}");
        assert!(
            sql.contains("count(CASE WHEN \"series_end\" THEN 1 END)"),
            "{sql}"
        );
        assert!(sql.contains("octet_length(\"message\")"), "{sql}");
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn a_file_is_read_in_full_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 10]).unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        let mut buffer = [0u8; 4];
        assert_eq!(fill(&mut file, &mut buffer).unwrap(), 4);
        assert_eq!(fill(&mut file, &mut buffer).unwrap(), 4);
        assert_eq!(fill(&mut file, &mut buffer).unwrap(), 2);
        assert_eq!(fill(&mut file, &mut buffer).unwrap(), 0);
    }
}
