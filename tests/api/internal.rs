//! The built-in INTERNAL tasks: files-cleaner (old run files go, rows stay, downloads then answer
//! SCHEDULED_JOB_RESULT_DATA_FILE_NOT_FOUND), database-backup (a copy sqlite3 opens) and
//! runs-report (a CSV of recent runs).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestApp, age_run, error_codes, ok_json, on_postgres, spawn_app};
use crate::queries::{create_query, create_query_job, download, result_text, run_log, run_to_end};

async fn create_internal_job(
    app: &TestApp,
    name: &str,
    task: &str,
    fixed_args: Option<&str>,
) -> i64 {
    app.create_job(
        &json!({"name": name, "type": "INTERNAL", "taskImplFqn": task, "fixedArgs": fixed_args,
                           "rtArgsProvided": true, "repeatSchedule": "ONDEMAND"}),
    )
    .await
}

fn id(run: &Value) -> i64 {
    run["id"].as_i64().unwrap()
}

#[tokio::test]
async fn files_cleaner_removes_the_files_of_old_runs_and_keeps_their_rows() {
    let app = spawn_app().await;
    let query = create_query(&app, "one", "SELECT 1 AS one").await;
    let job = create_query_job(&app, "export", query, json!({})).await;
    let old = run_to_end(&app, job, None).await;
    let recent = run_to_end(&app, job, None).await;
    assert_eq!(old["status"], "SUCCEEDED");
    age_run(&app.data_dir, id(&old), 40);
    let old_dir = app.data_dir.join(format!("runs/{job}/{}", id(&old)));
    // On PostgreSQL the files are in the database (the run's directory went at its end).
    if on_postgres() {
        assert!(!old_dir.exists());
    } else {
        assert!(old_dir.join("run.log").exists());
    }
    assert!(!run_log(&app, &old).await.is_empty());

    let cleaner = create_internal_job(
        &app,
        "cleaner",
        "files-cleaner",
        Some("filesRetentionDays=30"),
    )
    .await;
    let cleaned = run_to_end(&app, cleaner, None).await;
    assert_eq!(cleaned["status"], "SUCCEEDED", "{cleaned}");
    assert_eq!(
        cleaned["logFilePath"],
        format!("files-cleaner_{}.csv", id(&cleaned)).as_str()
    );
    let report = result_text(&app, &cleaned).await;
    let lines: Vec<&str> = report.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "jobId,runId,finishedAt,files,bytes");
    assert_eq!(lines.len(), 2, "{report}");
    assert!(
        lines[1].starts_with(&format!("{job},{},", id(&old))),
        "{report}"
    );
    assert!(
        run_log(&app, &cleaned)
            .await
            .contains("removed the files of 1 runs")
    );

    // The old run's files are gone, its row stays, and its download says the file is gone.
    assert!(!old_dir.exists());
    assert_eq!(run_log(&app, &old).await, "");
    let row = ok_json(
        app.get(&format!("/scheduled-jobs/{job}/runs/{}", id(&old)))
            .await,
    )
    .await;
    assert_eq!(row["status"], "SUCCEEDED");
    assert_eq!(row["logFilePath"], old["logFilePath"]);
    let response = app
        .get(&format!(
            "/scheduled-jobs/{job}/runs/{}/result-file",
            id(&old)
        ))
        .await;
    assert_eq!(
        error_codes(response, StatusCode::BAD_REQUEST).await,
        ["SCHEDULED_JOB_RESULT_DATA_FILE_NOT_FOUND"]
    );
    assert_eq!(result_text(&app, &recent).await, "one\r\n1\r\n");

    // OpenSpecimen's class name and a bare number work too; nothing is old enough now.
    let alias = create_internal_job(&app, "alias cleaner", "FilesBacklogCleaner", Some("1")).await;
    let run = run_to_end(&app, alias, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(
        result_text(&app, &run).await,
        "jobId,runId,finishedAt,files,bytes\r\n"
    );
    assert_eq!(result_text(&app, &recent).await, "one\r\n1\r\n");

    // A bad argument fails the run and says why.
    let run = run_to_end(&app, alias, Some("filesRetentionDays=soon")).await;
    assert_eq!(run["status"], "FAILED");
    assert!(
        run["message"]
            .as_str()
            .unwrap()
            .contains("whole number of days"),
        "{run}"
    );
    let run = run_to_end(&app, alias, Some("keep=3")).await;
    assert!(
        run["message"]
            .as_str()
            .unwrap()
            .contains("unknown argument `keep=3`"),
        "{run}"
    );
}

