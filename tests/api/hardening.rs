//! The holes an outside review found (issue "Hardening"), one test each, against the real server:
//! sign-in throttling by one normalised name, backups admin-only by what produced them, runtime
//! arguments only where a job takes them, result files never through a link, sessions ended by a
//! password change and capped in age, runAs only oneself, every result name downloadable, empty
//! credential headers refused, HEAD on results and nosniff on logs, private ledger files, and a
//! body that trickles in refused.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{AppOptions, error_codes, ok_json, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn padded_login_names_share_the_throttle_on_every_sign_in_path() {
    let app = spawn_app().await;
    app.create_user("bob", false).await;
    // Five failures, each spelt differently: all count against `bob`.
    for login in ["bob", "bob ", "\tbob", " BOB\t", "Bob  "] {
        let r = app
            .client
            .get(app.url("/scheduled-jobs"))
            .basic_auth(login, Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{login:?}");
    }
    // Locked out: the right password is refused by Basic (padded or not) and by JSON sign-in.
    for login in ["bob", "bob ", "\tbob"] {
        let r = app
            .client
            .get(app.url("/scheduled-jobs"))
            .basic_auth(login, Some("bob-password"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_codes(r, StatusCode::TOO_MANY_REQUESTS).await,
            vec!["AUTH_TOO_MANY_ATTEMPTS"],
            "{login:?}"
        );
    }
    let r = app
        .client
        .post(app.url("/sessions"))
        .json(&json!({"loginName": " bob ", "password": "bob-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // The page form goes through the same check: fetch the form (its anti-forgery cookie and
    // field), then post the padded name with the right password.
    let page = app
        .client
        .get(format!("http://127.0.0.1:{}/ui/sign-in", app.port))
        .send()
        .await
        .unwrap();
    let form_cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("labcron_sign_in="))
        .and_then(|v| v.split(';').next())
        .expect("sign-in form cookie")
        .to_string();
    let html = page.text().await.unwrap();
    assert!(html.contains(&form_cookie), "the form carries its token");
    let form = app
        .client
        .post(format!("http://127.0.0.1:{}/ui/sign-in", app.port))
        .header("Cookie", format!("labcron_sign_in={form_cookie}"))
        .form(&[
            ("loginName", "bob\t"),
            ("password", "bob-password"),
            ("next", "/ui/jobs"),
            ("csrf", form_cookie.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let signed_in = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.starts_with("labcron_session=") && !v.starts_with("labcron_session=;"));
    let body = form.text().await.unwrap();
    assert!(!signed_in, "a locked-out user got a session from the form");
    assert!(body.contains("Too many failed sign-ins"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_stays_admin_only_after_its_job_changes_task() {
    if crate::common::sqlite_only("the database-backup task copies a SQLite ledger only") {
        return;
    }
    let app = spawn_app().await;
    let (user_id, user_token) = app.create_user("shared", false).await;
    let job = app
        .create_job(&json!({"name": "backup", "type": "INTERNAL", "taskImplFqn": "database-backup",
            "repeatSchedule": "ONDEMAND", "sharedWith": [{"id": user_id}], "recipients": [{"id": user_id}]}))
        .await;
    let backup_run = app.start_run(job, None).await;
    assert_eq!(app.wait_run(job, backup_run).await["status"], "SUCCEEDED");
    let download = |token: String, run: i64| {
        app.request_as(
            &token,
            Method::GET,
            &format!("/scheduled-jobs/{job}/runs/{run}/result-file"),
        )
        .send()
    };
    let refused = download(user_token.clone(), backup_run).await.unwrap();
    assert_eq!(
        error_codes(refused, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_OP_NOT_ALLOWED"]
    );
    // The job becomes a runs report: the old backup is still a backup.
    let mut body = ok_json(app.get(&format!("/scheduled-jobs/{job}")).await).await;
    body["taskImplFqn"] = json!("runs-report");
    ok_json(app.put(&format!("/scheduled-jobs/{job}"), &body).await).await;
    let still_refused = download(user_token.clone(), backup_run).await.unwrap();
    assert_eq!(
        error_codes(still_refused, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_OP_NOT_ALLOWED"]
    );
    let range = app
        .request_as(
            &user_token,
            Method::GET,
            &format!("/scheduled-jobs/{job}/runs/{backup_run}/result-file"),
        )
        .header("Range", "bytes=0-15")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), StatusCode::BAD_REQUEST);
    // The admin still downloads it, and the shared user downloads the report the job makes now.
    let admin = download(app.token.clone(), backup_run).await.unwrap();
    assert_eq!(admin.status(), StatusCode::OK);
    assert!(admin.bytes().await.unwrap().starts_with(b"SQLite format 3"));
    let report_run = app.start_run(job, None).await;
    assert_eq!(app.wait_run(job, report_run).await["status"], "SUCCEEDED");
    let report = download(user_token, report_run).await.unwrap();
    assert_eq!(report.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_arguments_only_where_the_job_takes_them() {
    let app = spawn_app().await;
    let (user_id, user_token) = app.create_user("runner", false).await;
    app.write_script("echo.sh", "#!/bin/sh\necho \"$@\"\n");
    let fixed = app
        .create_job(
            &json!({"name": "fixed", "type": "EXTERNAL", "command": "echo.sh",
            "repeatSchedule": "ONDEMAND", "sharedWith": [{"id": user_id}]}),
        )
        .await;
    let refused = app
        .post(
            &format!("/scheduled-jobs/{fixed}/runs"),
            &json!({"args": "--all"}),
        )
        .await;
    assert_eq!(
        error_codes(refused, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_RT_ARGS_NOT_ALLOWED"]
    );
    // Nothing was queued by the refused request; a run without arguments is fine.
    let runs = ok_json(app.get(&format!("/scheduled-jobs/{fixed}/runs")).await).await;
    assert_eq!(runs.as_array().unwrap().len(), 0);
    let run = app.start_run(fixed, None).await;
    assert_eq!(app.wait_run(fixed, run).await["status"], "SUCCEEDED");

    // A built-in cleaner that takes arguments: only admins may pass them.
    let cleaner = app
        .create_job(
            &json!({"name": "cleaner", "type": "INTERNAL", "taskImplFqn": "files-cleaner",
            "fixedArgs": "filesRetentionDays=30", "rtArgsProvided": true,
            "repeatSchedule": "ONDEMAND", "sharedWith": [{"id": user_id}]}),
        )
        .await;
    let by_user = app
        .send_as(
            &user_token,
            Method::POST,
            &format!("/scheduled-jobs/{cleaner}/runs"),
            Some(&json!({"args": "filesRetentionDays=0"})),
        )
        .await;
    assert_eq!(
        error_codes(by_user, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_RT_ARGS_NOT_ALLOWED"]
    );
    // The fixed run still works for the user; the admin may pass arguments.
    let plain = app
        .send_as(
            &user_token,
            Method::POST,
            &format!("/scheduled-jobs/{cleaner}/runs"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(plain.status(), StatusCode::OK);
    let by_admin = app
        .post(
            &format!("/scheduled-jobs/{cleaner}/runs"),
            &json!({"args": "filesRetentionDays=60"}),
        )
        .await;
    assert_eq!(by_admin.status(), StatusCode::OK);
    // The first run's log is still there: nobody cleaned with 0 days.
    let log = app
        .get(&format!("/scheduled-jobs/{fixed}/runs/{run}/log"))
        .await;
    assert_eq!(log.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_replaced_by_a_link_is_never_served() {
    if crate::common::sqlite_only(
        "the result is replaced on the local disk after the run; on PostgreSQL it is in the database",
    ) {
        return;
    }
    let app = spawn_app().await;
    app.write_script(
        "result.sh",
        "#!/bin/sh\necho 'a,b' > \"$LABCRON_RESULT_DIR/out.csv\"\n",
    );
    let job = app.create_external_job("linked", "result.sh").await;
    let run = app.start_run(job, None).await;
    assert_eq!(app.wait_run(job, run).await["status"], "SUCCEEDED");
    let url = format!("/scheduled-jobs/{job}/runs/{run}/result-file");
    assert_eq!(app.get(&url).await.status(), StatusCode::OK);
    // Replace the result by a link to the ledger (as a later process of the run could).
    let result = app
        .data_dir
        .join(format!("runs/{job}/{run}/result/out.csv"));
    std::fs::remove_file(&result).unwrap();
    std::os::unix::fs::symlink(app.data_dir.join("labcron.db"), &result).unwrap();
    for range in [None, Some("bytes=0-15")] {
        let mut request = app.request(Method::GET, &url);
        if let Some(range) = range {
            request = request.header("Range", range);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            error_codes(response, StatusCode::BAD_REQUEST).await,
            vec!["SCHEDULED_JOB_RESULT_DATA_FILE_NOT_FOUND"],
            "range {range:?}"
        );
    }
    // A linked run directory is refused too.
    std::fs::remove_file(&result).unwrap();
    let run_dir = app.data_dir.join(format!("runs/{job}/{run}"));
    let elsewhere = app.data_dir.join("elsewhere");
    std::fs::rename(&run_dir, &elsewhere).unwrap();
    std::fs::write(elsewhere.join("result/out.csv"), "a,b\n").unwrap();
    std::os::unix::fs::symlink(&elsewhere, &run_dir).unwrap();
    assert_eq!(app.get(&url).await.status(), StatusCode::BAD_REQUEST);
    let log = app
        .get(&format!("/scheduled-jobs/{job}/runs/{run}/log"))
        .await;
    assert_eq!(log.status(), StatusCode::OK);
    assert!(
        log.text().await.unwrap().is_empty(),
        "the log is not read through a link"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_the_users_other_sessions_and_sessions_age_out() {
    let app = spawn_app().await;
    let (user_id, first) = app.create_user("carol", false).await;
    let second = app.sign_in("carol", "carol-password").await;
    let works = |token: String| {
        let request = app.request_as(&token, Method::GET, "/scheduled-jobs/count");
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(works(second.clone()).await, StatusCode::OK);
    // Carol changes her own password with her first session: it stays, the second ends.
    let changed = app
        .send_as(
            &first,
            Method::PUT,
            &format!("/users/{user_id}"),
            Some(&json!({"password": "carol-new-password"})),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(works(first.clone()).await, StatusCode::OK);
    assert_eq!(works(second).await, StatusCode::UNAUTHORIZED);
    // An admin resets it: every session of hers ends.
    let third = app.sign_in("carol", "carol-new-password").await;
    let reset = app
        .put(
            &format!("/users/{user_id}"),
            &json!({"password": "carol-reset-password"}),
        )
        .await;
    assert_eq!(reset.status(), StatusCode::OK);
    assert_eq!(works(first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(works(third).await, StatusCode::UNAUTHORIZED);
    // A session older than auth.session_max_hours (24) ends however often it is used.
    let fourth = app.sign_in("carol", "carol-reset-password").await;
    crate::common::ledger::sql_rows(
        &app.data_dir,
        &format!(
            "UPDATE sessions SET created_at = created_at - 25 * 3600000 WHERE user_id = {user_id}"
        ),
    );
    assert_eq!(works(fourth).await, StatusCode::UNAUTHORIZED);
    assert_eq!(works(app.token.clone()).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_make_a_job_run_as_someone_else() {
    let app = spawn_app().await;
    let (user_id, user_token) = app.create_user("dave", false).await;
    let query = ok_json(
        app.post(
            "/saved-queries",
            &json!({"title": "one", "sql": "SELECT 1 AS one"}),
        )
        .await,
    )
    .await;
    let body = |run_as: i64| {
        json!({"name": format!("as-{run_as}"), "type": "QUERY", "savedQuery": {"id": query["id"]},
            "repeatSchedule": "ONDEMAND", "runAs": {"id": run_as}})
    };
    let admin_id = ok_json(app.get("/users").await)
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["loginName"] == "admin")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let spoofed = app
        .send_as(
            &user_token,
            Method::POST,
            "/scheduled-jobs",
            Some(&body(admin_id)),
        )
        .await;
    assert_eq!(
        error_codes(spoofed, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_OP_NOT_ALLOWED"]
    );
    let own = app
        .send_as(
            &user_token,
            Method::POST,
            "/scheduled-jobs",
            Some(&body(user_id)),
        )
        .await;
    let own = ok_json(own).await;
    assert_eq!(own["runAs"]["id"], user_id);
    // Changing it to the admin later is refused too; an admin may set anyone.
    let mut changed = own.clone();
    changed["runAs"] = json!({"id": admin_id});
    let refused = app
        .send_as(
            &user_token,
            Method::PUT,
            &format!("/scheduled-jobs/{}", own["id"]),
            Some(&changed),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let by_admin = app.post("/scheduled-jobs", &body(user_id)).await;
    assert_eq!(by_admin.status(), StatusCode::BAD_REQUEST, "duplicate name");
    let mut other = body(user_id);
    other["name"] = json!("by-admin");
    ok_json(app.post("/scheduled-jobs", &other).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_result_name_a_script_writes_is_served_or_the_run_says_why() {
    let app = spawn_app().await;
    let cases = [
        ("crlf", "a\\r\\nb.csv"),
        ("unicode", "r\\303\\251sum\\342\\200\\256vsc.txt"),
        ("quote", "say \\\"hi\\\".csv"),
    ];
    for (name, printf_name) in cases {
        app.write_script(
            &format!("{name}.sh"),
            &format!(
                "#!/bin/sh\nprintf 'x\\n' > \"$LABCRON_RESULT_DIR/$(printf '{printf_name}')\"\n"
            ),
        );
        let job = app
            .create_external_job(&format!("names-{name}"), &format!("{name}.sh"))
            .await;
        let run = app.start_run(job, None).await;
        let finished = app.wait_run(job, run).await;
        assert_eq!(finished["status"], "SUCCEEDED", "{finished}");
        let response = app
            .get(&format!("/scheduled-jobs/{job}/runs/{run}/result-file"))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        let disposition = response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(disposition.starts_with("attachment"), "{disposition}");
        assert!(!disposition.contains('\r') && !disposition.contains('\n'));
        if name == "unicode" {
            assert!(disposition.contains("filename*=UTF-8''"), "{disposition}");
            // The right-to-left override (U+202E, %E2%80%AE) is dropped.
            assert!(
                !disposition.to_uppercase().contains("%E2%80%AE"),
                "{disposition}"
            );
        }
        assert_eq!(response.bytes().await.unwrap().as_ref(), b"x\n");
    }
    // A name that is not UTF-8 cannot be kept: the run fails and says why.
    app.write_script(
        "latin1.sh",
        "#!/bin/sh\nprintf 'x\\n' > \"$LABCRON_RESULT_DIR/$(printf 'caf\\351.csv')\"\n",
    );
    let job = app.create_external_job("names-latin1", "latin1.sh").await;
    let run = app.start_run(job, None).await;
    let finished = app.wait_run(job, run).await;
    assert_eq!(finished["status"], "FAILED", "{finished}");
    assert!(
        finished["message"].as_str().unwrap().contains("UTF-8"),
        "{finished}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_malformed_credential_header_is_refused_not_ignored() {
    let app = spawn_app().await;
    let cookie = format!("labcron_session={}", app.token);
    let job = json!({"name": "forged", "type": "QUERY", "repeatSchedule": "ONDEMAND"});
    // The cookie with an empty token header: 401, never a cookie sign-in without the CSRF check.
    for (header, value) in [
        ("X-OS-API-TOKEN", ""),
        ("X-OS-API-TOKEN", "   "),
        ("Authorization", "Basic !!!"),
        ("Authorization", "Bearer"),
    ] {
        let response = app
            .client
            .post(app.url("/scheduled-jobs"))
            .header("Cookie", &cookie)
            .header(header, value)
            .json(&job)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_codes(response, StatusCode::UNAUTHORIZED).await,
            vec!["AUTH_INVALID_CREDENTIALS"],
            "{header}: {value:?}"
        );
    }
    // The cookie alone still needs the page's anti-forgery token.
    let forged = app
        .client
        .post(app.url("/scheduled-jobs"))
        .header("Cookie", &cookie)
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_codes(forged, StatusCode::BAD_REQUEST).await,
        vec!["AUTH_CSRF_TOKEN_INVALID"]
    );
    let count = ok_json(app.get("/scheduled-jobs/count").await).await;
    assert_eq!(count["count"], 0, "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_on_a_result_answers_and_program_output_is_never_sniffed() {
    let app = spawn_app().await;
    app.write_script(
        "html.sh",
        "#!/bin/sh\necho '<script>alert(1)</script>'\necho '<b>x</b>' > \"$LABCRON_RESULT_DIR/page.html\"\n",
    );
    let job = app.create_external_job("html", "html.sh").await;
    let run = app.start_run(job, None).await;
    assert_eq!(app.wait_run(job, run).await["status"], "SUCCEEDED");
    let url = format!("/scheduled-jobs/{job}/runs/{run}/result-file");
    let head = app.request(Method::HEAD, &url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "9");
    assert_eq!(head.headers()["x-content-type-options"], "nosniff");
    assert!(head.bytes().await.unwrap().is_empty());
    for log_url in [
        format!("/scheduled-jobs/{job}/runs/{run}/log"),
        format!("/scheduled-jobs/{job}/runs/{run}/log?follow=true"),
    ] {
        let log = app.get(&log_url).await;
        assert_eq!(log.status(), StatusCode::OK);
        assert_eq!(
            log.headers()["x-content-type-options"],
            "nosniff",
            "{log_url}"
        );
        let length = log.headers()["content-length"].clone();
        let offset = log.headers()["x-log-offset"].clone();
        assert!(log.text().await.unwrap().contains("<script>"));
        // HEAD answers the same headers, without the body.
        let head = app.request(Method::HEAD, &log_url).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK, "HEAD {log_url}");
        assert_eq!(head.headers()["x-content-type-options"], "nosniff");
        assert_eq!(head.headers()["content-length"], length, "HEAD {log_url}");
        assert_eq!(head.headers()["x-log-offset"], offset, "HEAD {log_url}");
        assert_eq!(head.headers()["x-run-status"], "SUCCEEDED");
        assert!(head.bytes().await.unwrap().is_empty());
    }
    let sse = app
        .request(
            Method::GET,
            &format!("/scheduled-jobs/{job}/runs/{run}/log?follow=true"),
        )
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_and_data_directory_are_private() {
    if crate::common::sqlite_only("checks the modes of the labcron.db files") {
        return;
    }
    let app = spawn_app().await;
    // A write, so the WAL files exist.
    app.create_user("erin", false).await;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&app.data_dir), 0o700);
    for name in ["labcron.db", "labcron.db-wal", "labcron.db-shm"] {
        assert_eq!(mode(&app.data_dir.join(name)), 0o600, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_is_refused_after_the_body_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(AppOptions {
        configure: Some(|s| s.http.body_timeout_seconds = 1),
        ..AppOptions::default()
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let head = format!(
        "POST /rest/ng/scheduled-jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-OS-API-TOKEN: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"name\": ",
        app.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Never send the rest: the server must answer by itself, long before this test gives up.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept waiting for the body");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 4"), "{text}");
    let count = ok_json(app.get("/scheduled-jobs/count").await).await;
    assert_eq!(count["count"], 0);
}

/// Messages that users who are not admins read never name the server's paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_messages_do_not_show_server_paths() {
    let app = spawn_app().await;
    app.write_script("gone.sh", "#!/bin/sh\necho hi\n");
    let job = app.create_external_job("gone", "gone.sh").await;
    std::fs::remove_dir_all(&app.scripts_dir).unwrap();
    let response = app
        .post(
            &format!("/scheduled-jobs/{job}/runs?response=run"),
            &json!({}),
        )
        .await;
    let run: Value = ok_json(response).await;
    let finished = app.wait_run(job, run["id"].as_i64().unwrap()).await;
    assert_eq!(finished["status"], "FAILED");
    let message = finished["message"].as_str().unwrap();
    let data_dir = app.data_dir.display().to_string();
    assert!(!message.contains(&data_dir), "{message}");
    assert!(!message.contains("/scripts"), "{message}");

    // The program's last stderr line, quoted in the message: the shell names the script by its
    // whole path, and a program may name a file of its run.
    std::fs::create_dir_all(&app.scripts_dir).unwrap();
    app.write_script(
        "fails.sh",
        "#!/bin/sh\nif [ \"$1\" = shell ]; then no_such_command_here; exit 4; fi\n\
         echo \"$HOME/input.csv: unreadable; see $0\" >&2\nexit 3\n",
    );
    let message_of = |command: &'static str| {
        let app = &app;
        async move {
            let job = app.create_external_job(command, command).await;
            let run = app.start_run(job, None).await;
            let finished = app.wait_run(job, run).await;
            assert_eq!(finished["status"], "FAILED");
            let message = finished["message"].as_str().unwrap().to_string();
            let log = app.run_log(job, run).await;
            (message, log)
        }
    };
    let (message, log) = message_of("fails.sh").await;
    assert!(message.starts_with("exit code 3: <data dir>/"), "{message}");
    assert!(
        message.ends_with("/input.csv: unreadable; see fails.sh"),
        "{message}"
    );
    // The log keeps what the program wrote.
    let script = app.scripts_dir.canonicalize().unwrap().join("fails.sh");
    assert!(log.contains(&format!("see {}", script.display())), "{log}");
    let (message, _) = message_of("fails.sh shell").await;
    assert!(message.starts_with("exit code 4: fails.sh: "), "{message}");
    assert!(
        message.ends_with("no_such_command_here: not found"),
        "{message}"
    );
}

/// The real binary on first start without a configured password: the generated password is only
/// in the 0600 file (the log says where), and what it creates is private (umask 077).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_admin_password_is_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = crate::common::Launch::new(&data_dir)
        .env_remove("LABCRON_ADMIN_PASSWORD")
        .start();
    let _ = server.child.kill();
    let _ = server.child.wait();
    // Its stderr went straight to the file: all it logged is there.
    let log = server.log_lines();
    let password_file = data_dir.join("initial-admin-password");
    let password = std::fs::read_to_string(&password_file).unwrap();
    let password = password.trim();
    assert!(password.len() >= 16);
    let text = log.join("\n");
    assert!(
        !text.contains(password),
        "the password is in the log: {text}"
    );
    assert!(
        text.contains("initial-admin-password"),
        "the log says where it is: {text}"
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&password_file), 0o600);
    if !crate::common::on_postgres() {
        assert_eq!(mode(&data_dir.join("labcron.db")), 0o600);
    }
    assert_eq!(mode(&data_dir), 0o700);
}
