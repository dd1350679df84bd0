//! `GET /ui/api/scripts`, the job form's read-only scripts picker: admins see the programs of the
//! scripts directory (also in subdirectories) with size, modification time and first lines; a link
//! leading outside the directory is not listed; non-admins are refused.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{error_codes, ok_json, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_see_the_programs_of_the_scripts_directory_and_nothing_outside() {
    let app = spawn_app().await;
    app.write_script(
        "count.sh",
        "#!/bin/sh\n# Counts specimens\necho 42\nline 4\nline 5\nline 6\n",
    );
    std::fs::create_dir_all(app.scripts_dir.join("sub")).unwrap();
    app.write_script("sub/deep.py", "#!/usr/bin/env python3\nprint('deep')\n");
    let outside = app.data_dir.join("outside.sh");
    std::fs::write(&outside, "#!/bin/sh\necho secret\n").unwrap();
    std::os::unix::fs::symlink(&outside, app.scripts_dir.join("escape.sh")).unwrap();
    std::os::unix::fs::symlink(
        app.scripts_dir.join("count.sh"),
        app.scripts_dir.join("alias.sh"),
    )
    .unwrap();
    let url = format!("{}/ui/api/scripts", app.base);
    let programs: Value = ok_json(
        app.client
            .get(&url)
            .header("X-OS-API-TOKEN", &app.token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let names: Vec<&str> = programs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alias.sh", "count.sh", "sub/deep.py"]);
    let count = &programs[1];
    assert_eq!(
        count["size"],
        std::fs::metadata(app.scripts_dir.join("count.sh"))
            .unwrap()
            .len()
    );
    assert!(count["modified"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(
        count["firstLines"],
        serde_json::json!([
            "#!/bin/sh",
            "# Counts specimens",
            "echo 42",
            "line 4",
            "line 5"
        ])
    );
    assert!(!programs.to_string().contains("secret"));

    let (_, token) = app.create_user("viewer", false).await;
    let response = app
        .client
        .request(Method::GET, &url)
        .header("X-OS-API-TOKEN", token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_codes(response, StatusCode::BAD_REQUEST).await,
        vec!["ACCESS_DENIED"]
    );
    let anonymous = app.client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}
