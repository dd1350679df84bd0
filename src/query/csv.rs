//! Streaming a prepared statement's rows as RFC 4180 CSV: a header row of column names, fields
//! separated by `,`, records ended by CRLF, a field quoted (with `"` doubled) only when it holds
//! `,`, `"`, CR or LF. UTF-8 without a byte-order mark; text that is not valid UTF-8 gets U+FFFD
//! for the bad bytes. NULL is an empty field; integers and reals are unquoted (reals in their
//! shortest round-trip form, e.g. `0.1`, `2.0`, `1e300`; infinities as `Inf`/`-Inf`); blobs are
//! standard base64 with padding (RFC 4648). Output goes through a fixed buffer and every value,
//! however long, is encoded piece by piece into it, so memory stays flat whatever the rows or
//! values (SQLite itself holds one row; `SQLITE_LIMIT_LENGTH` on the connection caps each value).
//! Limits are enforced here: rows (`Limits::rows`) and bytes written (`Limits::bytes`, never
//! exceeded: a buffer that would pass it is not written), and a `Guard` that stops the work at a
//! deadline or on cancellation, looked at after every row and inside long values (a SQLite step
//! that yields no row is bounded by the query process's deadline: `worker`).

use std::io::{self, Write};
use std::time::Instant;

use base64::Engine;
use rusqlite::Statement;
use rusqlite::types::ValueRef;
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
}

/// How much an export may write; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Data rows (the header not counted).
    pub rows: Option<u64>,
    /// Bytes of CSV, the header included.
    pub bytes: Option<u64>,
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
    #[error("the CSV would be larger than {0} bytes")]
    ByteLimit(u64),
    /// SQLite refused to make a value (or a row to sort) longer than the connection's
    /// `SQLITE_LIMIT_LENGTH`.
    #[error("a value is too big")]
    ValueTooBig,
    #[error("stopped: {0:?}")]
    Stopped(Stop),
    #[error("{}", super::sqlite_message(.0))]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot write the CSV file: {0}")]
    Io(#[from] io::Error),
}

