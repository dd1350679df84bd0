//! The retention pass (`labcron::retention::run_retention_now`, the work of the daily task started
//! at start-up): runs are aged directly in the ledger file, then the pass removes the files of runs
//! older than `retention.files_days` (rows stay, downloads answer
//! SCHEDULED_JOB_RESULT_DATA_FILE_NOT_FOUND) and, only with `retention.runs_days`, deletes the rows
//! of older runs too, batch after batch.

use labcron::retention::{ROW_BATCH, RetentionReport, run_retention_now};
use labcron::store::Db;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{
    AppOptions, TestApp, age_run, error_codes, ok_json, spawn_app, spawn_app_configured,
    spawn_app_with,
};

const DAY_MS: i64 = 24 * 3600 * 1000;

async fn retention_pass(app: &TestApp) -> RetentionReport {
    let data_dir = app.data_dir.clone();
    let db: Db = tokio::task::spawn_blocking(move || crate::common::ledger::open_db(&data_dir))
        .await
        .expect("ledger");
    run_retention_now(&db, &app.settings, &app.data_dir)
        .await
        .expect("retention pass")
}

/// A job whose runs leave a result file, and a finished run of it.
async fn finished_run(app: &TestApp, job: i64) -> Value {
    let run = app.start_run(job, None).await;
    let run = app.wait_run(job, run).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert!(run["logFilePath"].is_string());
    run
}

async fn report_job(app: &TestApp) -> i64 {
    app.write_script(
        "report.sh",
        "#!/bin/sh\necho working\nprintf 'n\\n1\\n' > \"$LABCRON_RESULT_DIR/report.csv\"\n",
    );
    app.create_external_job("report", "report.sh").await
}

fn id(run: &Value) -> i64 {
    run["id"].as_i64().unwrap()
}

async fn download(app: &TestApp, job: i64, run: &Value) -> reqwest::Response {
    app.get(&format!(
        "/scheduled-jobs/{job}/runs/{}/result-file",
        id(run)
    ))
    .await
}

async fn assert_downloads(app: &TestApp, job: i64, run: &Value) {
    let response = download(app, job, run).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "n\n1\n");
}

