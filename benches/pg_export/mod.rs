//! labcron's CSV export of a million rows from a PostgreSQL data source (the code path of a QUERY
//! run on a `postgres://` source, without HTTP: READ ONLY transaction, text forms, streamed rows)
//! against `psql`'s `\copy (…) to stdout with (format csv, header)` of the same query, on a private
//! server started as the tests start theirs (`tests/common/postgres.rs`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use labcron::query::csv::{Guard, Limits};
use labcron::query::pg_sql::rewrite;
use labcron::query::postgres::{PasswordFrom, PgSource};

use crate::{Context, EXPORT_ROWS, Figure, Target, median_time};

use crate::common::postgres as fixture;

const QUERY: &str = "SELECT * FROM specimens ORDER BY id";

/// The same shape as the SQLite bench's table: integers, reals, timestamps, text needing
/// quotes, NULLs.
fn setup_sql() -> String {
    format!(
        "CREATE TABLE specimens (id int PRIMARY KEY, label text, specimen_type text,
                                 quantity float8, collected_on timestamp, freezer text,
                                 position int, note text);
         INSERT INTO specimens
         SELECT x, 'SPC-' || lpad(x::text, 8, '0'),
                CASE x % 4 WHEN 0 THEN 'Plasma' WHEN 1 THEN 'Serum' WHEN 2 THEN 'Whole Blood' ELSE 'DNA' END,
                (x % 1000) / 8.0,
                to_timestamp(1700000000 + x * 60) AT TIME ZONE 'UTC',
                CASE WHEN x % 10 = 0 THEN NULL ELSE 'FRZ-' || (x % 7) END,
                x % 81,
                CASE WHEN x % 5 = 0 THEN 'haemolysed, \"recheck\"' WHEN x % 5 = 1 THEN NULL ELSE 'ok' END
         FROM generate_series(1, {EXPORT_ROWS}) AS x;
         ANALYZE specimens;"
    )
}

pub fn pg_export(ctx: &Context) -> Vec<Figure> {
    let name = "csv export from PostgreSQL, 1M rows: labcron vs psql \\copy";
    let bin = match fixture::bin_dir() {
        Ok(bin) => bin,
        Err(e) => return vec![Figure::skipped(name, "s", e)],
    };
    let server = fixture::server();
    let db = server.create_database(&setup_sql());
    let source = PgSource::new("bench", &db.url(), &PasswordFrom::default(), None);
    let sql = match rewrite(QUERY) {
        Ok(sql) => sql,
        Err(e) => return vec![Figure::skipped(name, "s", e)],
    };
    let ours_out = ctx.dir.join("labcron.csv");
    let export = || -> Result<(), String> {
        let guard = Guard {
            deadline: Some(Instant::now() + Duration::from_secs(3600)),
            cancel: None,
        };
        let file = std::fs::File::create(&ours_out).map_err(|e| e.to_string())?;
        let mut out = std::io::BufWriter::new(file);
        source
            .export_csv(&sql, &[], &mut out, Limits::default(), &guard)
            .map_err(|e| e.to_string())?;
        Ok(())
    };
    let ours = match median_time(3, export) {
        Ok(t) => t,
        Err(e) => {
            server.stop();
            return vec![Figure::skipped(
                name,
                "s",
                format!("labcron export failed: {e}"),
            )];
        }
    };
    let ours_size = std::fs::metadata(&ours_out).map(|m| m.len()).unwrap_or(0);
    let throughput = Figure::measured(
        "csv export from PostgreSQL, 1M rows: labcron rows per second",
        EXPORT_ROWS as f64 / ours,
        "rows/s",
    )
    .target(Target::AtLeast(300_000.0))
    .note(format!("{ours_size} bytes of CSV"));

    let cli_out = ctx.dir.join("psql.csv");
    let cli = || -> Result<(), String> {
        let out = std::fs::File::create(&cli_out).map_err(|e| e.to_string())?;
        let status = Command::new(bin.join("psql"))
            .args(["-X", "-q", "-h", "127.0.0.1", "-p", &db.port.to_string()])
            .args(["-U", &db.owner, "-d", &db.name, "-c"])
            .arg(format!(
                "\\copy ({QUERY}) to stdout with (format csv, header)"
            ))
            .env("PGPASSWORD", &db.password)
            .stdout(out)
            .stderr(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("psql exited with {status}"))
        }
    };
    let figure = match median_time(3, cli) {
        Ok(baseline) => {
            let cli_size = std::fs::metadata(&cli_out).map(|m| m.len()).unwrap_or(0);
            Figure::measured(name, ours, "s")
                .baseline(baseline)
                .target(Target::AtMost(2.0))
                .note(format!(
                    "median of 3; CSV sizes {ours_size} vs {cli_size} bytes (CRLF vs LF)"
                ))
        }
        Err(e) => Figure::skipped(
            name,
            "s",
            format!("psql not usable ({e}); labcron alone took {ours:.3} s"),
        ),
    };
    server.stop();
    vec![figure, throughput]
}
