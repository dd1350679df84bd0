//! labcron's performance figures: `cargo bench --bench bench` prints a table, one row per figure
//! (name, value, baseline, ratio = value / baseline, target, status); `-- --json` prints the same
//! rows as JSON; other words after `--` keep only the benches whose name contains one of them.
//! Figures are reported, never asserted: a machine's noise must not fail a build.
//!
//! To add figures, write `fn my_bench(ctx: &Context) -> Vec<Figure>` and add it to `BENCHES`.
//! A figure that cannot be measured here (a missing tool) is `Figure::skipped`, not an error.
//!
//! The `system` benches (`benches/system/`) start the real release binary (cargo builds it for
//! `cargo bench`: `CARGO_BIN_EXE_labcron`) on 127.0.0.1 with a temporary data directory, and
//! measure it from outside: run throughput (SQLite, and PostgreSQL with one and two nodes), the
//! runs list on a 1,000,000-run ledger (SQLite, and PostgreSQL), start-up,
//! resident memory, fire lateness, memory while 1,000 jobs fire every second, and a 1 GiB
//! result-file download. `pg_export` (`benches/pg_export/`) exports a million rows from a private
//! PostgreSQL. Run one with e.g.
//! `cargo bench --bench bench -- runs_throughput`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use labcron::query::csv::{Guard, Limits, export_csv};
use labcron::query::sources::open_read_only;
use serde_json::{Value, json};

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "pg_export/mod.rs"]
mod pg_export;
#[path = "system/mod.rs"]
mod system;

/// A bench: measures in its scratch directory and returns its figures.
type Bench = fn(&Context) -> Vec<Figure>;

/// Every bench: (name, function). Add yours here.
const BENCHES: &[(&str, Bench)] = &[
    ("csv_export", csv_export),
    ("pg_export", pg_export::pg_export),
    ("runs_throughput", system::throughput::runs_throughput),
    ("memory_idle", system::ledger::memory_idle),
    ("ledger_1m", system::ledger::ledger_1m),
    ("ledger_1m_pg", system::ledger::ledger_1m_pg),
    ("fire_lateness", system::lateness::fire_lateness),
    ("fire_memory", system::fire_memory::fire_memory),
    ("result_download", system::download::result_download),
    ("metrics_auth", system::tokens::metrics_auth),
];

/// What a bench gets: a scratch directory of its own.
struct Context {
    dir: PathBuf,
}

/// What a figure should be, compared with its ratio (or its value when it has no baseline).
#[derive(Clone, Copy)]
enum Target {
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    fn met(self, x: f64) -> bool {
        match self {
            Target::AtMost(t) => x <= t,
            Target::AtLeast(t) => x >= t,
        }
    }
    fn text(self) -> String {
        match self {
            Target::AtMost(t) => format!("<= {t}"),
            Target::AtLeast(t) => format!(">= {t}"),
        }
    }
}

/// One row of the table.
struct Figure {
    name: String,
    unit: &'static str,
    value: Option<f64>,
    /// The same measure of the thing compared against (lower is better for times).
    baseline: Option<f64>,
    target: Option<Target>,
    /// Whether the target applies to the value itself rather than to the ratio.
    target_on_value: bool,
    /// Why a figure was skipped, or what it measured.
    note: String,
}

impl Figure {
    fn measured(name: &str, value: f64, unit: &'static str) -> Self {
        Figure {
            name: name.to_string(),
            unit,
            value: Some(value),
            baseline: None,
            target: None,
            target_on_value: false,
            note: String::new(),
        }
    }
    fn skipped(name: &str, unit: &'static str, why: impl Into<String>) -> Self {
        Figure {
            name: name.to_string(),
            unit,
            value: None,
            baseline: None,
            target: None,
            target_on_value: false,
            note: why.into(),
        }
    }
    fn baseline(mut self, baseline: f64) -> Self {
        self.baseline = Some(baseline);
        self
    }
    fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }
    /// A target on the value even when the figure has a baseline (shown for comparison only).
    fn target_value(mut self, target: Target) -> Self {
        self.target = Some(target);
        self.target_on_value = true;
        self
    }
    fn target_text(&self) -> Option<String> {
        self.target.map(|t| {
            if self.target_on_value && self.baseline.is_some() {
                format!("{} {}", t.text(), self.unit)
            } else {
                t.text()
            }
        })
    }
    fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }
    fn ratio(&self) -> Option<f64> {
        match (self.value, self.baseline) {
            (Some(v), Some(b)) if b > 0.0 => Some(v / b),
            _ => None,
        }
    }
    fn status(&self) -> &'static str {
        let Some(value) = self.value else {
            return "skipped";
        };
        let compared = if self.target_on_value {
            value
        } else {
            self.ratio().unwrap_or(value)
        };
        match self.target {
            None => "-",
            Some(target) if target.met(compared) => "ok",
            Some(_) => "MISSED",
        }
    }
    fn to_json(&self) -> Value {
        json!({
            "name": self.name, "unit": self.unit, "value": self.value, "baseline": self.baseline,
            "ratio": self.ratio(), "target": self.target_text(),
            "target_on": if self.target_on_value || self.baseline.is_none() { "value" } else { "ratio" },
            "status": self.status(), "note": self.note,
        })
    }
}

fn number(x: Option<f64>) -> String {
    match x {
        None => "-".to_string(),
        Some(x) if x.abs() >= 1000.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.3}"),
    }
}

