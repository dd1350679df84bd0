//! Streaming a prepared statement's rows as RFC 4180 CSV: a header row of column names, fields
//! separated by `,`, records ended by CRLF, a field quoted (with `"` doubled) only when it holds
//! `,`, `"`, CR or LF. UTF-8 without a byte-order mark; text that is not valid UTF-8 gets U+FFFD
//! for the bad bytes. NULL is an empty field; integers and reals are unquoted (reals in their
//! shortest round-trip form, e.g. `0.1`, `2.0`, `1e300`; infinities as `Inf`/`-Inf`); blobs are
//! standard base64 with padding (RFC 4648). Rows go out one at a time through a fixed buffer, so
//! memory stays flat whatever the row count. A `Guard` stops the statement at a deadline or on
//! cancellation (through SQLite's progress handler, so even a step that yields no row stops).

use std::io::{self, Write};
use std::time::Instant;

use base64::Engine;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Statement};
use tokio_util::sync::CancellationToken;

/// Why a guarded statement was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    TimeLimit,
    Cancelled,
}

/// When a statement must stop: a deadline, a cancellation token, both or neither.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    pub deadline: Option<Instant>,
    pub cancel: Option<CancellationToken>,
}

/// SQLite virtual-machine instructions between two looks at the guard.
const PROGRESS_OPS: i32 = 10_000;

impl Guard {
    /// Whether (and why) the work must stop now.
    pub fn check(&self) -> Option<Stop> {
        if self.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return Some(Stop::Cancelled);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Some(Stop::TimeLimit);
        }
        None
    }

    /// Makes every statement of `conn` fail with SQLITE_INTERRUPT once the guard says stop.
    pub fn install(&self, conn: &Connection) -> rusqlite::Result<()> {
        let guard = self.clone();
        conn.progress_handler(PROGRESS_OPS, Some(move || guard.check().is_some()))
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportStats {
    /// Data rows (the header not counted).
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the query returned more than {0} rows")]
    RowLimit(u64),
    #[error("stopped: {0:?}")]
    Stopped(Stop),
    #[error("{}", super::sources::sqlite_message(.0))]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot write the CSV file: {0}")]
    Io(#[from] io::Error),
}

/// Runs `stmt` (parameters already bound) and writes its rows to `out` as CSV, header first.
/// Fails with `RowLimit` before writing row `max_rows + 1`, and with `Stopped` when the guard
/// says so (the guard must also be installed on the connection for steps that yield no row).
pub fn export_csv<W: Write>(
    stmt: &mut Statement<'_>,
    out: W,
    max_rows: Option<u64>,
    guard: &Guard,
) -> Result<ExportStats, ExportError> {
    let columns = stmt.column_count();
    let mut csv = CsvWriter::new(out);
    for (index, name) in stmt.column_names().into_iter().enumerate() {
        if index > 0 {
            csv.separator();
        }
        csv.text(name.as_bytes());
    }
    csv.end_record()?;

    let interrupted = |e: rusqlite::Error| match guard.check() {
        Some(stop) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) => {
            ExportError::Stopped(stop)
        }
        _ => ExportError::Sqlite(e),
    };
    let mut rows = stmt.raw_query();
    let mut written: u64 = 0;
    while let Some(row) = rows.next().map_err(interrupted)? {
        if max_rows.is_some_and(|max| written >= max) {
            return Err(ExportError::RowLimit(written));
        }
        for index in 0..columns {
            if index > 0 {
                csv.separator();
            }
            csv.value(row.get_ref(index)?);
        }
        csv.end_record()?;
        written += 1;
        // The progress handler covers SQLite's work; this covers ours (a slow disk).
        if written.is_multiple_of(4096)
            && let Some(stop) = guard.check()
        {
            return Err(ExportError::Stopped(stop));
        }
    }
    let bytes = csv.finish()?;
    Ok(ExportStats {
        rows: written,
        bytes,
    })
}

/// Bytes buffered before they go to the writer.
const BUFFER_BYTES: usize = 256 * 1024;

/// Encodes CSV fields into a fixed-size buffer in front of a writer.
pub struct CsvWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    written: u64,
    base64: String,
}

impl<W: Write> CsvWriter<W> {
    pub fn new(out: W) -> Self {
        CsvWriter {
            out,
            buf: Vec::with_capacity(BUFFER_BYTES + 1024),
            written: 0,
            base64: String::new(),
        }
    }

    pub fn separator(&mut self) {
        self.buf.push(b',');
    }

    /// Ends a record; writes the buffer out once it is full.
    pub fn end_record(&mut self) -> io::Result<()> {
        self.buf.extend_from_slice(b"\r\n");
        if self.buf.len() >= BUFFER_BYTES {
            self.flush_buffer()?;
        }
        Ok(())
    }

