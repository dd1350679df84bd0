//! The scheduler in real time: seconds-resolution CRON jobs fire repeatedly, updates take effect at
//! once, Closed and delete stop firing, a slow job is never stacked, downtime is handled by the
//! misfire policy, and 2,000 jobs firing in the same second are all fired.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, ok_json, spawn_app};

fn cron_job(name: &str, cron: &str) -> Value {
    json!({"name": name, "type": "EXTERNAL", "command": "quick.sh", "repeatSchedule": "CRON", "cronExpression": cron})
}

async fn runs_of(app: &TestApp, job: i64) -> Vec<Value> {
    let body = ok_json(
        app.get(&format!("/scheduled-jobs/{job}/runs?maxResults=1000"))
            .await,
    )
    .await;
    body.as_array().unwrap().clone()
}

/// Polls until the job has at least `n` runs (generous deadline for a busy machine).
async fn wait_for_runs(app: &TestApp, job: i64, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let runs = runs_of(app, job).await;
        if runs.len() >= n {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} has {} runs, expected {n}",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the job has had no new run for `quiet` (firing has stopped), returning the count.
async fn settled_run_count(app: &TestApp, job: i64, quiet: Duration) -> usize {
    let mut count = runs_of(app, job).await.len();
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(90);
    while since.elapsed() < quiet {
        assert!(Instant::now() < deadline, "job {job} kept firing");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = runs_of(app, job).await.len();
        if now != count {
            count = now;
            since = Instant::now();
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seconds_cron_job_fires_repeatedly_at_whole_seconds_as_the_system_user() {
    let app = spawn_app().await;
    app.write_script("quick.sh", "#!/bin/sh\nexit 0\n");
    let job = ok_json(
        app.post("/scheduled-jobs", &cron_job("every second", "* * * * * *"))
            .await,
    )
    .await;
    let id = job["id"].as_i64().unwrap();
    let next = job["nextRunOn"].as_i64().expect("nextRunOn");
    assert_eq!(next % 1000, 0);
    let runs = wait_for_runs(&app, id, 3).await;
    let mut instants: Vec<i64> = runs
        .iter()
        .map(|r| r["scheduledFor"].as_i64().unwrap())
        .collect();
    for run in &runs {
        assert_eq!(run["trigger"], "SCHEDULED");
        assert_eq!(run["runBy"]["loginName"], "$system");
    }
    instants.sort();
    instants.dedup();
    assert_eq!(instants.len(), runs.len(), "one run per scheduled instant");
    assert!(instants.iter().all(|t| t % 1000 == 0));

    let upcoming = ok_json(
        app.get(&format!("/scheduled-jobs/{id}/next-runs?count=3"))
            .await,
    )
    .await;
    let at: Vec<i64> = upcoming
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["at"].as_i64().unwrap())
        .collect();
    assert_eq!(at.len(), 3);
    assert_eq!(at[1] - at[0], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_takes_effect_at_once_and_closing_or_deleting_stops_firing() {
    let app = spawn_app().await;
    app.write_script("quick.sh", "#!/bin/sh\nexit 0\n");
    let yearly = app
        .create_job(&cron_job("reschedule me", "0 0 1 1 *"))
        .await;
    let other = app.create_job(&cron_job("delete me", "* * * * * *")).await;
    assert!(runs_of(&app, yearly).await.is_empty());

    ok_json(
        app.put(
            &format!("/scheduled-jobs/{yearly}"),
            &cron_job("reschedule me", "* * * * * *"),
        )
        .await,
    )
    .await;
    wait_for_runs(&app, yearly, 2).await;

    let mut closed = cron_job("reschedule me", "* * * * * *");
    closed["activityStatus"] = json!("Closed");
    ok_json(app.put(&format!("/scheduled-jobs/{yearly}"), &closed).await).await;
    let stopped_at = settled_run_count(&app, yearly, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        runs_of(&app, yearly).await.len(),
        stopped_at,
        "a Closed job fired"
    );

    // Reopening resumes firing.
    ok_json(
        app.put(
            &format!("/scheduled-jobs/{yearly}"),
            &cron_job("reschedule me", "* * * * * *"),
        )
        .await,
    )
    .await;
    wait_for_runs(&app, yearly, stopped_at + 1).await;

    wait_for_runs(&app, other, 1).await;
    assert_eq!(
        app.delete(&format!("/scheduled-jobs/{other}"))
            .await
            .status(),
        StatusCode::OK
    );
    let conn = rusqlite::Connection::open(app.data_dir.join("labcron.db")).unwrap();
    let count = || -> i64 {
        conn.query_row(
            "SELECT count(*) FROM runs WHERE job_id = ?1",
            [other],
            |r| r.get(0),
        )
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = count();
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(3) {
        assert!(Instant::now() < deadline, "a deleted job kept firing");
        tokio::time::sleep(Duration::from_millis(200)).await;
        if count() != last {
            last = count();
            since = Instant::now();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_job_is_skipped_not_stacked() {
    let app = spawn_app().await;
    app.write_script("slow.sh", "#!/bin/sh\nsleep 2.5\n");
    let job = app
        .create_job(&json!({"name": "slow", "type": "EXTERNAL", "command": "slow.sh", "repeatSchedule": "CRON",
            "cronExpression": "* * * * * *"}))
        .await;
    let start = Instant::now();
    let mut max_active = 0;
    while start.elapsed() < Duration::from_secs(7) {
        let runs = runs_of(&app, job).await;
        let active = runs
            .iter()
            .filter(|r| matches!(r["status"].as_str(), Some("QUEUED" | "IN_PROGRESS")))
            .count();
        max_active = max_active.max(active);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(max_active, 1, "fires stacked up behind a running run");
    let runs = runs_of(&app, job).await.len();
    // Seven seconds of a 2.5-second job firing every second: at most four runs, not seven.
    assert!((1..=4).contains(&runs), "{runs} runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_downtime_run_once_catches_up_once_and_skip_does_not() {
    let mut app = spawn_app().await;
    app.write_script("quick.sh", "#!/bin/sh\nexit 0\n");
    let mut catch_up = cron_job("catch up", "*/2 * * * * *");
    catch_up["misfirePolicy"] = json!("RUN_ONCE");
    let catch_up = app.create_job(&catch_up).await;
    let skip = app.create_job(&cron_job("skip", "*/2 * * * * *")).await;
    wait_for_runs(&app, catch_up, 1).await;
    wait_for_runs(&app, skip, 1).await;

    app.stop().await;
    // At least two fire instants of each job pass while the server is down.
    tokio::time::sleep(Duration::from_secs(5)).await;
    app.start_again().await;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = runs_of(&app, catch_up).await;
        let catch_ups = runs.iter().filter(|r| r["trigger"] == "CATCH_UP").count();
        let scheduled_after = runs.iter().filter(|r| r["trigger"] == "SCHEDULED").count();
        assert!(catch_ups <= 1, "more than one catch-up run");
        if catch_ups == 1 && scheduled_after >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no catch-up run after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let skipped = runs_of(&app, skip).await;
    assert_eq!(
        skipped
            .iter()
            .filter(|r| r["trigger"] == "CATCH_UP")
            .count(),
        0
    );
    // SKIP moves on: the job keeps firing on schedule after the restart.
    wait_for_runs(&app, skip, skipped.len() + 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_jobs_firing_in_the_same_second_are_all_fired() {
    const JOBS: i64 = 2000;
    let mut app = spawn_app().await;
    app.write_script("quick.sh", "#!/bin/sh\nexit 0\n");
    app.stop().await;
    // Jobs go straight into the ledger while the server is down, all firing once at `fire_at`.
    let fire_at = chrono::Utc::now() + chrono::Duration::seconds(12);
    let fire_at = fire_at - chrono::Duration::nanoseconds(fire_at.timestamp_subsec_nanos() as i64);
    let cron = fire_at.format("%S %M %H %d %m *").to_string();
    {
        let mut conn = rusqlite::Connection::open(app.data_dir.join("labcron.db")).unwrap();
        let tx = conn.transaction().unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        for i in 0..JOBS {
            tx.execute(
                "INSERT INTO jobs (name, type, repeat_schedule, cron_expression, timezone, start_date, activity_status,
                    created_by, command, timeout_seconds, max_queued_runs, created_at, updated_at)
                 VALUES (?1, 'EXTERNAL', 'CRON', ?2, 'UTC', ?3, 'Active', 2, 'quick.sh', 60, 10, ?3, ?3)",
                rusqlite::params![format!("bulk {i}"), cron, now],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    app.start_again().await;
    let conn = rusqlite::Connection::open(app.data_dir.join("labcron.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let fired: i64 = conn
            .query_row(
                "SELECT count(DISTINCT job_id) FROM runs WHERE scheduled_for = ?1 AND run_trigger = 'SCHEDULED'",
                [fire_at.timestamp_millis()],
                |r| r.get(0),
            )
            .unwrap();
        if fired == JOBS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {fired} of {JOBS} jobs fired"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let total: i64 = conn
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(total, JOBS, "exactly one run per job");
    let health = ok_json(
        app.client
            .get(format!("{}/health", app.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(health["scheduler"], "ok");
}
