//! A job's life in the browser: create an EXTERNAL job in the form, run it with runtime
//! parameters, watch the run go from queued to succeeded with its log following live, preview and
//! download its CSV, filter the runs, cancel a run, delete the job. Scripts wait for gate files the
//! test creates, so every state is held as long as the test needs it (no timing assumptions).

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::common::{TestApp, ok_json};
use crate::support::{Ui, ui_test, wait_for};

/// A script that logs its arguments, waits for `<dir>/gate-<first argument>`, then writes a CSV
/// (with a quoted comma and a quoted quote) as its result.
fn gated_script(app: &TestApp) -> PathBuf {
    let gates = app.data_dir.join("gates");
    std::fs::create_dir_all(&gates).expect("gates dir");
    let body = format!(
        r#"#!/bin/sh
echo "run with: $*"
echo "waiting for gate $1"
while [ ! -e "{gates}/gate-$1" ]; do sleep 0.05; done
out="$LABCRON_RESULT_DIR/report.csv"
printf 'site,specimens,note\n' > "$out"
printf '%s,12,"Smith, J."\n' "$1" >> "$out"
printf 'South,7,"said ""hello"""\n' >> "$out"
echo "finished $1"
"#,
        gates = gates.display()
    );
    app.write_script("gated.sh", &body);
    gates
}

fn open_gate(gates: &Path, name: &str) {
    std::fs::write(gates.join(format!("gate-{name}")), "").expect("open gate");
}

async fn run_status(ui: &Ui, job: i64, run: i64) -> String {
    ui.app.run_status(job, run).await
}

async fn wait_api_status(ui: &Ui, job: i64, run: i64, status: &str) {
    wait_for(&format!("run {run} to be {status}"), || async {
        (run_status(ui, job, run).await == status).then_some(())
    })
    .await;
}

fn row(job: i64) -> String {
    format!("#jobs-body tr[data-job-id=\"{job}\"]")
}

