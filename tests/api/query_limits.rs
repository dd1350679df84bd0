//! QUERY runs stay inside their limits whatever the shape of the data: big values cannot stretch
//! the time limit, fill the disk past `queries.result_byte_limit`, or take the server's memory
//! past `queries.value_byte_limit`; and no query shows a data source's path on the server.
//!
//! Writes and memory are measured on this process (the server runs in it): `wchar` of
//! `/proc/self/io` (which also counts the query processes the server started and waited for)
//! and the peak resident size `VmHWM`; the query processes' own peak is `ru_maxrss` of
//! `RUSAGE_CHILDREN`. Other tests share the process, so the measuring tests run alone in a child
//! process (this test binary again), as the million-row test of `queries` does.

use labcron::config::Settings;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{
    AppOptions, assert_failed_with, assert_only_the_log, run_alone, spawn_app, spawn_app_with,
};
use crate::queries::{create_query, create_query_job, run_to_end};

/// 40 rows of 25 MB blobs: 1.3 GB of base64 if nothing stops it.
const BIG_ROWS: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 40) \
                        SELECT x, zeroblob(25000000) AS b FROM c";

/// Set in the process that `big_values_stay_inside_every_limit` starts.
const LIMITS_CHILD: &str = "LABCRON_TEST_LIMITS_CHILD";
/// Set in the process that `wide_rows_long_steps_and_big_sorts_stay_inside_their_limits` starts.
const WIDE_CHILD: &str = "LABCRON_TEST_WIDE_CHILD";

/// One row of 2 columns, each the sum of 500 `length(randomblob(10 MB))`: a few thousand
/// virtual-machine steps (SQLite's progress handler runs every 10,000) that need minutes of CPU
/// (10 GB of random bytes) but only a few 10 MB values of memory at a time.
fn long_steps() -> String {
    let term = vec!["length(randomblob(10000000))"; 500].join(" + ");
    let columns: Vec<String> = (0..2).map(|i| format!("{term} AS c{i}")).collect();
    format!("SELECT {}", columns.join(", "))
}

/// One row of 12 columns of 20 MB blobs (each under the 32 MiB value cap): 240 MB at once.
fn wide_row() -> String {
    let columns: Vec<String> = (0..12)
        .map(|i| format!("zeroblob(20000000) || x'0{}' AS c{i}", i % 10))
        .collect();
    format!("SELECT {}", columns.join(", "))
}

/// 40 rows of 5 MB, sorted: 200 MB that SQLite would spill to temp files.
const BIG_SORT: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 40) \
                        SELECT x, zeroblob(5000000) || x AS b FROM c ORDER BY b DESC";

/// The memory limit of the tests below: 128 MiB.
const MEMORY_LIMIT: u64 = 128 * 1024 * 1024;

fn proc_self(file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/self/{file}")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/self/{file}"));
    line[key.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Bytes this process has passed to write(2) and friends so far.
fn bytes_written() -> u64 {
    proc_self("io", "wchar:")
}

/// Peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    proc_self("status", "VmHWM:") * 1024
}

/// Peak resident memory of the largest child process this process has waited for, in bytes.
fn children_peak_rss() -> u64 {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only fills the struct it is given.
    let status = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(status, 0);
    usage.ru_maxrss as u64 * 1024
}

/// Query processes (`labcron query-worker`) that are children of this process, zombies included.
fn query_processes() -> Vec<String> {
    let own = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command's closing parenthesis: state, ppid, …
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid = after.split_whitespace().nth(1).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == own && String::from_utf8_lossy(&cmdline).contains("query-worker") {
            found.push(format!("{pid}: {stat}"));
        }
    }
    found
}

/// Run length by the server's own clock, in milliseconds.
fn duration_ms(run: &Value) -> i64 {
    run["finishedAt"].as_i64().unwrap() - run["startedAt"].as_i64().unwrap()
}

#[tokio::test]
async fn big_values_stay_inside_every_limit() {
    run_alone("query_limits::big_values_measured_alone", LIMITS_CHILD);
}

