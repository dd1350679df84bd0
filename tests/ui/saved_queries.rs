//! Saved queries in the browser: the list, writing SQL with a "Try it" preview (errors beside the
//! field), saving, and scheduling it as a QUERY job whose run result shows as a table.

use serde_json::json;

use crate::common::ok_json;
use crate::support::{create_saved_query, ui_test, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_try_save_and_schedule_a_saved_query() {
    ui_test("saved_queries", async |ui| {
        let existing = create_saved_query(&ui.app, "Plasma specimens", "SELECT label FROM specimen_details WHERE specimen_type = 'Plasma'").await;
        ui.sign_in_admin().await;
        ui.click(".site-header a[href=\"/ui/saved-queries\"]").await;
        ui.wait_path("/ui/saved-queries").await;
        ui.wait_contains(&format!("#queries-body tr[data-query-id=\"{existing}\"]"), "Plasma specimens").await;
        ui.click("#create-query").await;
        ui.wait_path("/ui/saved-queries/new").await;
        ui.wait_visible("#query-form").await;
        ui.fill("#title", "Specimens per site").await;

        ui.fill("#sql", "SELEC site FROM specimen_details").await;
        ui.click("#try-query").await;
        ui.wait_contains("[data-field=sql] .field-error", "SQL is invalid").await;

        let sql = "SELECT site, count(*) AS specimens FROM specimen_details GROUP BY site HAVING count(*) >= :min ORDER BY site";
        ui.fill("#sql", sql).await;
        ui.click("#try-query").await;
        ui.wait_contains("[data-field=params] .field-error", "min").await;
        ui.fill("#try-params", "min=1").await;
        ui.click("#try-query").await;
        ui.wait_visible("#try-preview tbody tr").await;
        assert_eq!(ui.texts("#try-preview thead th").await, ["#", "site", "specimens"]);
        ui.wait_contains("#try-state", "row").await;
        assert_eq!(ui.count(".field-error").await, 0);

        ui.click("#save-query").await;
        ui.wait_path("/ui/saved-queries").await;
        ui.wait_contains(".toast", "Query Specimens per site saved.").await;
        let query_id = wait_for("the saved query's row", || async {
            ui.js(
                "const r = Array.from(document.querySelectorAll('#queries-body tr')).find(r => r.innerText.includes('Specimens per site')); return r ? Number(r.dataset.queryId) : null;",
                vec![],
            )
            .await
            .as_i64()
        })
        .await;
        let saved = ok_json(ui.app.get(&format!("/saved-queries/{query_id}")).await).await;
        assert_eq!(saved["sql"], sql);
        assert_eq!(saved["dataSource"], "lab");

        // Schedule it: the job form opens as a QUERY job for this query.
        ui.click(&format!("#queries-body tr[data-query-id=\"{query_id}\"] a[href=\"/ui/jobs/new?queryId={query_id}\"]")).await;
        ui.wait_visible("#job-form").await;
        assert_eq!(ui.js("return document.querySelector('input[name=type]:checked').value;", vec![]).await, json!("QUERY"));
        assert_eq!(ui.js("return document.querySelector('#savedQuery').value;", vec![]).await, json!(query_id.to_string()));
        ui.fill("#name", "Site counts").await;
        ui.fill("#fixedArgs", "min=1").await;
        ui.click("#save-job").await;
        ui.wait_path("/ui/jobs").await;
        let job = wait_for("the QUERY job's row", || async {
            ui.js(
                "const r = Array.from(document.querySelectorAll('#jobs-body tr')).find(r => r.innerText.includes('Site counts')); return r ? Number(r.dataset.jobId) : null;",
                vec![],
            )
            .await
            .as_i64()
        })
        .await;
        let row = format!("#jobs-body tr[data-job-id=\"{job}\"]");
        ui.wait_contains(&format!("{row} td"), "").await;
        assert_eq!(ui.texts(&format!("{row} td")).await[2], "Query");
        ui.click(&format!("{row} [data-action=run]")).await;
        ui.wait_contains(".toast", "Site counts").await;
        ui.click(".toast a").await;
        ui.wait_contains("#run-status", "Succeeded").await;
        ui.wait_visible("#result-preview tbody tr").await;
        assert_eq!(ui.texts("#result-preview thead th").await, ["#", "site", "specimens"]);
    })
    .await;
}
