//! The scheduler in real time: seconds-resolution CRON jobs fire repeatedly, updates take effect at
//! once, Closed and delete stop firing, a slow job is never stacked, downtime is handled by the
//! misfire policy, 2,000 jobs firing in the same second are all fired, 10,000 fires leave the
//! `JobScheduler` one entry per active job, and a job imported by the CLI while the server runs
//! fires at its first instant.

use std::time::{Duration, Instant};

use chrono::Timelike;
use labcron::scheduler::library::Held;
use labcron::startup::Application;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{AppOptions, TestApp, ok_json, spawn_app, spawn_app_with};
use crate::metrics::scrape;

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
    let count = || -> i64 {
        crate::common::ledger::sql_i64(
            &app.data_dir,
            &format!("SELECT count(*) FROM runs WHERE job_id = {other}"),
        )
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

/// A change reaches the running scheduler a moment after it is saved; an instant that passed in
/// that moment is the scheduler's own delay, not downtime: it fires late, as scheduled, and
/// is no catch-up. Here another process reopens a `RUN_ONCE` every-second job, saying it
/// changed (and started) three seconds ago, so instants passed before the scheduler saw it: the latest
/// fires late as `SCHEDULED`, the older ones are counted as missed, and nothing catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instant_passed_while_a_change_reached_the_scheduler_fires_late_not_as_a_catch_up() {
    let app = spawn_app().await;
    app.write_script("quick.sh", "#!/bin/sh\nexit 0\n");
    let mut body = cron_job("reopened", "* * * * * *");
    body["misfirePolicy"] = json!("RUN_ONCE");
    body["activityStatus"] = json!("Closed");
    let job = app.create_job(&body).await;
    let changed_at = chrono::Utc::now().timestamp_millis() - 3_000;
    crate::common::ledger::sql_rows(
        &app.data_dir,
        &format!(
            "UPDATE jobs SET activity_status = 'Active', start_date = {changed_at},
                 updated_at = {changed_at} WHERE id = {job}"
        ),
    );
    let runs = wait_for_runs(&app, job, 1).await;
    let first = runs.last().unwrap();
    assert_eq!(first["trigger"], "SCHEDULED", "{first}");
    let scheduled_for = first["scheduledFor"].as_i64().unwrap();
    assert!(scheduled_for > changed_at, "{first}");
    let runs = wait_for_runs(&app, job, 2).await;
    assert!(runs.iter().all(|r| r["trigger"] == "SCHEDULED"), "{runs:?}");
    let scraped = scrape(&app).await;
    assert!(scraped.get("labcron_fires_missed_total", &[]) >= 1.0);
    assert_eq!(scraped.get("labcron_catch_up_runs_total", &[]), 0.0);
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
    insert_cron_jobs(&app, JOBS, &cron, "quick.sh");
    app.start_again().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let fired = crate::common::ledger::sql_i64(
            &app.data_dir,
            &format!(
                "SELECT count(DISTINCT job_id) FROM runs WHERE scheduled_for = {} AND run_trigger = 'SCHEDULED'",
                fire_at.timestamp_millis()
            ),
        );
        if fired == JOBS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {fired} of {JOBS} jobs fired"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let total = crate::common::ledger::sql_i64(&app.data_dir, "SELECT count(*) FROM runs");
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

/// Inserts `count` active CRON jobs running `command` straight into a stopped server's ledger,
/// in one statement on the tests' engine (`LABCRON_TEST_LEDGER`).
fn insert_cron_jobs(app: &TestApp, count: i64, cron: &str, command: &str) {
    let now = chrono::Utc::now().timestamp_millis();
    let rows: Vec<String> = (0..count)
        .map(|i| {
            format!(
                "('bulk {i}', 'EXTERNAL', 'CRON', '{cron}', 'UTC', {now}, 'Active', 2, '{command}', 600, 10, {now}, {now})"
            )
        })
        .collect();
    crate::common::ledger::sql_rows(
        &app.data_dir,
        &format!(
            "INSERT INTO jobs (name, type, repeat_schedule, cron_expression, timezone, start_date,
                 activity_status, created_by, command, timeout_seconds, max_queued_runs, created_at,
                 updated_at)
             VALUES {}",
            rows.join(", ")
        ),
    );
}

