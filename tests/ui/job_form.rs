//! The add/edit form: OpenSpecimen's visibility rules, the "Run Schedule" description and the
//! next-fire preview (which changes as the schedule is edited, and shows DST changes), and the
//! API's validation errors beside the fields they concern.

use chrono::{Datelike, Duration as Days, NaiveDate, Weekday};
use serde_json::json;

use crate::common::ok_json;
use crate::support::{Ui, ui_test, wait_for};

async fn visible(ui: &Ui, css: &str) -> bool {
    ui.js(
        "const n = document.querySelector(arguments[0]); return !!n && n.getClientRects().length > 0;",
        vec![json!(css)],
    )
    .await
    .as_bool()
        == Some(true)
}

async fn field_shown(ui: &Ui, field: &str) -> bool {
    visible(ui, &format!("[data-field=\"{field}\"]")).await
}

async fn next_runs(ui: &Ui) -> Vec<String> {
    ui.texts("#next-runs li").await
}

/// Waits for five fire times different from `before` and returns them.
async fn wait_new_fires(ui: &Ui, before: &[String]) -> Vec<String> {
    wait_for("five new fire times", || async {
        let now = next_runs(ui).await;
        (now.len() == 5 && now != before).then_some(now)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_follow_the_type_and_schedule() {
    ui_test("form_visibility", async |ui| {
        ui.sign_in_admin().await;
        ui.goto("/ui/jobs/new").await;
        ui.wait_visible("#job-form").await;
        // New jobs start as on-demand EXTERNAL jobs without runtime parameters.
        assert!(field_shown(ui, "command").await);
        assert!(!field_shown(ui, "taskImplFqn").await);
        assert!(!field_shown(ui, "savedQuery").await);
        assert!(!field_shown(ui, "rtArgsHelpText").await);
        assert!(!field_shown(ui, "timezone").await);
        assert!(!visible(ui, "#next-runs").await);
        ui.wait_contains("#schedule-text", "On demand.").await;

        ui.click("input[name=type][value=INTERNAL]").await;
        assert!(field_shown(ui, "taskImplFqn").await);
        assert!(!field_shown(ui, "command").await);
        ui.click("input[name=type][value=QUERY]").await;
        assert!(field_shown(ui, "savedQuery").await);
        assert!(field_shown(ui, "runAs").await);
        assert!(!field_shown(ui, "taskImplFqn").await);
        ui.click("input[name=rtArgsProvided][value=true]").await;
        assert!(field_shown(ui, "rtArgsHelpText").await);

        let cases: &[(&str, &[&str], &str)] = &[
            (
                "MONTHLY",
                &["scheduledDayOfMonth", "scheduledHour", "scheduledMinute"],
                "1st of every month at 00:00 hours.",
            ),
            (
                "WEEKLY",
                &["scheduledDayOfWeek", "scheduledHour", "scheduledMinute"],
                "Every Monday at 00:00 hours.",
            ),
            (
                "DAILY",
                &["scheduledHour", "scheduledMinute"],
                "Every day at 00:00 hours.",
            ),
            (
                "HOURLY",
                &["scheduledMinute", "hourlyInterval"],
                "0th minute of every hour.",
            ),
            ("MINUTELY", &["minutelyInterval"], "Every 5 minutes."),
            ("CRON", &["cronExpression"], "Cron:"),
        ];
        let all = [
            "scheduledDayOfMonth",
            "scheduledDayOfWeek",
            "scheduledHour",
            "scheduledMinute",
            "hourlyInterval",
            "minutelyInterval",
            "cronExpression",
        ];
        for (kind, shown, text) in cases {
            ui.click(&format!("input[name=repeatSchedule][value={kind}]"))
                .await;
            ui.wait_contains("#schedule-text", text).await;
            for field in all {
                assert_eq!(
                    field_shown(ui, field).await,
                    shown.contains(&field),
                    "{field} with {kind}"
                );
            }
            assert!(field_shown(ui, "timezone").await, "time zone with {kind}");
        }
        ui.fill("#cronExpression", "30 6 * * 1-5").await;
        ui.wait_contains("#schedule-text", "Cron: 30 6 * * 1-5")
            .await;
        ui.click("input[name=repeatSchedule][value=MINUTELY]").await;
        ui.fill("#minutelyInterval", "1").await;
        ui.wait_contains("#schedule-text", "Every minute.").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_schedule_changes_the_next_fire_times() {
    ui_test("edit_schedule", async |ui| {
        ui.app.write_script("ok.sh", "#!/bin/sh\necho ok\n");
        let job = ui.app.create_external_job("Nightly export", "ok.sh").await;
        ui.sign_in_admin().await;
        ui.click(&format!(
            "#jobs-body tr[data-job-id=\"{job}\"] [data-action=edit]"
        ))
        .await;
        ui.wait_path(&format!("/ui/jobs/{job}/edit")).await;
        ui.wait_visible("#job-form").await;
        ui.wait_contains("#page-title", &format!("Edit job #{job}"))
            .await;
        assert_eq!(ui.text("#save-job").await.as_deref(), Some("Update"));
        ui.wait_contains("#schedule-text", "On demand.").await;

        ui.click("input[name=repeatSchedule][value=DAILY]").await;
        ui.fill("#scheduledHour", "23").await;
        ui.fill("#scheduledMinute", "0").await;
        ui.fill("#timezone", "UTC").await;
        ui.wait_contains("#schedule-text", "Every day at 23:00 hours.")
            .await;
        let at_23 = wait_new_fires(ui, &[]).await;
        assert!(
            at_23.iter().all(|f| f.contains("23:00 in UTC")),
            "{at_23:?}"
        );

        ui.fill("#scheduledHour", "6").await;
        ui.wait_contains("#schedule-text", "Every day at 06:00 hours.")
            .await;
        let at_6 = wait_new_fires(ui, &at_23).await;
        assert!(at_6.iter().all(|f| f.contains("06:00 in UTC")), "{at_6:?}");
        // Shown in the browser's zone (Europe/Berlin: 07:00 or 08:00), with the offset.
        assert!(
            at_6.iter()
                .all(|f| f.contains(" 07:00 UTC+01:00") || f.contains(" 08:00 UTC+02:00")),
            "{at_6:?}"
        );

        ui.click("#save-job").await;
        ui.wait_path("/ui/jobs").await;
        let row = format!("#jobs-body tr[data-job-id=\"{job}\"]");
        ui.wait_contains(&format!("{row} td.repeat"), "Every day at 06:00 hours.")
            .await;
        let next_run = ui
            .wait_text(&format!("{row} td.next-run"), "a time", |t| t.contains(':'))
            .await;
        let saved = ok_json(ui.app.get(&format!("/scheduled-jobs/{job}")).await).await;
        assert_eq!(saved["repeatSchedule"], "DAILY");
        assert_eq!(saved["scheduledHour"], 6);
        assert_eq!(saved["scheduledMinute"], 0);
        assert_eq!(saved["timezone"], "UTC");
        assert_eq!(
            saved["command"], "ok.sh",
            "the full replace kept the other fields"
        );
        let next_ms = saved["nextRunOn"].as_i64().expect("nextRunOn");
        let shown = ui
            .js("return LC.fmtDateTime(arguments[0]);", vec![json!(next_ms)])
            .await;
        assert_eq!(shown.as_str(), Some(next_run.as_str()));

        // A saved schedule's preview comes from /next-runs and matches what the form computed.
        ui.goto(&format!("/ui/jobs/{job}/edit")).await;
        ui.wait_visible("#job-form").await;
        let reopened = wait_new_fires(ui, &[]).await;
        assert_eq!(reopened, at_6);
    })
    .await;
}

/// The Sunday on which Europe/Berlin next moves its clocks forward (last Sunday of March).
fn next_spring_forward(today: NaiveDate) -> NaiveDate {
    let mut year = today.year();
    loop {
        let mut day = NaiveDate::from_ymd_opt(year, 3, 31).expect("date");
        while day.weekday() != Weekday::Sun {
            day -= Days::days(1);
        }
        if day > today + Days::days(2) {
            return day;
        }
        year += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_shows_a_daylight_saving_change() {
    ui_test("dst_preview", async |ui| {
        ui.app.write_script("ok.sh", "#!/bin/sh\necho ok\n");
        ui.sign_in_admin().await;
        ui.goto("/ui/jobs/new").await;
        ui.wait_visible("#job-form").await;
        ui.click("input[name=repeatSchedule][value=DAILY]").await;
        ui.fill("#scheduledHour", "2").await;
        ui.fill("#scheduledMinute", "30").await;
        ui.fill("#timezone", "Europe/Berlin").await;
        let sunday = next_spring_forward(chrono::Utc::now().date_naive());
        let saturday = sunday - Days::days(1);
        ui.click("#advanced summary").await;
        ui.set_datetime("#startDate", &format!("{saturday}T00:00"))
            .await;
        let fires = wait_for("fires from the start date", || async {
            let fires = next_runs(ui).await;
            (fires.len() == 5 && fires[0].contains(&saturday.to_string())).then_some(fires)
        })
        .await;
        // 02:30 does not exist on that Sunday: the run comes at 03:00, and the offset change shows.
        assert!(
            fires[0].contains(&format!("{saturday} 02:30 UTC+01:00")),
            "{fires:?}"
        );
        assert!(
            fires[1].contains(&format!("{sunday} 03:00 UTC+02:00")),
            "{fires:?}"
        );
        assert!(fires[1].contains("DST: UTC+01:00 → UTC+02:00"), "{fires:?}");
        assert!(fires[2].contains("02:30 UTC+02:00"), "{fires:?}");
        assert_eq!(ui.count("#next-runs .dst").await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_appear_beside_their_fields() {
    ui_test("form_validation", async |ui| {
        ui.app.write_script("ok.sh", "#!/bin/sh\necho ok\n");
        ui.sign_in_admin().await;
        ui.goto("/ui/jobs/new").await;
        ui.wait_visible("#job-form").await;
        ui.fill("#command", "not-in-scripts.sh").await;
        ui.click("input[name=repeatSchedule][value=DAILY]").await;
        ui.fill("#scheduledHour", "25").await;
        ui.wait_contains("#preview-note", "scheduledHour").await;
        ui.click("#save-job").await;

        ui.wait_contains("[data-field=name] .field-error", "Job name is required.")
            .await;
        ui.wait_contains(
            "[data-field=scheduledHour] .field-error",
            "scheduledHour must be a whole number from 0 to 23",
        )
        .await;
        ui.wait_contains("[data-field=command] .field-error", "Command not allowed")
            .await;
        assert_eq!(ui.count("#error-list li").await, 3);
        let focused = ui.js("return document.activeElement.id;", vec![]).await;
        assert_eq!(focused, json!("error-summary"));
        let name_invalid = ui
            .js(
                "return document.querySelector('#name').getAttribute('aria-invalid');",
                vec![],
            )
            .await;
        assert_eq!(name_invalid, json!("true"));
        let described = ui
            .js(
                "return document.querySelector('#scheduledHour').getAttribute('aria-describedby');",
                vec![],
            )
            .await;
        assert_eq!(described, json!("err-scheduledHour"));

        // Fix those; a bad cron expression is reported beside its field.
        ui.fill("#name", "Fixed job").await;
        ui.fill("#command", "ok.sh").await;
        ui.click("input[name=repeatSchedule][value=CRON]").await;
        ui.fill("#cronExpression", "61 * * * *").await;
        ui.click("#save-job").await;
        ui.wait_contains("[data-field=cronExpression] .field-error", "61 * * * *")
            .await;
        assert_eq!(ui.count(".field-error").await, 1, "old errors are cleared");

        ui.fill("#cronExpression", "*/15 8-17 * * 1-5").await;
        ui.wait_contains("#schedule-text", "*/15 8-17 * * 1-5")
            .await;
        wait_for("the cron preview", || async {
            (next_runs(ui).await.len() == 5).then_some(())
        })
        .await;
        ui.click("#save-job").await;
        ui.wait_path("/ui/jobs").await;
        ui.wait_contains("#jobs-body", "Fixed job").await;
        ui.wait_contains("#jobs-body td.repeat code", "*/15 8-17 * * 1-5")
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripts_picker_shows_the_programs_and_fills_the_command() {
    ui_test("scripts_picker", async |ui| {
        ui.app
            .write_script("count.sh", "#!/bin/sh\n# Counts specimens per site\n");
        ui.sign_in_admin().await;
        ui.goto("/ui/jobs/new").await;
        ui.wait_visible("#job-form").await;
        ui.click("#scripts-picker summary").await;
        let entry = ui
            .wait_text(
                "#scripts-list li[data-name=\"count.sh\"]",
                "the script",
                |t| t.contains("Counts specimens per site"),
            )
            .await;
        assert!(entry.contains("bytes"), "{entry}");
        ui.fill("#command", "old.sh --site Main").await;
        ui.click("button[data-script=\"count.sh\"]").await;
        let command = ui
            .js("return document.querySelector('#command').value;", vec![])
            .await;
        assert_eq!(command, json!("count.sh --site Main"));
    })
    .await;
}
