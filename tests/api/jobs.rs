//! Jobs: create/read/list/count/update/delete, OpenSpecimen's validation codes, visibility, the
//! scripts-directory rule, and bad input in the contract's shape.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{AppOptions, error_codes, ok_json, spawn_app, spawn_app_with};

fn daily_job(name: &str) -> Value {
    json!({"name": name, "type": "EXTERNAL", "command": "noop.sh", "repeatSchedule": "DAILY",
           "scheduledHour": 23, "scheduledMinute": 0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_round_trips_with_openspecimen_fields_under_both_base_paths() {
    let app = spawn_app().await;
    app.write_script("noop.sh", "#!/bin/sh\nexit 0\n");
    let (bob_id, _) = app.create_user("bob", false).await;
    let created = ok_json(
        app.post(
            "/scheduled-jobs",
            &json!({"name": "  Nightly export ", "type": "EXTERNAL", "command": "noop.sh --fast",
                    "repeatSchedule": "WEEKLY", "scheduledDayOfWeek": "MONDAY", "scheduledHour": "8",
                    "scheduledMinute": 30, "scheduledDayOfMonth": 12, "minutelyInterval": 5,
                    "fixedArgs": "--site 'Main Lab'", "rtArgsProvided": true, "rtArgsHelpText": "dates",
                    "recipients": [{"id": bob_id}], "sharedWith": [{"id": bob_id}, {"id": bob_id}],
                    "timezone": "Europe/Berlin", "timeoutSeconds": 120, "maxQueuedRuns": 3,
                    "misfirePolicy": "RUN_ONCE", "unknownField": "ignored"}),
        )
        .await,
    )
    .await;
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["name"], "Nightly export");
    assert_eq!(created["scheduledDayOfWeek"], "MONDAY");
    assert_eq!(created["scheduledHour"], 8);
    assert_eq!(created["scheduledMinute"], 30);
    // Only the fields the schedule uses are stored.
    assert_eq!(created["scheduledDayOfMonth"], Value::Null);
    assert_eq!(created["minutelyInterval"], Value::Null);
    assert_eq!(created["activityStatus"], "Active");
    assert_eq!(created["isActiveJob"], true);
    assert_eq!(created["createdBy"]["loginName"], "admin");
    assert_eq!(created["recipients"][0]["loginName"], "bob");
    assert_eq!(created["sharedWith"].as_array().unwrap().len(), 1);
    assert_eq!(created["timezone"], "Europe/Berlin");
    assert_eq!(created["misfirePolicy"], "RUN_ONCE");
    assert!(created["startDate"].as_i64().unwrap() > 1_700_000_000_000);

    let via_openspecimen = app
        .client
        .get(format!(
            "{}/openspecimen/rest/ng/scheduled-jobs/{id}",
            app.base
        ))
        .header("X-OS-API-TOKEN", &app.token)
        .send()
        .await
        .unwrap();
    let fetched = ok_json(via_openspecimen).await;
    assert_eq!(fetched["name"], "Nightly export");
    assert_eq!(fetched["fixedArgs"], "--site 'Main Lab'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_reports_every_problem_at_once_with_openspecimen_codes() {
    let app = spawn_app().await;
    let codes = error_codes(
        app.post(
            "/scheduled-jobs",
            &json!({"type": "EXTERNAL", "repeatSchedule": "DAILY", "scheduledHour": 30, "scheduledMinute": -1,
                    "startDate": 2000, "endDate": 1000, "timezone": "Nowhere/City"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(
        codes,
        vec![
            "SCHEDULED_JOB_NAME_REQUIRED",
            "SCHEDULED_JOB_INVALID_SCHEDULED_TIME",
            "SCHEDULED_JOB_INVALID_SCHEDULED_TIME",
            "SCHEDULED_JOB_INVALID_TIMEZONE",
            "SCHEDULED_JOB_END_DATE_BEFORE_START_DATE",
            "SCHEDULED_JOB_EXTERNAL_COMMAND_REQUIRED",
        ]
    );
    let codes = error_codes(
        app.post(
            "/scheduled-jobs",
            &json!({"name": "x", "type": "SHELL", "repeatSchedule": "YEARLY"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(
        codes,
        vec![
            "SCHEDULED_JOB_INVALID_REPEAT_SCHEDULE",
            "SCHEDULED_JOB_INVALID_TYPE"
        ]
    );
    let codes = error_codes(
        app.post(
            "/scheduled-jobs",
            &json!({"name": "x", "type": "EXTERNAL", "command": "a.sh"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(
        codes,
        vec![
            "SCHEDULED_JOB_REPEAT_SCHEDULE_REQUIRED",
            "SCHEDULED_JOB_COMMAND_NOT_ALLOWED"
        ]
    );
    let codes = error_codes(
        app.post(
            "/scheduled-jobs",
            &json!({"name": "c", "type": "EXTERNAL", "command": "a.sh", "repeatSchedule": "CRON",
            "cronExpression": "61 * * * *"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        codes.contains(&"SCHEDULED_JOB_INVALID_CRON".to_string()),
        "{codes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_among_live_jobs_and_delete_is_soft() {
    let app = spawn_app().await;
    app.write_script("noop.sh", "#!/bin/sh\n");
    let id = app.create_job(&daily_job("Backup")).await;
    let dup = app.post("/scheduled-jobs", &daily_job("Backup")).await;
    assert_eq!(
        error_codes(dup, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_DUP_JOB_NAME"]
    );

    let deleted = ok_json(app.delete(&format!("/scheduled-jobs/{id}")).await).await;
    assert_eq!(deleted["activityStatus"], "Disabled");
    assert_eq!(deleted["isActiveJob"], false);
    let mangled = deleted["name"].as_str().unwrap();
    assert!(
        mangled.starts_with("Backup_") && mangled[7..].parse::<i64>().is_ok(),
        "{mangled}"
    );
    for response in [
        app.get(&format!("/scheduled-jobs/{id}")).await,
        app.put(&format!("/scheduled-jobs/{id}"), &daily_job("Backup"))
            .await,
        app.delete(&format!("/scheduled-jobs/{id}")).await,
        app.post(&format!("/scheduled-jobs/{id}/runs"), &json!({}))
            .await,
        app.get(&format!("/scheduled-jobs/{id}/runs")).await,
    ] {
        assert_eq!(
            error_codes(response, StatusCode::BAD_REQUEST).await,
            vec!["SCHEDULED_JOB_NOT_FOUND"]
        );
    }
    // The name is free again and the deleted job is not listed.
    app.create_job(&daily_job("Backup")).await;
    assert_eq!(
        ok_json(app.get("/scheduled-jobs/count").await).await["count"],
        1
    );
    // History is kept in the ledger.
    let status = crate::common::ledger::sql_text(
        &app.data_dir,
        &format!("SELECT activity_status FROM jobs WHERE id = {id}"),
    );
    assert_eq!(status, "Disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_is_a_full_replace_that_keeps_the_start_date() {
    let app = spawn_app().await;
    app.write_script("noop.sh", "#!/bin/sh\n");
    let mut body = daily_job("Report");
    body["fixedArgs"] = json!("--a");
    body["startDate"] = json!(1_800_000_000_000i64);
    let id = app.create_job(&body).await;
    let updated = ok_json(
        app.put(
            &format!("/scheduled-jobs/{id}"),
            &json!({"name": "Report v2", "type": "EXTERNAL", "command": "noop.sh", "repeatSchedule": "MINUTELY",
                    "minutelyInterval": 7, "activityStatus": "Closed"}),
        )
        .await,
    )
    .await;
    assert_eq!(updated["id"], id);
    assert_eq!(updated["name"], "Report v2");
    assert_eq!(updated["repeatSchedule"], "MINUTELY");
    assert_eq!(updated["minutelyInterval"], 7);
    assert_eq!(updated["scheduledHour"], Value::Null);
    assert_eq!(
        updated["fixedArgs"],
        Value::Null,
        "not a patch: omitted fields are cleared"
    );
    assert_eq!(
        updated["startDate"], 1_800_000_000_000i64,
        "start date kept when omitted"
    );
    assert_eq!(updated["activityStatus"], "Closed");
    assert_eq!(
        updated["nextRunOn"],
        Value::Null,
        "a Closed job has no next run"
    );
    assert_eq!(updated["isActiveJob"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_pages_and_counts_newest_first() {
    let app = spawn_app().await;
    app.write_script("noop.sh", "#!/bin/sh\n");
    for name in ["Alpha export", "Beta export", "Gamma 100%_done", "Delta"] {
        app.create_job(&daily_job(name)).await;
    }
    let names = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|j| j["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(ok_json(app.get("/scheduled-jobs").await).await),
        vec!["Delta", "Gamma 100%_done", "Beta export", "Alpha export"]
    );
    assert_eq!(
        names(ok_json(app.get("/scheduled-jobs?query=EXPORT").await).await),
        vec!["Beta export", "Alpha export"]
    );
    assert_eq!(
        names(ok_json(app.get("/scheduled-jobs?query=%25_").await).await),
        vec!["Gamma 100%_done"]
    );
    assert_eq!(
        names(ok_json(app.get("/scheduled-jobs?startAt=1&maxResults=2").await).await),
        vec!["Gamma 100%_done", "Beta export"]
    );
    assert_eq!(
        names(ok_json(app.get("/scheduled-jobs?startAt=-5&maxResults=0").await).await).len(),
        4
    );
    assert_eq!(
        ok_json(app.get("/scheduled-jobs?type=EXTERNAL").await)
            .await
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        ok_json(app.get("/scheduled-jobs?type=QUERY").await)
            .await
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        ok_json(app.get("/scheduled-jobs/count?query=export").await).await,
        json!({"count": 2})
    );
    assert_eq!(
        ok_json(app.get("/scheduled-jobs/count?type=INTERNAL").await).await,
        json!({"count": 0})
    );
}

/// Path ids are typed (`web::Path`); a bad one is named with its raw text, and only after the
/// caller is known: a made-up token still answers 401, as OpenSpecimen checks who asks first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_path_id_is_named_after_the_caller_is_known() {
    let app = spawn_app().await;
    for (method, path, message) in [
        (
            Method::GET,
            "/scheduled-jobs/abc",
            "jobId must be a number, not `abc`.",
        ),
        (
            Method::PUT,
            "/scheduled-jobs/1.5",
            "jobId must be a number, not `1.5`.",
        ),
        (
            Method::GET,
            "/scheduled-jobs/x/runs/7",
            "jobId must be a number, not `x`.",
        ),
        (
            Method::GET,
            "/scheduled-jobs/7/runs/x%20y/log",
            "runId must be a number, not `x y`.",
        ),
        (
            Method::GET,
            "/users/99999999999999999999",
            "userId must be a number, not `99999999999999999999`.",
        ),
        (
            Method::DELETE,
            "/saved-queries/q",
            "queryId must be a number, not `q`.",
        ),
        (
            Method::DELETE,
            "/api-tokens/t",
            "tokenId must be a number, not `t`.",
        ),
    ] {
        let body = if method == Method::PUT { "{}" } else { "" };
        let response = app
            .request(method.clone(), path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{method} {path}"
        );
        let errors: Value = response.json().await.unwrap();
        assert_eq!(
            errors,
            json!([{"code": "INVALID_REQUEST", "message": message}]),
            "{method} {path}"
        );
        for base in ["/rest/ng", "/openspecimen/rest/ng"] {
            let response = app
                .client
                .request(method.clone(), format!("{}{base}{path}", app.base))
                .header("X-OS-API-TOKEN", "not-a-token")
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {base}{path} with a made-up token"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_and_bodies_get_invalid_request_naming_the_problem() {
    let app = spawn_app().await;
    for (path, needle) in [
        ("/scheduled-jobs?type=SHELL", "type"),
        ("/scheduled-jobs?maxResults=ten", "maxResults"),
        ("/scheduled-jobs/abc", "jobId"),
        ("/scheduled-jobs/count?type=x", "type"),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body[0]["code"], "INVALID_REQUEST", "{path}");
        assert!(
            body[0]["message"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
    let malformed = app
        .request(Method::POST, "/scheduled-jobs")
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_codes(malformed, StatusCode::BAD_REQUEST).await,
        vec!["INVALID_REQUEST"]
    );
    let array = app.post("/scheduled-jobs", &json!([1, 2])).await;
    assert_eq!(
        error_codes(array, StatusCode::BAD_REQUEST).await,
        vec!["INVALID_REQUEST"]
    );
    let unknown = app.get("/scheduled-jobs/999").await;
    assert_eq!(
        error_codes(unknown, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_NOT_FOUND"]
    );
    let no_route = app.get("/no-such-thing").await;
    assert_eq!(
        error_codes(no_route, StatusCode::NOT_FOUND).await,
        vec!["NOT_FOUND"]
    );
    let wrong_method = app
        .request(Method::PATCH, "/scheduled-jobs")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = wrong_method.json().await.expect("JSON error body");
    assert!(body.is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_and_nothing_is_stored() {
    let app = spawn_app_with(AppOptions {
        max_body_bytes: Some(64 * 1024),
        ..AppOptions::default()
    })
    .await;
    let huge =
        json!({"name": "x".repeat(100 * 1024), "type": "EXTERNAL", "repeatSchedule": "ONDEMAND"});
    let response = app.post("/scheduled-jobs", &huge).await;
    assert_eq!(
        error_codes(response, StatusCode::PAYLOAD_TOO_LARGE).await,
        vec!["PAYLOAD_TOO_LARGE"]
    );
    assert_eq!(
        ok_json(app.get("/scheduled-jobs/count").await).await["count"],
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_body_limit_is_one_mebibyte() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/scheduled-jobs",
            &json!({"name": "y".repeat(1024 * 1024 + 10), "type": "EXTERNAL"}),
        )
        .await;
    assert_eq!(
        error_codes(response, StatusCode::PAYLOAD_TOO_LARGE).await,
        vec!["PAYLOAD_TOO_LARGE"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_must_live_in_the_scripts_directory() {
    let app = spawn_app().await;
    app.write_script("ok.sh", "#!/bin/sh\n");
    let outside = app.data_dir.join("outside.sh");
    std::fs::write(&outside, "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink(&outside, app.scripts_dir.join("sneaky.sh")).unwrap();
    let scripts = app.scripts_dir.canonicalize().unwrap();
    for command in [
        "../outside.sh".to_string(),
        "sneaky.sh".to_string(),
        "/bin/sh -c id".to_string(),
        format!("{}/../outside.sh", scripts.display()),
        "missing.sh".to_string(),
    ] {
        let response = app
            .post("/scheduled-jobs", &json!({"name": "bad", "type": "EXTERNAL", "command": command, "repeatSchedule": "ONDEMAND"}))
            .await;
        assert_eq!(
            error_codes(response, StatusCode::BAD_REQUEST).await,
            vec!["SCHEDULED_JOB_COMMAND_NOT_ALLOWED"],
            "{command}"
        );
    }
    let absolute = format!("{}/ok.sh", scripts.display());
    app.create_external_job("absolute ok", &absolute).await;
    app.create_external_job("relative ok", "ok.sh 'a b'").await;
    let hash = app
        .post("/scheduled-jobs", &json!({"name": "h", "type": "EXTERNAL", "command": "ok.sh #comment", "repeatSchedule": "ONDEMAND"}))
        .await;
    assert_eq!(
        error_codes(hash, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_INVALID_COMMAND"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admins_see_only_their_own_or_shared_jobs_and_cannot_touch_external_ones() {
    let app = spawn_app().await;
    app.write_script("noop.sh", "#!/bin/sh\n");
    let (bob_id, bob) = app.create_user("bob", false).await;
    let (_, carol) = app.create_user("carol", false).await;
    let mut shared = daily_job("Shared with bob");
    shared["sharedWith"] = json!([{"id": bob_id}]);
    let shared_id = app.create_job(&shared).await;
    let private_id = app.create_job(&daily_job("Admin only")).await;

    let listed = ok_json(
        app.send_as(&bob, Method::GET, "/scheduled-jobs", None)
            .await,
    )
    .await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Shared with bob"]);
    let count = ok_json(
        app.send_as(&carol, Method::GET, "/scheduled-jobs/count", None)
            .await,
    )
    .await;
    assert_eq!(count["count"], 0);

    let hidden = app
        .send_as(
            &bob,
            Method::GET,
            &format!("/scheduled-jobs/{private_id}"),
            None,
        )
        .await;
    assert_eq!(
        error_codes(hidden, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_OP_NOT_ALLOWED"]
    );
    let run_hidden = app
        .send_as(
            &carol,
            Method::POST,
            &format!("/scheduled-jobs/{shared_id}/runs"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(
        error_codes(run_hidden, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_OP_NOT_ALLOWED"]
    );

    // Shared users may see but not change; nobody but admins creates EXTERNAL jobs.
    let change = app
        .send_as(
            &bob,
            Method::PUT,
            &format!("/scheduled-jobs/{shared_id}"),
            Some(&daily_job("Mine now")),
        )
        .await;
    assert_eq!(
        error_codes(change, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_OP_NOT_ALLOWED"]
    );
    let create = app
        .send_as(
            &bob,
            Method::POST,
            "/scheduled-jobs",
            Some(&daily_job("Bob's script")),
        )
        .await;
    assert_eq!(
        error_codes(create, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_OP_NOT_ALLOWED"]
    );
    let internal = app
        .send_as(&bob, Method::POST, "/scheduled-jobs", Some(&json!({"name": "clean", "type": "INTERNAL", "taskImplFqn": "files-cleaner", "repeatSchedule": "ONDEMAND"}))).await;
    assert_eq!(
        error_codes(internal, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_OP_NOT_ALLOWED"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_in_lists_are_reported_with_their_ids() {
    let app = spawn_app().await;
    app.write_script("noop.sh", "#!/bin/sh\n");
    let mut body = daily_job("Notify");
    body["recipients"] = json!([{"id": 4242}]);
    body["sharedWith"] = json!([{"id": 4343}]);
    body["runAs"] = json!({"id": 9999});
    let response = app.post("/scheduled-jobs", &body).await;
    let text = response.text().await.unwrap();
    assert!(
        text.contains("USER_NOT_FOUND") && text.contains("USER_ONE_OR_MORE_NOT_FOUND"),
        "{text}"
    );
    assert!(text.contains("4242") && text.contains("4343"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_set_a_webhook_because_the_server_calls_it() {
    let app = spawn_app().await;
    let (_, bob) = app.create_user("bob", false).await;
    let query = ok_json(
        app.send_as(
            &bob,
            Method::POST,
            "/saved-queries",
            Some(&json!({"title": "one", "sql": "SELECT 1 AS one"})),
        )
        .await,
    )
    .await;
    let mut body = json!({"name": "bob's export", "type": "QUERY", "repeatSchedule": "ONDEMAND",
        "savedQuery": {"id": query["id"]}, "webhookUrl": "http://127.0.0.1:9/internal"});
    let refused = app
        .send_as(&bob, Method::POST, "/scheduled-jobs", Some(&body))
        .await;
    assert_eq!(
        error_codes(refused, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_OP_NOT_ALLOWED"]
    );
    body.as_object_mut().unwrap().remove("webhookUrl");
    let created = ok_json(
        app.send_as(&bob, Method::POST, "/scheduled-jobs", Some(&body))
            .await,
    )
    .await;
    // An admin may add one; Bob's later full replace keeps it when he sends it back unchanged.
    let id = created["id"].as_i64().unwrap();
    body["webhookUrl"] = json!("https://hooks.lab.example/labcron");
    ok_json(app.put(&format!("/scheduled-jobs/{id}"), &body).await).await;
    let kept = app
        .send_as(
            &bob,
            Method::PUT,
            &format!("/scheduled-jobs/{id}"),
            Some(&body),
        )
        .await;
    assert_eq!(
        ok_json(kept).await["webhookUrl"],
        "https://hooks.lab.example/labcron"
    );
}
