//! The audit trail (issue 15): after each action, the event it must leave, read back through
//! `GET /audit-events` (admins only, newest first, filters, the runs list's date formats); events
//! cannot be changed through the API; the retention pass prunes old ones.

use labcron::retention::run_retention_now;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{ADMIN_PASSWORD, TestApp, error_codes, ok_json, spawn_app};

/// The newest event with `action` (and, when given, about `object_id`).
async fn newest(app: &TestApp, action: &str, object_id: Option<i64>) -> Value {
    let mut path = format!("/audit-events?action={action}");
    if let Some(id) = object_id {
        path.push_str(&format!("&objectId={id}"));
    }
    let events = ok_json(app.get(&path).await).await;
    events
        .as_array()
        .and_then(|e| e.first().cloned())
        .unwrap_or_else(|| panic!("no {action} event for {object_id:?}"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_users_and_tokens_leave_events() {
    let app = spawn_app().await;
    // spawn_app signed in as admin.
    let signed_in = newest(&app, "SIGN_IN", None).await;
    assert_eq!(signed_in["actor"], "admin");
    assert_eq!(signed_in["remoteAddr"], "127.0.0.1");
    assert_eq!(signed_in["objectType"], "USER");
    assert!(signed_in["at"].as_i64().unwrap() <= now_ms());

    // A failed sign-in (JSON) and a failed Basic request are both recorded, without the password.
    let wrong = app
        .client
        .post(app.url("/sessions"))
        .json(&json!({"loginName": "Admin ", "password": "not-the-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let failed = newest(&app, "SIGN_IN_FAILED", None).await;
    assert_eq!(failed["actor"], "admin", "the normalised login name");
    assert_eq!(failed["remoteAddr"], "127.0.0.1");
    assert!(!failed.to_string().contains("not-the-password"));
    let basic = app
        .client
        .get(app.url("/scheduled-jobs"))
        .basic_auth("nobody", Some("guess-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        newest(&app, "SIGN_IN_FAILED", None).await["actor"],
        "nobody"
    );

    // Users: create, update (before → after), password, disable.
    let (bob, bob_token) = app.create_user("bob", false).await;
    let created = newest(&app, "USER_CREATE", Some(bob)).await;
    assert_eq!(created["actor"], "admin");
    assert_eq!(created["objectType"], "USER");
    assert_eq!(created["objectId"], bob.to_string());
    assert_eq!(created["detail"]["loginName"], "bob");
    assert!(!created.to_string().contains("bob-password"), "{created}");
    ok_json(
        app.put(
            &format!("/users/{bob}"),
            &json!({"firstName": "Robert", "password": "bob-new-password"}),
        )
        .await,
    )
    .await;
    let updated = newest(&app, "USER_UPDATE", Some(bob)).await;
    assert_eq!(
        updated["detail"]["changes"],
        json!({"firstName": {"before": "bob", "after": "Robert"}})
    );
    assert!(!updated.to_string().contains("bob-new-password"));
    let password = newest(&app, "USER_PASSWORD_CHANGE", Some(bob)).await;
    assert_eq!(password["actor"], "admin");
    assert!(!password.to_string().contains("bob-new-password"));
    ok_json(
        app.request(Method::PUT, "/users/password")
            .json(&json!({"userId": bob, "newPassword": "bob-third-password"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let events = ok_json(
        app.get(&format!(
            "/audit-events?action=USER_PASSWORD_CHANGE&objectType=user&objectId={bob}"
        ))
        .await,
    )
    .await;
    assert_eq!(events.as_array().unwrap().len(), 2, "{events}");

    // Tokens: create and revoke; the secret never appears.
    let made = ok_json(app.post("/api-tokens", &json!({"name": "svc"})).await).await;
    let token_id = made["id"].as_i64().unwrap();
    let secret = made["token"].as_str().unwrap();
    let token_event = newest(&app, "API_TOKEN_CREATE", Some(token_id)).await;
    assert_eq!(token_event["detail"]["name"], "svc");
    ok_json(app.delete(&format!("/api-tokens/{token_id}")).await).await;
    let revoked = newest(&app, "API_TOKEN_REVOKE", Some(token_id)).await;
    assert_eq!(revoked["actor"], "admin");
    let all = ok_json(app.get("/audit-events?maxResults=1000").await).await;
    assert!(
        !all.to_string().contains(secret),
        "a token is never recorded"
    );

    // Bob may not read the trail; no route changes or deletes it.
    let refused = app
        .send_as(&bob_token, Method::GET, "/audit-events", None)
        .await;
    assert_eq!(
        refused.status(),
        StatusCode::UNAUTHORIZED,
        "bob's sessions ended with the reset"
    );
    let bob_again = app.sign_in("bob", "bob-third-password").await;
    let refused = app
        .send_as(&bob_again, Method::GET, "/audit-events", None)
        .await;
    assert_eq!(
        error_codes(refused, StatusCode::BAD_REQUEST).await,
        ["ACCESS_DENIED"]
    );
    let first_id = all[0]["id"].as_i64().unwrap();
    for method in [Method::PUT, Method::DELETE, Method::POST, Method::PATCH] {
        for path in [
            "/audit-events".to_string(),
            format!("/audit-events/{first_id}"),
        ] {
            let response = app
                .request(method.clone(), &path)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert!(
                matches!(response.status().as_u16(), 404 | 405),
                "{method} {path}: {}",
                response.status()
            );
        }
    }

    // Disable, then sign-out.
    ok_json(app.delete(&format!("/users/{bob}")).await).await;
    assert_eq!(
        newest(&app, "USER_DISABLE", Some(bob)).await["detail"]["loginName"],
        "bob"
    );
    let session = app.sign_in("admin", ADMIN_PASSWORD).await;
    ok_json(
        app.send_as(&session, Method::DELETE, "/sessions", None)
            .await,
    )
    .await;
    let out = newest(&app, "SIGN_OUT", None).await;
    assert_eq!(out["actor"], "admin");

    // Newest first, paging, and filters.
    let page = ok_json(app.get("/audit-events?maxResults=3").await).await;
    let page = page.as_array().unwrap();
    assert_eq!(page.len(), 3);
    assert_eq!(page[0]["action"], "SIGN_OUT");
    assert!(
        page.windows(2)
            .all(|w| w[0]["id"].as_i64() > w[1]["id"].as_i64())
    );
    let next = ok_json(app.get("/audit-events?maxResults=3&startAt=1").await).await;
    assert_eq!(next[0]["id"], page[1]["id"]);
    let by_nobody = ok_json(app.get("/audit-events?actor=NOBODY").await).await;
    assert_eq!(by_nobody.as_array().unwrap().len(), 1);
    assert_eq!(by_nobody[0]["action"], "SIGN_IN_FAILED");
    let total = ok_json(app.get("/audit-events?maxResults=1000").await).await;
    let total = total.as_array().unwrap().len();
    assert!(total > all.as_array().unwrap().len());
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let compact = chrono::Utc::now().format("%Y%m%d").to_string();
    for date in [&today, &compact] {
        let today_events = ok_json(
            app.get(&format!(
                "/audit-events?fromDate={date}&toDate={date}&maxResults=1000"
            ))
            .await,
        )
        .await;
        assert_eq!(today_events.as_array().unwrap().len(), total, "{date}");
    }
    let future = ok_json(app.get("/audit-events?fromDate=2999-01-01").await).await;
    assert_eq!(future, json!([]));
    let bad = app.get("/audit-events?fromDate=yesterday").await;
    assert_eq!(
        error_codes(bad, StatusCode::BAD_REQUEST).await,
        ["INVALID_REQUEST"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_runs_downloads_queries_and_backups_leave_events() {
    let app = spawn_app().await;
    app.write_script(
        "report.sh",
        "#!/bin/sh\necho working\nprintf 'n\\n1\\n' > \"$LABCRON_RESULT_DIR/report.csv\"\n",
    );
    app.write_script("slow.sh", "#!/bin/sh\nsleep 60\n");
    let job = app.create_external_job("report", "report.sh").await;
    let created = newest(&app, "JOB_CREATE", Some(job)).await;
    assert_eq!(created["objectType"], "JOB");
    assert_eq!(created["detail"]["name"], "report");
    assert_eq!(
        created["detail"]["changes"]["command"]["after"],
        "report.sh"
    );

    // An update names each changed field before → after, and hides the webhook address.
    let mut body = ok_json(app.get(&format!("/scheduled-jobs/{job}")).await).await;
    body["timeoutSeconds"] = json!(120);
    body["webhookUrl"] = json!("https://hooks.example/x?secret=s3cr3t-value");
    ok_json(app.put(&format!("/scheduled-jobs/{job}"), &body).await).await;
    let updated = newest(&app, "JOB_UPDATE", Some(job)).await;
    let changes = &updated["detail"]["changes"];
    assert_eq!(changes["timeoutSeconds"]["before"], 3600);
    assert_eq!(changes["timeoutSeconds"]["after"], 120);
    assert_eq!(
        changes["webhookUrl"],
        json!({"before": null, "after": "(hidden)"})
    );
    assert_eq!(
        changes.as_object().unwrap().len(),
        2,
        "only what changed: {changes}"
    );
    assert!(!updated.to_string().contains("s3cr3t"));

    // Run requested, result and log downloaded.
    let run = app.start_run(job, None).await;
    let requested = newest(&app, "RUN_REQUEST", Some(run)).await;
    assert_eq!(requested["objectType"], "RUN");
    assert_eq!(requested["detail"]["jobId"], job);
    assert_eq!(app.wait_run(job, run).await["status"], "SUCCEEDED");
    let file = app
        .get(&format!("/scheduled-jobs/{job}/runs/{run}/result-file"))
        .await;
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(file.text().await.unwrap(), "n\n1\n");
    let download = newest(&app, "RESULT_DOWNLOAD", Some(run)).await;
    assert_eq!(download["actor"], "admin");
    assert_eq!(download["detail"]["file"], "report.csv");
    assert_eq!(download["remoteAddr"], "127.0.0.1");
    let log = app
        .get(&format!("/scheduled-jobs/{job}/runs/{run}/log"))
        .await;
    assert!(log.text().await.unwrap().contains("working"));
    assert_eq!(
        newest(&app, "LOG_DOWNLOAD", Some(run)).await["detail"]["jobId"],
        job
    );
    // A refused download leaves no event.
    let (_carol, carol) = app.create_user("carol", false).await;
    let refused = app
        .send_as(
            &carol,
            Method::GET,
            &format!("/scheduled-jobs/{job}/runs/{run}/result-file"),
            None,
        )
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let downloads = ok_json(app.get("/audit-events?action=RESULT_DOWNLOAD").await).await;
    assert_eq!(downloads.as_array().unwrap().len(), 1);

    // Run cancelled.
    let slow = app.create_external_job("slow", "slow.sh").await;
    let slow_run = app.start_run(slow, None).await;
    ok_json(
        app.post(
            &format!("/scheduled-jobs/{slow}/runs/{slow_run}/cancel"),
            &json!({}),
        )
        .await,
    )
    .await;
    let cancelled = newest(&app, "RUN_CANCEL", Some(slow_run)).await;
    assert_eq!(cancelled["actor"], "admin");
    assert!(matches!(
        cancelled["detail"]["status"].as_str(),
        Some("QUEUED" | "IN_PROGRESS")
    ));

    // Saved queries.
    let query = ok_json(
        app.post(
            "/saved-queries",
            &json!({"title": "One", "sql": "SELECT 1 AS one"}),
        )
        .await,
    )
    .await;
    let query_id = query["id"].as_i64().unwrap();
    assert_eq!(
        newest(&app, "SAVED_QUERY_CREATE", Some(query_id)).await["detail"]["sql"],
        "SELECT 1 AS one"
    );
    ok_json(
        app.put(
            &format!("/saved-queries/{query_id}"),
            &json!({"title": "Two", "sql": "SELECT 1 AS one"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        newest(&app, "SAVED_QUERY_UPDATE", Some(query_id)).await["detail"]["changes"],
        json!({"title": {"before": "One", "after": "Two"}})
    );
    ok_json(app.delete(&format!("/saved-queries/{query_id}")).await).await;
    assert_eq!(
        newest(&app, "SAVED_QUERY_DELETE", Some(query_id)).await["detail"]["title"],
        "Two"
    );

    // A backup taken by the built-in task.
    let backup = app
        .create_job(
            &json!({"name": "backup", "type": "INTERNAL", "taskImplFqn": "database-backup",
                            "repeatSchedule": "ONDEMAND"}),
        )
        .await;
    let backup_run = app.start_run(backup, None).await;
    // On PostgreSQL the task refuses (pg_dump copies the database): no copy, no event.
    if !crate::common::on_postgres() {
        assert_eq!(
            app.wait_run(backup, backup_run).await["status"],
            "SUCCEEDED"
        );
        let taken = newest(&app, "BACKUP_TAKEN", Some(backup_run)).await;
        assert_eq!(taken["actor"], "admin");
        assert_eq!(taken["detail"]["jobId"], backup);
    }

    // Job deleted; the job's history reads by object.
    ok_json(app.delete(&format!("/scheduled-jobs/{job}")).await).await;
    let history = ok_json(
        app.get(&format!("/audit-events?objectType=JOB&objectId={job}"))
            .await,
    )
    .await;
    let actions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["JOB_DELETE", "JOB_UPDATE", "JOB_CREATE"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_pass_prunes_old_events_only() {
    let app = spawn_app().await;
    assert_eq!(
        app.settings.retention.audit_days, 730,
        "two years by default"
    );
    let day = 24 * 3600 * 1000;
    crate::common::ledger::sql_rows(
        &app.data_dir,
        &format!(
            "INSERT INTO audit_events (at, actor, action) VALUES ({}, 'old', 'SIGN_IN'), ({}, 'recent', 'SIGN_IN')",
            now_ms() - 731 * day,
            now_ms() - 729 * day
        ),
    );
    let data_dir = app.data_dir.clone();
    let db = tokio::task::spawn_blocking(move || crate::common::ledger::open_db(&data_dir))
        .await
        .unwrap();
    let report = run_retention_now(&db, &app.settings, &app.data_dir)
        .await
        .unwrap();
    assert_eq!(report.audit_events_deleted, 1);
    let actors = ok_json(
        app.get("/audit-events?action=SIGN_IN&maxResults=1000")
            .await,
    )
    .await;
    let actors: Vec<&str> = actors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert!(
        actors.contains(&"recent") && !actors.contains(&"old"),
        "{actors:?}"
    );
}
