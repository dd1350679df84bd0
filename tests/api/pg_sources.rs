//! QUERY jobs on a PostgreSQL data source, against the private test server (`common/postgres.rs`):
//! a CSV of every common type, parameters bound (not pasted), the time, row, byte and value
//! limits, writes refused by the READ ONLY transaction, cancel, a wrong password that no message
//! repeats, a password from a file, and a server that is down.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{
    TestApp, assert_failed_with, assert_only_the_log, error_codes, ok_json, run_alone,
    spawn_app_configured,
};
use crate::postgres::{self, TestDb};
use crate::queries::{create_query_job, result_text, run_log, run_to_end};

const SPECIMENS: &str = r#"
CREATE TABLE specimens (
    id int PRIMARY KEY, label text, collected date, taken timestamp, seen timestamptz,
    volume numeric(10, 3), frozen bool, raw bytea, ratio float8, tags text[], note text
);
INSERT INTO specimens VALUES
    (1, 'S-1', '2024-01-31', '2024-01-31 13:45:00', '2024-01-31 13:45:00.5+02', 1.500, true,
     '\x00ff10', 0.1, '{a,b}', 'say "hi", ok'),
    (2, 'S-2', NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, E'line1\nline2');
CREATE SEQUENCE numbers;
CREATE FUNCTION add_specimen() RETURNS int LANGUAGE sql VOLATILE
    AS 'INSERT INTO specimens (id, label) VALUES (99, ''stolen'') RETURNING id';
"#;

/// A database with `SPECIMENS`, and a server whose source `lims` reads it.
async fn app_on_postgres(configure: fn(&mut labcron::config::Settings)) -> (TestApp, TestDb) {
    let db = postgres::server().create_database(SPECIMENS);
    let url = db.url();
    let app = spawn_app_configured(move |s| {
        s.query_sources.insert("lims".into(), url.into());
        configure(s);
    })
    .await;
    (app, db)
}

fn no_change(_: &mut labcron::config::Settings) {}

/// Creates a saved query on `lims`.
async fn pg_query(app: &TestApp, title: &str, sql: &str) -> i64 {
    let created = ok_json(
        app.post(
            "/saved-queries",
            &json!({"title": title, "sql": sql, "dataSource": "lims"}),
        )
        .await,
    )
    .await;
    assert_eq!(created["dataSource"], "lims", "{created}");
    created["id"].as_i64().unwrap()
}

/// Puts a saved query straight into the ledger, past the API's checks.
/// On the tests' engine (`LABCRON_TEST_LEDGER`).
fn slip_into_ledger(app: &TestApp, title: &str, sql: &str, source: &str) -> i64 {
    let quote = |text: &str| format!("'{}'", text.replace('\'', "''"));
    crate::common::ledger::sql_i64(
        &app.data_dir,
        &format!(
            "INSERT INTO saved_queries (title, sql, data_source, created_by, last_modified_on)
             VALUES ({}, {}, {}, 1, 0) RETURNING id",
            quote(title),
            quote(sql),
            quote(source)
        ),
    )
}

fn duration_ms(run: &Value) -> i64 {
    run["finishedAt"].as_i64().unwrap() - run["startedAt"].as_i64().unwrap()
}

#[test]
fn the_private_server_runs_unprivileged_and_answers() {
    let server = postgres::server();
    let db = server.create_database("CREATE TABLE t (x int); INSERT INTO t VALUES (41);");
    assert_eq!(db.query_text("SELECT (x + 1)::text FROM t"), "42");
    assert_eq!(db.query_text("SELECT current_user::text"), db.owner);
    let pid = server.pid().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    // SAFETY: no preconditions.
    let me = unsafe { libc::geteuid() };
    if me == 0 {
        assert!(server.run_as.is_some());
        assert!(
            !uid_line.contains("\t0\t"),
            "postgres runs as root: {uid_line}"
        );
    } else {
        assert!(uid_line.contains(&format!("\t{me}\t")), "{uid_line}");
    }
}

