//! Saved queries and QUERY jobs: the `/saved-queries` API and its validation, CSV escaping,
//! parameters from run arguments, read-only data sources (even for SQL that slipped into the
//! ledger), the time and row limits, cancel, a million rows in bounded memory, and the demo
//! database and example jobs of a first start.

use std::path::Path;

use labcron::config::Settings;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{
    AppOptions, TestApp, assert_failed_with, error_codes, ok_json, run_alone, spawn_app,
    spawn_app_as_shipped, spawn_app_with,
};

/// Creates a saved query on `lab` and returns its id.
pub async fn create_query(app: &TestApp, title: &str, sql: &str) -> i64 {
    let created = ok_json(
        app.post("/saved-queries", &json!({"title": title, "sql": sql}))
            .await,
    )
    .await;
    created["id"].as_i64().expect("saved query id")
}

/// Creates an on-demand QUERY job for saved query `query_id`; `extra` fields are merged in.
pub async fn create_query_job(app: &TestApp, name: &str, query_id: i64, extra: Value) -> i64 {
    let mut body = json!({"name": name, "type": "QUERY", "repeatSchedule": "ONDEMAND", "savedQuery": {"id": query_id}});
    for (key, value) in extra.as_object().expect("object") {
        body[key] = value.clone();
    }
    app.create_job(&body).await
}

/// Runs a job to its end and returns the run.
pub async fn run_to_end(app: &TestApp, job_id: i64, args: Option<&str>) -> Value {
    let run_id = app.start_run(job_id, args).await;
    app.wait_run(job_id, run_id).await
}

/// Downloads a run's result file: (status, content type, body).
pub async fn download(app: &TestApp, job_id: i64, run_id: i64) -> (StatusCode, String, Vec<u8>) {
    let response = app
        .get(&format!(
            "/scheduled-jobs/{job_id}/runs/{run_id}/result-file"
        ))
        .await;
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        status,
        content_type,
        response.bytes().await.expect("body").to_vec(),
    )
}