async fn assert_file_gone(app: &TestApp, job: i64, run: &Value) {
    let response = download(app, job, run).await;
    assert_eq!(
        error_codes(response, StatusCode::BAD_REQUEST).await,
        ["SCHEDULED_JOB_RESULT_DATA_FILE_NOT_FOUND"]
    );
    assert!(
        !app.data_dir
            .join(format!("runs/{job}/{}", id(run)))
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_result_files_and_logs_go_and_their_rows_stay_by_default() {
    let app = spawn_app().await;
    assert_eq!(app.settings.retention.files_days, 30);
    assert_eq!(app.settings.retention.runs_days, None);
    let job = report_job(&app).await;
    let old = finished_run(&app, job).await;
    let younger = finished_run(&app, job).await;
    let recent = finished_run(&app, job).await;
    age_run(&app.data_dir, id(&old), 31);
    age_run(&app.data_dir, id(&younger), 29);

    let report = retention_pass(&app).await;
    assert_eq!(report.runs_with_files_removed, 1, "{report:?}");
    assert_eq!(report.rows_deleted, 0);
    assert!(
        report.files >= 2 && report.bytes > 0,
        "the log and the result: {report:?}"
    );

    assert_file_gone(&app, job, &old).await;
    let row = ok_json(
        app.get(&format!("/scheduled-jobs/{job}/runs/{}", id(&old)))
            .await,
    )
    .await;
    assert_eq!(row["status"], "SUCCEEDED");
    assert_eq!(row["logFilePath"], old["logFilePath"]);
    assert_downloads(&app, job, &younger).await;
    assert_downloads(&app, job, &recent).await;

    // Nothing is left to do.
    assert_eq!(retention_pass(&app).await, RetentionReport::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_runs_days_old_rows_go_too_batch_after_batch() {
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| s.retention.runs_days = Some(60)),
        ..AppOptions::default()
    })
    .await;
    let job = report_job(&app).await;
    let ancient = finished_run(&app, job).await;
    let old = finished_run(&app, job).await;
    let recent = finished_run(&app, job).await;
    age_run(&app.data_dir, id(&ancient), 90);
    age_run(&app.data_dir, id(&old), 40);

    // More old rows than one batch holds, with no files.
    let extra = 2 * ROW_BATCH + 345;
    {
        // One statement, on the tests' engine (`LABCRON_TEST_LEDGER`).
        let at = chrono::Utc::now().timestamp_millis() - 100 * DAY_MS;
        let rows: Vec<String> = (0..extra)
            .map(|i| {
                let status = if i % 2 == 0 { "SUCCEEDED" } else { "FAILED" };
                format!("({job}, '{status}', 'MANUAL', 1, {at}, {at}, {at})")
            })
            .collect();
        crate::common::ledger::sql_rows(
            &app.data_dir,
            &format!(
                "INSERT INTO runs (job_id, status, run_trigger, run_by, queued_at, started_at, finished_at)
                 VALUES {}",
                rows.join(", ")
            ),
        );
    }

    let report = retention_pass(&app).await;
    assert_eq!(report.rows_deleted, extra as u64 + 1, "{report:?}");
    assert_eq!(
        report.runs_with_files_removed, 2,
        "the ancient run's and the old run's: {report:?}"
    );

    let response = app
        .get(&format!("/scheduled-jobs/{job}/runs/{}", id(&ancient)))
        .await;
    assert_eq!(
        error_codes(response, StatusCode::BAD_REQUEST).await,
        ["SCHEDULED_JOB_JOB_RUN_NOT_FOUND"]
    );
    assert!(
        !app.data_dir
            .join(format!("runs/{job}/{}", id(&ancient)))
            .exists()
    );
    // Younger than runs_days but older than files_days: the row stays, the files go.
    let row = ok_json(
        app.get(&format!("/scheduled-jobs/{job}/runs/{}", id(&old)))
            .await,
    )
    .await;
    assert_eq!(row["status"], "SUCCEEDED");
    assert_file_gone(&app, job, &old).await;
    assert_downloads(&app, job, &recent).await;

    let remaining = crate::common::ledger::sql_i64(
        &app.data_dir,
        &format!("SELECT count(*) FROM runs WHERE job_id = {job}"),
    );
    assert_eq!(remaining, 2);
    let listed = ok_json(app.get(&format!("/scheduled-jobs/{job}/runs")).await).await;
    let ids: Vec<i64> = listed.as_array().unwrap().iter().map(id).collect();
    assert_eq!(ids, vec![id(&recent), id(&old)]);
    // The job still runs, and a second pass finds nothing.
    finished_run(&app, job).await;
    assert_eq!(retention_pass(&app).await, RetentionReport::default());
}

#[test]
fn retention_and_notification_settings_are_checked_by_name() {
    use labcron::config::Settings;
    let load =
        |key: &str, value: &str| Settings::load_from(None, &[(key.to_string(), value.to_string())]);
    let error = load("retention.runs_days", "0").unwrap_err().to_string();
    assert!(error.contains("retention.runs_days"), "{error}");
    let error = load("retention.files_days", "soon")
        .unwrap_err()
        .to_string();
    assert!(error.contains("LABCRON_RETENTION_FILES_DAYS"), "{error}");
    let error = load("notifications.smtp_security", "ssl")
        .unwrap_err()
        .to_string();
    assert!(error.contains("notifications.smtp_security"), "{error}");
    let error = load("notifications.public_base_url", "jobs.lab.example")
        .unwrap_err()
        .to_string();
    assert!(error.contains("notifications.public_base_url"), "{error}");
    let error = load("notifications.from_address", "not an address")
        .unwrap_err()
        .to_string();
    assert!(error.contains("notifications.from_address"), "{error}");
    let error = load("notifications.webhook_max_attempts", "0")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("notifications.webhook_max_attempts"),
        "{error}"
    );
    let settings = load("retention.runs_days", "365").unwrap();
    assert_eq!(settings.retention.runs_days, Some(365));
    assert_eq!(settings.notifications.smtp_port(), 587);
    let settings = load("notifications.smtp_security", "tls").unwrap();
    assert_eq!(settings.notifications.smtp_port(), 465);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pass_removes_expired_sessions_whatever_the_retention_settings() {
    // Retention of files, rows and audit events off: expired sessions still go.
    let app = spawn_app_configured(|s| {
        s.retention.files_days = 0;
        s.retention.runs_days = None;
        s.retention.audit_days = 0;
    })
    .await;
    let now = labcron::clock::now_ms();
    // On the tests' engine (`LABCRON_TEST_LEDGER`).
    let sql = |text: &str| crate::common::ledger::sql_rows(&app.data_dir, text);
    let admin_id = crate::common::ledger::sql_i64(
        &app.data_dir,
        "SELECT id FROM users WHERE login_name = 'admin'",
    );
    // One idle for longer than `session_timeout_minutes`, one older than `session_max_hours`
    // though used a moment ago, and one live.
    let idle = app.settings.auth.session_timeout_minutes as i64 * 60_000;
    let max_age = app.settings.auth.session_max_hours as i64 * 3_600_000;
    let (idle_at, old_at) = (now - idle - 60_000, now - max_age - 60_000);
    sql(&format!(
        "INSERT INTO sessions (token_hash, user_id, created_at, last_used_at) VALUES
           ('idle', {admin_id}, {now}, {idle_at}), ('too-old', {admin_id}, {old_at}, {now}),
           ('live', {admin_id}, {now}, {now})"
    ));

    let report = retention_pass(&app).await;
    assert_eq!(report.sessions_deleted, 2, "{report:?}");
    let left: Vec<String> =
        sql("SELECT token_hash FROM sessions WHERE token_hash IN ('idle', 'too-old', 'live')")
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
            .collect();
    assert_eq!(left, vec!["live".to_string()]);
    // The test's own session is live and still works.
    ok_json(app.get("/scheduled-jobs").await).await;
}