#[tokio::test]
async fn a_query_job_on_postgres_writes_every_type_as_csv() {
    let (app, _db) = app_on_postgres(no_change).await;
    let query = pg_query(
        &app,
        "all types",
        "SELECT id, label, collected, taken, seen, volume, frozen, raw, ratio, tags, note,
                NULL::int AS nothing
           FROM specimens WHERE collected IS NULL OR collected >= :from ORDER BY id DESC; -- end",
    )
    .await;
    let job = create_query_job(
        &app,
        "all types",
        query,
        json!({"fixedArgs": "from=2024-01-01", "rtArgsProvided": true}),
    )
    .await;
    let run = run_to_end(&app, job, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(
        result_text(&app, &run).await,
        "id,label,collected,taken,seen,volume,frozen,raw,ratio,tags,note,nothing\r\n\
         2,S-2,,,,,false,,,,\"line1\nline2\",\r\n\
         1,S-1,2024-01-31,2024-01-31 13:45:00,2024-01-31 11:45:00.5+00,1.500,true,AP8Q,0.1,\"{a,b}\",\"say \"\"hi\"\", ok\",\r\n"
    );
    let log = run_log(&app, &run).await;
    assert!(log.contains("on data source lims: 2 rows"), "{log}");

    // The parameter is typed by the server (a date here) and is a value, never SQL.
    let run = run_to_end(&app, job, Some("from=2025-01-01")).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    // Only S-2 (no date) is left: the header and one record.
    let csv = result_text(&app, &run).await;
    assert!(
        csv.starts_with("id,") && csv.contains("\r\n2,S-2,"),
        "{csv}"
    );
    assert_eq!(csv.matches("\r\n").count(), 2, "{csv}");
    let run = run_to_end(&app, job, Some("from=yesterday-ish")).await;
    assert_failed_with(&run, &["invalid input syntax for type date"]);

    let by_label = pg_query(
        &app,
        "by label",
        "SELECT id FROM specimens WHERE label = :label",
    )
    .await;
    let job = create_query_job(&app, "by label", by_label, json!({"rtArgsProvided": true})).await;
    let run = run_to_end(&app, job, Some(r#""label=S-1' OR '1'='1""#)).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(result_text(&app, &run).await, "id\r\n");
    let run = run_to_end(&app, job, Some("label=S-1")).await;
    assert_eq!(result_text(&app, &run).await, "id\r\n1\r\n");
    let run = run_to_end(&app, job, None).await;
    assert_failed_with(&run, &["missing value for parameter :label"]);
}

#[tokio::test]
async fn saved_query_sql_is_checked_against_the_postgres_source() {
    let (app, _db) = app_on_postgres(no_change).await;
    for (sql, says) in [
        ("SELEC 1", "syntax error"),
        (
            "SELECT nope FROM specimens",
            "column \\\"nope\\\" does not exist",
        ),
        (
            "INSERT INTO specimens (id) VALUES (5)",
            "returns no columns",
        ),
        ("DELETE FROM specimens RETURNING id", "only queries"),
        (
            "WITH gone AS (DELETE FROM specimens RETURNING id) SELECT * FROM gone",
            "only queries",
        ),
        ("SELECT 1; SELECT 2", "one statement"),
        ("SELECT $1", "positional"),
    ] {
        let response = app
            .post(
                "/saved-queries",
                &json!({"title": "bad", "sql": sql, "dataSource": "lims"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "`{sql}`");
        let text = response.text().await.unwrap();
        assert!(text.contains("SAVED_QUERY_INVALID_SQL"), "`{sql}`: {text}");
        assert!(text.contains(says), "`{sql}`: {text}");
    }
    // A try-out on the saved-query form reads the same source.
    let preview = ok_json(
        app.client
            .post(format!("{}/ui/api/saved-query-preview", app.base))
            .header("X-OS-API-TOKEN", &app.token)
            .json(&json!({"sql": "SELECT label, frozen, raw FROM specimens WHERE id = :id", "dataSource": "lims", "args": "id=1"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        preview,
        json!({"columns": ["label", "frozen", "raw"], "rows": [["S-1", "true", "(3 bytes of binary data)"]], "truncated": false})
    );
}

#[tokio::test]
async fn writes_are_refused_by_the_read_only_transaction() {
    let (app, db) = app_on_postgres(no_change).await;
    // They compile, so they can be saved; running them tries to write.
    let mut jobs = Vec::new();
    for sql in [
        "SELECT add_specimen() AS id",
        "SELECT nextval('numbers') AS n",
        "SELECT set_config('transaction_read_only', 'off', true) AS x, add_specimen()",
    ] {
        let query = pg_query(&app, sql, sql).await;
        jobs.push((create_query_job(&app, sql, query, json!({})).await, sql));
    }
    // And these slipped into the ledger past the check.
    for sql in [
        "INSERT INTO specimens (id, label) VALUES (98, 'slipped')",
        "INSERT INTO specimens (id, label) VALUES (97, 'slipped') RETURNING id",
        "DELETE FROM specimens RETURNING id",
        "SELECT 1; DELETE FROM specimens",
        "CREATE TABLE stolen AS SELECT * FROM specimens",
    ] {
        let query = slip_into_ledger(&app, sql, sql, "lims");
        jobs.push((create_query_job(&app, sql, query, json!({})).await, sql));
    }
    for (job, sql) in jobs {
        let run = run_to_end(&app, job, None).await;
        assert_eq!(run["status"], "FAILED", "`{sql}` ran: {run}");
        assert_only_the_log(&app.data_dir, &run);
        if sql.contains("set_config") {
            assert_failed_with(&run, &["read-write mode must be set before any query"]);
        } else if sql.contains("add_specimen") || sql.contains("nextval") {
            assert_failed_with(&run, &["READ ONLY", "read-only transaction"]);
        }
    }
    assert_eq!(db.query_text("SELECT count(*)::text FROM specimens"), "2");
    assert_eq!(db.query_text("SELECT last_value::text FROM numbers"), "1");
    assert_eq!(
        db.query_text("SELECT count(*)::text FROM pg_tables WHERE tablename = 'stolen'"),
        "0"
    );
}

/// Active statements on the test server whose text contains `marker`.
fn active_statements(marker: &str) -> i64 {
    let pattern = format!("%{marker}%");
    postgres::server().as_admin("postgres", move |c| {
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
            &[&pattern],
        )
        .unwrap()
        .get::<_, i64>(0)
    })
}

/// Waits (generously) until no statement containing `marker` runs on the server.
async fn assert_stops_on_the_server(marker: &str) {
    for _ in 0..600 {
        if active_statements(marker) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{marker}` still runs on the server");
}

#[tokio::test]
async fn the_time_limit_stops_the_statement_on_the_server() {
    let (app, _db) = app_on_postgres(no_change).await;
    let query = pg_query(
        &app,
        "slow",
        "SELECT pg_sleep(300) AS slept, 'time-limit-marker' AS m",
    )
    .await;
    let job = create_query_job(&app, "slow", query, json!({"timeoutSeconds": 1})).await;
    let run = run_to_end(&app, job, None).await;
    assert_failed_with(&run, &["time limit of 1 s", "no result file"]);
    assert!(
        duration_ms(&run) < 120_000,
        "a 1 s limit ended after {} ms",
        duration_ms(&run)
    );
    assert_only_the_log(&app.data_dir, &run);
    assert_stops_on_the_server("time-limit-marker").await;
}

#[tokio::test]
async fn a_running_postgres_query_can_be_cancelled() {
    let (app, _db) = app_on_postgres(no_change).await;
    let query = pg_query(
        &app,
        "slow",
        "SELECT pg_sleep(600) AS slept, 'cancel-marker' AS m",
    )
    .await;
    let job = create_query_job(&app, "slow", query, json!({"timeoutSeconds": 3600})).await;
    let run_id = app.start_run(job, None).await;
    for _ in 0..600 {
        if active_statements("cancel-marker") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.cancel_run(job, run_id).await;
    let run = app.wait_run(job, run_id).await;
    assert_failed_with(&run, &["cancelled by admin"]);
    assert_stops_on_the_server("cancel-marker").await;
}

/// A "Try it" of `sql` on the `lims` source: (status, body).
async fn pg_preview(app: &TestApp, sql: &str) -> (StatusCode, Value) {
    let response = app
        .client
        .post(format!("{}/ui/api/saved-query-preview", app.base))
        .header("X-OS-API-TOKEN", &app.token)
        .json(&json!({"sql": sql, "dataSource": "lims"}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_row_byte_and_value_limits_hold() {
    let (app, _db) = app_on_postgres(|s| {
        s.queries.row_limit = 100;
        s.queries.result_byte_limit = 2000;
        s.queries.value_byte_limit = 1024;
    })
    .await;
    let rows = pg_query(&app, "rows", "SELECT n FROM generate_series(1, 1000) AS n").await;
    let job = create_query_job(&app, "rows", rows, json!({})).await;
    let run = run_to_end(&app, job, None).await;
    assert_failed_with(&run, &["more than 100 rows", "queries.row_limit"]);
    assert_only_the_log(&app.data_dir, &run);

    // A huge result stops on the server too once the limit is hit, rather than being read to
    // its end before the transaction can close.
    let huge = pg_query(
        &app,
        "huge",
        "SELECT a, b, 'row-limit-marker' AS m FROM generate_series(1, 10000) AS a, generate_series(1, 100000) AS b",
    )
    .await;
    let job = create_query_job(&app, "huge", huge, json!({"timeoutSeconds": 3600})).await;
    let run = run_to_end(&app, job, None).await;
    assert_failed_with(&run, &["more than 100 rows"]);
    assert_stops_on_the_server("row-limit-marker").await;

    let bytes = pg_query(
        &app,
        "bytes",
        "SELECT repeat('x', 100) AS x FROM generate_series(1, 50)",
    )
    .await;
    let job = create_query_job(&app, "bytes", bytes, json!({})).await;
    let run = run_to_end(&app, job, None).await;
    assert_failed_with(&run, &["2000 bytes", "queries.result_byte_limit"]);
    assert_only_the_log(&app.data_dir, &run);

    for sql in [
        "SELECT repeat('x', 5000) AS x",
        "SELECT decode(repeat('00', 2000), 'hex') AS b",
    ] {
        let value = pg_query(&app, sql, sql).await;
        let job = create_query_job(&app, sql, value, json!({})).await;
        let run = run_to_end(&app, job, None).await;
        assert_failed_with(&run, &["1024 bytes", "queries.value_byte_limit"]);
        assert_only_the_log(&app.data_dir, &run);
        // The try-out holds the same cap (it kept whole values of 50 rows before).
        let (status, body) = pg_preview(&app, sql).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body[0]["code"], "SAVED_QUERY_INVALID_SQL", "{body}");
        let message = body[0]["message"].as_str().unwrap();
        assert!(message.contains("1024 bytes"), "{body}");
        assert!(message.contains("queries.value_byte_limit"), "{body}");
    }
    // Under the cap a try-out's text is cut to 500 characters and "…".
    let (status, body) = pg_preview(&app, "SELECT repeat('y', 1000) AS y").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["rows"][0][0],
        format!("{}…", "y".repeat(500)),
        "{body}"
    );

    // Inside every limit, the same shapes export whole.
    let fits = pg_query(
        &app,
        "fits",
        "SELECT repeat('x', 1000) AS x FROM generate_series(1, 1)",
    )
    .await;
    let job = create_query_job(&app, "fits", fits, json!({})).await;
    let run = run_to_end(&app, job, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(run["resultFileSize"], 3 + 1002, "{run}");
}

#[tokio::test]
async fn a_wrong_password_is_reported_without_any_password() {
    let db = postgres::server().create_database(SPECIMENS);
    let wrong = "Wr0ng-Secret-9";
    let bad_url = format!(
        "postgres://{}:{wrong}@127.0.0.1:{}/{}",
        db.owner, db.port, db.name
    );
    let good_url = db.url();
    let app = spawn_app_configured(move |s| {
        s.query_sources.insert("lims".into(), good_url.into());
        s.query_sources.insert("lims_bad".into(), bad_url.into());
    })
    .await;
    let response = app
        .post(
            "/saved-queries",
            &json!({"title": "x", "sql": "SELECT 1", "dataSource": "lims_bad"}),
        )
        .await;
    let text = response.text().await.unwrap();
    assert!(text.contains("SAVED_QUERY_INVALID_DATA_SOURCE"), "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!text.contains(&db.password), "{text}");
    assert!(!text.contains("127.0.0.1"), "{text}");

    let query = slip_into_ledger(&app, "bad password", "SELECT 1 AS one", "lims_bad");
    let job = create_query_job(&app, "bad password", query, json!({})).await;
    let run = run_to_end(&app, job, None).await;
    assert_failed_with(
        &run,
        &[
            "lims_bad",
            "cannot sign in",
            "password authentication failed",
        ],
    );
    let everything = format!("{run}{}", run_log(&app, &run).await);
    assert!(!everything.contains(wrong), "{everything}");
    assert!(!everything.contains(&db.password), "{everything}");
    // The saved query shows the source's name only.
    let shown = ok_json(app.get(&format!("/saved-queries/{query}")).await).await;
    assert_eq!(shown["dataSource"], "lims_bad");
    assert!(!shown.to_string().contains("postgres://"), "{shown}");
}

#[tokio::test]
async fn the_password_can_come_from_a_file_or_a_setting() {
    let db = postgres::server().create_database(SPECIMENS);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lims.password");
    std::fs::write(&file, format!("{}\n", db.password)).unwrap();
    let bare = format!("postgres://{}@127.0.0.1:{}/{}", db.owner, db.port, db.name);
    let (bare2, password) = (bare.clone(), db.password.clone());
    let app = spawn_app_configured(move |s| {
        s.query_sources.insert("from_file".into(), bare.into());
        s.query_source_password_files
            .insert("from_file".into(), file);
        s.query_sources.insert("from_env".into(), bare2.into());
        s.query_source_passwords.insert("from_env".into(), password);
    })
    .await;
    for source in ["from_file", "from_env"] {
        let created = ok_json(
            app.post(
                "/saved-queries",
                &json!({"title": source, "sql": "SELECT count(*) AS n FROM specimens", "dataSource": source}),
            )
            .await,
        )
        .await;
        let job = create_query_job(&app, source, created["id"].as_i64().unwrap(), json!({})).await;
        let run = run_to_end(&app, job, None).await;
        assert_eq!(run["status"], "SUCCEEDED", "{source}: {run}");
        assert_eq!(result_text(&app, &run).await, "n\r\n2\r\n");
    }
    // Settings that name no PostgreSQL source are refused at start.
    let error = labcron::config::Settings::load_from(
        None,
        &[
            ("query_sources".into(), "lab=lab.db".into()),
            ("query_source_passwords".into(), "lab=x".into()),
        ],
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("not a PostgreSQL data source"),
        "{error}"
    );
    let error = labcron::config::Settings::load_from(
        None,
        &[(
            "query_sources".into(),
            "lims=postgres://u:Hidden-9@h".into(),
        )],
    )
    .unwrap_err();
    assert!(error.to_string().contains("query_sources.lims"), "{error}");
    assert!(!error.to_string().contains("Hidden-9"), "{error}");
}

#[tokio::test]
async fn a_source_that_is_down_fails_the_run_clearly() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://reader:Down-Secret-1@127.0.0.1:{port}/lims");
    let app = spawn_app_configured(move |s| {
        s.query_sources.insert("lims".into(), url.into());
    })
    .await;
    let codes = error_codes(
        app.post(
            "/saved-queries",
            &json!({"title": "x", "sql": "SELECT 1", "dataSource": "lims"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(codes, ["SAVED_QUERY_INVALID_DATA_SOURCE"]);
    let query = slip_into_ledger(&app, "down", "SELECT 1 AS one", "lims");
    let job = create_query_job(&app, "down", query, json!({"timeoutSeconds": 600})).await;
    let run = run_to_end(&app, job, None).await;
    assert_failed_with(&run, &["data source `lims`", "cannot connect", "refused"]);
    assert!(!run.to_string().contains("Down-Secret-1"), "{run}");
    assert!(!run.to_string().contains(&port.to_string()), "{run}");
}

/// Set in the process that `a_big_postgres_result_streams_in_bounded_memory` starts.
const MEMORY_CHILD: &str = "LABCRON_TEST_PG_MEMORY_CHILD";

/// Peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[tokio::test]
async fn a_big_postgres_result_streams_in_bounded_memory() {
    // Alone in a process of its own (this test binary again), so other tests' memory is not
    // counted, as query_limits does.
    run_alone("pg_sources::big_result_measured_alone", MEMORY_CHILD);
}

#[tokio::test]
#[ignore = "run by a_big_postgres_result_streams_in_bounded_memory in a process of its own"]
async fn big_result_measured_alone() {
    if std::env::var_os(MEMORY_CHILD).is_none() {
        eprintln!("skipped: only meaningful alone in its process");
        return;
    }
    let (app, _db) = app_on_postgres(no_change).await;
    // 200,000 rows of about 510 bytes: some 100 MB of CSV.
    let query = pg_query(
        &app,
        "big",
        "SELECT n, repeat('x', 500) AS filler FROM generate_series(1, 200000) AS n",
    )
    .await;
    let job = create_query_job(&app, "big", query, json!({"timeoutSeconds": 600})).await;
    // Start from the current resident size (Linux resets the peak on writing 5 to clear_refs).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = peak_rss();
    let run = run_to_end(&app, job, None).await;
    let grown = peak_rss().saturating_sub(before);
    eprintln!(
        "peak memory grew by {grown} bytes for {}",
        run["resultFileSize"]
    );
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert!(
        run["resultFileSize"].as_i64().unwrap() > 100_000_000,
        "{run}"
    );
    assert!(
        grown < 48 * 1024 * 1024,
        "peak memory grew by {grown} bytes"
    );
}

fn labcron_command(args: &[&str]) -> std::process::Output {
    crate::common::command(args).output().expect("run labcron")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_import_checks_saved_queries_against_the_postgres_source() {
    let (app, db) = app_on_postgres(no_change).await;
    let app = app.with_fresh_connections();
    let query = pg_query(&app, "Count", "SELECT count(*) AS n FROM specimens").await;
    create_query_job(&app, "Count job", query, json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.toml");
    let data = app.data_dir.to_str().unwrap().to_string();
    let out = labcron_command(&[
        "jobs",
        "export",
        file.to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    assert!(out.status.success(), "{out:?}");
    let exported = std::fs::read_to_string(&file).unwrap();
    assert!(exported.contains("dataSource = \"lims\""), "{exported}");

    let url = db.url();
    let other = spawn_app_configured(|_| {}).await.with_fresh_connections();
    let other_data = other.data_dir.to_str().unwrap().to_string();
    let sources = format!("lims={url}");
    let import = |path: &std::path::Path| {
        labcron_command(&[
            "jobs",
            "import",
            path.to_str().unwrap(),
            "--apply",
            "--data-dir",
            &other_data,
            "--query-sources",
            &sources,
        ])
    };
    // SQL that does not compile there is refused, with PostgreSQL's message.
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        exported.replace("count(*) AS n FROM specimens", "nope FROM specimens"),
    )
    .unwrap();
    let out = import(&broken);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("savedQuery.sql") && said.contains("does not exist"),
        "{said}"
    );
    assert!(!said.contains(&db.password), "{said}");

    let out = import(&file);
    assert!(out.status.success(), "{out:?}");
    let listed = ok_json(other.get("/saved-queries").await).await;
    assert_eq!(listed[0]["title"], "Count", "{listed}");
    assert_eq!(listed[0]["dataSource"], "lims", "{listed}");
}