#[tokio::test]
async fn database_backup_is_a_consistent_copy_that_sqlite3_opens() {
    let app = spawn_app().await;
    let query = create_query(&app, "one", "SELECT 1 AS one").await;
    let job = create_query_job(&app, "export before backup", query, json!({})).await;
    run_to_end(&app, job, None).await;
    let backup = create_internal_job(&app, "backup", "database-backup", None).await;
    let run = run_to_end(&app, backup, None).await;
    if crate::common::on_postgres() {
        // The task copies a SQLite ledger only: on PostgreSQL its run fails, saying what to use.
        assert_eq!(run["status"], "FAILED", "{run}");
        assert!(
            run["message"]
                .as_str()
                .unwrap()
                .contains("on PostgreSQL, back up the database with pg_dump"),
            "{run}"
        );
        assert!(run["logFilePath"].is_null(), "{run}");
        return;
    }
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let file_name = format!("labcron-backup_{}.db", id(&run));
    assert_eq!(run["logFilePath"], file_name.as_str());
    assert!(run_log(&app, &run).await.contains("quick_check"));

    let (status, _, body) = download(&app, backup, id(&run)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["resultFileSize"].as_u64().unwrap() as usize, body.len());
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    std::fs::write(&copy, &body).unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let names: Vec<String> = conn
        .prepare("SELECT name FROM jobs ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(names, ["export before backup", "backup"]);
    let title: String = conn
        .query_row("SELECT title FROM saved_queries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(title, "one");
    drop(conn);

    // The sqlite3 command line opens it too, where it is installed.
    match std::process::Command::new("sqlite3")
        .arg(&copy)
        .arg("SELECT count(*) FROM runs; PRAGMA journal_mode;")
        .output()
    {
        Ok(output) => {
            assert!(output.status.success(), "{output:?}");
            assert_eq!(String::from_utf8_lossy(&output.stdout), "2\ndelete\n");
        }
        Err(e) => eprintln!("sqlite3 is not installed ({e}); checked with rusqlite only"),
    }

    // Shared or not, only admins download a backup: it holds every password hash.
    let (bob_id, bob) = app.create_user("bob", false).await;
    rusqlite::Connection::open(app.data_dir.join("labcron.db"))
        .unwrap()
        .execute(
            "INSERT INTO job_shared_users (job_id, user_id) VALUES (?1, ?2)",
            [backup, bob_id],
        )
        .unwrap();
    let refused = app
        .send_as(
            &bob,
            reqwest::Method::GET,
            &format!("/scheduled-jobs/{backup}/runs/{}/result-file", id(&run)),
            None,
        )
        .await;
    assert_eq!(
        crate::common::error_codes(refused, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_OP_NOT_ALLOWED"]
    );

    // It takes no arguments.
    let run = run_to_end(&app, backup, Some("now")).await;
    assert_eq!(run["status"], "FAILED");
    assert!(
        run["message"].as_str().unwrap().contains("takes none"),
        "{run}"
    );
}

#[tokio::test]
async fn runs_report_lists_the_runs_of_the_last_days() {
    let app = spawn_app().await;
    // The fixed `y=1` fills the query; a run given `x=1`, which it has no parameter for, fails
    // (a query without parameters would refuse runtime parameters outright).
    let query = create_query(&app, "one", "SELECT :y AS one").await;
    let job = create_query_job(
        &app,
        "export, \"quoted\"",
        query,
        json!({"rtArgsProvided": true, "fixedArgs": "y=1"}),
    )
    .await;
    let old = run_to_end(&app, job, None).await;
    let recent = run_to_end(&app, job, Some("x=1")).await;
    age_run(&app.data_dir, id(&old), 10);

    let report_job = create_internal_job(&app, "report", "runs-report", Some("days=7")).await;
    let run = run_to_end(&app, report_job, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(
        run["logFilePath"],
        format!("runs-report_{}.csv", id(&run)).as_str()
    );
    let csv = result_text(&app, &run).await;
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "runId,jobId,jobName,jobType,status,trigger,runBy,rtArgs,queuedAt,startedAt,finishedAt,durationMs,exitCode,\
         resultFile,resultFileSize,logSize,message"
    );
    let ids: Vec<i64> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, [id(&recent), id(&run)], "{csv}");
    let recent_line = lines[1];
    assert!(
        recent_line.starts_with(&format!(
            "{},{job},\"export, \"\"quoted\"\"\",QUERY,FAILED,MANUAL,admin,x=1,",
            id(&recent)
        )),
        "{recent_line}"
    );
    assert!(
        lines[2].contains(",IN_PROGRESS,MANUAL,admin,,"),
        "the report's own run: {}",
        lines[2]
    );

    // A longer window includes the old run; a bare number works too.
    let run = run_to_end(&app, report_job, Some("30")).await;
    let csv = result_text(&app, &run).await;
    assert!(csv.contains(&format!("\r\n{},{job},", id(&old))), "{csv}");
    assert!(csv.contains(",SUCCEEDED,MANUAL,admin,,"), "{csv}");
    assert!(
        csv.contains(&format!("scheduled_query_{query}_{}.csv", id(&old))),
        "result file by name: {csv}"
    );
}

#[tokio::test]
async fn only_admins_create_internal_jobs() {
    let app = spawn_app().await;
    let (_, user) = app.create_user("carol", false).await;
    let response = app
        .send_as(&user, Method::POST, "/scheduled-jobs", Some(&json!({"name": "mine", "type": "INTERNAL", "taskImplFqn": "database-backup", "repeatSchedule": "ONDEMAND"}))).await;
    assert_eq!(
        error_codes(response, StatusCode::BAD_REQUEST).await,
        ["SCHEDULED_JOB_OP_NOT_ALLOWED"]
    );
    let response = app
        .post("/scheduled-jobs", &json!({"name": "x", "type": "INTERNAL", "taskImplFqn": "rm-rf", "repeatSchedule": "ONDEMAND"}))
        .await;
    assert_eq!(
        error_codes(response, StatusCode::BAD_REQUEST).await,
        ["SCHEDULED_JOB_INVALID_TASK_IMPL_FQN"]
    );
}
