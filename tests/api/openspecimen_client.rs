//! A third-party OpenSpecimen client against the real server: `openspecimen_client.py` uses
//! OpenSpecimenAPIconnector (PyPI, pinned in `scripts/test`, installed into
//! `target/openspecimen-venv`) for sign-in, jobs, a run and its download (through the client's
//! generic request helper), and its users calls (create without a password, `PUT /users/password`,
//! update). This test then checks from outside that what the client did is in the server.
//! Without the venv the test fails and says how to make it; `LABCRON_OPENSPECIMEN_PYTHON` names
//! another Python that has the package.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::{ADMIN_PASSWORD, ok_json, spawn_app};

const VENV: &str = "openspecimen-venv/bin/python";

fn find_python() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("LABCRON_OPENSPECIMEN_PYTHON") {
        return Some(PathBuf::from(path));
    }
    let mut candidates = Vec::new();
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join(VENV));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(VENV),
    );
    // target/<profile>/deps/api-… → target
    if let Ok(exe) = std::env::current_exe()
        && let Some(target) = exe.ancestors().nth(3)
    {
        candidates.push(target.join(VENV));
    }
    candidates.into_iter().find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openspecimen_api_connector_signs_in_runs_a_job_and_manages_users() {
    let python = find_python().unwrap_or_else(|| {
        panic!(
            "OpenSpecimenAPIconnector is not installed: run scripts/test, or \
             `python3 -m venv target/openspecimen-venv && target/openspecimen-venv/bin/pip install \
             OpenSpecimenAPIconnector==0.9.4`, or set LABCRON_OPENSPECIMEN_PYTHON"
        )
    });
    let app = spawn_app().await;
    app.write_script(
        "connector.sh",
        "#!/bin/sh\nprintf 'site,args\\nMain,%s\\n' \"$1\" > \"$LABCRON_RESULT_DIR/out.csv\"\n",
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/api/openspecimen_client.py"
    );
    let base = app.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args([script, &base, ADMIN_PASSWORD, "connector.sh"])
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the client script failed:\n{stdout}\n{stderr}"
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().expect("a summary line"))
        .unwrap_or_else(|_| panic!("no JSON summary: {stdout}"));
    assert_eq!(summary["result"], "site,args\nMain,from-connector\n");

    // What the client did is what the server has.
    let job_id = summary["jobId"].as_i64().expect("job id");
    let run_id = summary["runId"].as_i64().expect("run id");
    let job = ok_json(app.get(&format!("/scheduled-jobs/{job_id}")).await).await;
    assert_eq!(job["rtArgsHelpText"], "any words");
    let run = ok_json(
        app.get(&format!("/scheduled-jobs/{job_id}/runs/{run_id}"))
            .await,
    )
    .await;
    assert_eq!(run["status"], "SUCCEEDED");
    assert_eq!(run["runBy"]["loginName"], "admin");
    let carla = ok_json(
        app.get(&format!("/users/{}", summary["carlaId"].as_i64().unwrap()))
            .await,
    )
    .await;
    assert_eq!(carla["firstName"], "Carla Maria");
    assert_eq!(carla["admin"], false);
    app.sign_in("carla", "carla-password-2").await;
    let sam = ok_json(
        app.get(&format!("/users/{}", summary["samId"].as_i64().unwrap()))
            .await,
    )
    .await;
    assert_eq!(sam["admin"], true);
    // carla's attempt on the admin's password changed nothing.
    app.sign_in("admin", ADMIN_PASSWORD).await;
}