/// Creates the gated EXTERNAL job through the form and returns its id.
async fn create_job_in_form(ui: &Ui, name: &str) -> i64 {
    ui.goto("/ui/jobs").await;
    ui.click("#create-job").await;
    ui.wait_path("/ui/jobs/new").await;
    ui.wait_visible("#job-form").await;
    ui.fill("#name", name).await;
    ui.click("input[name=type][value=EXTERNAL]").await;
    ui.fill("#command", "gated.sh").await;
    ui.click("input[name=rtArgsProvided][value=true]").await;
    ui.fill("#rtArgsHelpText", "Site and year, e.g. North 2024")
        .await;
    ui.click("input[name=repeatSchedule][value=ONDEMAND]").await;
    ui.wait_contains("#schedule-text", "On demand.").await;
    ui.click("#save-job").await;
    ui.wait_path("/ui/jobs").await;
    ui.wait_contains(".toast", &format!("Job {name} saved."))
        .await;
    let id = wait_for("the new job's row", || async {
        let id = ui
            .js(
                "const r = Array.from(document.querySelectorAll('#jobs-body tr')).find(r => r.querySelector('.job-name').innerText === arguments[0]); return r ? Number(r.dataset.jobId) : null;",
                vec![json!(name)],
            )
            .await;
        id.as_i64()
    })
    .await;
    let job = ok_json(ui.app.get(&format!("/scheduled-jobs/{id}")).await).await;
    assert_eq!(job["type"], "EXTERNAL");
    assert_eq!(job["command"], "gated.sh");
    assert_eq!(job["rtArgsProvided"], true);
    assert_eq!(job["repeatSchedule"], "ONDEMAND");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_job_runs_with_parameters_live_log_csv_preview_download_filters_and_delete() {
    ui_test("external_job_full_cycle", async |ui| {
        let gates = gated_script(&ui.app);
        ui.sign_in_admin().await;
        let job = create_job_in_form(ui, "Specimen export").await;
        ui.wait_contains(&format!("{} td.title", row(job)), &format!("#{job} Specimen export")).await;
        ui.wait_contains(&format!("{} td.repeat", row(job)), "On demand.").await;
        ui.wait_contains(&format!("{} td.status", row(job)), "No runs").await;

        // A first run holds the job (only one runs at a time), so the next one waits in the queue.
        let first = ui.app.start_run(job, Some("first")).await;
        wait_api_status(ui, job, first, "IN_PROGRESS").await;

        // Run from the list: the dialog asks for the runtime parameters and shows the help text.
        ui.click(&format!("{} [data-action=run]", row(job))).await;
        ui.wait_visible("#run-dialog").await;
        assert_eq!(ui.text("#run-dialog-title").await.as_deref(), Some("Specimen export"));
        ui.wait_contains("#run-help", "Site and year, e.g. North 2024").await;
        // The field holds the arguments last used (run `first`); emptied, it must be filled.
        assert_eq!(ui.js("return document.querySelector('#run-args').value;", vec![]).await, json!("first"));
        ui.fill("#run-args", "").await;
        ui.click("#run-submit").await;
        ui.wait_contains("#run-error", "Enter the runtime parameters.").await;
        ui.fill("#run-args", "North 2024").await;
        ui.click("#run-submit").await;
        ui.wait_contains(".toast", "queued.").await;
        let run_link = ui.js("return document.querySelector('.toast a').getAttribute('href');", vec![]).await;
        let run_link = run_link.as_str().expect("toast link").to_string();
        let run: i64 = run_link.rsplit('/').next().and_then(|id| id.parse().ok()).expect("run id in link");
        assert_eq!(run_link, format!("/ui/jobs/{job}/runs/{run}"));
        let queued = ok_json(ui.app.get(&format!("/scheduled-jobs/{job}/runs/{run}")).await).await;
        assert_eq!(queued["rtArgs"], "North 2024");
        assert_eq!(queued["status"], "QUEUED");
        // The list shows the newest run's status without a reload.
        ui.wait_contains(&format!("{} td.status", row(job)), "Queued").await;

        // The run's page (the toast's link, checked above) while it waits; then it starts, logs,
        // finishes — all without reloading. The link is followed by its address: a toast lasts 6 s,
        // which waiting for the list on a busy machine can outlast.
        ui.goto(&run_link).await;
        ui.wait_path(&run_link).await;
        ui.wait_contains("#run-status", "Queued").await;
        ui.wait_contains("#log-state", "Waiting to start").await;
        ui.wait_visible("#cancel-run").await;
        ui.mark_document().await;
        open_gate(&gates, "first");
        ui.wait_contains("#run-status", "In progress").await;
        ui.wait_contains("#run-log", "run with: North 2024").await;
        ui.wait_contains("#run-log", "waiting for gate North").await;
        assert!(!ui.text("#run-log").await.unwrap_or_default().contains("finished"));
        open_gate(&gates, "North");
        ui.wait_contains("#run-status", "Succeeded").await;
        ui.wait_contains("#run-log", "finished North").await;
        ui.wait_contains("#log-state", "Complete").await;
        ui.assert_same_document().await;
        ui.wait_contains("#run-facts", "North 2024").await;
        ui.wait_contains("#run-facts", "report.csv").await;
        assert!(ui.text("#run-facts").await.unwrap_or_default().to_lowercase().contains("exit code\n0"));
        ui.wait_visible("#download").await;
        let cancel_shown = ui.js("return !document.querySelector('#cancel-run').hidden;", vec![]).await;
        assert_eq!(cancel_shown, json!(false), "no Cancel once finished");

        // The CSV preview: header and rows, quotes and commas decoded.
        ui.wait_visible("#result-preview tbody tr").await;
        assert_eq!(ui.texts("#result-preview thead th").await, ["#", "site", "specimens", "note"]);
        assert_eq!(ui.count("#result-preview tbody tr").await, 2);
        assert_eq!(ui.texts("#result-preview tbody tr:first-child td").await, ["1", "North", "12", "Smith, J."]);
        assert_eq!(ui.texts("#result-preview tbody tr:nth-child(2) td").await, ["2", "South", "7", "said \"hello\""]);
        ui.wait_contains("#result-info", "All 2 rows").await;

        // Download: the browser saves the file.
        ui.click("#download").await;
        let downloaded = ui.browser.download_dir.join("report.csv");
        let content = wait_for("the download to finish", || async {
            std::fs::read_to_string(&downloaded).ok().filter(|c| c.ends_with("\"\"\"\n"))
        })
        .await;
        assert!(content.starts_with("site,specimens,note\nNorth,12,\"Smith, J.\"\n"), "{content}");

        // The runs list: a run started there updates its row by itself.
        ui.click("#crumb-job").await;
        ui.wait_path(&format!("/ui/jobs/{job}/runs")).await;
        ui.wait_contains("#page-title", "Specimen export run logs").await;
        ui.wait_visible(&format!("#runs-body tr[data-run-id=\"{run}\"]")).await;
        ui.wait_visible("#runs-chart svg circle").await;
        ui.mark_document().await;
        ui.click("#run-job").await;
        ui.fill("#run-args", "South 2025").await;
        ui.click("#run-submit").await;
        let third = wait_for("the third run's row", || async {
            let id = ui.js("const r = document.querySelector('#runs-body tr'); return r ? Number(r.dataset.runId) : null;", vec![]).await;
            id.as_i64().filter(|id| *id > run)
        })
        .await;
        let third_row = format!("#runs-body tr[data-run-id=\"{third}\"]");
        ui.wait_contains(&format!("{third_row} td.status"), "In progress").await;
        assert_eq!(ui.texts(&format!("{third_row} td")).await.len(), 9);
        open_gate(&gates, "South");
        ui.wait_contains(&format!("{third_row} td.status"), "Succeeded").await;
        ui.wait_contains(&format!("{third_row} td.duration"), "s").await;
        ui.wait_visible(&format!("{third_row} [data-action=download]")).await;
        ui.assert_same_document().await;
        assert_eq!(ui.count("#runs-body tr").await, 3);

        // Filters: status, then start time (creation time) bounds.
        ui.select("#filter-status", "FAILED").await;
        ui.wait_visible("#runs-empty").await;
        assert!(ui.path().await.contains("status=FAILED"));
        ui.select("#filter-status", "SUCCEEDED").await;
        wait_for("three succeeded runs", || async { (ui.count("#runs-body tr").await == 3).then_some(()) }).await;
        ui.set_datetime("#filter-from", "2999-01-01T00:00").await;
        ui.wait_visible("#runs-empty").await;
        ui.set_datetime("#filter-from", "2000-01-01T00:00").await;
        wait_for("three runs again", || async { (ui.count("#runs-body tr").await == 3).then_some(()) }).await;
        ui.set_datetime("#filter-to", "2000-01-02T00:00").await;
        ui.wait_visible("#runs-empty").await;
        ui.click("#clear-filters").await;
        wait_for("all runs after clearing", || async { (ui.count("#runs-body tr").await == 3).then_some(()) }).await;

        // Delete from the list, with OpenSpecimen's confirmation.
        ui.goto("/ui/jobs").await;
        ui.wait_contains(&format!("{} td.status", row(job)), "Succeeded").await;
        ui.click(&format!("{} [data-action=delete]", row(job))).await;
        ui.wait_contains("#confirm-message", "Are you sure you want to delete the job - Specimen export?").await;
        ui.click("#confirm-cancel").await;
        assert_eq!(ui.count(&row(job)).await, 1, "cancel keeps the job");
        ui.click(&format!("{} [data-action=delete]", row(job))).await;
        ui.click("#confirm-ok").await;
        ui.wait_contains(".toast", "Job Specimen export deleted.").await;
        wait_for("the row to go", || async { (ui.count(&row(job)).await == 0).then_some(()) }).await;
        let gone = ui.app.get(&format!("/scheduled-jobs/{job}")).await;
        assert_eq!(gone.status(), reqwest::StatusCode::BAD_REQUEST);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_run_can_be_cancelled_from_its_page() {
    ui_test("cancel_a_run", async |ui| {
        let gates = gated_script(&ui.app);
        let _ = gates;
        let job = ui
            .app
            .create_job(
                &json!({"name": "Long export", "type": "EXTERNAL", "command": "gated.sh",
                "repeatSchedule": "ONDEMAND", "rtArgsProvided": true}),
            )
            .await;
        let run = ui.app.start_run(job, Some("never")).await;
        wait_api_status(ui, job, run, "IN_PROGRESS").await;
        ui.sign_in_admin().await;
        ui.goto(&format!("/ui/jobs/{job}/runs/{run}")).await;
        ui.wait_contains("#run-log", "waiting for gate never").await;
        ui.click("#cancel-run").await;
        ui.wait_contains("#confirm-message", "Cancel run").await;
        ui.click("#confirm-ok").await;
        ui.wait_contains("#run-status", "Failed").await;
        // Still FAILED on the wire; the page says who cancelled it (issue 13).
        ui.wait_contains("#run-status", "cancelled by Admin").await;
        ui.wait_contains("#run-message", "cancel").await;
        assert_eq!(run_status(ui, job, run).await, "FAILED");
        let hidden = ui
            .js(
                "return document.querySelector('#cancel-run').hidden;",
                vec![],
            )
            .await;
        assert_eq!(hidden, json!(true));
    })
    .await;
}
