//! One server per data directory, and a ledger replaced under a running server, with the real
//! binary: a second server and a restore are refused while one runs (naming its pid); a ledger
//! file renamed over the running server's stops it with an error saying so, its old journal is
//! not left to be applied to the new file, and the next start serves the new file's jobs.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;

use crate::common::{ADMIN_PASSWORD, Api, Server, command, fresh_connections, ok_json};
use crate::restart::start_server;

fn labcron(args: &[&str], data_dir: &Path) -> Output {
    command(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("LABCRON_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .expect("run labcron")
}

/// `admin` on `server`, with a connection per request: the CLI calls block this test's runtime
/// for seconds (see `fresh_connections`).
async fn admin(server: &Server) -> Api {
    server.admin().await.with_client(fresh_connections())
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn create_job(api: &Api, name: &str, data: &Path) {
    crate::common::write_script(&data.join("scripts"), "hello.sh", "#!/bin/sh\necho hello\n");
    ok_json(
        api.post(
            "/scheduled-jobs",
            &json!({"name": name, "type": "EXTERNAL", "command": "hello.sh",
                      "repeatSchedule": "ONDEMAND"}),
        )
        .await,
    )
    .await;
}

async fn job_names(api: &Api) -> Vec<String> {
    let jobs = ok_json(api.get("/scheduled-jobs").await).await;
    let mut names: Vec<String> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_second_server_and_a_restore_are_refused_while_a_server_runs() {
    if crate::common::sqlite_only("takes a SQLite backup and restores it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_server(&data);
    let pid = server.pid();
    let api = admin(&server).await;
    let jobs_before = job_names(&api).await;

    let second = labcron(&["--bind", "127.0.0.1:0"], &data);
    assert!(!second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains(&format!("another labcron server (pid {pid})")),
        "{}",
        text(&second)
    );

    let backup = dir.path().join("backup.zip");
    let taken = labcron(&["backup", backup.to_str().unwrap()], &data);
    assert!(
        taken.status.success(),
        "a backup is taken while the server runs: {}",
        text(&taken)
    );
    let restore = labcron(&["restore", backup.to_str().unwrap(), "--force"], &data);
    assert!(!restore.status.success(), "{}", text(&restore));
    assert!(
        text(&restore).contains(&format!(
            "cannot restore: another labcron server (pid {pid})"
        )),
        "{}",
        text(&restore)
    );
    // The refused restore changed nothing: the server still answers from its ledger.
    assert_eq!(job_names(&api).await, jobs_before);

    // Once it has stopped, both work.
    server.kill();
    let restored = labcron(&["restore", backup.to_str().unwrap(), "--force"], &data);
    assert!(restored.status.success(), "{}", text(&restored));
    let again = start_server(&data);
    let api = admin(&again).await;
    assert_eq!(job_names(&api).await, jobs_before);
}

#[tokio::test]
async fn a_ledger_replaced_under_the_running_server_stops_it_and_the_next_start_uses_the_new_file()
{
    if crate::common::sqlite_only("the watch on a replaced ledger file is SQLite's") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start_server(&data);
    let api = admin(&server).await;
    create_job(&api, "In the backup", &data).await;
    let backup = dir.path().join("backup.zip");
    let taken = labcron(&["backup", backup.to_str().unwrap()], &data);
    assert!(taken.status.success(), "{}", text(&taken));
    create_job(&api, "Only in the old file", &data).await;

    // Put the backup's ledger in place the way an operator might: a rename over the file.
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&backup).unwrap()).unwrap();
    let mut entry = zip.by_name("labcron.db").unwrap();
    let new_file = data.join("labcron.db.new");
    std::io::copy(&mut entry, &mut std::fs::File::create(&new_file).unwrap()).unwrap();
    std::fs::rename(&new_file, data.join("labcron.db")).unwrap();

    let status = server
        .wait_exit(Duration::from_secs(60))
        .expect("the server kept running on a replaced ledger");
    assert!(
        !status.success(),
        "it stops with an error, so a supervisor restarts it"
    );
    // Its stderr went straight to the file: everything it logged is there once it has exited.
    let log = server.log_text();
    assert!(
        log.contains("was replaced by another file while the server ran"),
        "{log}"
    );
    assert!(
        !data.join("labcron.db-wal").exists()
            || std::fs::metadata(data.join("labcron.db-wal"))
                .unwrap()
                .len()
                == 0,
        "the old file's write-ahead log is not left beside the new file"
    );

    let again = start_server(&data);
    let api = admin(&again).await;
    let names = job_names(&api).await;
    assert!(names.contains(&"In the backup".to_string()), "{names:?}");
    assert!(
        !names.contains(&"Only in the old file".to_string()),
        "{names:?}"
    );
    let integrity = Command::new("sqlite3")
        .arg(data.join("labcron.db"))
        .arg("PRAGMA integrity_check")
        .output()
        .expect("sqlite3");
    assert_eq!(String::from_utf8_lossy(&integrity.stdout).trim(), "ok");
}