fn print_table(figures: &[Figure]) {
    let headers = [
        "name", "value", "baseline", "ratio", "target", "status", "note",
    ];
    let rows: Vec<[String; 7]> = figures
        .iter()
        .map(|f| {
            [
                f.name.clone(),
                format!("{} {}", number(f.value), f.unit),
                format!(
                    "{} {}",
                    number(f.baseline),
                    if f.baseline.is_some() { f.unit } else { "" }
                ),
                number(f.ratio()),
                f.target_text().unwrap_or_else(|| "-".into()),
                f.status().to_string(),
                f.note.clone(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let as_json = args.iter().any(|a| a == "--json");
    // `cargo bench` passes `--bench`; other flags are ignored, plain words filter.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let mut figures = Vec::new();
    for (name, bench) in BENCHES {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => {
                figures.push(Figure::skipped(
                    name,
                    "",
                    format!("no scratch directory: {e}"),
                ));
                continue;
            }
        };
        if !as_json {
            eprintln!("running {name} ...");
        }
        figures.extend(bench(&Context {
            dir: dir.path().to_path_buf(),
        }));
        // LABCRON_BENCH_KEEP=1 keeps the scratch directories (server logs, ledgers) to look at.
        if std::env::var_os("LABCRON_BENCH_KEEP").is_some() {
            eprintln!("kept {}", dir.keep().display());
        }
    }
    if as_json {
        let rows: Vec<Value> = figures.iter().map(Figure::to_json).collect();
        println!("{}", Value::Array(rows));
    } else {
        print_table(&figures);
    }
}

/// Median of `runs` timings of `work` (which reports failure as a message).
fn median_time(runs: usize, mut work: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        work()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

const EXPORT_ROWS: i64 = 1_000_000;
const EXPORT_QUERY: &str = "SELECT * FROM specimens";

/// A table like the demo's specimens, with every kind of value: integers, reals, text needing
/// quotes, NULLs.
fn build_export_db(path: &Path) -> rusqlite::Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
         CREATE TABLE specimens (id INTEGER PRIMARY KEY, label TEXT, specimen_type TEXT, quantity REAL,
                                 collected_on TEXT, freezer TEXT, position INTEGER, note TEXT);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {EXPORT_ROWS})
         INSERT INTO specimens
         SELECT x, printf('SPC-%08d', x),
                CASE x % 4 WHEN 0 THEN 'Plasma' WHEN 1 THEN 'Serum' WHEN 2 THEN 'Whole Blood' ELSE 'DNA' END,
                (x % 1000) / 8.0,
                datetime(1700000000 + x * 60, 'unixepoch'),
                CASE WHEN x % 10 = 0 THEN NULL ELSE 'FRZ-' || (x % 7) END,
                x % 81,
                CASE WHEN x % 5 = 0 THEN 'haemolysed, \"recheck\"' WHEN x % 5 = 1 THEN NULL ELSE 'ok' END
         FROM c;"
    ))
}

/// labcron's CSV export of a million rows (the code path of a QUERY run, without HTTP) against
/// the sqlite3 command line's own `-csv -header` export of the same query on the same file.
fn csv_export(ctx: &Context) -> Vec<Figure> {
    let name = "csv export, 1M rows: labcron vs sqlite3 -csv";
    let db = ctx.dir.join("bench.db");
    if let Err(e) = build_export_db(&db) {
        return vec![Figure::skipped(
            name,
            "s",
            format!("cannot build the data: {e}"),
        )];
    }
    let ours_out = ctx.dir.join("labcron.csv");
    let export = || -> Result<(), String> {
        let conn = open_read_only(&db).map_err(|e| e.to_string())?;
        // As the query process exports (its deadline is the server's kill).
        let guard = Guard::default();
        let mut stmt = conn.prepare(EXPORT_QUERY).map_err(|e| e.to_string())?;
        let mut file = std::fs::File::create(&ours_out).map_err(|e| e.to_string())?;
        export_csv(&mut stmt, &mut file, Limits::default(), &guard).map_err(|e| e.to_string())?;
        Ok(())
    };
    let ours = match median_time(3, export) {
        Ok(t) => t,
        Err(e) => {
            return vec![Figure::skipped(
                name,
                "s",
                format!("labcron export failed: {e}"),
            )];
        }
    };
    let ours_size = std::fs::metadata(&ours_out).map(|m| m.len()).unwrap_or(0);
    let throughput = Figure::measured(
        "csv export, 1M rows: labcron rows per second",
        EXPORT_ROWS as f64 / ours,
        "rows/s",
    )
    .target(Target::AtLeast(500_000.0))
    .note(format!("{ours_size} bytes of CSV"));

    let cli_out = ctx.dir.join("sqlite3.csv");
    let cli = || -> Result<(), String> {
        let out = std::fs::File::create(&cli_out).map_err(|e| e.to_string())?;
        let status = Command::new("sqlite3")
            .args(["-csv", "-header"])
            .arg(&db)
            .arg(EXPORT_QUERY)
            .stdout(out)
            .stderr(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("sqlite3 exited with {status}"))
        }
    };
    let figure = match median_time(3, cli) {
        Ok(baseline) => {
            let cli_size = std::fs::metadata(&cli_out).map(|m| m.len()).unwrap_or(0);
            Figure::measured(name, ours, "s")
                .baseline(baseline)
                .target(Target::AtMost(1.5))
                .note(format!(
                    "median of 3; CSV sizes {ours_size} vs {cli_size} bytes"
                ))
        }
        Err(e) => Figure::skipped(
            name,
            "s",
            format!("sqlite3 command line not usable ({e}); labcron alone took {ours:.3} s"),
        ),
    };
    vec![figure, throughput]
}