/// Runs `stmt` (parameters already bound) and writes its rows to `out` as CSV, header first.
/// Fails with `RowLimit` before writing row `limits.rows + 1`, with `ByteLimit` before the output
/// would pass `limits.bytes` (what was written stays below it; the caller removes the file), with
/// `ValueTooBig` when SQLite refuses a value over its length limit, and with `Stopped` when the
/// guard says so.
pub fn export_csv<W: Write>(
    stmt: &mut Statement<'_>,
    out: W,
    limits: Limits,
    guard: &Guard,
) -> Result<ExportStats, ExportError> {
    let columns = stmt.column_count();
    let mut csv = CsvWriter::new(out).with_limits(limits.bytes, guard.clone());
    for (index, name) in stmt.column_names().into_iter().enumerate() {
        if index > 0 {
            csv.separator();
        }
        csv.text(name.as_bytes())?;
    }
    csv.end_record()?;

    let sqlite = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::TooBig) => ExportError::ValueTooBig,
        _ => ExportError::Sqlite(e),
    };
    let mut rows = stmt.raw_query();
    let mut written: u64 = 0;
    while let Some(row) = rows.next().map_err(sqlite)? {
        if limits.rows.is_some_and(|max| written >= max) {
            return Err(ExportError::RowLimit(written));
        }
        for index in 0..columns {
            if index > 0 {
                csv.separator();
            }
            csv.value(row.get_ref(index).map_err(sqlite)?)?;
        }
        csv.end_record()?;
        written += 1;
        // The encoder looks inside long values; this, after every row.
        if let Some(stop) = guard.check() {
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
/// Input bytes of one value encoded at a time (a multiple of 3, so base64 pieces join up).
const PIECE_BYTES: usize = 48 * 1024;

/// Encodes CSV fields into a fixed-size buffer in front of a writer.
pub struct CsvWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    written: u64,
    /// The writer never gets more than this many bytes.
    limit: Option<u64>,
    guard: Guard,
}

impl<W: Write> CsvWriter<W> {
    pub fn new(out: W) -> Self {
        CsvWriter {
            out,
            buf: Vec::with_capacity(BUFFER_BYTES + 2 * PIECE_BYTES),
            written: 0,
            limit: None,
            guard: Guard::default(),
        }
    }

    /// Limits the bytes written, and stops inside long values when `guard` says so.
    pub fn with_limits(mut self, bytes: Option<u64>, guard: Guard) -> Self {
        self.limit = bytes;
        self.guard = guard;
        self
    }

    pub fn separator(&mut self) {
        self.buf.push(b',');
    }

    /// Ends a record; writes the buffer out once it is full.
    pub fn end_record(&mut self) -> Result<(), ExportError> {
        self.buf.extend_from_slice(b"\r\n");
        self.flush_if_full()
    }

    fn flush_if_full(&mut self) -> Result<(), ExportError> {
        if self.buf.len() >= BUFFER_BYTES {
            self.flush_buffer()?;
        }
        Ok(())
    }

    fn flush_buffer(&mut self) -> Result<(), ExportError> {
        let total = self.written + self.buf.len() as u64;
        if let Some(limit) = self.limit
            && total > limit
        {
            return Err(ExportError::ByteLimit(limit));
        }
        self.out.write_all(&self.buf)?;
        self.written = total;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered, flushes the writer, and returns the bytes written in all.
    pub fn finish(mut self) -> Result<u64, ExportError> {
        self.flush_buffer()?;
        self.out.flush()?;
        Ok(self.written)
    }

    /// A whole record: the fields, separated, then the line end.
    pub fn record(&mut self, fields: &[ValueRef<'_>]) -> Result<(), ExportError> {
        for (index, field) in fields.iter().enumerate() {
            if index > 0 {
                self.separator();
            }
            self.value(*field)?;
        }
        self.end_record()
    }

    /// One field holding a SQLite value.
    pub fn value(&mut self, value: ValueRef<'_>) -> Result<(), ExportError> {
        match value {
            ValueRef::Null => {}
            ValueRef::Integer(n) => {
                self.buf
                    .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            }
            ValueRef::Real(x) => self.real(x),
            ValueRef::Text(bytes) => self.text(bytes)?,
            // Base64's alphabet never needs quoting; whole 3-byte groups encode independently.
            ValueRef::Blob(bytes) => {
                for piece in bytes.chunks(PIECE_BYTES) {
                    let start = self.buf.len();
                    let encoded = base64::encoded_len(piece.len(), true).unwrap_or(0);
                    self.buf.resize(start + encoded, 0);
                    let n = base64::engine::general_purpose::STANDARD
                        .encode_slice(piece, &mut self.buf[start..])
                        .map_err(|e| io::Error::other(e.to_string()))?;
                    self.buf.truncate(start + n);
                    self.between_pieces(bytes.len())?;
                }
            }
        }
        Ok(())
    }

    /// After a piece of a long value: write out a full buffer, and stop if the guard says so.
    fn between_pieces(&mut self, value_len: usize) -> Result<(), ExportError> {
        if value_len > PIECE_BYTES {
            self.flush_if_full()?;
            if let Some(stop) = self.guard.check() {
                return Err(ExportError::Stopped(stop));
            }
        }
        Ok(())
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

    /// One text field, quoted when it must be, invalid UTF-8 repaired as it goes.
    pub fn text(&mut self, bytes: &[u8]) -> Result<(), ExportError> {
        let quoted = memchr::memchr3(b',', b'"', b'\n', bytes).is_some()
            || memchr::memchr(b'\r', bytes).is_some();
        if quoted {
            self.buf.push(b'"');
        }
        for chunk in bytes.utf8_chunks() {
            for piece in chunk.valid().as_bytes().chunks(PIECE_BYTES) {
                if quoted {
                    self.doubling_quotes(piece);
                } else {
                    self.buf.extend_from_slice(piece);
                }
                self.between_pieces(bytes.len())?;
            }
            if !chunk.invalid().is_empty() {
                self.buf.extend_from_slice(
                    char::REPLACEMENT_CHARACTER
                        .encode_utf8(&mut [0; 4])
                        .as_bytes(),
                );
            }
        }
        if quoted {
            self.buf.push(b'"');
        }
        Ok(())
    }

    fn doubling_quotes(&mut self, bytes: &[u8]) {
        let mut start = 0;
        for quote in memchr::memchr_iter(b'"', bytes) {
            self.buf.extend_from_slice(&bytes[start..=quote]);
            self.buf.push(b'"');
            start = quote + 1;
        }
        self.buf.extend_from_slice(&bytes[start..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn rows(n: u64) -> Limits {
        Limits {
            rows: Some(n),
            bytes: None,
        }
    }

    fn csv_of(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(sql).unwrap();
        let mut out = Vec::new();
        let stats = export_csv(&mut stmt, &mut out, Limits::default(), &Guard::default()).unwrap();
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
        let stats = export_csv(&mut stmt, Vec::new(), rows(10), &Guard::default()).unwrap();
        assert_eq!(stats.rows, 10);
        let mut stmt = conn.prepare(sql).unwrap();
        let err = export_csv(&mut stmt, Vec::new(), rows(9), &Guard::default()).unwrap_err();
        assert!(matches!(err, ExportError::RowLimit(9)), "{err:?}");
    }

    /// The same value encoded whole, the way the encoder worked before it went piece by piece.
    fn whole_text(bytes: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(bytes);
        if text.contains([',', '"', '\r', '\n']) {
            format!("\"{}\"", text.replace('"', "\"\"")).into_bytes()
        } else {
            text.into_owned().into_bytes()
        }
    }

    #[test]
    fn long_values_encode_piece_by_piece_exactly_as_whole() {
        // Quotes, invalid bytes and multi-byte characters on and around every piece boundary.
        let mut text = Vec::new();
        while text.len() < 3 * PIECE_BYTES + 7 {
            text.extend_from_slice("ab\"ü,".as_bytes());
            if text.len() % 7 == 0 {
                text.push(0xff);
            }
        }
        for len in [
            PIECE_BYTES - 1,
            PIECE_BYTES,
            PIECE_BYTES + 1,
            2 * PIECE_BYTES + 3,
            text.len(),
        ] {
            let value = &text[..len];
            let mut out = Vec::new();
            let mut writer = CsvWriter::new(&mut out);
            writer.value(ValueRef::Text(value)).unwrap();
            writer.finish().unwrap();
            assert_eq!(out, whole_text(value), "text of {len} bytes");

            let blob: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut out = Vec::new();
            let mut writer = CsvWriter::new(&mut out);
            writer.value(ValueRef::Blob(&blob)).unwrap();
            writer.finish().unwrap();
            assert_eq!(
                out,
                base64::engine::general_purpose::STANDARD
                    .encode(&blob)
                    .into_bytes(),
                "blob of {len} bytes"
            );
        }
    }

    #[test]
    fn the_byte_limit_is_never_passed() {
        let conn = Connection::open_in_memory().unwrap();
        // 30 rows of 100 KB blobs: about 4 MB of base64.
        let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 30) SELECT zeroblob(100000) AS b FROM c";
        let mut stmt = conn.prepare(sql).unwrap();
        let mut out = Vec::new();
        let limits = Limits {
            rows: None,
            bytes: Some(1_000_000),
        };
        let err = export_csv(&mut stmt, &mut out, limits, &Guard::default()).unwrap_err();
        assert!(matches!(err, ExportError::ByteLimit(1_000_000)), "{err:?}");
        assert!(out.len() <= 1_000_000, "{} bytes written", out.len());
        assert!(!out.is_empty(), "full buffers went out before the limit");

        // A result exactly at the limit is whole.
        let mut stmt = conn.prepare("SELECT 'abc' AS x").unwrap();
        let limits = Limits {
            rows: None,
            bytes: Some(8),
        };
        let stats = export_csv(&mut stmt, Vec::new(), limits, &Guard::default()).unwrap();
        assert_eq!(stats.bytes, 8);
        let mut stmt = conn.prepare("SELECT 'abcd' AS x").unwrap();
        let err = export_csv(&mut stmt, Vec::new(), limits, &Guard::default()).unwrap_err();
        assert!(matches!(err, ExportError::ByteLimit(8)), "{err:?}");
    }

    #[test]
    fn the_guard_stops_inside_one_long_value() {
        let mut writer = CsvWriter::new(Vec::new()).with_limits(
            None,
            Guard {
                deadline: Some(Instant::now()),
                cancel: None,
            },
        );
        let blob = vec![0u8; 4 * PIECE_BYTES];
        let err = writer.value(ValueRef::Blob(&blob)).unwrap_err();
        assert!(
            matches!(err, ExportError::Stopped(Stop::TimeLimit)),
            "{err:?}"
        );
        // Only the first piece was encoded.
        assert!(
            writer.buf.len() <= PIECE_BYTES * 4 / 3 + 4,
            "{}",
            writer.buf.len()
        );
        // Short values are not interrupted mid-way.
        let mut writer = CsvWriter::new(Vec::new()).with_limits(
            None,
            Guard {
                deadline: Some(Instant::now()),
                cancel: None,
            },
        );
        writer.value(ValueRef::Text(b"short")).unwrap();
    }

    #[test]
    fn a_value_over_sqlite_s_length_limit_is_refused_before_it_exists() {
        let conn = Connection::open_in_memory().unwrap();
        conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, 1000)
            .unwrap();
        for sql in [
            "SELECT zeroblob(1001) AS b",
            "SELECT printf('%.*c', 2000, 'x') AS t",
            "SELECT group_concat('xxxxxxxxxx') AS t FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200) SELECT x FROM c)",
        ] {
            let mut stmt = conn.prepare(sql).unwrap();
            let err = export_csv(&mut stmt, Vec::new(), Limits::default(), &Guard::default())
                .unwrap_err();
            assert!(matches!(err, ExportError::ValueTooBig), "{sql}: {err:?}");
        }
        let mut stmt = conn.prepare("SELECT zeroblob(1000) AS b").unwrap();
        export_csv(&mut stmt, Vec::new(), Limits::default(), &Guard::default()).unwrap();
    }
}
