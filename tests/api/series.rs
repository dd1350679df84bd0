//! Retries, chains, `cancelledBy` and the runs list across jobs (issue 13), against the real
//! server, real scripts and the real ledger.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestApp, error_codes, ok_json, run_id_from_location, spawn_app};

/// Generous: a busy 2-core machine runs many test binaries at once.
const DEADLINE: Duration = Duration::from_secs(90);

/// A script that fails (exit 3, "LIMS timeout") the first `$2` times it runs for counter file `$1`,
/// then succeeds.
const FLAKY: &str = "#!/bin/sh\nn=$(cat \"$1\" 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > \"$1\"\n\
echo \"attempt $n\"\nif [ $n -le $2 ]; then echo 'LIMS timeout' >&2; exit 3; fi\necho synced\n";

async fn runs_of(app: &TestApp, job: i64) -> Vec<Value> {
    let list = ok_json(app.get(&format!("/scheduled-jobs/{job}/runs")).await).await;
    let mut runs = list.as_array().expect("array").clone();
    runs.reverse(); // oldest first
    runs
}

/// Waits until the job has `n` runs, the last one finished; returns them oldest first.
async fn wait_runs(app: &TestApp, job: i64, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let runs = runs_of(app, job).await;
        let done = runs.len() >= n
            && runs[n - 1]["status"]
                .as_str()
                .is_some_and(|s| s == "SUCCEEDED" || s == "FAILED");
        if done {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} did not reach {n} finished runs: {runs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A saved query (`SELECT 1 AS one`) made by the user whose token this is; its id.
async fn saved_query_of(app: &TestApp, token: &str) -> i64 {
    ok_json(
        app.send_as(
            token,
            Method::POST,
            "/saved-queries",
            Some(&json!({"title": "one", "sql": "SELECT 1 AS one"})),
        )
        .await,
    )
    .await["id"]
        .as_i64()
        .unwrap()
}

async fn job(app: &TestApp, body: Value) -> Value {
    ok_json(app.post("/scheduled-jobs", &body).await).await
}

fn external(name: &str, command: &str, extra: Value) -> Value {
    let mut body = json!({"name": name, "type": "EXTERNAL", "command": command,
                          "repeatSchedule": "ONDEMAND"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_retried_after_the_delay_with_the_same_args_until_it_succeeds() {
    let app = spawn_app().await;
    app.write_script("flaky.sh", FLAKY);
    let counter = app.data_dir.join("flaky-count");
    let created = job(
        &app,
        external(
            "lims-sync",
            "flaky.sh",
            json!({"maxRetries": 3, "retryDelaySeconds": 1, "rtArgsProvided": true}),
        ),
    )
    .await;
    assert_eq!(
        (
            &created["maxRetries"],
            &created["retryDelaySeconds"],
            &created["notifyOn"]
        ),
        (&json!(3), &json!(1), &json!("ALWAYS"))
    );
    let id = created["id"].as_i64().unwrap();
    let args = format!("{} 2", counter.display());
    let first = app.start_run(id, Some(&args)).await;
    let runs = wait_runs(&app, id, 3).await;
    assert_eq!(runs.len(), 3, "no retry after the success: {runs:#?}");
    assert_eq!(runs[0]["id"], first);
    let statuses: Vec<&str> = runs.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["FAILED", "FAILED", "SUCCEEDED"]);
    assert_eq!(runs[0]["message"], "exit code 3: LIMS timeout");
    for (n, run) in runs.iter().enumerate() {
        assert_eq!(run["attempt"], n as i64 + 1, "{run}");
        assert_eq!(run["rtArgs"], args.as_str(), "same arguments: {run}");
        assert_eq!(run["cancelledBy"], Value::Null);
        assert_eq!(run["chainedFrom"], Value::Null);
        if n == 0 {
            assert_eq!(run["trigger"], "MANUAL");
            assert_eq!(run["retryOf"], Value::Null);
        } else {
            assert_eq!(run["trigger"], "RETRY");
            assert_eq!(run["retryOf"], first, "retryOf names the series' first run");
            // The retry waited for the delay after the failure before it started.
            let previous_end = runs[n - 1]["finishedAt"].as_i64().unwrap();
            let not_before = run["notBefore"].as_i64().unwrap();
            assert_eq!(not_before, previous_end + 1000, "{run}");
            assert!(run["startedAt"].as_i64().unwrap() >= not_before, "{run}");
        }
    }
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_when_used_up_and_a_cancelled_run_is_never_retried_but_says_who() {
    let app = spawn_app().await;
    app.write_script("fail.sh", "#!/bin/sh\necho broken >&2\nexit 2\n");
    app.write_script("slow.sh", "#!/bin/sh\nsleep 60\n");
    let failing = job(
        &app,
        external(
            "always-fails",
            "fail.sh",
            json!({"maxRetries": 1, "retryDelaySeconds": 1}),
        ),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    app.start_run(failing, None).await;
    let runs = wait_runs(&app, failing, 2).await;
    // The retry of a run is queued in the transaction that records its end: two runs, both
    // finished, means no third one is coming.
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(runs[1]["attempt"], 2);
    assert_eq!(runs[1]["status"], "FAILED");

    let slow = job(
        &app,
        external(
            "slow",
            "slow.sh",
            json!({"maxRetries": 5, "retryDelaySeconds": 1}),
        ),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let running = app.start_run(slow, None).await;
    let queued = app.start_run(slow, None).await;
    let deadline = Instant::now() + DEADLINE;
    while app.run_status(slow, running).await != "IN_PROGRESS" {
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for run in [queued, running] {
        ok_json(
            app.post(
                &format!("/scheduled-jobs/{slow}/runs/{run}/cancel"),
                &json!({}),
            )
            .await,
        )
        .await;
    }
    let cancelled = app.wait_run(slow, running).await;
    let runs = runs_of(&app, slow).await;
    assert_eq!(runs.len(), 2, "a cancelled run is not retried: {runs:#?}");
    for run in [&cancelled, &runs[1]] {
        // Still FAILED on the wire (the seed's statuses), with who cancelled it.
        assert_eq!(run["status"], "FAILED");
        assert_eq!(run["cancelledBy"]["loginName"], "admin", "{run}");
        assert_eq!(run["message"], "cancelled by admin");
    }
    // A run that failed on its own says nobody cancelled it.
    assert_eq!(runs_of(&app, failing).await[0]["cancelledBy"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_retry_survives_a_restart_and_runs_after_it() {
    let mut app = spawn_app().await;
    app.write_script("flaky.sh", FLAKY);
    let counter = app.data_dir.join("count");
    // A delay long enough that the retry is still waiting when the server stops.
    let id = job(
        &app,
        external(
            "restarted",
            "flaky.sh",
            json!({"maxRetries": 2, "retryDelaySeconds": 3, "fixedArgs": format!("{} 1", counter.display())}),
        ),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let first = app.start_run(id, None).await;
    assert_eq!(app.wait_run(id, first).await["status"], "FAILED");
    let runs = runs_of(&app, id).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["status"], "QUEUED", "the retry waits: {runs:#?}");
    app.stop().await;
    app.start_again().await;
    let runs = wait_runs(&app, id, 2).await;
    assert_eq!(runs[1]["status"], "SUCCEEDED", "{runs:#?}");
    assert_eq!(runs[1]["trigger"], "RETRY");
    assert_eq!(runs[1]["retryOf"], first);
    assert!(runs[1]["startedAt"].as_i64() >= runs[1]["notBefore"].as_i64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_chain_fields_are_validated() {
    let app = spawn_app().await;
    app.write_script("ok.sh", "#!/bin/sh\n");
    let codes = error_codes(
        app.post(
            "/scheduled-jobs",
            &external(
                "bad",
                "ok.sh",
                json!({"maxRetries": 11, "retryDelaySeconds": 86401, "notifyOn": "SOMETIMES",
                       "onSuccess": [{"id": 999}]}),
            ),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(
        codes,
        [
            "SCHEDULED_JOB_INVALID_MAX_RETRIES",
            "SCHEDULED_JOB_INVALID_RETRY_DELAY",
            "SCHEDULED_JOB_INVALID_NOTIFY_ON"
        ]
    );
    let codes = error_codes(
        app.post(
            "/scheduled-jobs",
            &external("bad", "ok.sh", json!({"onSuccess": [{"id": 999}]})),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(codes, ["SCHEDULED_JOB_CHAIN_TARGET_NOT_FOUND"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chained_run_gets_the_upstream_result_file_read_only_and_failure_chains_wait_for_the_last_retry()
 {
    let app = spawn_app().await;
    app.write_script(
        "export.sh",
        "#!/bin/sh\nprintf 'id,value\\n1,42\\n' > \"$LABCRON_RESULT_DIR/export.csv\"\n",
    );
    app.write_script(
        "upload.sh",
        "#!/bin/sh\necho \"upstream=$LABCRON_UPSTREAM_RUN_ID\"\ncat \"$LABCRON_UPSTREAM_RESULT\"\n\
         stat -c 'mode=%a' \"$LABCRON_UPSTREAM_RESULT\"\n",
    );
    app.write_script("fail.sh", "#!/bin/sh\nexit 4\n");
    app.write_script(
        "alert.sh",
        "#!/bin/sh\necho \"after $LABCRON_UPSTREAM_RUN_ID\"\n",
    );
    let upload = job(&app, external("upload", "upload.sh", json!({}))).await["id"]
        .as_i64()
        .unwrap();
    let alert = job(&app, external("alert", "alert.sh", json!({}))).await["id"]
        .as_i64()
        .unwrap();
    let export = job(
        &app,
        external(
            "export",
            "export.sh",
            json!({"onSuccess": [{"id": upload}], "onFailure": [{"id": alert}]}),
        ),
    )
    .await;
    assert_eq!(
        export["onSuccess"],
        json!([{"id": upload, "name": "upload"}])
    );
    assert_eq!(export["onFailure"], json!([{"id": alert, "name": "alert"}]));
    let export = export["id"].as_i64().unwrap();
    let upstream = app.start_run(export, None).await;
    assert_eq!(app.wait_run(export, upstream).await["status"], "SUCCEEDED");
    let chained = wait_runs(&app, upload, 1).await;
    let run = &chained[0];
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(run["trigger"], "CHAINED");
    assert_eq!(run["chainedFrom"], upstream);
    assert_eq!(run["runBy"]["loginName"], "admin");
    let log = app
        .request(
            Method::GET,
            &format!("/scheduled-jobs/{upload}/runs/{}/log", run["id"]),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Read-only (mode 444): the upload cannot change what the export produced.
    assert_eq!(
        log,
        format!("upstream={upstream}\nid,value\n1,42\nmode=444\n")
    );
    assert!(runs_of(&app, alert).await.is_empty(), "onFailure not used");

    // A failure chain fires once, after the last retry, from that run.
    let failing = job(
        &app,
        external(
            "fails",
            "fail.sh",
            json!({"maxRetries": 1, "retryDelaySeconds": 1, "onFailure": [{"id": alert}]}),
        ),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    app.start_run(failing, None).await;
    let failed = wait_runs(&app, failing, 2).await;
    let alerts = wait_runs(&app, alert, 1).await;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["chainedFrom"], failed[1]["id"]);
    assert_eq!(alerts[0]["status"], "SUCCEEDED");

    // A deleted job drops out of the lists that name it.
    ok_json(app.delete(&format!("/scheduled-jobs/{upload}")).await).await;
    let export_now = ok_json(app.get(&format!("/scheduled-jobs/{export}")).await).await;
    assert_eq!(export_now["onSuccess"], json!([]));
    assert_eq!(
        export_now["onFailure"],
        json!([{"id": alert, "name": "alert"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_that_would_close_a_chain_cycle_is_refused_naming_it() {
    let app = spawn_app().await;
    app.write_script("ok.sh", "#!/bin/sh\n");
    let a = job(&app, external("A", "ok.sh", json!({}))).await["id"]
        .as_i64()
        .unwrap();
    let b = job(
        &app,
        external("B", "ok.sh", json!({"onSuccess": [{"id": a}]})),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let c = job(
        &app,
        external("C", "ok.sh", json!({"onFailure": [{"id": b}]})),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    // A → C closes A → C → B → A (mixing onSuccess and onFailure).
    let response = app
        .put(
            &format!("/scheduled-jobs/{a}"),
            &external("A", "ok.sh", json!({"onSuccess": [{"id": c}]})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body[0]["code"], "SCHEDULED_JOB_CHAIN_CYCLE");
    let message = body[0]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("A ({a}) → C ({c}) → B ({b}) → A ({a})")),
        "{message}"
    );
    // A job cannot follow itself either.
    let codes = error_codes(
        app.put(
            &format!("/scheduled-jobs/{a}"),
            &external("A", "ok.sh", json!({"onFailure": [{"id": a}]})),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(codes, ["SCHEDULED_JOB_CHAIN_CYCLE"]);
    // Nothing was stored; once B no longer points at A, A → C is fine.
    assert_eq!(
        ok_json(app.get(&format!("/scheduled-jobs/{a}")).await).await["onSuccess"],
        json!([])
    );
    ok_json(
        app.put(
            &format!("/scheduled-jobs/{b}"),
            &external("B", "ok.sh", json!({})),
        )
        .await,
    )
    .await;
    let saved = ok_json(
        app.put(
            &format!("/scheduled-jobs/{a}"),
            &external("A", "ok.sh", json!({"onSuccess": [{"id": c}]})),
        )
        .await,
    )
    .await;
    assert_eq!(saved["onSuccess"], json!([{"id": c, "name": "C"}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_need_the_right_to_run_the_target_at_save_and_at_queue_time() {
    let app = spawn_app().await;
    let (ann, ann_token) = app.create_user("ann", false).await;
    let target = job(
        &app,
        json!({"name": "report", "type": "INTERNAL", "taskImplFqn": "runs-report",
               "repeatSchedule": "ONDEMAND"}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let query = saved_query_of(&app, &ann_token).await;
    let body = json!({"name": "ann-query", "type": "QUERY", "savedQuery": {"id": query},
                      "repeatSchedule": "ONDEMAND", "onSuccess": [{"id": target}]});
    let refused = app
        .send_as(&ann_token, Method::POST, "/scheduled-jobs", Some(&body))
        .await;
    assert_eq!(
        error_codes(refused, StatusCode::BAD_REQUEST).await,
        ["SCHEDULED_JOB_OP_NOT_ALLOWED"]
    );
    // Shared with her, the report may follow her job.
    ok_json(
        app.put(
            &format!("/scheduled-jobs/{target}"),
            &json!({"name": "report", "type": "INTERNAL", "taskImplFqn": "runs-report",
                    "repeatSchedule": "ONDEMAND", "sharedWith": [{"id": ann}]}),
        )
        .await,
    )
    .await;
    let created = ok_json(
        app.send_as(&ann_token, Method::POST, "/scheduled-jobs", Some(&body))
            .await,
    )
    .await;
    let ann_job = created["id"].as_i64().unwrap();
    // Unshared again: her next run's chained run fails, saying why.
    ok_json(
        app.put(
            &format!("/scheduled-jobs/{target}"),
            &json!({"name": "report", "type": "INTERNAL", "taskImplFqn": "runs-report",
                    "repeatSchedule": "ONDEMAND"}),
        )
        .await,
    )
    .await;
    let response = app
        .send_as(
            &ann_token,
            Method::POST,
            &format!("/scheduled-jobs/{ann_job}/runs"),
            Some(&json!({})),
        )
        .await;
    let upstream = run_id_from_location(&response);
    assert_eq!(app.wait_run(ann_job, upstream).await["status"], "SUCCEEDED");
    let runs = wait_runs(&app, target, 1).await;
    assert_eq!(runs[0]["status"], "FAILED");
    assert_eq!(runs[0]["trigger"], "CHAINED");
    assert_eq!(runs[0]["runBy"]["loginName"], "ann");
    assert_eq!(
        runs[0]["message"],
        format!(
            "not run after run {upstream} of job ann-query: user ann of the upstream run may no longer run job report"
        )
    );
}

/// A scheduled run of a job without `runAs` is the system user's, who may run anything; its
/// chain answers to the job's owner, so taking the target away from the owner stops it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_runs_chain_answers_to_the_jobs_owner() {
    let app = spawn_app().await;
    let (ann, ann_token) = app.create_user("ann", false).await;
    let report = |shared: Value| {
        json!({"name": "report", "type": "INTERNAL", "taskImplFqn": "runs-report",
               "repeatSchedule": "ONDEMAND", "sharedWith": shared})
    };
    let target = job(&app, report(json!([{"id": ann}]))).await["id"]
        .as_i64()
        .unwrap();
    let query = saved_query_of(&app, &ann_token).await;
    // Every second, while the report is shared with her.
    let body = json!({"name": "ann-clock", "type": "QUERY", "savedQuery": {"id": query},
                      "repeatSchedule": "CRON", "cronExpression": "* * * * * *",
                      "onSuccess": [{"id": target}]});
    let ann_job = ok_json(
        app.send_as(&ann_token, Method::POST, "/scheduled-jobs", Some(&body))
            .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    ok_json(
        app.put(&format!("/scheduled-jobs/{target}"), &report(json!([])))
            .await,
    )
    .await;
    // Her job's scheduled runs go on (they are the system's); their chained runs now fail.
    let deadline = Instant::now() + DEADLINE;
    let refused = loop {
        let runs = runs_of(&app, target).await;
        let refused = runs.iter().find(|r| {
            r["status"] == "FAILED"
                && r["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("owner of job ann-clock"))
        });
        if let Some(run) = refused {
            break run.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no chained run of the report was refused: {runs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(refused["trigger"], "CHAINED");
    assert_eq!(refused["runBy"]["loginName"], "$system");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.ends_with(": user ann, owner of job ann-clock, may no longer run job report"),
        "{message}"
    );
    // No chained run of the report started after the refusal.
    let refused_id = refused["id"].as_i64().unwrap();
    ok_json(
        app.put(
            &format!("/scheduled-jobs/{ann_job}"),
            &json!({"name": "ann-clock", "type": "QUERY", "savedQuery": {"id": query},
                    "repeatSchedule": "ONDEMAND"}),
        )
        .await,
    )
    .await;
    let later: Vec<Value> = runs_of(&app, target)
        .await
        .into_iter()
        .filter(|r| r["id"].as_i64().unwrap() > refused_id && r["status"] == "SUCCEEDED")
        .collect();
    assert!(
        later.is_empty(),
        "the report ran after the refusal: {later:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chained_query_may_use_the_upstream_run_id_as_a_parameter() {
    let app = spawn_app().await;
    let query = ok_json(
        app.post(
            "/saved-queries",
            &json!({"title": "upstream", "sql": "SELECT :upstreamRunId AS upstream"}),
        )
        .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let target = job(
        &app,
        json!({"name": "q", "type": "QUERY", "savedQuery": {"id": query}, "repeatSchedule": "ONDEMAND"}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    app.write_script("ok.sh", "#!/bin/sh\n");
    let source = job(
        &app,
        external("source", "ok.sh", json!({"onSuccess": [{"id": target}]})),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let upstream = app.start_run(source, None).await;
    app.wait_run(source, upstream).await;
    let run = &wait_runs(&app, target, 1).await[0];
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let csv = app
        .request(
            Method::GET,
            &format!("/scheduled-jobs/{target}/runs/{}/result-file", run["id"]),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines,
        ["upstream".to_string(), upstream.to_string()],
        "{csv}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_list_across_jobs_shows_what_the_caller_may_see_newest_first_with_filters() {
    let app = spawn_app().await;
    let (_, ann_token) = app.create_user("ann", false).await;
    app.write_script("ok.sh", "#!/bin/sh\n");
    app.write_script("fail.sh", "#!/bin/sh\nexit 1\n");
    let ok = job(&app, external("ok", "ok.sh", json!({}))).await["id"]
        .as_i64()
        .unwrap();
    let bad = job(&app, external("bad", "fail.sh", json!({}))).await["id"]
        .as_i64()
        .unwrap();
    let query = saved_query_of(&app, &ann_token).await;
    let ann_job = ok_json(
        app.send_as(
            &ann_token,
            Method::POST,
            "/scheduled-jobs",
            Some(
                &json!({"name": "ann-q", "type": "QUERY", "savedQuery": {"id": query},
                          "repeatSchedule": "ONDEMAND"}),
            ),
        )
        .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let mut ids = Vec::new();
    for job_id in [ok, bad, ok, ann_job] {
        let run = app.start_run(job_id, None).await;
        app.wait_run(job_id, run).await;
        ids.push(run);
    }
    let listed = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    let all = ok_json(app.get("/scheduled-job-runs").await).await;
    let newest_first: Vec<i64> = ids.iter().rev().copied().collect();
    assert_eq!(listed(&all), newest_first);
    assert_eq!(all[0]["jobName"], "ann-q");
    assert_eq!(all[0]["jobId"], ann_job);
    // The same JSON as the per-job list.
    let per_job = ok_json(app.get(&format!("/scheduled-jobs/{bad}/runs")).await).await;
    let from_all = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["jobId"] == bad)
        .unwrap();
    assert_eq!(&per_job[0], from_all);

    let get = |path: String| {
        let app = &app;
        async move { ok_json(app.get(&path).await).await }
    };
    assert_eq!(
        listed(&get(format!("/scheduled-job-runs?jobId={ok}")).await),
        [ids[2], ids[0]]
    );
    assert_eq!(
        listed(&get("/scheduled-job-runs?status=FAILED".into()).await),
        [ids[1]]
    );
    assert_eq!(
        listed(&get("/scheduled-job-runs?trigger=MANUAL&maxResults=2&startAt=1".into()).await),
        [ids[2], ids[1]]
    );
    assert_eq!(
        listed(&get("/scheduled-job-runs?trigger=RETRY".into()).await),
        Vec::<i64>::new()
    );
    assert_eq!(
        listed(&get("/scheduled-job-runs?toDate=20000101".into()).await),
        Vec::<i64>::new()
    );
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let header_tz = app
        .request(
            Method::GET,
            &format!("/scheduled-job-runs/count?fromDate={today}&jobId={ok}"),
        )
        .header("X-OS-CLIENT-TZ", "Pacific/Kiritimati")
        .send()
        .await
        .unwrap();
    // Midnight at UTC+14 is 10:00 the day before in UTC: both runs of today are in.
    assert_eq!(ok_json(header_tz).await, json!({"count": 2}));
    assert_eq!(
        get("/scheduled-job-runs/count".into()).await,
        json!({"count": 4})
    );
    // Ann sees only the runs of her job, on both base paths.
    for base in ["/rest/ng", "/openspecimen/rest/ng"] {
        let response = app
            .client
            .get(format!("{}{base}/scheduled-job-runs", app.base))
            .header("X-OS-API-TOKEN", &ann_token)
            .send()
            .await
            .unwrap();
        assert_eq!(listed(&ok_json(response).await), [ids[3]]);
    }
    let count = app
        .send_as(&ann_token, Method::GET, "/scheduled-job-runs/count", None)
        .await;
    assert_eq!(ok_json(count).await, json!({"count": 1}));
    // Bad filters say which parameter is wrong.
    for bad_query in [
        "trigger=SOMETIMES",
        "status=DONE",
        "jobId=x",
        "fromDate=yesterday",
    ] {
        let codes = error_codes(
            app.get(&format!("/scheduled-job-runs?{bad_query}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(codes, ["INVALID_REQUEST"], "{bad_query}");
    }
    // Runs of a deleted job leave the list.
    ok_json(app.delete(&format!("/scheduled-jobs/{bad}")).await).await;
    assert_eq!(
        get("/scheduled-job-runs/count".into()).await,
        json!({"count": 3})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_list_across_jobs_reads_an_index_whatever_the_filter() {
    if crate::common::sqlite_only("checks SQLite's query plans") {
        return;
    }
    let app = spawn_app().await;
    let conn = rusqlite::Connection::open(app.data_dir.join("labcron.db")).unwrap();
    use labcron::domain::run::{RunStatus, Trigger};
    use labcron::store::runs::AllRunsFilter;
    use labcron::store::sqlite::runs::explain_list_all;
    let cases = [
        (AllRunsFilter::default(), None),
        (
            AllRunsFilter {
                job_id: Some(3),
                to: Some(1),
                ..Default::default()
            },
            Some("runs_job"),
        ),
        (
            AllRunsFilter {
                status: Some(RunStatus::Failed),
                visible_to: Some(2),
                trigger: Some(Trigger::Retry),
                ..Default::default()
            },
            Some("runs_status_id"),
        ),
    ];
    for (filter, index) in cases {
        let plan = explain_list_all(&conn, &filter).unwrap().join("\n");
        assert!(
            !plan.contains("TEMP B-TREE"),
            "sorts instead of reading in order: {plan}"
        );
        assert!(
            !plan.contains("LIST SUBQUERY") && !plan.contains("SCAN j"),
            "reads every job at each request: {plan}"
        );
        if let Some(index) = index {
            assert!(
                plan.contains(index),
                "{filter:?} does not use {index}: {plan}"
            );
        }
        // The runs table is read in id order (the rowid) or through an index, never scanned
        // and sorted.
        assert!(
            plan.contains("SCAN r") || plan.contains("SEARCH r"),
            "{plan}"
        );
    }
}
