//! Runs of EXTERNAL jobs: no shell, the argument vector and environment of API.md §5, exit codes,
//! timeouts killing the whole group, result files, logs, cancel, the per-job queue, idempotency,
//! and the runs list's filters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::ledger::open_db;
use crate::common::{
    AppOptions, TestApp, error_codes, ok_json, on_postgres, run_id_from_location, spawn_app,
    spawn_app_with,
};

/// Polls `check` until it holds (generous deadline: the machine may be busy).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn pid_alive(pid: i32) -> bool {
    // Signal 0 checks existence; a zombie (dead, not yet reaped) does not count as alive.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    !status.is_empty()
        && !status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_reach_the_program_literally_and_the_environment_is_exactly_the_contract() {
    let app = spawn_app().await;
    app.write_script(
        "args.sh",
        "#!/bin/sh\nfor a in \"$@\"; do printf '<%s>\\n' \"$a\"; done\nenv | sort | sed 's/^/ENV /'\n",
    );
    let job = app
        .create_job(
            &json!({"name": "args", "type": "EXTERNAL", "command": "args.sh --mode 'two words'",
            "fixedArgs": "--fixed", "repeatSchedule": "ONDEMAND", "rtArgsProvided": true}),
        )
        .await;
    let run = app
        .start_run(
            job,
            Some(r#"a;b $(touch /tmp/pwned) `id` * "q r" \$HOME ../x"#),
        )
        .await;
    let finished = app.wait_run(job, run).await;
    assert_eq!(finished["status"], "SUCCEEDED", "{finished}");
    assert_eq!(finished["exitCode"], 0);
    assert_eq!(
        finished["rtArgs"],
        r#"a;b $(touch /tmp/pwned) `id` * "q r" \$HOME ../x"#
    );
    let log = app.run_log(job, run).await;
    let args: Vec<&str> = log.lines().filter(|l| l.starts_with('<')).collect();
    assert_eq!(
        args,
        vec![
            "<--mode>",
            "<two words>",
            "<--fixed>",
            "<a;b>",
            "<$(touch>",
            "</tmp/pwned)>",
            "<`id`>",
            "<*>",
            "<q r>",
            "<$HOME>",
            "<../x>"
        ]
    );
    let env: BTreeMap<&str, &str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| *k != "PWD" && *k != "SHLVL" && *k != "_")
        .collect();
    let keys: Vec<&str> = env.keys().copied().collect();
    assert_eq!(
        keys,
        vec![
            "HOME",
            "LABCRON_JOB_ID",
            "LABCRON_JOB_NAME",
            "LABCRON_RESULT_DIR",
            "LABCRON_RUN_ID",
            "LANG",
            "OS_JOB_RUN_ID",
            "PATH",
            "TZ"
        ]
    );
    assert_eq!(env["LABCRON_RUN_ID"], run.to_string());
    assert_eq!(env["OS_JOB_RUN_ID"], run.to_string());
    assert_eq!(env["LABCRON_JOB_NAME"], "args");
    assert!(env["LABCRON_RESULT_DIR"].ends_with(&format!("runs/{job}/{run}/result")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_program_fails_the_run_with_its_exit_code_and_last_stderr_line() {
    let app = spawn_app().await;
    app.write_script("fail.sh", "#!/bin/sh\necho working\necho 'first problem' >&2\necho 'disk quota exceeded' >&2\nexit 3\n");
    let job = app.create_external_job("fails", "fail.sh").await;
    let run = app.start_run(job, None).await;
    let finished = app.wait_run(job, run).await;
    assert_eq!(finished["status"], "FAILED");
    assert_eq!(finished["exitCode"], 3);
    assert_eq!(finished["message"], "exit code 3: disk quota exceeded");
    assert!(finished["startedAt"].as_i64().unwrap() >= finished["queuedAt"].as_i64().unwrap());
    assert!(finished["durationMs"].as_i64().is_some());

    std::fs::write(app.scripts_dir.join("not-executable.sh"), "#!/bin/sh\n").unwrap();
    let job = app
        .create_external_job("no exec bit", "not-executable.sh")
        .await;
    let run = app.start_run(job, None).await;
    let finished = app.wait_run(job, run).await;
    assert_eq!(finished["status"], "FAILED");
    assert!(
        finished["message"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{finished}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_whole_process_group() {
    let app = spawn_app_with(AppOptions {
        kill_grace_seconds: Some(1),
        ..AppOptions::default()
    })
    .await;
    let pids = app.data_dir.join("pids");
    app.write_script(
        "hang.sh",
        &format!(
            "#!/bin/sh\nsleep 300 &\necho $! > {0}\necho $$ >> {0}\ntrap '' TERM\nwait\n",
            pids.display()
        ),
    );
    let job = app
        .create_job(&json!({"name": "hang", "type": "EXTERNAL", "command": "hang.sh", "repeatSchedule": "ONDEMAND",
            "timeoutSeconds": 2}))
        .await;
    let run = app.start_run(job, None).await;
    let finished = app.wait_run(job, run).await;
    assert_eq!(finished["status"], "FAILED");
    assert_eq!(finished["message"], "timed out after 2 s");
    let pids: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        eventually(
            &format!("process {pid} gone"),
            || async move { !pid_alive(pid) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_files_one_several_and_stdout() {
    let app = spawn_app().await;
    app.write_script(
        "one.sh",
        "#!/bin/sh\nprintf 'id,name\\n1,\"a,b\"\\n' > \"$LABCRON_RESULT_DIR/specimens.csv\"\n",
    );
    app.write_script(
        "many.sh",
        "#!/bin/sh\necho a > \"$LABCRON_RESULT_DIR/a.txt\"\nmkdir \"$LABCRON_RESULT_DIR/sub\"\necho b > \"$LABCRON_RESULT_DIR/sub/b.csv\"\n",
    );
    app.write_script(
        "stdout.sh",
        "#!/bin/sh\necho 'x,y'\necho '1,2'\necho 'only in the log' >&2\n",
    );
    app.write_script("none.sh", "#!/bin/sh\necho nothing\n");

    let one = app.create_external_job("one file", "one.sh").await;
    let run = app.start_run(one, None).await;
    let finished = app.wait_run(one, run).await;
    assert_eq!(finished["logFilePath"], "specimens.csv");
    let file = app
        .get(&format!("/scheduled-jobs/{one}/runs/{run}/result-file"))
        .await;
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(file.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        file.headers()["content-disposition"],
        "attachment; filename=\"specimens.csv\""
    );
    assert_eq!(file.headers()["x-content-type-options"], "nosniff");
    assert_eq!(file.text().await.unwrap(), "id,name\n1,\"a,b\"\n");
    let ranged = app
        .request(
            Method::GET,
            &format!("/scheduled-jobs/{one}/runs/{run}/result-file"),
        )
        .header("Range", "bytes=3-6")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.text().await.unwrap(), "name");

    let many = app.create_external_job("Many files!", "many.sh").await;
    let run = app.start_run(many, None).await;
    let finished = app.wait_run(many, run).await;
    assert_eq!(finished["logFilePath"], format!("Many_files__{run}.zip"));
    let zip = app
        .get(&format!("/scheduled-jobs/{many}/runs/{run}/result-file"))
        .await;
    assert_eq!(zip.headers()["content-type"], "application/zip");
    let bytes = zip.bytes().await.unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut names: Vec<String> = (0..archive.len())
        .map(|i| archive.by_index(i).unwrap().name().to_string())
        .collect();
    names.sort();
    assert_eq!(names, vec!["a.txt", "sub/b.csv"]);

    let out = app
        .create_job(
            &json!({"name": "From stdout", "type": "EXTERNAL", "command": "stdout.sh",
            "repeatSchedule": "ONDEMAND", "resultFromStdout": true}),
        )
        .await;
    let run = app.start_run(out, None).await;
    let finished = app.wait_run(out, run).await;
    assert_eq!(finished["logFilePath"], format!("From_stdout_{run}.csv"));
    let csv = app
        .get(&format!("/scheduled-jobs/{out}/runs/{run}/result-file"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(csv, "x,y\n1,2\n");
    let log = app.run_log(out, run).await;
    assert_eq!(log, "only in the log\n");

    let none = app.create_external_job("no result", "none.sh").await;
    let run = app.start_run(none, None).await;
    app.wait_run(none, run).await;
    let missing = app
        .get(&format!("/scheduled-jobs/{none}/runs/{run}/result-file"))
        .await;
    assert_eq!(
        error_codes(missing, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_RESULT_DATA_FILE_NOT_AVAILABLE"]
    );

    // A result file removed (from disk, or its pieces from the database, as retention does) is
    // "not found".
    let run = app.start_run(one, None).await;
    app.wait_run(one, run).await;
    if on_postgres() {
        let data_dir = app.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            let files = open_db(&data_dir)
                .files_in_ledger()
                .expect("run files in the database");
            let deleted = files
                .delete(&[run], labcron::store::files::FileKind::Result)
                .unwrap();
            assert_eq!(deleted, 1);
        })
        .await
        .unwrap();
    } else {
        std::fs::remove_file(
            app.data_dir
                .join(format!("runs/{one}/{run}/result/specimens.csv")),
        )
        .unwrap();
    }
    let removed = app
        .get(&format!("/scheduled-jobs/{one}/runs/{run}/result-file"))
        .await;
    assert_eq!(
        error_codes(removed, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_RESULT_DATA_FILE_NOT_FOUND"]
    );
    // A run id of another job is not found, whatever the job id says.
    let other = app
        .get(&format!("/scheduled-jobs/{many}/runs/{run}/result-file"))
        .await;
    assert_eq!(
        error_codes(other, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_JOB_RUN_NOT_FOUND"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_capped_readable_from_an_offset_and_followable() {
    let app = spawn_app_with(AppOptions {
        log_cap_bytes: Some(1000),
        ..AppOptions::default()
    })
    .await;
    app.write_script(
        "chatty.sh",
        "#!/bin/sh\ni=0\nwhile [ $i -lt 2000 ]; do echo \"line $i\"; i=$((i+1)); done\n",
    );
    let job = app.create_external_job("chatty", "chatty.sh").await;
    let run = app.start_run(job, None).await;
    let finished = app.wait_run(job, run).await;
    assert_eq!(
        finished["status"], "SUCCEEDED",
        "a full log must not block the program"
    );
    assert_eq!(finished["logTruncated"], true);
    let log = app.run_log(job, run).await;
    assert!(log.starts_with("line 0\nline 1\n"));
    assert!(
        log.ends_with("[labcron: log truncated at 1000 bytes]\n"),
        "{log}"
    );
    assert_eq!(finished["logSize"].as_u64().unwrap() as usize, log.len());
    let tail = app
        .get(&format!("/scheduled-jobs/{job}/runs/{run}/log?offset=7"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(tail, log[7..]);

    // Follow a run that writes slowly: the response streams until the run ends.
    app.write_script(
        "slow.sh",
        "#!/bin/sh\nfor i in 1 2 3; do echo \"tick $i\"; sleep 0.3; done\n",
    );
    let slow = app.create_external_job("slow", "slow.sh").await;
    let run = app.start_run(slow, None).await;
    let followed = app
        .get(&format!(
            "/scheduled-jobs/{slow}/runs/{run}/log?follow=true"
        ))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(followed, "tick 1\ntick 2\ntick 3\n");
    assert_eq!(app.run_status(slow, run).await, "SUCCEEDED");

    let run = app.start_run(slow, None).await;
    let events = app
        .request(
            Method::GET,
            &format!("/scheduled-jobs/{slow}/runs/{run}/log?follow=true"),
        )
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let text = events.text().await.unwrap();
    let data: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| l.starts_with("tick"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(data, "tick 1\ntick 2\ntick 3\n");
    assert!(text.ends_with("event: end\ndata: SUCCEEDED\n\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_runs_of_one_job_run_one_at_a_time_in_order_and_none_is_lost() {
    let app = spawn_app().await;
    let trace = app.data_dir.join("trace");
    app.write_script(
        "serial.sh",
        &format!(
            "#!/bin/sh\necho \"start $1\" >> {0}\nsleep 0.05\necho \"end $1\" >> {0}\n",
            trace.display()
        ),
    );
    let job = app
        .create_job(&json!({"name": "serial", "type": "EXTERNAL", "command": "serial.sh", "repeatSchedule": "ONDEMAND", "rtArgsProvided": true,
            "maxQueuedRuns": 50}))
        .await;
    let requests = (0..20).map(|i| {
        let request = app
            .request(
                Method::POST,
                &format!("/scheduled-jobs/{job}/runs?response=run"),
            )
            .json(&json!({"args": format!("{i}")}));
        async move { request.send().await.unwrap() }
    });
    let responses = futures_util::future::join_all(requests).await;
    let mut accepted = Vec::new();
    for response in responses {
        let location_id = run_id_from_location(&response);
        let run = ok_json(response).await;
        assert_eq!(run["id"], location_id);
        accepted.push((
            run["id"].as_i64().unwrap(),
            run["rtArgs"].as_str().unwrap().to_string(),
        ));
    }
    accepted.sort();
    let mut last_end = 0;
    for (run_id, _) in &accepted {
        let run = app.wait_run(job, *run_id).await;
        assert_eq!(run["status"], "SUCCEEDED");
        let (start, end) = (
            run["startedAt"].as_i64().unwrap(),
            run["finishedAt"].as_i64().unwrap(),
        );
        assert!(
            start >= last_end,
            "run {run_id} started before the previous one ended"
        );
        last_end = end;
    }
    // The program saw the runs strictly one after another, in the order they were accepted.
    let expected: Vec<String> = accepted
        .iter()
        .flat_map(|(_, arg)| [format!("start {arg}"), format!("end {arg}")])
        .collect();
    let seen: Vec<String> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(seen, expected);
    let listed = ok_json(
        app.get(&format!("/scheduled-jobs/{job}/runs?maxResults=1000"))
            .await,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 20);
}

/// The run log is labcron's own file, made (mode 0600) before the program starts: a quiet run's is
/// empty and reads as empty; a run that writes has its output there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_run_has_an_empty_log_and_a_run_that_writes_its_output() {
    let app = spawn_app().await;
    app.write_script("quiet.sh", "#!/bin/sh\nexit 0\n");
    app.write_script("talks.sh", "#!/bin/sh\necho hello >&2\n");
    let quiet = app.create_external_job("quiet", "quiet.sh").await;
    let talks = app.create_external_job("talks", "talks.sh").await;
    for (job, expected) in [(quiet, ""), (talks, "hello\n")] {
        let run_id = app.start_run(job, None).await;
        let run = app.wait_run(job, run_id).await;
        assert_eq!(run["status"], "SUCCEEDED", "{run}");
        assert_eq!(run["logSize"], expected.len(), "{run}");
        let file = app.data_dir.join(format!("runs/{job}/{run_id}/run.log"));
        // On PostgreSQL the log is in the database and the run's directory is gone.
        assert_eq!(file.exists(), !on_postgres(), "{}", file.display());
        if !on_postgres() {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::symlink_metadata(&file).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
            assert_eq!(meta.len(), expected.len() as u64);
        }
        let log = app
            .get(&format!("/scheduled-jobs/{job}/runs/{run_id}/log"))
            .await;
        assert_eq!(log.status(), StatusCode::OK);
        assert_eq!(log.text().await.unwrap(), expected);
    }
}

/// On a server with one run slot: two jobs `<prefix> a` and `<prefix> b` of a script that waits
/// for the file `gate`, and a run of `a` holding the slot. Answers (gate, a, b, that run).
async fn first_run_holds_the_slot(
    app: &TestApp,
    prefix: &str,
) -> (std::path::PathBuf, i64, i64, i64) {
    let gate = app.data_dir.join("gate");
    app.write_script(
        "gated.sh",
        &format!(
            "#!/bin/sh\nwhile [ ! -e {0} ]; do sleep 0.02; done\n",
            gate.display()
        ),
    );
    let a = app
        .create_external_job(&format!("{prefix} a"), "gated.sh")
        .await;
    let b = app
        .create_external_job(&format!("{prefix} b"), "gated.sh")
        .await;
    let first = app.start_run(a, None).await;
    eventually("the first run holds the only slot", || async {
        app.run_status(a, first).await == "IN_PROGRESS"
    })
    .await;
    (gate, a, b, first)
}

/// With one run slot for the whole server, a run that ends hands the slot to the oldest runnable
/// run in the transaction that records its end: the next run starts at the very instant the
/// previous one finished (the dispatcher's own claim would come after that commit, later), the
/// runs go oldest first across jobs, and no two ever overlap.
/// `node` (API.md §7): null while a run waits, the claiming node's `node_name` from its start on,
/// in a run's JSON, a job's runs list and the list of all runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_names_the_node_that_executed_it_from_its_start() {
    let app = spawn_app_with(AppOptions {
        max_concurrent_runs: Some(1),
        configure: Some(|settings| settings.node_name = "lab-node-7".into()),
        ..AppOptions::default()
    })
    .await;
    let (gate, a, b, first) = first_run_holds_the_slot(&app, "node").await;
    let waiting = app.start_run(b, None).await;
    let run = ok_json(
        app.get(&format!("/scheduled-jobs/{b}/runs/{waiting}"))
            .await,
    )
    .await;
    assert_eq!(run["status"], "QUEUED", "{run}");
    assert!(run["node"].is_null() && run.get("node").is_some(), "{run}");
    let running = ok_json(app.get(&format!("/scheduled-jobs/{a}/runs/{first}")).await).await;
    assert_eq!(running["node"], "lab-node-7", "{running}");
    std::fs::write(&gate, "open").unwrap();
    for (job, run_id) in [(a, first), (b, waiting)] {
        let run = app.wait_run(job, run_id).await;
        assert_eq!(run["status"], "SUCCEEDED", "{run}");
        assert_eq!(run["node"], "lab-node-7", "{run}");
        let list = ok_json(app.get(&format!("/scheduled-jobs/{job}/runs")).await).await;
        assert_eq!(list[0]["node"], "lab-node-7", "{list}");
    }
    let all = ok_json(app.get("/scheduled-job-runs").await).await;
    let nodes: Vec<&Value> = all.as_array().unwrap().iter().map(|r| &r["node"]).collect();
    assert_eq!(nodes, [&json!("lab-node-7"), &json!("lab-node-7")], "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finishing_run_hands_its_slot_to_the_oldest_queued_run() {
    let app = spawn_app_with(AppOptions {
        max_concurrent_runs: Some(1),
        ..AppOptions::default()
    })
    .await;
    let (gate, a, b, first) = first_run_holds_the_slot(&app, "hand-over").await;
    // Queued behind it: b's run, then a's second (a's own next run also waits for its first).
    let second = app.start_run(b, None).await;
    let third = app.start_run(a, None).await;
    assert_eq!(app.run_status(b, second).await, "QUEUED", "one slot only");
    std::fs::write(&gate, "open").unwrap();

    let mut previous: Option<Value> = None;
    for (job, run_id) in [(a, first), (b, second), (a, third)] {
        let run = app.wait_run(job, run_id).await;
        assert_eq!(run["status"], "SUCCEEDED", "{run}");
        if let Some(before) = &previous {
            assert_eq!(
                run["startedAt"], before["finishedAt"],
                "run {run_id} took the slot when run {} ended: {run} after {before}",
                before["id"]
            );
        }
        previous = Some(run);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_limit_idempotency_and_closed_jobs() {
    let app = spawn_app().await;
    let gate = app.data_dir.join("gate");
    app.write_script(
        "wait.sh",
        &format!(
            "#!/bin/sh\nwhile [ ! -e {} ]; do sleep 0.05; done\n",
            gate.display()
        ),
    );
    let job = app
        .create_job(&json!({"name": "limited", "type": "EXTERNAL", "command": "wait.sh", "repeatSchedule": "ONDEMAND",
            "maxQueuedRuns": 2}))
        .await;
    let first = app.start_run(job, None).await;
    let app_ref = &app;
    eventually("first run in progress", || async move {
        app_ref.run_status(job, first).await == "IN_PROGRESS"
    })
    .await;
    let second = app.start_run(job, None).await;
    let third = app.start_run(job, None).await;
    assert_eq!(app.run_status(job, second).await, "QUEUED");
    let full = app
        .post(&format!("/scheduled-jobs/{job}/runs"), &json!({}))
        .await;
    assert_eq!(
        error_codes(full, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_QUEUE_FULL"]
    );

    // A repeated Idempotency-Key returns the first run and queues nothing (even with a full queue).
    let keyed = |key: &'static str| {
        app.request(
            Method::POST,
            &format!("/scheduled-jobs/{job}/runs?response=run"),
        )
        .header("Idempotency-Key", key)
        .json(&json!({}))
        .send()
    };
    let cancelled = ok_json(
        app.post(
            &format!("/scheduled-jobs/{job}/runs/{third}/cancel"),
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(cancelled["status"], "FAILED");
    assert_eq!(cancelled["message"], "cancelled by admin");
    let a = ok_json(keyed("order-42").await.unwrap()).await;
    let b = ok_json(keyed("order-42").await.unwrap()).await;
    assert_eq!(a["id"], b["id"]);
    let queued = ok_json(
        app.get(&format!("/scheduled-jobs/{job}/runs?status=QUEUED"))
            .await,
    )
    .await;
    assert_eq!(queued.as_array().unwrap().len(), 2);

    std::fs::write(&gate, "").unwrap();
    for run in [first, second, a["id"].as_i64().unwrap()] {
        assert_eq!(app.wait_run(job, run).await["status"], "SUCCEEDED");
    }

    let mut closed = json!({"name": "limited", "type": "EXTERNAL", "command": "wait.sh", "repeatSchedule": "ONDEMAND"});
    closed["activityStatus"] = json!("Closed");
    ok_json(app.put(&format!("/scheduled-jobs/{job}"), &closed).await).await;
    let refused = app
        .post(&format!("/scheduled-jobs/{job}/runs"), &json!({}))
        .await;
    assert_eq!(
        error_codes(refused, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_NOT_ACTIVE"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_run_stops_its_group_and_says_who() {
    let app = spawn_app_with(AppOptions {
        kill_grace_seconds: Some(1),
        ..AppOptions::default()
    })
    .await;
    app.write_script("long.sh", "#!/bin/sh\necho started\nsleep 300\n");
    let job = app.create_external_job("long", "long.sh").await;
    let run = app.start_run(job, None).await;
    let app_ref = &app;
    eventually("run in progress", || async move {
        app_ref.run_status(job, run).await == "IN_PROGRESS"
    })
    .await;
    let cancelled = ok_json(
        app.post(
            &format!("/scheduled-jobs/{job}/runs/{run}/cancel"),
            &json!({}),
        )
        .await,
    )
    .await;
    let finished = if cancelled["status"] == "FAILED" {
        cancelled
    } else {
        app.wait_run(job, run).await
    };
    assert_eq!(finished["status"], "FAILED");
    assert_eq!(finished["message"], "cancelled by admin");
    let again = app
        .post(
            &format!("/scheduled-jobs/{job}/runs/{run}/cancel"),
            &json!({}),
        )
        .await;
    assert_eq!(
        error_codes(again, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_RUN_NOT_CANCELLABLE"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posting_a_run_answers_with_the_job_and_a_location() {
    let app = spawn_app().await;
    app.write_script("ok.sh", "#!/bin/sh\n");
    let job = app.create_external_job("located", "ok.sh").await;
    let response = app
        .client
        .post(format!(
            "{}/openspecimen/rest/ng/scheduled-jobs/{job}/runs",
            app.base
        ))
        .header("X-OS-API-TOKEN", &app.token)
        .send()
        .await
        .unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body = ok_json(response).await;
    assert_eq!(body["id"], job, "the job object, as OpenSpecimen answers");
    assert_eq!(body["name"], "located");
    assert!(
        location.starts_with(&format!("/openspecimen/rest/ng/scheduled-jobs/{job}/runs/")),
        "{location}"
    );
    let run_id: i64 = location.rsplit('/').next().unwrap().parse().unwrap();
    // The run was in the ledger before the answer.
    let stored = crate::common::ledger::sql_i64(
        &app.data_dir,
        &format!("SELECT count(*) FROM runs WHERE id = {run_id}"),
    );
    assert_eq!(stored, 1);
    let run = app.wait_run(job, run_id).await;
    assert_eq!(run["trigger"], "MANUAL");
    assert_eq!(run["runBy"]["loginName"], "admin");
    let bad_args = app
        .post(
            &format!("/scheduled-jobs/{job}/runs"),
            &json!({"args": "'unterminated"}),
        )
        .await;
    assert_eq!(
        error_codes(bad_args, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_INVALID_RUN_ARGS"]
    );
    let wrong_type = app
        .post(&format!("/scheduled-jobs/{job}/runs"), &json!({"args": 5}))
        .await;
    assert_eq!(
        error_codes(wrong_type, StatusCode::BAD_REQUEST).await,
        vec!["INVALID_REQUEST"]
    );
    let job_after = ok_json(app.get(&format!("/scheduled-jobs/{job}")).await).await;
    assert!(job_after["lastRunOn"].as_i64().is_some());
}

async fn run_ids(app: &TestApp, job: i64, query: &str, headers: &[(&str, &str)]) -> Vec<i64> {
    let mut request = app.request(Method::GET, &format!("/scheduled-jobs/{job}/runs{query}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = ok_json(request.send().await.unwrap()).await;
    body.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_list_filters_by_creation_date_in_every_accepted_format() {
    let app = spawn_app().await;
    app.write_script("ok.sh", "#!/bin/sh\n");
    app.write_script("bad.sh", "#!/bin/sh\nexit 1\n");
    let job = app.create_external_job("dated", "ok.sh").await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        let run = app.start_run(job, None).await;
        app.wait_run(job, run).await;
        runs.push(run);
    }
    // Move the first run to a fixed instant, 2026-01-15T12:00:00Z, in the ledger.
    let queued_at: i64 = 1_768_478_400_000;
    crate::common::ledger::sql_rows(
        &app.data_dir,
        &format!(
            "UPDATE runs SET queued_at = {queued_at} WHERE id = {}",
            runs[0]
        ),
    );
    let recent = vec![runs[2], runs[1]];

    assert_eq!(
        run_ids(&app, job, "", &[]).await,
        vec![runs[2], runs[1], runs[0]]
    );
    assert_eq!(run_ids(&app, job, "?fromDate=20260116", &[]).await, recent);
    assert_eq!(
        run_ids(&app, job, "?toDate=20260115", &[]).await,
        vec![runs[0]]
    );
    assert_eq!(
        run_ids(&app, job, "?toDate=20260114", &[]).await,
        Vec::<i64>::new()
    );
    assert_eq!(
        run_ids(&app, job, "?toDate=2026-01-15", &[]).await,
        vec![runs[0]]
    );
    assert_eq!(
        run_ids(
            &app,
            job,
            "?fromDate=20260115T120000&toDate=20260115T120000",
            &[]
        )
        .await,
        vec![runs[0]]
    );
    assert_eq!(
        run_ids(&app, job, "?fromDate=20260115T120001&toDate=20260116", &[]).await,
        Vec::<i64>::new()
    );
    assert_eq!(
        run_ids(
            &app,
            job,
            "?fromDate=2026-01-15%2012:00&toDate=2026-01-15%2012:00",
            &[]
        )
        .await,
        vec![runs[0]]
    );
    assert_eq!(
        run_ids(&app, job, &format!("?fromDate={}", queued_at + 1), &[]).await,
        recent
    );
    assert_eq!(
        run_ids(&app, job, "?toDate=2026-01-15T13:00:00%2B01:00", &[]).await,
        vec![runs[0]]
    );
    assert_eq!(
        run_ids(&app, job, "?toDate=2026-01-15T12:59:59%2B01:00", &[]).await,
        Vec::<i64>::new()
    );
    // Times without an offset are in the client's zone: 15 January ends at 09:59:59Z in Kiritimati (+14)...
    let kiritimati = [("X-OS-CLIENT-TZ", "Pacific/Kiritimati")];
    assert_eq!(
        run_ids(&app, job, "?toDate=20260115", &kiritimati).await,
        Vec::<i64>::new()
    );
    assert_eq!(
        run_ids(
            &app,
            job,
            "?fromDate=2026-01-16%2001:00&toDate=2026-01-16%2002:00",
            &kiritimati
        )
        .await,
        vec![runs[0]]
    );
    // ...and 12:00 in New York is 17:00Z.
    let new_york = [("X-OS-CLIENT-TZ", "America/New_York")];
    assert_eq!(
        run_ids(
            &app,
            job,
            "?fromDate=20260115T070000&toDate=20260115T070000",
            &new_york
        )
        .await,
        vec![runs[0]]
    );
    assert_eq!(
        run_ids(&app, job, "?maxResults=1&startAt=1", &[]).await,
        vec![runs[1]]
    );
    assert_eq!(
        run_ids(&app, job, "?status=FAILED", &[]).await,
        Vec::<i64>::new()
    );
    assert_eq!(run_ids(&app, job, "?status=SUCCEEDED", &[]).await.len(), 3);

    let bad = app
        .get(&format!("/scheduled-jobs/{job}/runs?fromDate=yesterday"))
        .await;
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body[0]["code"], "INVALID_REQUEST");
    assert!(body[0]["message"].as_str().unwrap().contains("fromDate"));
    let bad_status = app
        .get(&format!("/scheduled-jobs/{job}/runs?status=DONE"))
        .await;
    assert_eq!(
        error_codes(bad_status, StatusCode::BAD_REQUEST).await,
        vec!["INVALID_REQUEST"]
    );
    let bad_tz = app
        .request(Method::GET, &format!("/scheduled-jobs/{job}/runs"))
        .header("X-OS-CLIENT-TZ", "Mars/Base")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_codes(bad_tz, StatusCode::BAD_REQUEST).await,
        vec!["INVALID_REQUEST"]
    );
    let other_job = app.create_external_job("other", "bad.sh").await;
    let foreign = app
        .get(&format!("/scheduled-jobs/{other_job}/runs/{}", runs[0]))
        .await;
    assert_eq!(
        error_codes(foreign, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_JOB_RUN_NOT_FOUND"]
    );
}

/// Who may run a job is checked in the write that queues the run, and the answer is read there
/// too: a user the job is not shared with, or a job that does not exist, is refused and nothing is
/// queued; a user it is shared with gets the job (or, with `response=run`, the new run), its
/// `Location` naming the run that was queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_request_is_checked_and_answered_in_the_write_that_queues_it() {
    let app = spawn_app().await;
    app.write_script("ok.sh", "#!/bin/sh\nexit 0\n");
    let (runner_id, runner) = app.create_user("runner", false).await;
    let (_, stranger) = app.create_user("stranger", false).await;
    let job = app
        .create_job(
            &json!({"name": "shared", "type": "EXTERNAL", "command": "ok.sh",
            "repeatSchedule": "ONDEMAND", "sharedWith": [{"id": runner_id}]}),
        )
        .await;
    let post = |token: &str, path: String| {
        app.request_as(token, Method::POST, &path)
            .json(&json!({}))
            .send()
    };
    let runs_path = format!("/scheduled-jobs/{job}/runs");

    let refused = post(&stranger, runs_path.clone()).await.unwrap();
    assert_eq!(
        error_codes(refused, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_OP_NOT_ALLOWED"]
    );
    let missing = post(&runner, format!("/scheduled-jobs/{}/runs", job + 1000))
        .await
        .unwrap();
    assert_eq!(
        error_codes(missing, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_NOT_FOUND"]
    );
    let listed = ok_json(app.get(&runs_path).await).await;
    assert_eq!(
        listed.as_array().unwrap().len(),
        0,
        "a refusal queued a run"
    );

    let answered = post(&runner, runs_path.clone()).await.unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    let first = run_id_from_location(&answered);
    let body = ok_json(answered).await;
    assert_eq!(body["id"], job);
    assert_eq!(body["name"], "shared");
    assert_eq!(body["sharedWith"][0]["id"], runner_id);

    let as_run = post(&runner, format!("{runs_path}?response=run"))
        .await
        .unwrap();
    assert_eq!(as_run.status(), StatusCode::OK);
    let second = run_id_from_location(&as_run);
    let run = ok_json(as_run).await;
    assert_ne!(first, second);
    assert_eq!(run["id"], second);
    assert_eq!(run["jobId"], job);
    assert_eq!(run["runBy"]["id"], runner_id);
    assert!(
        matches!(
            run["status"].as_str(),
            Some("QUEUED" | "IN_PROGRESS" | "SUCCEEDED")
        ),
        "{run}"
    );
    for id in [first, second] {
        assert_eq!(app.wait_run(job, id).await["status"], "SUCCEEDED");
    }
    let listed = ok_json(app.get(&runs_path).await).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
}

/// With `TIMELINE_FILE` set (the measuring aid behind README "Durability"), the real binary
/// writes one line per run with every phase stamped, in the order a run goes through them, and
/// one line per group commit of the ledger writer with its three stamps in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_stamps_every_phase_of_each_run_in_order() {
    if crate::common::sqlite_only("the group-commit stamps are the SQLite writer's") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let timeline = dir.path().join("timeline");
    crate::common::write_script(&data_dir.join("scripts"), "quick.sh", "#!/bin/sh\nexit 0\n");
    let server = crate::common::Launch::new(&data_dir)
        .no_example_jobs()
        .env("TIMELINE_FILE", &timeline)
        .start();
    let api = server.admin().await;
    let job = api
        .create_job(
            &json!({"name": "timed", "type": "EXTERNAL", "command": "quick.sh",
            "repeatSchedule": "ONDEMAND"}),
        )
        .await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        let run = api
            .ok(
                Method::POST,
                &format!("/scheduled-jobs/{job}/runs?response=run"),
                Some(&json!({})),
            )
            .await;
        runs.push(run["id"].as_i64().unwrap());
    }
    const PHASES: [&str; 13] = [
        "claimed",
        "committed",
        "task",
        "loaded",
        "spawn0",
        "spawned",
        "exited",
        "swept",
        "drained",
        "end_queued",
        "end_exec",
        "end_committed",
        "done",
    ];
    // A run's line is written once its end is recorded, just after the end is visible.
    let deadline = Instant::now() + Duration::from_secs(60);
    let lines = loop {
        let text = std::fs::read_to_string(&timeline).unwrap_or_default();
        let lines: BTreeMap<i64, BTreeMap<String, u64>> = text
            .lines()
            .filter_map(|l| l.strip_prefix("R "))
            .map(|l| {
                let mut words = l.split(' ');
                let id = words.next().unwrap().parse().unwrap();
                let stamps = words
                    .map(|w| {
                        let (phase, ns) = w.split_once('=').unwrap();
                        (phase.to_string(), ns.parse().unwrap())
                    })
                    .collect();
                (id, stamps)
            })
            .collect();
        if runs.iter().all(|r| lines.contains_key(r)) {
            break (text, lines);
        }
        assert!(Instant::now() < deadline, "no line for every run: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (text, stamped) = lines;
    for run in &runs {
        let stamps = &stamped[run];
        let times: Vec<u64> = PHASES
            .iter()
            .map(|p| {
                *stamps
                    .get(*p)
                    .unwrap_or_else(|| panic!("run {run} has no {p}: {text}"))
            })
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "run {run}'s phases out of order: {stamps:?}"
        );
    }
    let commits: Vec<Vec<u64>> = text
        .lines()
        .filter_map(|l| l.strip_prefix("B "))
        .map(|l| l.split(' ').map(|w| w.parse().unwrap()).collect())
        .collect();
    assert!(!commits.is_empty(), "no group commit line: {text}");
    for commit in &commits {
        assert_eq!(commit.len(), 4, "{commit:?}");
        assert!(
            commit[0] >= 1 && commit[1] <= commit[2] && commit[2] <= commit[3],
            "{commit:?}"
        );
    }
}

/// A result file downloads with the same headers on either engine (a file in the data directory
/// on SQLite, pieces in the database on PostgreSQL): UTF-8 text, validators, and the conditions
/// on them answered as HTTP says (304, 412, `If-Range`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_file_has_validators_and_answers_conditional_requests() {
    let app = spawn_app().await;
    app.write_script(
        "notes.sh",
        "#!/bin/sh\nprintf 'zwölf Proben\\n' > \"$LABCRON_RESULT_DIR/notes.txt\"\n",
    );
    let job = app.create_external_job("notes", "notes.sh").await;
    let run = app.start_run(job, None).await;
    assert_eq!(app.wait_run(job, run).await["status"], "SUCCEEDED");
    let url = format!("/scheduled-jobs/{job}/runs/{run}/result-file");
    let get = |headers: &[(&str, &str)]| {
        let mut request = app.request(Method::GET, &url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let whole = get(&[]).await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name}: {:?}", response.headers()))
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(header(&whole, "content-type"), "text/plain; charset=utf-8");
    let etag = header(&whole, "etag");
    let last_modified = header(&whole, "last-modified");
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "a strong tag: {etag}"
    );
    assert_eq!(whole.text().await.unwrap(), "zwölf Proben\n");

    // The client's copy is this one: 304, no body.
    for condition in [
        ("If-None-Match", etag.as_str()),
        ("If-Modified-Since", &last_modified),
    ] {
        let response = get(&[condition]).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{condition:?}");
        assert_eq!(header(&response, "etag"), etag);
        assert!(response.bytes().await.unwrap().is_empty());
    }
    // Another copy: the file.
    let other = get(&[("If-None-Match", "\"another\"")]).await.unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(other.text().await.unwrap(), "zwölf Proben\n");
    // If-Match on another copy: 412; on this one: the file.
    let failed = get(&[("If-Match", "\"another\"")]).await.unwrap();
    assert_eq!(failed.status(), StatusCode::PRECONDITION_FAILED);
    let matched = get(&[("If-Match", etag.as_str())]).await.unwrap();
    assert_eq!(matched.status(), StatusCode::OK);
    // A range on condition of this copy is sent; on another, the whole file is.
    let ranged = get(&[("Range", "bytes=0-4"), ("If-Range", etag.as_str())])
        .await
        .unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.text().await.unwrap(), "zwöl");
    let by_date = get(&[("Range", "bytes=0-4"), ("If-Range", &last_modified)])
        .await
        .unwrap();
    assert_eq!(by_date.status(), StatusCode::PARTIAL_CONTENT);
    let stale = get(&[("Range", "bytes=0-4"), ("If-Range", "\"another\"")])
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.text().await.unwrap(), "zwölf Proben\n");
}
