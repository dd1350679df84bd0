//! The Audit page and a job's History (issue 15): admins read the trail with filters; a job's
//! History, linked from its edit page, lists who changed what in it, before → after.

use serde_json::json;

use crate::common::ok_json;
use crate::support::{ui_test, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_read_the_trail_and_a_jobs_history() {
    ui_test("audit", async |ui| {
        ui.app.write_script("hello.sh", "#!/bin/sh\necho hi\n");
        let job = ui.app.create_external_job("hello", "hello.sh").await;
        let mut body = ok_json(ui.app.get(&format!("/scheduled-jobs/{job}")).await).await;
        body["timeoutSeconds"] = json!(120);
        ok_json(ui.app.put(&format!("/scheduled-jobs/{job}"), &body).await).await;
        let (_bob, _) = ui.app.create_user("bob", false).await;

        ui.sign_in_admin().await;
        ui.click(".site-header a[href=\"/ui/audit\"]").await;
        ui.wait_path("/ui/audit").await;
        ui.wait_visible("#audit-body tr[data-action=JOB_UPDATE]")
            .await;
        ui.wait_contains("#audit-body", "USER_CREATE").await;
        // Filter by actor: bob signed in once (create_user signs in).
        ui.fill("#audit-actor", "bob").await;
        ui.click("#audit-apply").await;
        wait_for("only bob's events", || async {
            let rows = ui.count("#audit-body tr").await;
            let signed_in = ui.count("#audit-body tr[data-action=SIGN_IN]").await;
            (rows == 1 && signed_in == 1).then_some(())
        })
        .await;

        // The job's History from its edit page.
        ui.goto(&format!("/ui/jobs/{job}/edit")).await;
        ui.wait_visible("#job-history-link").await;
        ui.click("#job-history-link").await;
        ui.wait_path(&format!("/ui/jobs/{job}/history")).await;
        ui.wait_contains("#page-title", "History").await;
        ui.wait_contains(
            "#audit-body tr[data-action=JOB_UPDATE]",
            "timeoutSeconds: 3600 → 120",
        )
        .await;
        ui.wait_visible("#audit-body tr[data-action=JOB_CREATE]")
            .await;
        assert_eq!(
            ui.count("#audit-body tr").await,
            2,
            "only this job's events"
        );
    })
    .await;
}
