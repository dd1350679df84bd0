//! The jobs list: OpenSpecimen's Repeat Interval wording, filters and paging, what a non-admin
//! sees, that job names can never become markup, the phone layout and keyboard use.

use serde_json::{Value, json};

use crate::common::{AppOptions, ok_json};
use crate::support::{PHONE, Ui, create_saved_query, ui_test, ui_test_with, wait_for};
use crate::webdriver::BROWSER_TZ;

fn row(job: i64) -> String {
    format!("#jobs-body tr[data-job-id=\"{job}\"]")
}

async fn repeat_text(ui: &Ui, job: i64) -> String {
    ui.wait_text(&format!("{} td.repeat", row(job)), "a schedule", |t| {
        !t.is_empty()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_intervals_read_as_in_openspecimen() {
    ui_test("repeat_wording", async |ui| {
        ui.app.write_script("ok.sh", "#!/bin/sh\necho ok\n");
        let base = json!({"type": "EXTERNAL", "command": "ok.sh", "timezone": BROWSER_TZ});
        let cases: Vec<(Value, &str)> = vec![
            (json!({"repeatSchedule": "DAILY", "scheduledHour": 23, "scheduledMinute": 0}), "Every day at 23:00 hours."),
            (json!({"repeatSchedule": "MINUTELY", "minutelyInterval": 5}), "Every 5 minutes."),
            (json!({"repeatSchedule": "MINUTELY", "minutelyInterval": 1}), "Every minute."),
            (json!({"repeatSchedule": "HOURLY", "scheduledMinute": 5}), "5th minute of every hour."),
            (json!({"repeatSchedule": "HOURLY", "scheduledMinute": 22}), "22nd minute of every hour."),
            (json!({"repeatSchedule": "WEEKLY", "scheduledDayOfWeek": "MONDAY", "scheduledHour": 8, "scheduledMinute": 0}), "Every Monday at 08:00 hours."),
            (json!({"repeatSchedule": "MONTHLY", "scheduledDayOfMonth": 1, "scheduledHour": 6, "scheduledMinute": 30}), "1st of every month at 06:30 hours."),
            (json!({"repeatSchedule": "MONTHLY", "scheduledDayOfMonth": 13, "scheduledHour": 6, "scheduledMinute": 30}), "13th of every month at 06:30 hours."),
            (json!({"repeatSchedule": "ONDEMAND"}), "On demand."),
            (json!({"repeatSchedule": "CRON", "cronExpression": "30 6 * * 1-5"}), "30 6 * * 1-5"),
        ];
        let mut ids = Vec::new();
        for (i, (schedule, _)) in cases.iter().enumerate() {
            let mut body = base.clone();
            body["name"] = json!(format!("Wording {i}"));
            for (k, v) in schedule.as_object().expect("object") {
                body[k] = v.clone();
            }
            ids.push(ui.app.create_job(&body).await);
        }
        ui.sign_in_admin().await;
        for (id, (_, expected)) in ids.iter().zip(&cases) {
            assert_eq!(repeat_text(ui, *id).await, *expected);
        }
        // The Title column is "#<id> <name>"; Created By, Type, Last Run On as OpenSpecimen.
        let first = ids[0];
        assert_eq!(ui.text(&format!("{} td.title", row(first))).await.as_deref(), Some(format!("#{first} Wording 0").as_str()));
        let cells = ui.texts(&format!("{} td", row(first))).await;
        assert_eq!(cells[1], "Admin");
        assert_eq!(cells[2], "External");
        assert_eq!(cells[4], "Never");
        assert!(cells[5].contains(" 23:00"), "next run at 23:00 in the browser's zone: {cells:?}");
        // A job in another zone says which zone its hours are in.
        let ny = ui
            .app
            .create_job(&json!({"name": "Zoned", "type": "EXTERNAL", "command": "ok.sh", "repeatSchedule": "DAILY",
                "scheduledHour": 9, "scheduledMinute": 15, "timezone": "America/New_York"}))
            .await;
        ui.goto("/ui/jobs").await;
        assert_eq!(repeat_text(ui, ny).await, "Every day at 09:15 hours.\nAmerica/New_York");
        ui.wait_contains("#zone-note", BROWSER_TZ).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_paging_and_live_status() {
    ui_test("jobs_filters_paging", async |ui| {
        ui.app.write_script("ok.sh", "#!/bin/sh\necho ok\n");
        for i in 1..=23 {
            ui.app.create_external_job(&format!("Batch {i:02}"), "ok.sh").await;
        }
        let internal = ui
            .app
            .create_job(&json!({"name": "Batch cleaner", "type": "INTERNAL", "taskImplFqn": "files-cleaner", "repeatSchedule": "ONDEMAND"}))
            .await;
        ui.sign_in_admin().await;
        ui.fill("#filter-title", "batch").await;
        // The filter applies after a short pause in typing; it shows in the address.
        ui.wait_path("/ui/jobs?query=batch").await;
        ui.wait_contains("#list-size", "Showing 20 of 24").await;
        assert_eq!(ui.count("#jobs-body tr").await, 20);
        ui.wait_contains("#page-info", "Page 1 of 2").await;
        ui.click("#next-page").await;
        ui.wait_contains("#list-size", "Showing 4 of 24").await;
        assert!(ui.path().await.contains("page=2"));
        ui.select("#filter-type", "INTERNAL").await;
        ui.wait_contains("#list-size", "Showing 1 of 1").await;
        assert_eq!(ui.count(&row(internal)).await, 1);
        assert!(ui.path().await.contains("type=INTERNAL"));
        // Filters survive a reload (they live in the address).
        ui.goto(&ui.path().await).await;
        ui.wait_contains("#list-size", "Showing 1 of 1").await;
        assert_eq!(ui.js("return document.querySelector('#filter-title').value;", vec![]).await, json!("batch"));
        ui.fill("#filter-title", "no such job").await;
        ui.wait_visible("#jobs-empty").await;

        // The last status and the chart follow runs without a reload.
        ui.select("#filter-type", "").await;
        ui.fill("#filter-title", "Batch 01").await;
        ui.wait_path("/ui/jobs?query=Batch%2001").await;
        ui.wait_contains("#list-size", "Showing 1 of 1").await;
        ui.mark_document().await;
        let job = ui.js("return Number(document.querySelector('#jobs-body tr').dataset.jobId);", vec![]).await.as_i64().expect("id");
        for _ in 0..3 {
            let run = ui.app.start_run(job, None).await;
            ui.app.wait_run(job, run).await;
        }
        ui.wait_contains(&format!("{} td.status", row(job)), "Succeeded").await;
        wait_for("three bars", || async { (ui.count(&format!("{} svg.spark rect", row(job))).await == 3).then_some(()) }).await;
        let label = ui.js(&format!("return document.querySelector('{} svg.spark').getAttribute('aria-label');", row(job)), vec![]).await;
        assert_eq!(label, json!("Last 3 runs: 3 succeeded"));
        assert!(ui.text(&format!("{} td.last-run", row(job))).await.unwrap_or_default().contains(':'));
        ui.assert_same_document().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_admin_sees_only_their_jobs() {
    ui_test("non_admin", async |ui| {
        ui.app.write_script("ok.sh", "#!/bin/sh\necho ok\n");
        let (bob, bob_token) = ui.app.create_user("bob", false).await;
        // Bob's own job: non-admins may create QUERY jobs.
        let query_id = create_saved_query(&ui.app, "Sites", "SELECT DISTINCT site FROM specimen_details").await;
        let own = ok_json(
            ui.app
                .send_as(&bob_token, reqwest::Method::POST, "/scheduled-jobs", Some(&json!({"name": "Bob's query", "type": "QUERY", "savedQuery": {"id": query_id}, "repeatSchedule": "ONDEMAND"}))).await,
        )
        .await["id"]
            .as_i64()
            .expect("id");
        let shared = ui
            .app
            .create_job(&json!({"name": "Shared with Bob", "type": "EXTERNAL", "command": "ok.sh", "repeatSchedule": "ONDEMAND",
                "sharedWith": [{"id": bob}]}))
            .await;
        let private = ui.app.create_external_job("Admin only", "ok.sh").await;
        let visible: Vec<i64> = ok_json(ui.app.get("/scheduled-jobs?maxResults=1000").await)
            .await
            .as_array()
            .expect("jobs")
            .iter()
            .filter_map(|j| j["id"].as_i64())
            .collect();
        assert!(visible.contains(&private), "admin sees everything");

        ui.sign_in("bob", "bob-password").await;
        ui.wait_visible(&row(shared)).await;
        ui.wait_visible(&row(own)).await;
        ui.wait_contains("#list-size", "Showing 2 of 2").await;
        assert_eq!(ui.count("#jobs-body tr").await, 2);
        // His own QUERY job he may edit and delete.
        ui.wait_visible(&format!("{} [data-action=edit]", row(own))).await;
        ui.wait_visible(&format!("{} [data-action=delete]", row(own))).await;
        assert_eq!(ui.count(&row(private)).await, 0);
        // No admin navigation; a shared EXTERNAL job can be run but not edited or deleted.
        assert_eq!(ui.count(".site-header a[href=\"/ui/users\"]").await, 0);
        assert_eq!(ui.count(&format!("{} [data-action=edit]", row(shared))).await, 0);
        assert_eq!(ui.count(&format!("{} [data-action=delete]", row(shared))).await, 0);
        ui.click(&format!("{} [data-action=run]", row(shared))).await;
        ui.wait_contains(".toast", "Shared with Bob").await;
        ui.wait_contains(&format!("{} td.status", row(shared)), "Succeeded").await;

        // Another user's job is not shown, even by address.
        ui.goto(&format!("/ui/jobs/{private}/runs")).await;
        ui.wait_contains("#load-error", "sufficient rights").await;
        // The form offers Bob only the Query type.
        ui.goto("/ui/jobs/new").await;
        ui.wait_visible("#job-form").await;
        let disabled = ui.js("return Array.from(document.querySelectorAll('input[name=type]')).filter(r => r.disabled).map(r => r.value);", vec![]).await;
        assert_eq!(disabled, json!(["INTERNAL", "EXTERNAL"]));
        assert_eq!(ui.js("return document.querySelector('input[name=type]:checked').value;", vec![]).await, json!("QUERY"));
        ui.wait_visible("#type-note").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_names_are_shown_as_text_never_as_markup() {
    ui_test("xss", async |ui| {
        ui.app.write_script("ok.sh", "#!/bin/sh\necho '<script>window.__xss=2</script>'\nprintf 'a,b\\n<img src=x onerror=window.__xss=3>,2\\n' > \"$LABCRON_RESULT_DIR/x.csv\"\n");
        let name = r#"<img src=x onerror="window.__xss=1">"'&amp;"#;
        let job = ui
            .app
            .create_job(&json!({"name": name, "type": "EXTERNAL", "command": "ok.sh", "repeatSchedule": "ONDEMAND",
                "rtArgsProvided": true, "rtArgsHelpText": "<b onmouseover=window.__xss=4>help</b>"}))
            .await;
        let run = ui.app.start_run(job, Some("<i>")).await;
        ui.app.wait_run(job, run).await;
        ui.sign_in_admin().await;
        ui.wait_contains(&format!("{} .job-name", row(job)), name).await;
        assert_eq!(ui.count("#jobs-body img").await, 0);
        ui.click(&format!("{} [data-action=run]", row(job))).await;
        ui.wait_contains("#run-dialog-title", name).await;
        ui.wait_contains("#run-help", "<b onmouseover=window.__xss=4>help</b>").await;
        ui.click("#run-cancel").await;
        ui.click(&format!("{} [data-action=delete]", row(job))).await;
        ui.wait_contains("#confirm-message", name).await;
        ui.click("#confirm-cancel").await;

        ui.goto(&format!("/ui/jobs/{job}/runs/{run}")).await;
        ui.wait_contains("#run-log", "<script>window.__xss=2</script>").await;
        ui.wait_contains("#result-preview", "<img src=x onerror=window.__xss=3>").await;
        ui.wait_contains("#crumb-job", name).await;
        ui.wait_contains("#run-facts", "<i>").await;
        assert_eq!(ui.count("main img, main script, main b, #run-facts i").await, 0);
        ui.goto(&format!("/ui/jobs/{job}/runs")).await;
        ui.wait_contains("#page-title", name).await;
        ui.goto(&format!("/ui/jobs/{job}/edit")).await;
        ui.wait_visible("#job-form").await;
        assert_eq!(ui.js("return document.querySelector('#name').value;", vec![]).await, json!(name));
        assert_eq!(ui.js("return window.__xss === undefined;", vec![]).await, json!(true));
    })
    .await;
}

/// No page scrolls sideways at 375 px.
async fn assert_fits(ui: &Ui, what: &str) {
    let widths = ui
        .js(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await;
    let (scroll, inner) = (
        widths[0].as_i64().unwrap_or(0),
        widths[1].as_i64().unwrap_or(0),
    );
    assert!(
        scroll <= inner,
        "{what} is {scroll} px wide in a {inner} px window"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_fits_a_phone_screen() {
    ui_test_with("phone", AppOptions::default(), PHONE, async |ui| {
        ui.app.write_script("csv.sh", "#!/bin/sh\necho a-rather-long-log-line-without-any-spaces-at-all-to-see-that-it-wraps-instead-of-widening-the-page\nprintf 'first_column_with_a_long_name,second_column_with_a_long_name,third\\n1,2,3\\n' > \"$LABCRON_RESULT_DIR/r.csv\"\n");
        let job = ui
            .app
            .create_job(&json!({"name": "An export job with a fairly long name for a small screen", "type": "EXTERNAL",
                "command": "csv.sh", "repeatSchedule": "WEEKLY", "scheduledDayOfWeek": "FRIDAY", "scheduledHour": 18, "scheduledMinute": 45}))
            .await;
        let run = ui.app.start_run(job, None).await;
        ui.app.wait_run(job, run).await;
        ui.sign_in_admin().await;
        let width = ui.js("return window.innerWidth;", vec![]).await;
        assert_eq!(width, json!(375));
        ui.wait_visible(&row(job)).await;
        assert_fits(ui, "the jobs list").await;
        // Rows become cards; each value carries its column's name.
        let label = ui.js(&format!("return getComputedStyle(document.querySelector('{} td.repeat'), '::before').content;", row(job)), vec![]).await;
        assert_eq!(label, json!("\"Repeat Interval\""));
        ui.wait_visible(&format!("{} [data-action=run]", row(job))).await;

        ui.goto(&format!("/ui/jobs/{job}")).await;
        ui.wait_visible("#next-runs tr").await;
        ui.wait_visible("#duration-svg rect").await;
        assert_fits(ui, "the job page").await;
        ui.goto(&format!("/ui/jobs/{job}/runs")).await;
        ui.wait_visible("#runs-body tr").await;
        ui.wait_visible("#runs-chart svg").await;
        assert_fits(ui, "the runs list").await;
        ui.goto(&format!("/ui/jobs/{job}/runs/{run}")).await;
        ui.wait_visible("#result-preview tbody tr").await;
        assert_fits(ui, "the run page").await;
        ui.goto(&format!("/ui/jobs/{job}/edit")).await;
        ui.wait_visible("#next-runs li").await;
        assert_fits(ui, "the job form").await;
        ui.click("#save-job").await;
        ui.wait_path("/ui/jobs").await;
        ui.goto("/ui/saved-queries").await;
        ui.wait_visible("#list-size").await;
        assert_fits(ui, "the saved queries").await;
        ui.goto("/ui/users").await;
        ui.wait_visible("#users-body tr").await;
        assert_fits(ui, "the users").await;
        ui.goto("/ui/sign-in").await;
        ui.wait_path("/ui/jobs").await;
    })
    .await;
}

const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";
const ESCAPE: &str = "\u{E00C}";

async fn active(ui: &Ui) -> Value {
    ui.js(
        "const a = document.activeElement; return {id: a.id, action: a.dataset ? a.dataset.action || null : null, row: a.closest('tr') ? a.closest('tr').dataset.jobId : null};",
        vec![],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_can_be_run_with_the_keyboard_alone() {
    ui_test("keyboard", async |ui| {
        ui.app.write_script("ok.sh", "#!/bin/sh\necho \"args: $*\"\n");
        let job = ui
            .app
            .create_job(&json!({"name": "Keyboard job", "type": "EXTERNAL", "command": "ok.sh", "repeatSchedule": "ONDEMAND",
                "rtArgsProvided": true, "rtArgsHelpText": "Anything"}))
            .await;
        ui.sign_in_admin().await;
        ui.fill("#filter-title", "Keyboard").await;
        ui.wait_path("/ui/jobs?query=Keyboard").await;
        ui.wait_contains("#list-size", "Showing 1 of 1").await;
        // Tab from the title filter to the row's Run button.
        let mut found = false;
        for _ in 0..30 {
            ui.browser.press(TAB).await.expect("tab");
            let now = active(ui).await;
            if now["action"] == "run" && now["row"] == json!(job.to_string()) {
                found = true;
                break;
            }
        }
        assert!(found, "the Run button is reachable with Tab");
        ui.browser.press(ENTER).await.expect("enter");
        ui.wait_visible("#run-dialog").await;
        assert_eq!(active(ui).await["id"], "run-args", "the dialog puts the focus in its field");
        ui.browser.press(ESCAPE).await.expect("escape");
        wait_for("the dialog to close", || async { (ui.count("#run-dialog").await == 0).then_some(()) }).await;
        assert_eq!(active(ui).await["action"], "run", "the focus returns to the Run button");

        ui.browser.press(ENTER).await.expect("enter");
        ui.wait_visible("#run-dialog").await;
        ui.browser.press("by keyboard").await.expect("type");
        ui.browser.press(&format!("{TAB}{TAB}")).await.expect("tab");
        assert_eq!(active(ui).await["id"], "run-submit");
        ui.browser.press(ENTER).await.expect("enter");
        ui.wait_contains(".toast", "Keyboard job").await;
        let runs = ok_json(ui.app.get(&format!("/scheduled-jobs/{job}/runs")).await).await;
        assert_eq!(runs[0]["rtArgs"], "by keyboard");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lists_say_their_time_zone_count_users_in_the_singular_and_space_query_titles() {
    ui_test("newcomer_wording", async |ui| {
        let query = create_saved_query(&ui.app, "Plasma at a site", "SELECT 1 AS one").await;
        ui.sign_in_admin().await;
        ui.goto("/ui/jobs").await;
        let hint = ui
            .wait_contains("#time-zone-hint", "browser's time zone")
            .await;
        assert!(hint.contains(BROWSER_TZ), "{hint}");
        // Only the admin exists besides the system user.
        ui.goto("/ui/users").await;
        ui.wait_contains("#list-size", "Showing 1 user").await;
        assert!(
            !ui.text("#list-size")
                .await
                .unwrap_or_default()
                .contains("users")
        );
        ui.goto("/ui/saved-queries").await;
        let title = ui
            .wait_text("table", "the saved queries", |t| {
                t.contains("Plasma at a site")
            })
            .await;
        assert!(
            title.contains(&format!("#{query} Plasma at a site")),
            "{title}"
        );
    })
    .await;
}
