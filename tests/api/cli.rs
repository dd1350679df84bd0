//! The `labcron` command line, run as a real binary: --help lists every setting, wrong values
//! stop start-up naming the setting, settings precedence, user administration, online backup,
//! jobs files that round-trip with the API, the health check, and a graceful SIGTERM.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use labcron::config::overrides::{env_name, flag_name};
use labcron::config::specs::SETTING_SPECS;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Launch, ok_json, spawn_app};

fn labcron(args: &[&str]) -> Command {
    crate::common::command(args)
}

fn run(mut command: Command) -> Output {
    command.output().expect("run labcron")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn help_lists_every_setting_with_its_variable() {
    let output = run(labcron(&["--help"]));
    assert!(output.status.success());
    let help = text(&output);
    for spec in SETTING_SPECS {
        assert!(
            help.contains(&format!("--{}", flag_name(spec.key))),
            "--help lacks {}",
            spec.key
        );
        assert!(
            help.contains(&env_name(spec.key)),
            "--help lacks {}",
            env_name(spec.key)
        );
    }
    for command in ["serve", "user", "backup", "jobs", "healthcheck"] {
        assert!(help.contains(command), "--help lacks the {command} command");
    }
}

#[test]
fn a_wrong_value_stops_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    for (variable, value, named) in [
        ("LABCRON_RUNS_MAX_CONCURRENT", "many", "runs.max_concurrent"),
        ("LABCRON_RUNS_MAX_CONCURRENT", "0", "runs.max_concurrent"),
        ("LABCRON_TIMEZONE", "Mars/Olympus", "timezone"),
        ("LABCRON_BIND", "localhost", "bind"),
        ("LABCRON_LOG_FORMAT", "xml", "log_format"),
    ] {
        let output = run({
            let mut c = labcron(&["--data-dir", data]);
            c.env(variable, value);
            c
        });
        assert_eq!(
            output.status.code(),
            Some(2),
            "{variable}={value}: {}",
            text(&output)
        );
        assert!(
            text(&output).contains(named),
            "{variable}={value}: {}",
            text(&output)
        );
    }
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[runs]\nmax_concurent = 3\n").unwrap();
    let output = run(labcron(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data,
    ]));
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("max_concurent"), "{}", text(&output));
    assert!(
        !Path::new(data).exists(),
        "nothing may be created when the settings are wrong"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_beat_variables_beat_the_file_and_healthcheck_follows_bind() {
    let app = spawn_app().await;
    let good = format!("127.0.0.1:{}", app.port);
    let bad = "127.0.0.1:9".to_string(); // discard port: nothing listens there
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("labcron.toml");
    std::fs::write(&config, format!("bind = \"{bad}\"\n")).unwrap();
    let config = config.to_str().unwrap();

    let healthcheck = |args: &[&str], env: Option<&str>| {
        let mut command = labcron(&[&["healthcheck", "--config", config], args].concat());
        if let Some(bind) = env {
            command.env("LABCRON_BIND", bind);
        }
        run(command).status.success()
    };
    assert!(!healthcheck(&[], None), "the file's bind is used");
    assert!(healthcheck(&[], Some(&good)), "the variable beats the file");
    assert!(
        healthcheck(&["--bind", &good], Some(&bad)),
        "the flag beats the variable"
    );
    assert!(!healthcheck(&["--bind", &bad], Some(&good)));
    let output = run(labcron(&["healthcheck", "--bind", &good]));
    assert!(
        text(&output).contains("\"status\":\"ok\""),
        "{}",
        text(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_backups_from_the_shell_while_the_server_runs() {
    let app = spawn_app().await.with_fresh_connections();
    let data = app.data_dir.to_str().unwrap().to_string();
    let mut add = labcron(&[
        "user",
        "add",
        "dana",
        "--admin",
        "--email",
        "dana@lab.example",
        "--data-dir",
        &data,
    ]);
    add.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = add.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"dana-password-1\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let token = app.sign_in("dana", "dana-password-1").await;
    let me = ok_json(app.send_as(&token, Method::GET, "/users", None).await).await;
    let dana = me
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["loginName"] == "dana")
        .unwrap()
        .clone();
    assert_eq!(dana["admin"], true);

    let mut passwd = labcron(&["user", "passwd", "dana", "--data-dir", &data]);
    passwd.env("LABCRON_NEW_PASSWORD", "dana-password-2");
    assert!(run(passwd).status.success());
    app.sign_in("dana", "dana-password-2").await;
    let mut short = labcron(&["user", "passwd", "dana", "--data-dir", &data]);
    short.env("LABCRON_NEW_PASSWORD", "short");
    let output = run(short);
    assert!(!output.status.success());
    assert!(text(&output).contains("at least"), "{}", text(&output));
    // Both commands are in the audit trail, by the shell's user (issue 15); the refused one is not.
    for action in ["USER_CREATE", "USER_PASSWORD_CHANGE"] {
        let events = ok_json(
            app.get(&format!(
                "/audit-events?action={action}&objectId={}",
                dana["id"]
            ))
            .await,
        )
        .await;
        assert_eq!(events.as_array().unwrap().len(), 1, "{action}: {events}");
        assert!(
            events[0]["actor"].as_str().unwrap().starts_with("cli:"),
            "{events}"
        );
        assert_eq!(events[0]["detail"]["via"], "cli");
    }

    app.write_script("noop.sh", "#!/bin/sh\n");
    app.create_external_job("backed up", "noop.sh").await;
    let backup = app.data_dir.join("copy.zip");
    let output = run(labcron(&[
        "backup",
        backup.to_str().unwrap(),
        "--data-dir",
        &data,
    ]));
    if crate::common::on_postgres() {
        // The database is pg_dump's to copy: the command says so and fails, writing nothing.
        assert!(!output.status.success(), "{}", text(&output));
        assert!(
            text(&output).contains("on PostgreSQL, back up the database with pg_dump"),
            "{}",
            text(&output)
        );
        assert!(!backup.exists());
        return;
    }
    assert!(output.status.success(), "{}", text(&output));
    // The backup is a zip whose labcron.db is the ledger's copy (tests/api/backup.rs restores it).
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&backup).unwrap()).unwrap();
    let ledger_copy = app.data_dir.join("copy.db");
    std::io::copy(
        &mut archive.by_name("labcron.db").unwrap(),
        &mut std::fs::File::create(&ledger_copy).unwrap(),
    )
    .unwrap();
    let copy = rusqlite::Connection::open(&ledger_copy).unwrap();
    let integrity: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let name: String = copy
        .query_row("SELECT name FROM jobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(name, "backed up");
    let again = run(labcron(&[
        "backup",
        backup.to_str().unwrap(),
        "--data-dir",
        &data,
    ]));
    assert!(
        !again.status.success(),
        "an existing file is never overwritten"
    );
}

/// A job as the API shows it, without what the server computes or assigns.
fn comparable(job: &Value) -> Value {
    let mut job = job.clone();
    for key in ["id", "createdBy", "nextRunOn", "lastRunOn"] {
        job.as_object_mut().unwrap().remove(key);
    }
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_files_round_trip_with_the_api_and_import_is_a_dry_run_unless_applied() {
    let app = spawn_app().await.with_fresh_connections();
    let data = app.data_dir.to_str().unwrap().to_string();
    app.write_script("export.sh", "#!/bin/sh\n");
    let (bob, _) = app.create_user("bob", false).await;
    let first = ok_json(
        app.post(
            "/scheduled-jobs",
            &json!({"name": "Nightly export", "type": "EXTERNAL", "command": "export.sh --all", "repeatSchedule": "DAILY",
                    "scheduledHour": 23, "scheduledMinute": 5, "timezone": "Europe/Berlin", "recipients": [{"id": bob}],
                    "sharedWith": [{"id": bob}], "runAs": {"id": bob}, "fixedArgs": "--site 'Main Lab'",
                    "rtArgsProvided": true, "rtArgsHelpText": "dates", "timeoutSeconds": 600, "maxQueuedRuns": 4,
                    "misfirePolicy": "RUN_ONCE", "endDate": 4_102_444_800_000i64}),
        )
        .await,
    )
    .await;
    let second = ok_json(
        app.post(
            "/scheduled-jobs",
            &json!({"name": "Every 7 minutes", "type": "EXTERNAL", "command": "export.sh", "repeatSchedule": "MINUTELY",
                    "minutelyInterval": 7, "activityStatus": "Closed", "resultFromStdout": true}),
        )
        .await,
    )
    .await;
    let file = app.data_dir.join("jobs.toml");
    let output = run(labcron(&[
        "jobs",
        "export",
        file.to_str().unwrap(),
        "--data-dir",
        &data,
    ]));
    assert!(output.status.success(), "{}", text(&output));
    let exported = std::fs::read_to_string(&file).unwrap();
    assert!(
        exported.contains("[[jobs]]") && exported.contains("recipients = [\"bob\"]"),
        "{exported}"
    );

    // Importing what was exported changes nothing.
    let output = run(labcron(&[
        "jobs",
        "import",
        file.to_str().unwrap(),
        "--data-dir",
        &data,
    ]));
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("same    Nightly export")
            && text(&output).contains("same    Every 7 minutes")
    );

    // A change in the file is shown, not applied, until --apply.
    let changed = exported.replace("scheduledMinute = 5", "scheduledMinute = 45")
        + "\n[[jobs]]\nname = \"Added in git\"\ntype = \"EXTERNAL\"\ncommand = \"export.sh\"\nrepeatSchedule = \"ONDEMAND\"\n";
    std::fs::write(&file, changed).unwrap();
    let output = run(labcron(&[
        "jobs",
        "import",
        file.to_str().unwrap(),
        "--data-dir",
        &data,
    ]));
    let report = text(&output);
    assert!(
        report.contains("~ update  Nightly export") && report.contains("scheduledMinute: 5 -> 45"),
        "{report}"
    );
    assert!(
        report.contains("+ create  Added in git") && report.contains("dry run"),
        "{report}"
    );
    assert_eq!(
        ok_json(app.get("/scheduled-jobs/count").await).await["count"],
        2
    );
    let id = first["id"].as_i64().unwrap();
    assert_eq!(
        ok_json(app.get(&format!("/scheduled-jobs/{id}")).await).await["scheduledMinute"],
        5
    );

    let output = run(labcron(&[
        "jobs",
        "import",
        file.to_str().unwrap(),
        "--apply",
        "--data-dir",
        &data,
    ]));
    assert!(
        output.status.success() && text(&output).contains("applied"),
        "{}",
        text(&output)
    );
    assert_eq!(
        ok_json(app.get(&format!("/scheduled-jobs/{id}")).await).await["scheduledMinute"],
        45
    );
    assert_eq!(
        ok_json(app.get("/scheduled-jobs/count").await).await["count"],
        3
    );

    // Into a fresh ledger with the same users, the API shows the very same jobs.
    let other = spawn_app().await.with_fresh_connections();
    other.write_script("export.sh", "#!/bin/sh\n");
    other.create_user("bob", false).await;
    std::fs::write(&file, &exported).unwrap();
    let other_data = other.data_dir.to_str().unwrap().to_string();
    let output = run(labcron(&[
        "jobs",
        "import",
        file.to_str().unwrap(),
        "--apply",
        "--data-dir",
        &other_data,
    ]));
    assert!(output.status.success(), "{}", text(&output));
    let imported = ok_json(other.get("/scheduled-jobs").await).await;
    let imported: Vec<Value> = imported
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(comparable)
        .collect();
    let mut expected = vec![comparable(&first), comparable(&second)];
    // The users' ids and summaries differ between the two ledgers only by id.
    for job in expected.iter_mut() {
        for key in ["recipients", "sharedWith"] {
            for user in job[key].as_array_mut().unwrap() {
                user["id"] = json!(null);
            }
        }
        if !job["runAs"].is_null() {
            job["runAs"]["id"] = json!(null);
        }
    }
    let mut imported = imported;
    for job in imported.iter_mut() {
        for key in ["recipients", "sharedWith"] {
            for user in job[key].as_array_mut().unwrap() {
                user["id"] = json!(null);
            }
        }
        if !job["runAs"].is_null() {
            job["runAs"]["id"] = json!(null);
        }
    }
    assert_eq!(imported, expected);

    // Invalid jobs stop the whole import, naming the job and the problem.
    std::fs::write(&file, "[[jobs]]\nname = \"bad\"\ntype = \"EXTERNAL\"\ncommand = \"../escape.sh\"\nrepeatSchedule = \"ONDEMAND\"\n").unwrap();
    let output = run(labcron(&[
        "jobs",
        "import",
        file.to_str().unwrap(),
        "--apply",
        "--data-dir",
        &other_data,
    ]));
    assert!(!output.status.success());
    assert!(
        text(&output).contains("SCHEDULED_JOB_COMMAND_NOT_ALLOWED"),
        "{}",
        text(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_runs_finish_for_the_grace_period_then_stops_them_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    crate::common::write_script(
        &data_dir.join("scripts"),
        "long.sh",
        "#!/bin/sh\necho started\nsleep 300\n",
    );
    crate::common::write_script(
        &data_dir.join("scripts"),
        "short.sh",
        "#!/bin/sh\nsleep 1\necho done\n",
    );
    let server = Launch::new(&data_dir)
        .args([
            "--runs-shutdown-grace-seconds",
            "3",
            "--runs-kill-grace-seconds",
            "1",
        ])
        .start();
    let api = server.admin().await;
    let mut runs = Vec::new();
    for script in ["long.sh", "short.sh"] {
        let job = api.create_external_job(script, script).await;
        let run = api
            .ok(
                Method::POST,
                &format!("/scheduled-jobs/{job}/runs?response=run"),
                None,
            )
            .await;
        runs.push(run["id"].as_i64().unwrap());
    }
    // Both are running before the signal.
    // On the tests' engine (`LABCRON_TEST_LEDGER`).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = crate::common::ledger::sql_i64(
            &data_dir,
            "SELECT count(*) FROM runs WHERE status = 'IN_PROGRESS'",
        );
        if running == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "runs did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGTERM, and wait (off the runtime) for the exit.
    let status = tokio::task::spawn_blocking(move || server.stop(Duration::from_secs(600)))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.code(), Some(0), "a graceful stop exits 0");
    let outcome = |run: i64| -> (String, Option<String>) {
        let rows = crate::common::ledger::sql_rows(
            &data_dir,
            &format!("SELECT status, message FROM runs WHERE id = {run}"),
        );
        (rows[0][0].clone().unwrap_or_default(), rows[0][1].clone())
    };
    assert_eq!(
        outcome(runs[1]),
        ("SUCCEEDED".to_string(), None),
        "the short run finished within the grace period"
    );
    assert_eq!(
        outcome(runs[0]),
        (
            "FAILED".to_string(),
            Some("interrupted by shutdown".to_string())
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_ids_and_each_run_its_job_and_run_ids() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    crate::common::write_script(
        &data_dir.join("scripts"),
        "hello.sh",
        "#!/bin/sh\necho hello\n",
    );
    let server = Launch::new(&data_dir)
        .args(["--log-format", "json"])
        .start();
    let port = server.port;
    let base = format!("http://127.0.0.1:{port}/rest/ng");
    let client = reqwest::Client::new();
    let auth = ("admin", Some(crate::common::ADMIN_PASSWORD));
    let job: Value = client
        .post(format!("{base}/scheduled-jobs"))
        .basic_auth(auth.0, auth.1)
        .json(&json!({"name": "logged", "type": "EXTERNAL", "command": "hello.sh", "repeatSchedule": "ONDEMAND"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_id = job["id"].as_i64().unwrap();
    let run: Value = client
        .post(format!("{base}/scheduled-jobs/{job_id}/runs?response=run"))
        .basic_auth(auth.0, auth.1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = run["id"].as_i64().unwrap();
    // A user error and a failing run, to see how they are ranked.
    let missing = client
        .get(format!("{base}/scheduled-jobs/999999"))
        .basic_auth(auth.0, auth.1)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), reqwest::StatusCode::BAD_REQUEST);
    crate::common::write_script(
        &data_dir.join("scripts"),
        "fail.sh",
        "#!/bin/sh
exit 3
",
    );
    let failing: Value = client
        .post(format!("{base}/scheduled-jobs"))
        .basic_auth(auth.0, auth.1)
        .json(&json!({"name": "failing", "type": "EXTERNAL", "command": "fail.sh", "repeatSchedule": "ONDEMAND"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let failing_id = failing["id"].as_i64().unwrap();
    let failed_run = client
        .post(format!("{base}/scheduled-jobs/{failing_id}/runs"))
        .basic_auth(auth.0, auth.1)
        .send()
        .await
        .unwrap();
    assert!(failed_run.status().is_success());
    let finished =
        |lines: &[String]| lines.iter().filter(|l| l.contains("run finished")).count() >= 2;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !finished(&server.log_lines()) {
        assert!(Instant::now() < deadline, "no `run finished` log line");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = server.log_lines();
    server.kill();
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    let run_event = events
        .iter()
        .find(|e| e["fields"]["message"] == "run finished" && e["span"]["run_id"] == run_id)
        .unwrap();
    assert_eq!(run_event["level"], "INFO", "{run_event}");
    let failed_event = events
        .iter()
        .find(|e| e["fields"]["message"] == "run finished" && e["span"]["job_id"] == failing_id)
        .unwrap();
    assert_eq!(
        failed_event["level"], "WARN",
        "a FAILED run is a WARN: {failed_event}"
    );
    // One compact access line per request; a client's mistake is INFO with its code.
    let access: Vec<&Value> = events
        .iter()
        .filter(|e| e["fields"]["message"] == "request")
        .collect();
    let refused = access
        .iter()
        .find(|e| e["fields"]["status"] == 400)
        .unwrap_or_else(|| panic!("no access line for the 400: {access:?}"));
    assert_eq!(refused["level"], "INFO", "{refused}");
    assert_eq!(
        refused["fields"]["code"], "SCHEDULED_JOB_NOT_FOUND",
        "{refused}"
    );
    assert_eq!(
        refused["fields"]["route"], "/rest/ng/scheduled-jobs/{jobId}",
        "{refused}"
    );
    assert_eq!(refused["fields"]["user"], "admin", "{refused}");
    assert!(
        refused["fields"]["duration_ms"].is_string()
            || refused["fields"]["duration_ms"].is_number()
    );
    assert!(
        access
            .iter()
            .any(|e| e["fields"]["status"] == 200 && e["fields"]["method"] == "POST"),
        "successful requests are logged too"
    );
    assert!(
        events
            .iter()
            .all(|e| e["level"] != "WARN" || e["fields"]["message"] == "run finished"),
        "nothing else is a warning in this session: {events:?}"
    );
    for line in &lines {
        if line.contains("\"request\"") {
            assert!(line.len() < 700, "an access line stays short: {line}");
        }
    }
    assert_eq!(run_event["span"]["run_id"], run_id, "{run_event}");
    assert_eq!(run_event["span"]["job_id"], job_id, "{run_event}");
    let created = events
        .iter()
        .find(|e| e["fields"]["message"] == "job created")
        .unwrap();
    let spans = created["spans"].as_array().unwrap();
    assert!(
        spans
            .iter()
            .any(|s| s["request_id"].as_str().is_some_and(|id| !id.is_empty())),
        "the request's events carry its request id: {created}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_files_for_git_round_trip_into_an_empty_server_and_survive_renames() {
    let app = spawn_app().await.with_fresh_connections();
    let data = app.data_dir.to_str().unwrap().to_string();
    app.write_script("export.sh", "#!/bin/sh\n");
    let query = ok_json(
        app.post(
            "/saved-queries",
            &json!({"title": "Site count", "sql": "SELECT count(*) AS n FROM sites WHERE name <> :skip"}),
        )
        .await,
    )
    .await;
    app.create_job(
        &json!({"name": "Sites", "type": "QUERY", "repeatSchedule": "WEEKLY",
        "scheduledDayOfWeek": "MONDAY", "scheduledHour": 6, "scheduledMinute": 30,
        "timezone": "Europe/Berlin", "savedQuery": {"id": query["id"]}, "fixedArgs": "skip=none",
        "startDate": 1_798_761_600_000i64, "endDate": 1_893_456_000_000i64}),
    )
    .await;
    app.create_external_job("Export", "export.sh").await;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.toml");
    let output = run(labcron(&[
        "jobs",
        "export",
        first.to_str().unwrap(),
        "--data-dir",
        &data,
    ]));
    assert!(output.status.success(), "{}", text(&output));
    let exported = std::fs::read_to_string(&first).unwrap();
    // 2027-01-01T00:00:00Z and 2030-01-01T00:00:00Z in Berlin's winter time.
    assert!(
        exported.contains("startDate = \"2027-01-01T01:00:00+01:00\"")
            && exported.contains("endDate = \"2030-01-01T01:00:00+01:00\""),
        "{exported}"
    );
    assert!(
        exported.contains("title = \"Site count\"") && exported.contains("dataSource = \"lab\""),
        "{exported}"
    );
    assert_eq!(exported.matches("\nkey = \"").count(), 2, "{exported}");
    let again = dir.path().join("again.toml");
    run(labcron(&[
        "jobs",
        "export",
        again.to_str().unwrap(),
        "--data-dir",
        &data,
    ]));
    assert_eq!(
        std::fs::read_to_string(&again).unwrap(),
        exported,
        "keys are stable"
    );

    // Into an empty server (no saved queries, no jobs), then out again: the same file.
    let other = spawn_app().await.with_fresh_connections();
    other.write_script("export.sh", "#!/bin/sh\n");
    let other_data = other.data_dir.to_str().unwrap().to_string();
    let output = run(labcron(&[
        "jobs",
        "import",
        first.to_str().unwrap(),
        "--apply",
        "--data-dir",
        &other_data,
    ]));
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("+ create  saved query \"Site count\""),
        "{}",
        text(&output)
    );
    let second = dir.path().join("second.toml");
    let output = run(labcron(&[
        "jobs",
        "export",
        second.to_str().unwrap(),
        "--data-dir",
        &other_data,
    ]));
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(std::fs::read_to_string(&second).unwrap(), exported);

    // A rename in git updates the job, found by its key.
    let renamed = dir.path().join("renamed.toml");
    std::fs::write(
        &renamed,
        exported.replace("name = \"Export\"", "name = \"Nightly export\""),
    )
    .unwrap();
    let output = run(labcron(&[
        "jobs",
        "import",
        renamed.to_str().unwrap(),
        "--apply",
        "--data-dir",
        &other_data,
    ]));
    let report = text(&output);
    assert!(
        output.status.success() && report.contains("name: \"Export\" -> \"Nightly export\""),
        "{report}"
    );
    assert_eq!(
        ok_json(other.get("/scheduled-jobs/count").await).await["count"],
        2
    );

    // Mistakes are named: the key and what was expected, the job and the field.
    let bad = dir.path().join("bad.toml");
    let import_error = |content: String| {
        std::fs::write(&bad, content).unwrap();
        let output = run(labcron(&[
            "jobs",
            "import",
            bad.to_str().unwrap(),
            "--data-dir",
            &other_data,
        ]));
        assert!(!output.status.success(), "{}", text(&output));
        text(&output)
    };
    let message = import_error(exported.replace("[[jobs]]", "[[job]]"));
    assert!(
        message.contains("unknown key `job`") && message.contains("expected `jobs`"),
        "{message}"
    );
    let message = import_error(exported.replace("scheduledHour = 6", "scheduledHours = 6"));
    assert!(
        message.contains("job \"Sites\"")
            && message.contains("unknown key `scheduledHours`")
            && message.contains("`scheduledHour`"),
        "{message}"
    );
    let message = import_error(exported.replace("title = \"Site count\"", "titel = \"x\""));
    assert!(
        message.contains("job \"Sites\"") && message.contains("savedQuery: unknown key `titel`"),
        "{message}"
    );
    // The API's rule for runtime parameters on a query that takes none holds for imports too.
    assert!(exported.contains("rtArgsProvided = false"), "{exported}");
    let message = import_error(
        exported
            .replace("rtArgsProvided = false", "rtArgsProvided = true")
            .replace("title = \"Site count\"", "title = \"Site total\"")
            .replace(" WHERE name <> :skip", "")
            .replace("fixedArgs = \"skip=none\"\n", ""),
    );
    assert!(
        message.contains("job \"Sites\"") && message.contains("SCHEDULED_JOB_RT_ARGS_NOT_ALLOWED"),
        "{message}"
    );
    let message = import_error(exported.replace("2027-01-01T01:00:00+01:00", "next monday"));
    assert!(
        message.contains("job \"Sites\"") && message.contains("startDate: `next monday`"),
        "{message}"
    );
}

#[test]
fn subcommand_help_shows_only_the_settings_it_uses() {
    let help = text(&run(labcron(&["user", "add", "--help"])));
    assert!(help.contains("--data-dir"), "{help}");
    assert!(!help.contains("--runs-max-concurrent"), "{help}");
    assert!(help.lines().count() < 30, "{help}");
    let help = text(&run(labcron(&["healthcheck", "--help"])));
    assert!(
        help.contains("--bind") && !help.contains("--data-dir"),
        "{help}"
    );
    let help = text(&run(labcron(&["backup", "--help"])));
    assert!(
        help.contains("--with-runs") && help.contains("Not included"),
        "{help}"
    );
    // The server's own help still lists every setting (help_lists_every_setting_with_its_variable);
    // a hidden setting is still accepted by a subcommand.
    let dir = tempfile::tempdir().unwrap();
    let output = run(labcron(&[
        "jobs",
        "export",
        dir.path().join("j.toml").to_str().unwrap(),
        "--runs-max-concurrent",
        "3",
        "--data-dir",
        dir.path().join("none").to_str().unwrap(),
    ]));
    assert!(text(&output).contains("no ledger"), "{}", text(&output));
}
