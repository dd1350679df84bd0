//! The job page and the Run dialog (issue 13): what a job runs, its schedule with the next five
//! fires in the job's zone and the browser's, retries, chains both ways, notifications, the last
//! runs with their chart, and the actions; the page's 404 for a job the user may not see; the
//! Run dialog running at once with the job's defaults, prefilling the last arguments, and asking
//! for a QUERY job's parameters; the QUERY form showing the query and refusing runtime
//! parameters for a query that takes none.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::ok_json;
use crate::support::{Ui, create_saved_query, ui_test, wait_for};

async fn run_count(ui: &Ui, job: i64) -> usize {
    ok_json(ui.app.get(&format!("/scheduled-jobs/{job}/runs")).await)
        .await
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
}

async fn newest_run(ui: &Ui, job: i64) -> Value {
    let runs = ok_json(ui.app.get(&format!("/scheduled-jobs/{job}/runs")).await).await;
    let id = runs[0]["id"].as_i64().expect("a run");
    ui.app.wait_run(job, id).await
}

/// Waits until the job has `n` runs and returns the newest, finished.
async fn wait_runs(ui: &Ui, job: i64, n: usize) -> Value {
    wait_for(&format!("{n} runs of job {job}"), || async {
        (run_count(ui, job).await == n).then_some(())
    })
    .await;
    newest_run(ui, job).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_page_shows_what_when_chains_notifications_runs_and_acts() {
    ui_test("job_page", async |ui| {
        let app = &ui.app;
        app.write_script("export.sh", "#!/bin/sh\necho \"export $*\"\n[ \"$1\" = fail ] && exit 3\nexit 0\n");
        let (bob, _) = app.create_user("bob", false).await;
        let upload = app.create_external_job("Upload to biobank", "export.sh").await;
        let export = app
            .create_job(&json!({"name": "Nightly export", "type": "EXTERNAL", "command": "export.sh --all",
                "repeatSchedule": "DAILY", "scheduledHour": 23, "scheduledMinute": 0, "timezone": "America/New_York",
                "maxRetries": 2, "retryDelaySeconds": 30, "notifyOn": "FAILURE", "recipients": [{"id": bob}],
                "onSuccess": [{"id": upload}], "fixedArgs": "--site North"}))
            .await;
        let prepare = app
            .create_job(&json!({"name": "Prepare freezer list", "type": "EXTERNAL", "command": "export.sh",
                "repeatSchedule": "ONDEMAND", "onSuccess": [{"id": export}]}))
            .await;
        // Two finished runs of the export (the chain queues uploads, which do not matter here).
        let first = app.start_run(export, None).await;
        app.wait_run(export, first).await;
        let second = app.start_run(export, None).await;
        app.wait_run(export, second).await;

        ui.sign_in_admin().await;
        // The jobs list links the job's name to its page.
        ui.click(&format!("#jobs-body tr[data-job-id=\"{export}\"] a.job-title")).await;
        ui.wait_path(&format!("/ui/jobs/{export}")).await;
        ui.wait_contains("#page-title", "Nightly export").await;
        assert_eq!(ui.text("#job-command").await.as_deref(), Some("export.sh --all"));
        assert_eq!(ui.text("#job-fixed-args").await.as_deref(), Some("--site North"));
        ui.wait_contains("#job-rt-args", "Not asked for").await;

        // The schedule in words, in the job's zone; five fires from the scheduler, in both zones.
        ui.wait_contains("#schedule-words", "Every day at 23:00 hours.").await;
        ui.wait_contains("#schedule-zone", "America/New_York").await;
        let heads = ui.texts("#next-runs-head th").await;
        assert_eq!(heads.len(), 2, "{heads:?}");
        assert!(heads[0].to_lowercase().contains("job's time (america/new_york)"), "{heads:?}");
        assert!(heads[1].to_lowercase().contains("your time (europe/berlin)"), "{heads:?}");
        let job_times = ui.texts("#next-runs td.job-local").await;
        assert_eq!(job_times.len(), 5);
        assert!(
            job_times.iter().all(|t| t.contains(" 23:00 ") && (t.contains("EST") || t.contains("EDT"))),
            "{job_times:?}"
        );
        let browser_times = ui.texts("#next-runs td.browser-local").await;
        assert!(
            browser_times.iter().all(|t| t.contains(" 05:00 UTC+01:00") || t.contains(" 05:00 UTC+02:00")
                || t.contains(" 04:00 UTC+01:00") || t.contains(" 04:00 UTC+02:00")),
            "{browser_times:?}"
        );
        let shown: Vec<i64> = ui
            .js("return Array.from(document.querySelectorAll('#next-runs tr')).map(r => Number(r.dataset.at));", vec![])
            .await
            .as_array()
            .expect("instants")
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        let api: Vec<i64> = ok_json(app.get(&format!("/scheduled-jobs/{export}/next-runs?count=5")).await)
            .await
            .as_array()
            .expect("fires")
            .iter()
            .filter_map(|f| f["at"].as_i64())
            .collect();
        assert_eq!(shown, api, "the page's fires are the scheduler's");

        // Retries, chains both ways, notifications.
        ui.wait_contains("#job-retries", "Up to 2 retries, 30 s after a failure").await;
        ui.wait_contains("#triggered-by", "Prepare freezer list").await;
        ui.wait_contains("#triggered-by", "when it succeeds").await;
        assert_eq!(
            ui.js("return document.querySelector('#triggered-by a').getAttribute('href');", vec![]).await,
            json!(format!("/ui/jobs/{prepare}"))
        );
        ui.wait_contains("#on-success", "Upload to biobank").await;
        ui.wait_contains("#on-failure", "Nothing").await;
        ui.wait_contains("#job-notify-on", "Only when a run fails").await;
        ui.wait_contains("#job-recipients", "bob").await;

        // The last runs, with one bar each in the chart.
        wait_for("two runs listed", || async { (ui.count("#job-runs-body tr").await == 2).then_some(()) }).await;
        assert_eq!(
            ui.texts("#job-runs-body td[data-label='Run ID']").await,
            [format!("#{second}"), format!("#{first}")]
        );
        assert_eq!(ui.count("#duration-svg rect[data-status=SUCCEEDED]").await, 2);
        ui.wait_text("#runs-zone", "the browser's zone", |t| t.to_lowercase().contains("europe/berlin")).await;

        // Run: the job takes no runtime parameters, so it runs at once with its fixed ones.
        ui.click("#run-job").await;
        ui.wait_contains(".toast", "Nightly export").await;
        assert_eq!(ui.count("#run-dialog").await, 0, "no dialog for a job that asks nothing");
        let run = wait_runs(ui, export, 3).await;
        assert_eq!(run["rtArgs"], Value::Null);
        let log = ui
            .app
            .get(&format!("/scheduled-jobs/{export}/runs/{}/log", run["id"]))
            .await
            .text()
            .await
            .expect("log");
        assert!(log.contains("export --all --site North"), "{log}");
        wait_for("the third run on the page", || async { (ui.count("#job-runs-body tr").await == 3).then_some(()) }).await;

        // Close keeps everything else of the job (a full replace), Reopen undoes it.
        ui.click("#toggle-job").await;
        ui.wait_text("#toggle-job", "Reopen", |t| t == "Reopen").await;
        let closed = ok_json(app.get(&format!("/scheduled-jobs/{export}")).await).await;
        assert_eq!(closed["activityStatus"], "Closed");
        assert_eq!(closed["maxRetries"], 2);
        assert_eq!(closed["notifyOn"], "FAILURE");
        assert_eq!(closed["onSuccess"][0]["id"], upload);
        assert_eq!(closed["recipients"][0]["id"], bob);
        assert_eq!(closed["command"], "export.sh --all");
        ui.wait_contains("#next-runs-note", "paused").await;
        assert!(ui.js("return document.querySelector('#run-job').disabled;", vec![]).await == json!(true));
        ui.click("#toggle-job").await;
        ui.wait_text("#toggle-job", "Close", |t| t == "Close").await;
        assert_eq!(ok_json(app.get(&format!("/scheduled-jobs/{export}")).await).await["activityStatus"], "Active");

        // The runs pages link back to the job page.
        ui.goto(&format!("/ui/jobs/{export}/runs/{first}")).await;
        ui.click("#run-job-link").await;
        ui.wait_path(&format!("/ui/jobs/{export}")).await;
        ui.goto("/ui/runs").await;
        ui.click(&format!("#runs-body tr[data-run-id='{first}'] a.job-link")).await;
        ui.wait_path(&format!("/ui/jobs/{export}")).await;

        // Delete, after the confirmation.
        ui.wait_contains("#page-title", "Nightly export").await;
        ui.click("#delete-job").await;
        ui.wait_contains("#confirm-message", "Nightly export").await;
        ui.click("#confirm-ok").await;
        // (`wait_path` matches a prefix, which the job page's own path has.)
        wait_for("the jobs list", || async { (ui.path().await == "/ui/jobs").then_some(()) }).await;
        ui.wait_contains(".toast", "Job Nightly export deleted.").await;
        let gone = app.get(&format!("/scheduled-jobs/{export}")).await;
        assert_eq!(gone.status(), StatusCode::BAD_REQUEST);
        ui.goto(&format!("/ui/jobs/{export}")).await;
        ui.wait_contains("main h1", "Page not found").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_user_may_not_see_is_the_same_404_as_a_missing_one() {
    ui_test("job_page_access", async |ui| {
        let app = &ui.app;
        app.write_script("ok.sh", "#!/bin/sh\necho ok\n");
        let (bob, bob_token) = app.create_user("bob", false).await;
        let private = app.create_external_job("Admin only", "ok.sh").await;
        let shared = app
            .create_job(
                &json!({"name": "Shared with Bob", "type": "EXTERNAL", "command": "ok.sh",
                "repeatSchedule": "ONDEMAND", "sharedWith": [{"id": bob}]}),
            )
            .await;
        // Over HTTP: the same status and page for a hidden job and a job that does not exist.
        let page = |path: String| {
            let token = bob_token.clone();
            async move {
                let response = reqwest::Client::new()
                    .get(format!("{}{path}", app.base))
                    .header("Cookie", format!("labcron_session={token}"))
                    .send()
                    .await
                    .expect("page");
                let status = response.status();
                (status, response.text().await.expect("body"))
            }
        };
        let (hidden_status, hidden_body) = page(format!("/ui/jobs/{private}")).await;
        let (missing_status, missing_body) = page("/ui/jobs/987654".to_string()).await;
        assert_eq!(hidden_status, StatusCode::NOT_FOUND);
        assert_eq!(missing_status, StatusCode::NOT_FOUND);
        assert_eq!(
            hidden_body, missing_body,
            "nothing tells a hidden job from a missing one"
        );
        assert!(!hidden_body.contains("Admin only"));
        let (shared_status, shared_body) = page(format!("/ui/jobs/{shared}")).await;
        assert_eq!(shared_status, StatusCode::OK);
        assert!(
            shared_body.contains("Shared with Bob"),
            "the title names the job"
        );
        // The page's data endpoint answers as the API does.
        let overview = reqwest::Client::new()
            .get(format!("{}/ui/api/jobs/{private}/overview", app.base))
            .header("X-OS-API-TOKEN", &bob_token)
            .send()
            .await
            .expect("overview");
        assert_eq!(overview.status(), StatusCode::BAD_REQUEST);

        // In the browser: Bob may run the shared job, but not edit, close or delete it.
        ui.sign_in("bob", "bob-password").await;
        ui.goto(&format!("/ui/jobs/{private}")).await;
        ui.wait_contains("main h1", "Page not found").await;
        ui.goto(&format!("/ui/jobs/{shared}")).await;
        ui.wait_contains("#page-title", "Shared with Bob").await;
        ui.wait_visible("#run-job").await;
        ui.wait_visible("#job-cards").await;
        for hidden in ["#edit-job", "#toggle-job", "#delete-job"] {
            assert_eq!(
                ui.js(
                    "return document.querySelector(arguments[0]).hidden;",
                    vec![json!(hidden)]
                )
                .await,
                json!(true),
                "{hidden} is hidden for Bob"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_dialog_prefills_the_last_arguments_the_users_own_first() {
    ui_test("run_dialog_prefill", async |ui| {
        let app = &ui.app;
        app.write_script("echo.sh", "#!/bin/sh\necho \"args: $*\"\n");
        let (carol, _) = app.create_user("carol", false).await;
        let (bob, bob_token) = app.create_user("bob", false).await;
        let job = app
            .create_job(&json!({"name": "Site export", "type": "EXTERNAL", "command": "echo.sh", "repeatSchedule": "ONDEMAND",
                "rtArgsProvided": true, "rtArgsHelpText": "Site and year", "sharedWith": [{"id": bob}, {"id": carol}]}))
            .await;
        // The admin's run, then a newer one of Bob's.
        let mine = app.start_run(job, Some("North 2024")).await;
        app.wait_run(job, mine).await;
        let response = app
            .send_as(&bob_token, reqwest::Method::POST, &format!("/scheduled-jobs/{job}/runs"), Some(&json!({"args": "South 2025"}))).await;
        assert_eq!(response.status(), StatusCode::OK);
        wait_runs(ui, job, 2).await;

        // The admin gets their own arguments, though Bob's are newer.
        ui.sign_in_admin().await;
        ui.goto(&format!("/ui/jobs/{job}")).await;
        ui.click("#run-job").await;
        ui.wait_visible("#run-dialog").await;
        let value = ui.js("return document.querySelector('#run-args').value;", vec![]).await;
        assert_eq!(value, json!("North 2024"));
        ui.wait_contains("#run-prefill", &format!("run #{mine} (your last run)")).await;
        ui.click("#run-submit").await;
        ui.wait_contains(".toast", "Site export").await;
        let run = wait_runs(ui, job, 3).await;
        assert_eq!(run["rtArgs"], "North 2024");

        // Carol never ran it: she gets the newest arguments anyone used (the admin's rerun).
        ui.click("#sign-out").await;
        ui.wait_path("/ui/sign-in").await;
        ui.sign_in("carol", "carol-password").await;
        ui.goto(&format!("/ui/jobs/{job}")).await;
        ui.click("#run-job").await;
        ui.wait_visible("#run-dialog").await;
        let value = ui.js("return document.querySelector('#run-args').value;", vec![]).await;
        assert_eq!(value, json!("North 2024"));
        ui.wait_contains("#run-prefill", "(the last run with arguments)").await;
        ui.fill("#run-args", "East 2026").await;
        ui.click("#run-submit").await;
        ui.wait_contains(".toast", "Site export").await;
        let run = wait_runs(ui, job, 4).await;
        assert_eq!(run["rtArgs"], "East 2026");
        assert_eq!(run["runBy"]["id"], carol);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_dialog_asks_for_a_query_jobs_parameters_with_fixed_ones_as_defaults() {
    ui_test("run_dialog_query", async |ui| {
        let query = create_saved_query(&ui.app, "Site and days", "SELECT :site AS site, :days AS days").await;
        let job = ui
            .app
            .create_job(&json!({"name": "Site report", "type": "QUERY", "savedQuery": {"id": query},
                "repeatSchedule": "ONDEMAND", "fixedArgs": "days=30", "rtArgsProvided": true, "rtArgsHelpText": "Which site"}))
            .await;
        ui.sign_in_admin().await;
        ui.goto(&format!("/ui/jobs/{job}")).await;
        // The page shows the query's SQL and parameters.
        ui.wait_contains("#job-query-sql", "SELECT :site AS site, :days AS days").await;
        ui.wait_contains("#job-query-params", ":site, :days").await;

        ui.click("#run-job").await;
        ui.wait_visible("#run-dialog").await;
        assert_eq!(ui.count("#run-args").await, 0, "a QUERY job gets one field per parameter");
        ui.wait_visible("#run-param-site").await;
        let days_hint = ui.js("return document.querySelector('#run-param-days').placeholder;", vec![]).await;
        assert_eq!(days_hint, json!("default: 30"));
        ui.wait_contains("#run-fixed", "days=30").await;
        // :site has no default: it must be filled.
        ui.click("#run-submit").await;
        ui.wait_contains("#run-error", "Enter a value for :site.").await;
        ui.fill("#run-param-site", "Main Lab").await;
        ui.click("#run-submit").await;
        ui.wait_contains(".toast", "Site report").await;
        let run = wait_runs(ui, job, 1).await;
        assert_eq!(run["status"], "SUCCEEDED", "{run}");
        assert_eq!(run["rtArgs"], "site='Main Lab'");
        let csv = ui
            .app
            .get(&format!("/scheduled-jobs/{job}/runs/{}/result-file", run["id"]))
            .await
            .text()
            .await
            .expect("result");
        assert_eq!(csv, "site,days\r\nMain Lab,30\r\n");

        // Next time the fields hold what was used; a default can be overridden.
        ui.click("#run-job").await;
        ui.wait_visible("#run-param-site").await;
        let site = ui.js("return document.querySelector('#run-param-site').value;", vec![]).await;
        assert_eq!(site, json!("Main Lab"));
        let days = ui.js("return document.querySelector('#run-param-days').value;", vec![]).await;
        assert_eq!(days, json!(""));
        ui.fill("#run-param-days", "7").await;
        ui.click("#run-submit").await;
        let run = wait_runs(ui, job, 2).await;
        assert_eq!(run["rtArgs"], "site='Main Lab' days=7");
        let csv = ui
            .app
            .get(&format!("/scheduled-jobs/{job}/runs/{}/result-file", run["id"]))
            .await
            .text()
            .await
            .expect("result");
        assert_eq!(csv, "site,days\r\nMain Lab,7\r\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_form_shows_the_query_and_refuses_runtime_parameters_it_cannot_take() {
    ui_test("query_form_params", async |ui| {
        let none = create_saved_query(
            &ui.app,
            "All sites",
            "SELECT DISTINCT site FROM specimen_details",
        )
        .await;
        let one = create_saved_query(
            &ui.app,
            "One site",
            "SELECT count(*) AS n FROM specimen_details WHERE site = :site",
        )
        .await;
        ui.sign_in_admin().await;
        ui.goto("/ui/jobs/new").await;
        ui.wait_visible("#job-form").await;
        ui.fill("#name", "Sites export").await;
        ui.click("input[name=type][value=QUERY]").await;
        ui.select("#savedQuery", &none.to_string()).await;
        ui.wait_contains(
            "#saved-query-sql",
            "SELECT DISTINCT site FROM specimen_details",
        )
        .await;
        ui.wait_contains("#saved-query-params", "This query takes no parameters.")
            .await;
        ui.click("input[name=rtArgsProvided][value=true]").await;
        ui.wait_contains("#rt-args-note", "takes no parameters")
            .await;
        ui.fill("#rtArgsHelpText", "site=…").await;
        ui.click("input[name=repeatSchedule][value=ONDEMAND]").await;
        ui.click("#save-job").await;
        // The API's refusal, beside the field it concerns.
        ui.wait_contains(
            "[data-field=rtArgsProvided] .field-error",
            "All sites takes no parameters",
        )
        .await;
        ui.wait_contains("#error-list", "rtArgsProvided").await;
        assert_eq!(ui.path().await, "/ui/jobs/new");

        // A query with a parameter: shown, and the job saves.
        ui.select("#savedQuery", &one.to_string()).await;
        ui.wait_contains("#saved-query-params", "Parameters: :site")
            .await;
        wait_for("the warning to go", || async {
            (ui.js(
                "return document.querySelector('#rt-args-note').hidden;",
                vec![],
            )
            .await
                == json!(true))
            .then_some(())
        })
        .await;
        ui.click("#save-job").await;
        ui.wait_path("/ui/jobs").await;
        ui.wait_contains(".toast", "Sites export saved.").await;
    })
    .await;
}