/// A run's result file as text (asserting it downloads).
pub async fn result_text(app: &TestApp, run: &Value) -> String {
    let (status, _, body) = download(
        app,
        run["jobId"].as_i64().unwrap(),
        run["id"].as_i64().unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    String::from_utf8(body).expect("UTF-8 CSV")
}

pub async fn run_log(app: &TestApp, run: &Value) -> String {
    let response = app
        .get(&format!(
            "/scheduled-jobs/{}/runs/{}/log",
            run["jobId"].as_i64().unwrap(),
            run["id"].as_i64().unwrap()
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

fn count_rows(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn saved_queries_are_created_read_listed_replaced_and_deleted() {
    let app = spawn_app().await;
    let created = ok_json(
        app.post("/saved-queries", &json!({"title": "  Blood samples ", "sql": " SELECT label FROM specimens ", "unknown": 1}))
            .await,
    )
    .await;
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["title"], "Blood samples");
    assert_eq!(created["sql"], "SELECT label FROM specimens");
    assert_eq!(created["dataSource"], "lab");
    assert_eq!(created["createdBy"]["loginName"], "admin");
    assert!(created["lastModifiedOn"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(
        ok_json(app.get(&format!("/saved-queries/{id}")).await).await,
        created
    );
    // Both base paths serve it.
    let other_base = app
        .client
        .get(format!(
            "{}/openspecimen/rest/ng/saved-queries/{id}",
            app.base
        ))
        .header("X-OS-API-TOKEN", &app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok_json(other_base).await["id"], id);

    let second = create_query(&app, "Plasma 100%_done", "SELECT 1").await;
    let titles = |list: Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|q| q["title"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        titles(ok_json(app.get("/saved-queries").await).await),
        ["Plasma 100%_done", "Blood samples"]
    );
    assert_eq!(
        titles(ok_json(app.get("/saved-queries?query=BLOOD").await).await),
        ["Blood samples"]
    );
    assert_eq!(
        titles(ok_json(app.get("/saved-queries?query=%25_").await).await),
        ["Plasma 100%_done"]
    );
    assert_eq!(
        titles(ok_json(app.get("/saved-queries?startAt=1&maxResults=1").await).await),
        ["Blood samples"]
    );
    assert_eq!(
        titles(ok_json(app.get("/saved-queries?maxResults=1").await).await),
        ["Plasma 100%_done"]
    );

    let replaced = ok_json(
        app.put(
            &format!("/saved-queries/{id}"),
            &json!({"title": "Blood", "sql": "SELECT count(*) AS n FROM specimens"}),
        )
        .await,
    )
    .await;
    assert_eq!(replaced["title"], "Blood");
    assert_eq!(replaced["sql"], "SELECT count(*) AS n FROM specimens");
    assert!(replaced["lastModifiedOn"].as_i64() >= created["lastModifiedOn"].as_i64());

    // A job shows the query's title; once the query is deleted the job is no longer active.
    let job = create_query_job(&app, "blood count", id, json!({})).await;
    let shown = ok_json(app.get(&format!("/scheduled-jobs/{job}")).await).await;
    assert_eq!(shown["savedQuery"], json!({"id": id, "title": "Blood"}));

    ok_json(app.delete(&format!("/saved-queries/{id}")).await).await;
    for response in [
        app.get(&format!("/saved-queries/{id}")).await,
        app.put(
            &format!("/saved-queries/{id}"),
            &json!({"title": "x", "sql": "SELECT 1"}),
        )
        .await,
        app.delete(&format!("/saved-queries/{id}")).await,
    ] {
        assert_eq!(
            error_codes(response, StatusCode::BAD_REQUEST).await,
            ["SAVED_QUERY_NOT_FOUND"]
        );
    }
    assert_eq!(
        titles(ok_json(app.get("/saved-queries").await).await),
        ["Plasma 100%_done"]
    );
    let shown = ok_json(app.get(&format!("/scheduled-jobs/{job}")).await).await;
    assert_eq!(shown["isActiveJob"], false);
    let run = run_to_end(&app, job, None).await;
    assert_failed_with(&run, &["does not exist"]);
    // A job cannot be created on a deleted query.
    let response = app
        .post("/scheduled-jobs", &json!({"name": "x", "type": "QUERY", "repeatSchedule": "ONDEMAND", "savedQuery": {"id": id}}))
        .await;
    assert_eq!(
        error_codes(response, StatusCode::BAD_REQUEST).await,
        ["SAVED_QUERY_NOT_FOUND"]
    );
    let _ = second;
}

#[tokio::test]
async fn saved_query_bodies_are_validated_with_every_problem_at_once() {
    let app = spawn_app().await;
    let post = |body: Value| {
        let app = &app;
        async move {
            error_codes(
                app.post("/saved-queries", &body).await,
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    };
    assert_eq!(
        post(json!({})).await,
        ["SAVED_QUERY_TITLE_REQUIRED", "SAVED_QUERY_SQL_REQUIRED"]
    );
    assert_eq!(
        post(json!({"title": " ", "sql": "SELEC 1"})).await,
        ["SAVED_QUERY_TITLE_REQUIRED", "SAVED_QUERY_INVALID_SQL"]
    );
    assert_eq!(
        post(json!({"title": "x".repeat(256), "sql": "SELECT 1"})).await,
        ["SAVED_QUERY_TITLE_TOO_LONG"]
    );
    assert_eq!(
        post(json!({"title": "t", "sql": "SELECT 1", "dataSource": "nowhere"})).await,
        ["SAVED_QUERY_INVALID_DATA_SOURCE"]
    );
    let writes = [
        "DELETE FROM specimens",
        "UPDATE specimens SET status = 'Lost'",
        "INSERT INTO sites (code, name, city, country) VALUES ('X', 'X', 'X', 'X')",
        "DROP TABLE specimens",
        "CREATE TABLE t (x)",
        "WITH gone AS (SELECT 1) DELETE FROM specimens",
        "ATTACH DATABASE '/tmp/other.db' AS other",
        "PRAGMA query_only = OFF",
        "BEGIN",
        "SELECT 1; DELETE FROM specimens",
        "SELECT 1; SELECT 2",
        "SELECT * FROM specimens WHERE id = ?",
        "SELECT no_such_column FROM specimens",
    ];
    for sql in writes {
        assert_eq!(
            post(json!({"title": "t", "sql": sql})).await,
            ["SAVED_QUERY_INVALID_SQL"],
            "{sql}"
        );
    }

    // SQLite's own message comes back.
    let response = app
        .post(
            "/saved-queries",
            &json!({"title": "t", "sql": "SELECT nope FROM specimens"}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    let message = body[0]["message"].as_str().unwrap();
    assert!(message.contains("no such column: nope"), "{message}");
    let response = app
        .post(
            "/saved-queries",
            &json!({"title": "t", "sql": "DELETE FROM specimens"}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert!(
        body[0]["message"].as_str().unwrap().contains("read-only"),
        "{body}"
    );
    let response = app
        .post(
            "/saved-queries",
            &json!({"title": "t", "sql": "SELECT 1", "dataSource": "nowhere"}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert!(
        body[0]["message"].as_str().unwrap().contains("lab"),
        "names the configured sources: {body}"
    );

    // Bad requests in the contract's shape; nothing was stored.
    let malformed = app
        .request(Method::POST, "/saved-queries")
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_codes(malformed, StatusCode::BAD_REQUEST).await,
        ["INVALID_REQUEST"]
    );
    assert_eq!(
        error_codes(app.get("/saved-queries/abc").await, StatusCode::BAD_REQUEST).await,
        ["INVALID_REQUEST"]
    );
    assert_eq!(
        error_codes(
            app.get("/saved-queries?maxResults=x").await,
            StatusCode::BAD_REQUEST
        )
        .await,
        ["INVALID_REQUEST"]
    );
    assert_eq!(
        error_codes(app.get("/saved-queries/999").await, StatusCode::BAD_REQUEST).await,
        ["SAVED_QUERY_NOT_FOUND"]
    );
    assert_eq!(ok_json(app.get("/saved-queries").await).await, json!([]));
    let anonymous = app
        .client
        .get(app.url("/saved-queries"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_codes(anonymous, StatusCode::UNAUTHORIZED).await,
        ["AUTH_REQUIRED"]
    );
}

#[tokio::test]
async fn any_user_reads_saved_queries_but_only_the_creator_or_an_admin_changes_them() {
    let app = spawn_app().await;
    let (_, alice) = app.create_user("alice", false).await;
    let (_, bob) = app.create_user("bob", false).await;
    let created = ok_json(
        app.send_as(
            &alice,
            Method::POST,
            "/saved-queries",
            Some(&json!({"title": "Alice's", "sql": "SELECT 1 AS one"})),
        )
        .await,
    )
    .await;
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["createdBy"]["loginName"], "alice");

    let listed = ok_json(app.send_as(&bob, Method::GET, "/saved-queries", None).await).await;
    assert_eq!(listed[0]["id"], id);
    ok_json(
        app.send_as(&bob, Method::GET, &format!("/saved-queries/{id}"), None)
            .await,
    )
    .await;
    let change = json!({"title": "Bob's now", "sql": "SELECT 2"});
    let put = app
        .send_as(
            &bob,
            Method::PUT,
            &format!("/saved-queries/{id}"),
            Some(&change),
        )
        .await;
    assert_eq!(
        error_codes(put, StatusCode::BAD_REQUEST).await,
        ["ACCESS_DENIED"]
    );
    let delete = app
        .send_as(&bob, Method::DELETE, &format!("/saved-queries/{id}"), None)
        .await;
    assert_eq!(
        error_codes(delete, StatusCode::BAD_REQUEST).await,
        ["ACCESS_DENIED"]
    );

    let put = app
        .send_as(
            &alice,
            Method::PUT,
            &format!("/saved-queries/{id}"),
            Some(&change),
        )
        .await;
    assert_eq!(ok_json(put).await["title"], "Bob's now");
    let put = app
        .put(
            &format!("/saved-queries/{id}"),
            &json!({"title": "Admin's edit", "sql": "SELECT 3"}),
        )
        .await;
    let edited = ok_json(put).await;
    assert_eq!(edited["title"], "Admin's edit");
    assert_eq!(
        edited["createdBy"]["loginName"], "alice",
        "the creator stays"
    );

    // A non-admin may run a QUERY job on it.
    let job = ok_json(
        app.send_as(&bob, Method::POST, "/scheduled-jobs", Some(&json!({"name": "bob's export", "type": "QUERY", "repeatSchedule": "ONDEMAND", "savedQuery": {"id": id}}))).await,
    )
    .await;
    let job_id = job["id"].as_i64().unwrap();
    let response = app
        .send_as(
            &bob,
            Method::POST,
            &format!("/scheduled-jobs/{job_id}/runs?response=run"),
            None,
        )
        .await;
    let run_id = ok_json(response).await["id"].as_i64().unwrap();
    let run = app.wait_run(job_id, run_id).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(result_text(&app, &run).await, "3\r\n3\r\n");

    let delete = app
        .send_as(
            &alice,
            Method::DELETE,
            &format!("/saved-queries/{id}"),
            None,
        )
        .await;
    ok_json(delete).await;
}

#[tokio::test]
async fn a_query_run_streams_escaped_csv_to_its_named_file() {
    let app = spawn_app().await;
    let sql = "SELECT 42 AS \"int\", -0.5 AS \"real, too\", 'plain' AS \"say \"\"hi\"\"\",
        'a,b' AS comma, 'say \"hi\"' AS quote, 'line1' || char(10) || 'line2' AS newline,
        'ünïcødé ✓ 中文' AS unicode, NULL AS nil, x'00ff10' AS blob, '' AS empty, 2.0 AS two
        UNION ALL SELECT -1, 1e300, 'x', NULL, NULL, char(13, 10), '', NULL, x'', 'y', 0.1";
    let query = create_query(&app, "escaping", sql).await;
    let job = create_query_job(&app, "escaping export", query, json!({})).await;
    let run = run_to_end(&app, job, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let run_id = run["id"].as_i64().unwrap();
    let file_name = format!("scheduled_query_{query}_{run_id}.csv");
    assert_eq!(run["logFilePath"], file_name.as_str());

    let (status, content_type, body) = download(&app, job, run_id).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let expected = "int,\"real, too\",\"say \"\"hi\"\"\",comma,quote,newline,unicode,nil,blob,empty,two\r\n\
                    42,-0.5,plain,\"a,b\",\"say \"\"hi\"\"\",\"line1\nline2\",ünïcødé ✓ 中文,,AP8Q,,2.0\r\n\
                    -1,1e300,x,,,\"\r\n\",,,,y,0.1\r\n";
    assert_eq!(String::from_utf8(body.clone()).unwrap(), expected);
    assert_eq!(run["resultFileSize"].as_u64().unwrap() as usize, body.len());

    // The file is kept complete, with nothing left aside: in the run directory on SQLite, in the
    // database's pieces on PostgreSQL (and the run directory removed).
    let run_dir = app.data_dir.join(format!("runs/{job}/{run_id}"));
    if crate::common::on_postgres() {
        let stored = crate::common::ledger::sql_i64(
            &app.data_dir,
            &format!(
                "SELECT coalesce(sum(length(data)), 0) FROM run_files \
                 WHERE run_id = {run_id} AND kind = 'RESULT'"
            ),
        );
        assert_eq!(stored as usize, body.len());
        assert!(!run_dir.exists(), "{} is left", run_dir.display());
    } else {
        assert_eq!(std::fs::read(run_dir.join(&file_name)).unwrap(), body);
        let leftovers: Vec<String> = std::fs::read_dir(&run_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != &file_name && n != "run.log")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    let log = run_log(&app, &run).await;
    assert!(log.contains("2 rows") && log.contains(&file_name), "{log}");
}

#[tokio::test]
async fn parameters_come_from_fixed_then_runtime_arguments() {
    let app = spawn_app().await;
    let sql = "SELECT :site AS site, typeof(:days) AS days_type, :days + 1 AS next, @code AS code, count(*) AS specimens
               FROM specimen_details WHERE site = :site AND collected_on >= date('now', '-' || :days || ' days')";
    let query = create_query(&app, "by site", sql).await;
    let job = create_query_job(
        &app,
        "site export",
        query,
        json!({"fixedArgs": "site=BOS days=30 code=007", "rtArgsProvided": true}),
    )
    .await;
    let lab = app.data_dir.join("lab.db");

    let run = run_to_end(&app, job, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let expected = count_rows(
        &lab,
        "SELECT count(*) FROM specimen_details WHERE site = 'BOS' AND collected_on >= date('now', '-30 days')",
    );
    assert_eq!(
        result_text(&app, &run).await,
        format!("site,days_type,next,code,specimens\r\nBOS,integer,31,007,{expected}\r\n")
    );

    // Runtime arguments override the fixed ones; quoting keeps spaces; a leading `:` is fine.
    let run = run_to_end(&app, job, Some(":site=LYO days=365 code='a b'")).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(run["rtArgs"], ":site=LYO days=365 code='a b'");
    let expected = count_rows(
        &lab,
        "SELECT count(*) FROM specimen_details WHERE site = 'LYO' AND collected_on >= date('now', '-365 days')",
    );
    assert!(expected > 0);
    assert_eq!(
        result_text(&app, &run).await,
        format!("site,days_type,next,code,specimens\r\nLYO,integer,366,a b,{expected}\r\n")
    );
}

#[tokio::test]
async fn missing_unknown_or_malformed_parameters_fail_the_run_saying_which() {
    let app = spawn_app().await;
    let query = create_query(&app, "two params", "SELECT :from AS f, :site AS s").await;
    let job = create_query_job(&app, "params", query, json!({"rtArgsProvided": true})).await;

    let run = run_to_end(&app, job, Some("from=2024-01-01")).await;
    assert_failed_with(&run, &["missing value for parameter :site", "site=<value>"]);
    let run = run_to_end(&app, job, None).await;
    assert_failed_with(&run, &[":from, :site"]);
    let run = run_to_end(&app, job, Some("from=1 site=2 sight=3")).await;
    assert_failed_with(&run, &["unknown parameter sight", ":from, :site"]);
    let run = run_to_end(&app, job, Some("from=1 BOS")).await;
    assert_failed_with(&run, &["`BOS` is not name=value"]);
    let log = run_log(&app, &run).await;
    assert!(log.contains("failed"), "the log says why: {log}");

    let run = run_to_end(&app, job, Some("from=1 site=")).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(result_text(&app, &run).await, "f,s\r\n1,\r\n");
}

#[tokio::test]
async fn a_write_statement_slipped_into_the_ledger_cannot_change_the_data_source() {
    let app = spawn_app().await;
    let lab = app.data_dir.join("lab.db");
    let before = std::fs::read(&lab).unwrap();
    let specimens = count_rows(&lab, "SELECT count(*) FROM specimens");

    let elsewhere = app.data_dir.join("elsewhere.db");
    let attach = format!("ATTACH DATABASE '{}' AS e", elsewhere.display());
    let mut jobs = Vec::new();
    for (n, sql) in [
        "DELETE FROM specimens",
        "DELETE FROM specimens RETURNING id",
        "UPDATE specimens SET status = 'Lost' RETURNING id",
        "CREATE TABLE stolen AS SELECT * FROM specimens",
        "DROP TABLE specimens",
        "PRAGMA journal_mode = WAL",
        attach.as_str(),
        "SELECT 1; DELETE FROM specimens",
    ]
    .iter()
    .enumerate()
    {
        // Past the API's checks, on the tests' engine (`LABCRON_TEST_LEDGER`).
        let query = crate::common::ledger::sql_i64(
            &app.data_dir,
            &format!(
                "INSERT INTO saved_queries (title, sql, data_source, created_by, last_modified_on)
                 VALUES ('slipped {n}', '{}', 'lab', 1, 0) RETURNING id",
                sql.replace('\'', "''")
            ),
        );
        jobs.push((
            create_query_job(&app, &format!("slipped {n}"), query, json!({})).await,
            *sql,
        ));
    }
    for (job, sql) in jobs {
        let run = run_to_end(&app, job, None).await;
        assert_eq!(run["status"], "FAILED", "`{sql}` ran: {run}");
    }
    assert_eq!(
        count_rows(&lab, "SELECT count(*) FROM specimens"),
        specimens
    );
    assert_eq!(
        std::fs::read(&lab).unwrap(),
        before,
        "the data source file is untouched"
    );
    assert!(!app.data_dir.join("lab.db-wal").exists());
    assert!(!elsewhere.exists());
}

#[tokio::test]
async fn a_query_over_its_time_limit_fails_without_a_file() {
    let app = spawn_app().await;
    // Endless, and it yields no row while it runs: only the progress handler can stop it.
    let query = create_query(
        &app,
        "endless",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) AS n FROM c",
    )
    .await;
    let job = create_query_job(&app, "endless export", query, json!({"timeoutSeconds": 1})).await;
    let run = run_to_end(&app, job, None).await;
    assert_failed_with(&run, &["time limit of 1 s"]);
    crate::common::assert_only_the_log(&app.data_dir, &run);
    let (status, _, _) = download(&app, job, run["id"].as_i64().unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_query_past_the_row_limit_fails_and_one_at_the_limit_succeeds() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s: &mut Settings| s.queries.row_limit = 10),
        ..AppOptions::default()
    })
    .await;
    let rows = |n: u32| {
        format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) SELECT x FROM c"
        )
    };
    let at_limit = create_query(&app, "ten", &rows(10)).await;
    let over = create_query(&app, "eleven", &rows(11)).await;
    let job = create_query_job(&app, "ten rows", at_limit, json!({})).await;
    let run = run_to_end(&app, job, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(result_text(&app, &run).await.lines().count(), 11);
    let job = create_query_job(&app, "eleven rows", over, json!({})).await;
    let run = run_to_end(&app, job, None).await;
    assert_failed_with(&run, &["more than 10 rows", "queries.row_limit"]);
}

#[tokio::test]
async fn a_running_query_can_be_cancelled() {
    let app = spawn_app().await;
    let query = create_query(
        &app,
        "endless",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) AS n FROM c",
    )
    .await;
    let job = create_query_job(&app, "endless", query, json!({"timeoutSeconds": 3600})).await;
    let run_id = app.start_run(job, None).await;
    for _ in 0..600 {
        if app.run_status(job, run_id).await == "IN_PROGRESS" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.cancel_run(job, run_id).await;
    let run = app.wait_run(job, run_id).await;
    assert_failed_with(&run, &["cancelled by admin"]);
}

/// Peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// Set in the process that `a_million_row_query_streams_in_bounded_memory` starts.
const MEMORY_CHILD: &str = "LABCRON_TEST_MEMORY_CHILD";

#[tokio::test]
async fn a_million_row_query_streams_in_bounded_memory() {
    // Other tests share this process and its peak memory, so the measurement runs in a process
    // of its own: this test binary again, running only the test below.
    run_alone("queries::million_rows_measured_alone", MEMORY_CHILD);
}

#[tokio::test]
#[ignore = "run by a_million_row_query_streams_in_bounded_memory in a process of its own"]
async fn million_rows_measured_alone() {
    if std::env::var_os(MEMORY_CHILD).is_none() {
        eprintln!(
            "skipped: only meaningful alone in its process (see a_million_row_query_streams_in_bounded_memory)"
        );
        return;
    }
    let app = spawn_app().await;
    let note = "a note with, commas and \"quotes\" that makes every row about two hundred bytes long: \
                lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor";
    let sql = format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000)
         SELECT x AS id, printf('SPC-%08d', x) AS label, x * 0.25 AS quantity, '{}' AS note FROM c",
        note.replace('\'', "''")
    );
    let query = create_query(&app, "a million rows", &sql).await;
    let job = create_query_job(&app, "a million rows", query, json!({})).await;

    // Start from the current resident size (Linux resets the peak on writing 5 to clear_refs).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = peak_rss();
    let run = run_to_end(&app, job, None).await;
    let grown = peak_rss().saturating_sub(before);
    eprintln!("peak memory grew by {grown} bytes (from {before})");

    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let size = run["resultFileSize"].as_u64().unwrap();
    assert!(size > 150_000_000, "the CSV is large: {size}");
    assert!(
        grown < size / 4,
        "peak memory grew by {grown} bytes for a {size}-byte CSV"
    );
    let log = run_log(&app, &run).await;
    assert!(log.contains("1000000 rows"), "{log}");
    // The file holds every row: check the end without reading it all into memory (on
    // PostgreSQL, where it is kept in the database's pieces, through a Range request).
    let tail = if crate::common::on_postgres() {
        let url = format!("/scheduled-jobs/{job}/runs/{}/result-file", run["id"]);
        let reply = app
            .request(reqwest::Method::GET, &url)
            .header("Range", format!("bytes={}-{}", size - 300, size - 1))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::PARTIAL_CONTENT);
        reply.text().await.unwrap()
    } else {
        let path = app.data_dir.join(format!(
            "runs/{job}/{}/{}",
            run["id"],
            run["logFilePath"].as_str().unwrap()
        ));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(&path).unwrap();
        file.seek(SeekFrom::End(-300)).unwrap();
        let mut tail = String::new();
        file.read_to_string(&mut tail).unwrap();
        tail
    };
    assert_eq!(tail.len(), 300);
    assert!(
        tail.ends_with(&format!(
            "1000000,SPC-01000000,250000.0,\"{}\"\r\n",
            note.replace('"', "\"\"")
        )),
        "{tail}"
    );
}

#[tokio::test]
async fn a_configured_data_source_is_used_and_stays_read_only() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s: &mut Settings| {
            s.query_sources
                .insert("research".into(), "research.db".into());
        }),
        ..AppOptions::default()
    })
    .await;
    let body = json!({"title": "samples", "sql": "SELECT name FROM samples ORDER BY name", "dataSource": "research"});
    // Configured but missing: a clear error.
    let codes = error_codes(
        app.post("/saved-queries", &body).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(codes, ["SAVED_QUERY_INVALID_DATA_SOURCE"]);

    let path = app.data_dir.join("research.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE samples (name TEXT); INSERT INTO samples VALUES ('b'), ('a');",
    )
    .unwrap();
    drop(conn);
    let created = ok_json(app.post("/saved-queries", &body).await).await;
    assert_eq!(created["dataSource"], "research");
    let job = create_query_job(&app, "research", created["id"].as_i64().unwrap(), json!({})).await;
    let run = run_to_end(&app, job, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(result_text(&app, &run).await, "name\r\na\r\nb\r\n");
    // The demo source is still there beside it.
    assert_eq!(
        error_codes(
            app.post(
                "/saved-queries",
                &json!({"title": "x", "sql": "SELECT * FROM samples", "dataSource": "lab"})
            )
            .await,
            StatusCode::BAD_REQUEST
        )
        .await,
        ["SAVED_QUERY_INVALID_SQL"]
    );
}

#[tokio::test]
async fn the_first_start_creates_the_demo_database_and_examples_and_later_starts_leave_them_alone()
{
    let mut app = spawn_app_as_shipped().await;
    assert!(app.settings.example_jobs, "examples are on by default");
    let lab = app.data_dir.join("lab.db");
    assert_eq!(
        count_rows(&lab, "SELECT count(*) FROM participants"),
        labcron::query::demo::PARTICIPANTS as i64
    );
    assert!(count_rows(&lab, "SELECT count(*) FROM specimens") > 10_000);
    assert!(count_rows(&lab, "SELECT count(*) FROM visits") > 4_000);
    assert_eq!(count_rows(&lab, "SELECT count(*) FROM sites"), 6);
    assert_eq!(
        count_rows(
            &lab,
            "SELECT count(*) FROM specimens WHERE freezer IS NULL AND status = 'Available'"
        ),
        0
    );

    let jobs = ok_json(app.get("/scheduled-jobs").await).await;
    let jobs = jobs.as_array().unwrap().clone();
    let by_name = |name: &str| {
        jobs.iter()
            .find(|j| j["name"] == name)
            .unwrap_or_else(|| panic!("no job {name}"))
            .clone()
    };
    for job_type in ["QUERY", "INTERNAL", "EXTERNAL"] {
        assert!(
            jobs.iter().any(|j| j["type"] == job_type),
            "an example {job_type} job"
        );
    }
    for job in &jobs {
        // Nothing fires by itself: scheduled examples are paused, the rest are on demand.
        assert!(
            job["activityStatus"] == "Closed" || job["repeatSchedule"] == "ONDEMAND",
            "{job}"
        );
        assert!(job["nextRunOn"].is_null(), "{job}");
    }
    let queries = ok_json(app.get("/saved-queries").await).await;
    assert_eq!(queries.as_array().unwrap().len(), 3);

    // The examples work.
    let this_week = by_name("Specimens collected this week");
    assert_eq!(this_week["type"], "QUERY");
    assert_eq!(
        this_week["savedQuery"]["title"],
        "Specimens collected this week"
    );
    let by_site = by_name("Available specimens at a site");
    let script = by_name("Example script");
    for (job, args) in [
        (&this_week, None),
        (&by_site, Some("site=MUC days=60")),
        (&script, None),
    ] {
        let id = job["id"].as_i64().unwrap();
        let run = app.run_to_end(id, args).await;
        assert_eq!(run["status"], "SUCCEEDED", "{} {run}", job["name"]);
    }

    // Delete one example, change the demo database's modification time check, restart.
    let deleted = script["id"].as_i64().unwrap();
    ok_json(app.delete(&format!("/scheduled-jobs/{deleted}")).await).await;
    let demo_bytes = std::fs::read(&lab).unwrap();
    let demo_modified = std::fs::metadata(&lab).unwrap().modified().unwrap();
    app.stop().await;

    app.start_again().await;
    assert_eq!(
        std::fs::read(&lab).unwrap(),
        demo_bytes,
        "the demo database is untouched"
    );
    assert_eq!(
        std::fs::metadata(&lab).unwrap().modified().unwrap(),
        demo_modified
    );
    let again = ok_json(app.get("/scheduled-jobs").await).await;
    assert_eq!(
        again.as_array().unwrap().len(),
        jobs.len() - 1,
        "no example comes back: {again}"
    );
    assert!(
        !again
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["name"] == "Example script")
    );
    assert_eq!(
        ok_json(app.get("/saved-queries").await)
            .await
            .as_array()
            .unwrap()
            .len(),
        3
    );
    app.stop().await;

    // Even with lab.db gone, a later start does not recreate it.
    std::fs::remove_file(&lab).unwrap();
    app.start_again().await;
    assert!(!lab.exists());
    app.stop().await;
}

/// The error array of a 400 answer: (code, message) pairs.
async fn user_errors(response: reqwest::Response) -> Vec<(String, String)> {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let body: Value = serde_json::from_str(&text).expect("JSON error array");
    body.as_array()
        .expect("an array")
        .iter()
        .map(|e| {
            (
                e["code"].as_str().expect("code").to_string(),
                e["message"].as_str().expect("message").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_query_without_parameters_refuses_runtime_parameters_at_save_and_at_run() {
    let app = spawn_app().await;
    let none = create_query(
        &app,
        "All sites",
        "SELECT DISTINCT site FROM specimen_details",
    )
    .await;
    let one = create_query(
        &app,
        "One site",
        "SELECT count(*) AS n FROM specimen_details WHERE site = :site",
    )
    .await;
    let body = |query: i64, rt: bool| {
        json!({"name": "site export", "type": "QUERY", "repeatSchedule": "ONDEMAND",
               "savedQuery": {"id": query}, "rtArgsProvided": rt, "rtArgsHelpText": "site=…"})
    };

    // Saving: refused in the contract's shape, the message naming the field and the query.
    let errors = user_errors(app.post("/scheduled-jobs", &body(none, true)).await).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "SCHEDULED_JOB_RT_ARGS_NOT_ALLOWED");
    assert!(
        errors[0].1.starts_with("rtArgsProvided: saved query #")
            && errors[0].1.contains("All sites takes no parameters"),
        "{errors:?}"
    );
    let listed = ok_json(app.get("/scheduled-jobs/count").await).await;
    let before = listed["count"].as_i64().expect("count");
    let job = app.create_job(&body(none, false)).await;
    assert_eq!(
        ok_json(app.get("/scheduled-jobs/count").await).await["count"],
        before + 1,
        "only the job without runtime parameters was stored"
    );
    // Turning them on later is refused the same way; the stored job is unchanged.
    let errors = user_errors(
        app.put(&format!("/scheduled-jobs/{job}"), &body(none, true))
            .await,
    )
    .await;
    assert_eq!(errors[0].0, "SCHEDULED_JOB_RT_ARGS_NOT_ALLOWED");
    let stored = ok_json(app.get(&format!("/scheduled-jobs/{job}")).await).await;
    assert_eq!(stored["rtArgsProvided"], false);

    // A query with a parameter takes them.
    let saved = ok_json(
        app.put(&format!("/scheduled-jobs/{job}"), &body(one, true))
            .await,
    )
    .await;
    assert_eq!(saved["rtArgsProvided"], true);
    let run = run_to_end(&app, job, Some("site=BOS")).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");

    // The query loses its parameter: runs with arguments are refused before they are queued…
    ok_json(
        app.put(
            &format!("/saved-queries/{one}"),
            &json!({"title": "One site", "sql": "SELECT count(*) AS n FROM specimen_details"}),
        )
        .await,
    )
    .await;
    let runs_before = ok_json(app.get(&format!("/scheduled-jobs/{job}/runs")).await).await;
    let errors = user_errors(
        app.post(
            &format!("/scheduled-jobs/{job}/runs"),
            &json!({"args": "site=BOS"}),
        )
        .await,
    )
    .await;
    assert_eq!(errors[0].0, "SCHEDULED_JOB_RT_ARGS_NOT_ALLOWED");
    assert!(errors[0].1.contains("takes no parameters"), "{errors:?}");
    let runs_after = ok_json(app.get(&format!("/scheduled-jobs/{job}/runs")).await).await;
    assert_eq!(runs_before, runs_after, "no run was queued");
    // …while a run without them works, and the job may still be paused as it is.
    let run = run_to_end(&app, job, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let mut closed = body(one, true);
    closed["activityStatus"] = json!("Closed");
    let saved = ok_json(app.put(&format!("/scheduled-jobs/{job}"), &closed).await).await;
    assert_eq!(saved["activityStatus"], "Closed");
}