/// 1,000 jobs firing every second for ten seconds (a MINUTELY job set, sixty times faster):
/// 10,000 fires through the `JobScheduler`. Each job's first fire queues a run that holds the
/// only run slot or waits for it, so the other nine are skipped as busy (cheap fires). While
/// they fire the library never holds more than two entries per job, and afterwards (each job's
/// next instant a year away) it holds exactly one entry and one closure per active job: fired
/// one-shots do not pile up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_fires_leave_the_job_scheduler_one_entry_per_active_job() {
    const JOBS: i64 = 1_000;
    const FIRES_EACH: i64 = 10;
    let mut app = spawn_app_with(AppOptions {
        max_concurrent_runs: Some(1),
        kill_grace_seconds: Some(1),
        configure: Some(|s| s.runs.shutdown_grace_seconds = 1),
        ..AppOptions::default()
    })
    .await;
    app.write_script("hold.sh", "#!/bin/sh\nsleep 120\n");
    app.stop().await;
    // Ten consecutive seconds within one minute, the first at least 12 s away.
    let mut first = chrono::Utc::now() + chrono::Duration::seconds(12);
    first -= chrono::Duration::nanoseconds(first.timestamp_subsec_nanos() as i64);
    if first.second() > 59 - FIRES_EACH as u32 {
        first += chrono::Duration::seconds(60 - first.second() as i64);
    }
    let last = first + chrono::Duration::seconds(FIRES_EACH - 1);
    let cron = format!(
        "{}-{} {}",
        first.second(),
        last.second(),
        first.format("%M %H %d %m *")
    );
    insert_cron_jobs(&app, JOBS, &cron, "hold.sh");

    let server = Application::build(app.settings.clone()).await.unwrap();
    let scheduler = server.scheduler().clone();
    let handle = server.handle();
    let serving = tokio::spawn(server.run_until_stopped());

    let stats = scheduler.stats();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let accounted = || load(&stats.fires) + load(&stats.skipped_busy) + load(&stats.missed);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut most = Held::default();
    while accounted() < (JOBS * FIRES_EACH) as u64 {
        assert!(
            Instant::now() < deadline,
            "only {} of {} instants fired, skipped or missed",
            accounted(),
            JOBS * FIRES_EACH
        );
        if let Some(held) = scheduler.held().await {
            most.entries = most.entries.max(held.entries);
            most.closures = most.closures.max(held.closures);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expected = Held {
        entries: JOBS as usize,
        closures: JOBS as usize,
    };
    let settle = Instant::now() + Duration::from_secs(60);
    let mut held = scheduler.held().await;
    while held != Some(expected) {
        assert!(
            Instant::now() < settle,
            "after the fires the JobScheduler holds {held:?}, not one entry per job"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        held = scheduler.held().await;
    }
    assert_eq!(
        accounted(),
        (JOBS * FIRES_EACH) as u64,
        "an instant counted twice"
    );
    let fired = load(&stats.fires) + load(&stats.skipped_busy);
    eprintln!(
        "fires {} skipped {} missed {} most held {most:?}",
        load(&stats.fires),
        load(&stats.skipped_busy),
        load(&stats.missed)
    );
    assert!(fired >= JOBS as u64, "{fired} fires");
    assert!(
        most.entries <= 2 * JOBS as usize && most.closures <= 2 * JOBS as usize,
        "the JobScheduler held {most:?} while firing"
    );
    assert_eq!(load(&stats.errors), 0);
    assert_eq!(load(&stats.restarts), 0);
    assert_eq!(load(&stats.pending), JOBS as u64);
    handle.stop(true).await;
    serving.await.unwrap().unwrap();
}

/// `labcron jobs import --apply` from the shell while the server runs: the new job reaches the
/// running scheduler within a second (the server watches the ledger's data version; the
/// minutely reconcile alone would usually find it too late and skip the instant) and fires at
/// its first instant as a SCHEDULED run; no fire is counted missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_imported_by_the_cli_while_the_server_runs_fires_at_its_first_instant() {
    let app = spawn_app().await.with_fresh_connections();
    app.write_script("quick.sh", "#!/bin/sh\nexit 0\n");
    let mut at = chrono::Utc::now() + chrono::Duration::seconds(10);
    at -= chrono::Duration::nanoseconds(at.timestamp_subsec_nanos() as i64);
    let instant = at.timestamp_millis();
    let file = app.data_dir.join("jobs.toml");
    std::fs::write(
        &file,
        format!(
            "[[jobs]]\nname = \"Imported while running\"\ntype = \"EXTERNAL\"\ncommand = \"quick.sh\"\n\
             repeatSchedule = \"CRON\"\ncronExpression = \"{}\"\ntimezone = \"UTC\"\n",
            at.format("%S %M %H %d %m *")
        ),
    )
    .unwrap();
    let output = crate::common::command(&["jobs", "import"])
        .arg(&file)
        .arg("--apply")
        .arg("--data-dir")
        .arg(&app.data_dir)
        .args(crate::common::ledger::database_url_args(&app.data_dir))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        chrono::Utc::now().timestamp_millis() < instant - 2_000,
        "the import took too long for this test's instant"
    );
    let jobs = ok_json(app.get("/scheduled-jobs").await).await;
    let job = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "Imported while running")
        .expect("the imported job")
        .clone();
    assert_eq!(job["nextRunOn"], json!(instant));
    let id = job["id"].as_i64().unwrap();
    let runs = wait_for_runs(&app, id, 1).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["scheduledFor"], json!(instant));
    assert_eq!(runs[0]["trigger"], "SCHEDULED");
    let scraped = scrape(&app).await;
    assert_eq!(scraped.get("labcron_fires_missed_total", &[]), 0.0);
    assert_eq!(scraped.get("labcron_fires_total", &[]), 1.0);
}