    fn flush_buffer(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered, flushes the writer, and returns the bytes written in all.
    pub fn finish(mut self) -> io::Result<u64> {
        self.flush_buffer()?;
        self.out.flush()?;
        Ok(self.written)
    }

    /// A whole record: the fields, separated, then the line end.
    pub fn record(&mut self, fields: &[ValueRef<'_>]) -> io::Result<()> {
        for (index, field) in fields.iter().enumerate() {
            if index > 0 {
                self.separator();
            }
            self.value(*field);
        }
        self.end_record()
    }

    /// One field holding a SQLite value.
    pub fn value(&mut self, value: ValueRef<'_>) {
        match value {
            ValueRef::Null => {}
            ValueRef::Integer(n) => {
                self.buf
                    .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            }
            ValueRef::Real(x) => self.real(x),
            ValueRef::Text(bytes) => self.text(bytes),
            ValueRef::Blob(bytes) => {
                self.base64.clear();
                base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut self.base64);
                // Base64's alphabet never needs quoting.
                self.buf.extend_from_slice(self.base64.as_bytes());
            }
        }
    }

    fn real(&mut self, x: f64) {
        if x.is_finite() {
            self.buf
                .extend_from_slice(ryu::Buffer::new().format_finite(x).as_bytes());
        } else if x > 0.0 {
            self.buf.extend_from_slice(b"Inf");
        } else if x < 0.0 {
            self.buf.extend_from_slice(b"-Inf");
        }
        // NaN: SQLite stores NULL instead, so it cannot arrive; an empty field if it ever does.
    }

    /// One text field, quoted when it must be.
    pub fn text(&mut self, bytes: &[u8]) {
        match std::str::from_utf8(bytes) {
            Ok(_) => self.quoted_if_needed(bytes),
            Err(_) => {
                let repaired = String::from_utf8_lossy(bytes).into_owned();
                self.quoted_if_needed(repaired.as_bytes());
            }
        }
    }

    fn quoted_if_needed(&mut self, bytes: &[u8]) {
        let needs_quotes = memchr::memchr3(b',', b'"', b'\n', bytes).is_some()
            || memchr::memchr(b'\r', bytes).is_some();
        if !needs_quotes {
            self.buf.extend_from_slice(bytes);
            return;
        }
        self.buf.push(b'"');
        let mut start = 0;
        for quote in memchr::memchr_iter(b'"', bytes) {
            self.buf.extend_from_slice(&bytes[start..=quote]);
            self.buf.push(b'"');
            start = quote + 1;
        }
        self.buf.extend_from_slice(&bytes[start..]);
        self.buf.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn csv_of(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(sql).unwrap();
        let mut out = Vec::new();
        let stats = export_csv(&mut stmt, &mut out, None, &Guard::default()).unwrap();
        assert_eq!(stats.bytes as usize, out.len());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fields_are_escaped_as_rfc_4180_says() {
        let conn = Connection::open_in_memory().unwrap();
        let csv = csv_of(
            &conn,
            "SELECT 42 AS \"int\", -0.5 AS \"real, too\", 'plain' AS \"say \"\"hi\"\"\",
                    'a,b' AS c, 'say \"hi\"' AS d, 'line1' || char(10) || 'line2' AS e,
                    'cr' || char(13) AS f, 'ünïcødé ✓ 中文' AS g, NULL AS h, x'00ff10' AS i,
                    '' AS j, ' padded ' AS k, 1e300 AS l, 2.0 AS m, 9e999 AS n, -9e999 AS o",
        );
        assert_eq!(
            csv,
            "int,\"real, too\",\"say \"\"hi\"\"\",c,d,e,f,g,h,i,j,k,l,m,n,o\r\n\
             42,-0.5,plain,\"a,b\",\"say \"\"hi\"\"\",\"line1\nline2\",\"cr\r\",ünïcødé ✓ 中文,,AP8Q,, padded ,1e300,2.0,Inf,-Inf\r\n"
        );
    }

    #[test]
    fn invalid_utf8_text_is_repaired_and_empty_results_have_a_header() {
        let conn = Connection::open_in_memory().unwrap();
        let csv = csv_of(&conn, "SELECT CAST(x'61ff62' AS TEXT) AS t");
        assert_eq!(csv, "t\r\na\u{fffd}b\r\n");
        let csv = csv_of(&conn, "SELECT 1 AS a, 2 AS b WHERE 0");
        assert_eq!(csv, "a,b\r\n");
    }

    #[test]
    fn rows_are_counted_and_the_row_limit_stops_the_export() {
        let conn = Connection::open_in_memory().unwrap();
        let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10) SELECT x FROM c";
        let mut stmt = conn.prepare(sql).unwrap();
        let stats = export_csv(&mut stmt, Vec::new(), Some(10), &Guard::default()).unwrap();
        assert_eq!(stats.rows, 10);
        let mut stmt = conn.prepare(sql).unwrap();
        let err = export_csv(&mut stmt, Vec::new(), Some(9), &Guard::default()).unwrap_err();
        assert!(matches!(err, ExportError::RowLimit(9)), "{err:?}");
    }

    #[test]
    fn the_guard_stops_a_statement_that_yields_no_row() {
        let conn = Connection::open_in_memory().unwrap();
        let guard = Guard {
            deadline: Some(Instant::now() + Duration::from_millis(200)),
            cancel: None,
        };
        guard.install(&conn).unwrap();
        // Endless: counts an unbounded recursion.
        let mut stmt = conn
            .prepare("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")
            .unwrap();
        let err = export_csv(&mut stmt, Vec::new(), None, &guard).unwrap_err();
        assert!(
            matches!(err, ExportError::Stopped(Stop::TimeLimit)),
            "{err:?}"
        );

        let cancel = CancellationToken::new();
        let guard = Guard {
            deadline: None,
            cancel: Some(cancel.clone()),
        };
        guard.install(&conn).unwrap();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            cancel.cancel();
        });
        let mut stmt = conn
            .prepare("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")
            .unwrap();
        let err = export_csv(&mut stmt, Vec::new(), None, &guard).unwrap_err();
        assert!(
            matches!(err, ExportError::Stopped(Stop::Cancelled)),
            "{err:?}"
        );
        canceller.join().unwrap();
    }
}
