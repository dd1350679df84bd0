//! The README's screenshots, taken from the real pages with demo data:
//! `cargo test --test ui -- --ignored readme_screenshots` writes `docs/screenshots/jobs.png`,
//! `docs/screenshots/run.png` and `docs/screenshots/job.png` (and desktop/phone views of every
//! page to `target/ui-screenshots/` for a look). Ignored by default so that a test run does not rewrite tracked files.

use std::path::PathBuf;

use serde_json::json;

use crate::common::{AppOptions, TestApp, ok_json};
use crate::support::{DESKTOP, PHONE, Ui, artefact_dir, ui_test_with};

const EXPORT_SCRIPT: &str = r#"#!/bin/sh
# Demo export: writes a small CSV of specimens; `fail` makes it fail, `slow` takes a while.
echo "export started with arguments: $*"
case "$1" in
  fail) echo "freezer database unreachable" >&2; exit 3 ;;
  slow) sleep 2 ;;
esac
i=0
out="$LABCRON_RESULT_DIR/specimens.csv"
echo "specimen_label,collection_site,type,volume_ml,collected_on" > "$out"
for site in North South East West; do
  for kind in Plasma Serum "Whole blood"; do
    i=$((i + 1))
    echo "SP-2024-$((1000 + i)),$site,$kind,$((i % 5 + 1)).5,2024-03-$((i % 27 + 1))" >> "$out"
  done
done
echo "wrote $i specimens"
"#;

/// Fills a server with a few jobs of every kind and some runs, as a lab might have.
pub async fn seed_demo(app: &TestApp) -> (i64, i64) {
    app.write_script("export-specimens.sh", EXPORT_SCRIPT);
    let export = app
        .create_job(&json!({"name": "Specimen export for biobank", "type": "EXTERNAL", "command": "export-specimens.sh",
            "repeatSchedule": "DAILY", "scheduledHour": 23, "scheduledMinute": 0, "timezone": "America/New_York",
            "notifyOn": "FAILURE", "rtArgsProvided": true, "rtArgsHelpText": "Optional: site name, or `fail` / `slow` for a demo"}))
        .await;
    app.create_job(&json!({"name": "Freezer temperature check", "type": "EXTERNAL", "command": "export-specimens.sh",
        "repeatSchedule": "HOURLY", "scheduledMinute": 5}))
        .await;
    app.create_job(&json!({"name": "Files cleaner", "type": "INTERNAL", "taskImplFqn": "files-cleaner",
        "fixedArgs": "filesRetentionDays=30", "repeatSchedule": "WEEKLY", "scheduledDayOfWeek": "MONDAY",
        "scheduledHour": 8, "scheduledMinute": 0}))
        .await;
    app.create_job(&json!({"name": "Ledger backup", "type": "INTERNAL", "taskImplFqn": "database-backup",
        "repeatSchedule": "MONTHLY", "scheduledDayOfMonth": 1, "scheduledHour": 6, "scheduledMinute": 30}))
        .await;
    app.create_job(&json!({"name": "Consent expiry reminder", "type": "EXTERNAL", "command": "export-specimens.sh",
        "repeatSchedule": "CRON", "cronExpression": "30 6 * * 1-5", "timezone": "America/New_York"}))
        .await;
    app.create_job(
        &json!({"name": "Label printer queue", "type": "EXTERNAL", "command": "export-specimens.sh",
        "repeatSchedule": "MINUTELY", "minutelyInterval": 5}),
    )
    .await;
    let report = app
        .create_job(
            &json!({"name": "Weekly runs report", "type": "INTERNAL", "taskImplFqn": "runs-report",
            "repeatSchedule": "ONDEMAND"}),
        )
        .await;
    let mut last = 0;
    for args in [
        "North", "slow", "South", "fail", "East", "slow", "West", "North", "fail", "South", "slow",
        "East",
    ] {
        last = app.start_run(export, Some(args)).await;
        app.wait_run(export, last).await;
    }
    let r = app.start_run(report, None).await;
    app.wait_run(report, r).await;
    (export, last)
}

fn docs_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join("screenshots");
    std::fs::create_dir_all(&dir).expect("docs/screenshots");
    dir
}

async fn save(ui: &Ui, name: &str, to_docs: bool) {
    let draft = ui.screenshot(name).await;
    if to_docs {
        std::fs::copy(&draft, docs_dir().join(format!("{name}.png")))
            .expect("copy screenshot to docs");
    }
}

async fn shoot_pages(ui: &Ui, export: i64, run: i64, suffix: &str, to_docs: bool) {
    ui.goto("/ui/jobs").await;
    ui.wait_visible("#jobs-body tr").await;
    ui.wait_contains("#list-size", "Showing").await;
    ui.wait_visible(".last-status").await;
    save(ui, &format!("jobs{suffix}"), to_docs).await;

    ui.goto(&format!("/ui/jobs/{export}/runs/{run}")).await;
    ui.wait_visible("#result-preview tbody tr").await;
    ui.wait_contains("#log-state", "Complete").await;
    save(ui, &format!("run{suffix}"), to_docs).await;

    ui.goto(&format!("/ui/jobs/{export}")).await;
    ui.wait_visible("#next-runs tr").await;
    ui.wait_visible("#duration-svg rect").await;
    // A taller window, so the whole page (the chart of last runs too) is in the picture.
    let (width, height) = if suffix.is_empty() { DESKTOP } else { PHONE };
    ui.browser.set_window_size(width, height.max(1500)).await;
    ui.wait_visible("#duration-svg rect").await;
    save(ui, &format!("job{suffix}"), to_docs).await;
    ui.browser.set_window_size(width, height).await;

    ui.goto(&format!("/ui/jobs/{export}/runs")).await;
    ui.wait_visible("#runs-body tr").await;
    ui.wait_visible("#runs-chart svg").await;
    save(ui, &format!("runs{suffix}"), false).await;

    ui.goto(&format!("/ui/jobs/{export}/edit")).await;
    ui.wait_visible("#next-runs li").await;
    save(ui, &format!("job-form{suffix}"), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/screenshots; run with --ignored to refresh them"]
async fn readme_screenshots() {
    ui_test_with(
        "readme_screenshots",
        AppOptions::default(),
        DESKTOP,
        async |ui| {
            let (export, run) = seed_demo(&ui.app).await;
            let _: serde_json::Value =
                ok_json(ui.app.get(&format!("/scheduled-jobs/{export}")).await).await;
            ui.sign_in_admin().await;
            shoot_pages(ui, export, run, "", true).await;
            ui.browser.set_window_size(PHONE.0, PHONE.1).await;
            shoot_pages(ui, export, run, "-phone", false).await;
            eprintln!(
                "screenshots in {} and docs/screenshots",
                artefact_dir().display()
            );
        },
    )
    .await;
}
