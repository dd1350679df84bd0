//! The Runs page (issue 13): every job's runs in one list with a message column, the banner of
//! the last day's failures and its filter, rows that update by themselves, and the "Cancelled"
//! badge. A gate file the test creates holds a run IN_PROGRESS as long as needed.

use serde_json::json;

use crate::common::ok_json;
use crate::support::{ui_test, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_page_lists_every_job_with_messages_a_failure_banner_and_live_rows() {
    ui_test("all-runs", async |ui| {
        let app = &ui.app;
        let gate = app.data_dir.join("gate");
        app.write_script("ok.sh", "#!/bin/sh\necho fine\n");
        app.write_script("fail.sh", "#!/bin/sh\necho 'LIMS timeout' >&2\nexit 3\n");
        app.write_script(
            "gated.sh",
            &format!(
                "#!/bin/sh\nwhile [ ! -e '{}' ]; do sleep 0.05; done\n",
                gate.display()
            ),
        );
        let ok = app.create_external_job("export", "ok.sh").await;
        let bad = app.create_external_job("lims sync", "fail.sh").await;
        let gated = app.create_external_job("upload", "gated.sh").await;
        let ok_run = app.start_run(ok, None).await;
        app.wait_run(ok, ok_run).await;
        let bad_run = app.start_run(bad, None).await;
        app.wait_run(bad, bad_run).await;
        let running = app.start_run(gated, None).await;
        let queued = app.start_run(gated, None).await;

        ui.sign_in_admin().await;
        ui.goto("/ui/jobs").await;
        // The jobs list's Next Run is in the browser's zone, and says so beside the job's zone.
        // (Table headers are shown in capitals.)
        ui.wait_text("#next-run-zone", "the zone label", |t| {
            t.to_lowercase().starts_with("(your time: ")
        })
        .await;
        ui.click("nav a[href='/ui/runs']").await;
        ui.wait_path("/ui/runs").await;
        assert_eq!(
            ui.text("nav a[aria-current=page]").await.as_deref(),
            Some("Runs")
        );
        wait_for("four rows", || async {
            (ui.count("#runs-body tr").await == 4).then_some(())
        })
        .await;
        let ids: Vec<String> = ui.texts("#runs-body tr td[data-label='Run ID']").await;
        let expected: Vec<String> = [queued, running, bad_run, ok_run]
            .iter()
            .map(|id| format!("#{id}"))
            .collect();
        assert_eq!(ids, expected, "newest first, across jobs");
        let bad_row = format!("#runs-body tr[data-run-id='{bad_run}']");
        assert_eq!(
            ui.text(&format!("{bad_row} td[data-label=Message]"))
                .await
                .as_deref(),
            Some("exit code 3: LIMS timeout")
        );
        assert_eq!(
            ui.text(&format!("{bad_row} td[data-label=Job]"))
                .await
                .as_deref(),
            Some("lims sync")
        );
        ui.wait_contains("#failed-banner", "1 run failed in the last 24 hours")
            .await;
        ui.wait_contains("label[for=filter-from] .zone-label", "(")
            .await;

        // Cancel the queued run, then let the running one finish: both rows change by themselves.
        ok_json(
            app.post(
                &format!("/scheduled-jobs/{gated}/runs/{queued}/cancel"),
                &json!({}),
            )
            .await,
        )
        .await;
        std::fs::write(&gate, "").expect("open the gate");
        ui.wait_contains(
            &format!("#runs-body tr[data-run-id='{running}'] td[data-label=Status]"),
            "Succeeded",
        )
        .await;
        ui.wait_contains(
            &format!("#runs-body tr[data-run-id='{queued}'] td[data-label=Status]"),
            "Cancelled",
        )
        .await;
        ui.wait_contains("#failed-banner", "2 runs failed in the last 24 hours")
            .await;

        // The banner links to the filter of the last day's failures.
        ui.click("#failed-link").await;
        ui.wait_path("/ui/runs?status=FAILED").await;
        wait_for("only the failures", || async {
            (ui.count("#runs-body tr").await == 2).then_some(())
        })
        .await;
        assert_eq!(
            ui.texts("#runs-body tr td[data-label='Run ID']").await,
            [format!("#{queued}"), format!("#{bad_run}")]
        );
        // "Cancelled" keeps only the cancelled one.
        ui.select("#filter-status", "CANCELLED").await;
        wait_for("only the cancelled run", || async {
            (ui.count("#runs-body tr").await == 1).then_some(())
        })
        .await;
        assert_eq!(
            ui.texts("#runs-body tr td[data-label='Run ID']").await,
            [format!("#{queued}")]
        );
        ui.select("#filter-status", "").await;
        ui.select("#filter-trigger", "RETRY").await;
        ui.wait_visible("#runs-empty").await;
    })
    .await;
}