#[tokio::test]
#[ignore = "run by big_values_stay_inside_every_limit in a process of its own"]
async fn big_values_measured_alone() {
    if std::env::var_os(LIMITS_CHILD).is_none() {
        eprintln!("skipped: only meaningful alone in its process");
        return;
    }

    // Time: a 1 s limit holds although each row is one huge value (checked inside its encoding).
    let app = spawn_app().await;
    let query = create_query(&app, "big rows", BIG_ROWS).await;
    let job = create_query_job(&app, "big rows, 1 s", query, json!({"timeoutSeconds": 1})).await;
    let run = run_to_end(&app, job, None).await;
    eprintln!("time limit: {} ms, {}", duration_ms(&run), run["message"]);
    assert_failed_with(&run, &["time limit of 1 s"]);
    assert!(
        duration_ms(&run) < 5_000,
        "a 1 s limit ended after {} ms",
        duration_ms(&run)
    );
    assert_only_the_log(&app.data_dir, &run);
    drop(app);

    // Size: the result stops at the byte limit, and no more than that is ever written.
    let app = spawn_app_with(AppOptions {
        configure: Some(|s: &mut Settings| {
            s.queries.result_byte_limit = 50_000_000;
            s.queries.value_byte_limit = 32 * 1024 * 1024;
        }),
        ..AppOptions::default()
    })
    .await;
    let query = create_query(&app, "big rows", BIG_ROWS).await;
    let job = create_query_job(
        &app,
        "big rows, 50 MB",
        query,
        json!({"timeoutSeconds": 600}),
    )
    .await;
    let before = bytes_written();
    let run = run_to_end(&app, job, None).await;
    let written = bytes_written() - before;
    eprintln!("byte limit: {written} bytes written, {}", run["message"]);
    assert_failed_with(
        &run,
        &[
            "50000000 bytes",
            "queries.result_byte_limit",
            "no result file",
        ],
    );
    assert!(
        written <= 50_000_000 + 1024 * 1024,
        "{written} bytes were written for a 50,000,000-byte limit"
    );
    assert_only_the_log(&app.data_dir, &run);

    // Memory: a 1 GB value is refused by SQLite before it exists, so memory stays flat.
    let query = create_query(&app, "one huge value", "SELECT zeroblob(1000000000) AS b").await;
    let job = create_query_job(&app, "huge value", query, json!({"timeoutSeconds": 600})).await;
    // Start from the current resident size (Linux resets the peak on writing 5 to clear_refs).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = peak_rss();
    let run = run_to_end(&app, job, None).await;
    let grown = peak_rss().saturating_sub(before);
    eprintln!(
        "value limit: peak memory grew by {grown} bytes, {}",
        run["message"]
    );
    assert_failed_with(&run, &["33554432 bytes", "queries.value_byte_limit"]);
    assert!(
        grown < 64 * 1024 * 1024,
        "peak memory grew by {grown} bytes"
    );
    assert!(duration_ms(&run) < 5_000, "{run}");
    assert_only_the_log(&app.data_dir, &run);

    // A value under the cap still exports whole: "b" CRLF, 4,000,000 base64 characters, CRLF.
    let query = create_query(&app, "under the cap", "SELECT zeroblob(3000000) AS b").await;
    let job = create_query_job(&app, "under the cap", query, json!({})).await;
    let run = run_to_end(&app, job, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(run["resultFileSize"], 4_000_005, "{run}");
}

#[tokio::test]
async fn wide_rows_long_steps_and_big_sorts_stay_inside_their_limits() {
    run_alone("query_limits::wide_rows_measured_alone", WIDE_CHILD);
}

fn small_memory(s: &mut Settings) {
    s.queries.memory_byte_limit = MEMORY_LIMIT;
    s.queries.value_byte_limit = 32 * 1024 * 1024;
    s.queries.time_limit_seconds = 5;
}

#[tokio::test]
#[ignore = "run by wide_rows_long_steps_and_big_sorts_stay_inside_their_limits in a process of its own"]
async fn wide_rows_measured_alone() {
    if std::env::var_os(WIDE_CHILD).is_none() {
        eprintln!("skipped: only meaningful alone in its process");
        return;
    }
    let app = spawn_app_with(AppOptions {
        configure: Some(small_memory),
        ..AppOptions::default()
    })
    .await;

    // Time: a row of few but endless steps is stopped at the limit. The work needs minutes of
    // CPU; inside the server (checked between rows and every 10,000 steps) it ran to its end.
    let query = create_query(&app, "long steps", &long_steps()).await;
    let job = create_query_job(&app, "long steps, 1 s", query, json!({"timeoutSeconds": 1})).await;
    let run = run_to_end(&app, job, None).await;
    eprintln!("long steps: {} ms, {}", duration_ms(&run), run["message"]);
    assert_failed_with(&run, &["time limit of 1 s", "no result file"]);
    assert!(
        duration_ms(&run) < 60_000,
        "work of minutes was not stopped at a 1 s limit: {run}"
    );
    assert!(query_processes().is_empty(), "{:?}", query_processes());
    assert_only_the_log(&app.data_dir, &run);

    // Memory: 12 values of 20 MB in one row, each under the value cap; the query process stops
    // at the memory limit, and the server's own memory does not grow by the row.
    let query = create_query(&app, "wide row", &wide_row()).await;
    let job = create_query_job(&app, "wide row", query, json!({"timeoutSeconds": 600})).await;
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = peak_rss();
    let run = run_to_end(&app, job, None).await;
    let grown = peak_rss().saturating_sub(before);
    let worker = children_peak_rss();
    eprintln!(
        "wide row: server peak grew by {grown} bytes, query process peak {worker} bytes, {}",
        run["message"]
    );
    assert_failed_with(
        &run,
        &[
            "134217728 bytes",
            "queries.memory_byte_limit",
            "no result file",
        ],
    );
    assert!(
        grown < 64 * 1024 * 1024,
        "server peak grew by {grown} bytes"
    );
    assert!(
        worker < MEMORY_LIMIT + 64 * 1024 * 1024,
        "a query process reached {worker} bytes"
    );
    assert_only_the_log(&app.data_dir, &run);

    // Disk: a 200 MB sort stays in memory (no temp files), so it too stops at the memory limit,
    // and nothing is written: neither temp files nor CSV (no row was ever sorted out).
    let query = create_query(&app, "big sort", BIG_SORT).await;
    let job = create_query_job(&app, "big sort", query, json!({"timeoutSeconds": 600})).await;
    let before = bytes_written();
    let run = run_to_end(&app, job, None).await;
    let written = bytes_written() - before;
    eprintln!("big sort: {written} bytes written, {}", run["message"]);
    assert_failed_with(&run, &["134217728 bytes", "queries.memory_byte_limit"]);
    assert!(
        written < 10 * 1024 * 1024,
        "{written} bytes were written for a sort that fails"
    );
    assert!(
        children_peak_rss() < MEMORY_LIMIT + 64 * 1024 * 1024,
        "a query process reached {} bytes",
        children_peak_rss()
    );
    assert_only_the_log(&app.data_dir, &run);

    // A sort that fits still works: 10 rows of 1 MB, largest first.
    let query = create_query(
        &app,
        "small sort",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10) \
         SELECT x, length(CAST(zeroblob(1000000) || x AS BLOB)) AS n FROM c ORDER BY zeroblob(1000000) || x DESC",
    )
    .await;
    let job = create_query_job(&app, "small sort", query, json!({})).await;
    let run = run_to_end(&app, job, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let (_, _, body) = crate::queries::download(&app, job, run["id"].as_i64().unwrap()).await;
    let csv = String::from_utf8(body).unwrap();
    assert!(
        csv.starts_with("x,n\r\n9,1000001\r\n8,1000001\r\n"),
        "{csv}"
    );
    assert!(query_processes().is_empty(), "{:?}", query_processes());
}

/// `POST /ui/api/saved-query-preview` as the admin: (status, body).
async fn preview(app: &crate::common::TestApp, sql: &str) -> (StatusCode, Value) {
    let response = app
        .client
        .post(format!("{}/ui/api/saved-query-preview", app.base))
        .header("X-OS-API-TOKEN", &app.token)
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn previews_are_bounded_and_few_run_at_once() {
    let app = spawn_app_with(AppOptions {
        configure: Some(small_memory),
        ..AppOptions::default()
    })
    .await;
    let (status, body) = preview(&app, "SELECT 1 AS a, 'x' AS b").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"columns": ["a", "b"], "rows": [[1, "x"]], "truncated": false})
    );

    // Time: stopped at the 5 s limit (queries.time_limit_seconds, under the preview's 10 s),
    // although the work needs minutes.
    let (status, body) = preview(&app, &long_steps()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body[0]["code"], "SAVED_QUERY_PREVIEW_TIMEOUT", "{body}");
    assert!(
        body[0]["message"]
            .as_str()
            .unwrap()
            .contains("time limit of 5 seconds"),
        "{body}"
    );
    assert!(query_processes().is_empty(), "{:?}", query_processes());

    // Memory: the wide row stops at the memory limit, with the contract's error.
    let (status, body) = preview(&app, &wide_row()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body[0]["code"], "SAVED_QUERY_INVALID_SQL", "{body}");
    assert!(
        body[0]["message"]
            .as_str()
            .unwrap()
            .contains("queries.memory_byte_limit"),
        "{body}"
    );

    // At once: one try-out per user; the others are told so at once (503), not queued.
    let sql = long_steps();
    let answers = futures_util::future::join_all((0..6).map(|_| preview(&app, &sql))).await;
    let codes: Vec<String> = answers
        .iter()
        .map(|(status, body)| format!("{} {}", status.as_u16(), body[0]["code"]))
        .collect();
    eprintln!("six at once: {codes:?}");
    for code in &codes {
        assert!(
            code == "400 \"SAVED_QUERY_PREVIEW_TIMEOUT\""
                || code == "503 \"SAVED_QUERY_PREVIEW_BUSY\"",
            "{codes:?}"
        );
    }
    assert!(codes.iter().any(|c| c.starts_with("503")), "{codes:?}");
    assert!(codes.iter().any(|c| c.starts_with("400")), "{codes:?}");
    assert!(query_processes().is_empty(), "{:?}", query_processes());
}

