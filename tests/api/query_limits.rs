//! QUERY runs stay inside their limits whatever the shape of the data: big values cannot stretch
//! the time limit, fill the disk past `queries.result_byte_limit`, or take the server's memory
//! past `queries.value_byte_limit`; and no query shows a data source's path on the server.
//!
//! Writes and memory are measured on this process (the server runs in it): `wchar` of
//! `/proc/self/io` and the peak resident size `VmHWM`. Other tests share the process, so the
//! measuring test runs alone in a child process (this test binary again), as the million-row test
//! of `queries` does.

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