#[tokio::test]
async fn no_query_shows_where_a_data_source_lives() {
    let app = spawn_app().await;
    let lab = app.data_dir.join("lab.db");
    let lab_path = lab.display().to_string();
    let data_dir = app.data_dir.display().to_string();
    for sql in [
        "SELECT * FROM pragma_database_list",
        "SELECT file FROM pragma_database_list()",
        "SELECT name, file FROM pragma_database_list WHERE name = 'main'",
        "PRAGMA database_list",
        "SELECT * FROM pragma_temp_store_directory",
        "PRAGMA main.database_list",
    ] {
        let response = app
            .post("/saved-queries", &json!({"title": "where", "sql": sql}))
            .await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(!text.contains(&data_dir), "`{sql}` showed a path: {text}");
        if status == StatusCode::OK {
            // Saved: then running it must fail, and show no path either.
            let query = serde_json::from_str::<Value>(&text).unwrap()["id"]
                .as_i64()
                .unwrap();
            let job = create_query_job(&app, &format!("where {query}"), query, json!({})).await;
            let run = run_to_end(&app, job, None).await;
            assert_eq!(run["status"], "FAILED", "`{sql}` ran: {run}");
            assert!(!run.to_string().contains(&data_dir), "`{sql}`: {run}");
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST, "`{sql}`: {text}");
        }
    }
    // Reading pragmas that show no path still work.
    let query = create_query(
        &app,
        "columns",
        "SELECT name FROM pragma_table_info('sites') ORDER BY cid LIMIT 1",
    )
    .await;
    let job = create_query_job(&app, "columns", query, json!({})).await;
    let run = run_to_end(&app, job, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert!(lab.exists(), "{lab_path}");
}

#[tokio::test]
async fn a_missing_data_source_file_is_reported_without_its_path() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s: &mut Settings| {
            s.query_sources
                .insert("research".into(), "hidden/research.db".into());
        }),
        ..AppOptions::default()
    })
    .await;
    let response = app
        .post(
            "/saved-queries",
            &json!({"title": "x", "sql": "SELECT 1", "dataSource": "research"}),
        )
        .await;
    let (status, text) = (response.status(), response.text().await.unwrap());
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("research"), "{text}");
    assert!(!text.contains("hidden"), "the path is shown: {text}");
}
