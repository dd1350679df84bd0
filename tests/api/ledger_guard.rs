//! One server per data directory, and a ledger replaced under a running server, with the real
//! binary: a second server and a restore are refused while one runs (naming its pid); a ledger
//! file renamed over the running server's stops it with an error saying so, its old journal is
//! not left to be applied to the new file, and the next start serves the new file's jobs.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::restart::{Server, sign_in, start_server};

fn labcron(args: &[&str], data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_labcron"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("LABCRON_ADMIN_PASSWORD", crate::helpers::ADMIN_PASSWORD)
        .env_remove("LABCRON_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run labcron")
}

/// A client that opens a connection per request: the CLI calls block this test's runtime for
/// seconds, during which the server closes idle keep-alive connections unseen by the pool.
fn fresh_connections() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn create_job(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    name: &str,
    data: &Path,
) {
    let scripts = data.join("scripts");
    crate::helpers::write_script(&scripts, "hello.sh", "#!/bin/sh\necho hello\n");
    let response = client
        .post(format!("{}/scheduled-jobs", server.base))
        .header("X-OS-API-TOKEN", token)
        .json(
            &json!({"name": name, "type": "EXTERNAL", "command": "hello.sh",
                      "repeatSchedule": "ONDEMAND"}),
        )
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e:?} [{}]: {}",
                std::fs::read_to_string(format!("/proc/{}/stat", server.child.id()))
                    .unwrap_or_default(),
                server.log.lock().unwrap().join("\n")
            )
        });
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

async fn job_names(client: &reqwest::Client, server: &Server, token: &str) -> Vec<String> {
    let jobs: Value = client
        .get(format!("{}/scheduled-jobs", server.base))
        .header("X-OS-API-TOKEN", token)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e:?} [{}]: {}",
                std::fs::read_to_string(format!("/proc/{}/stat", server.child.id()))
                    .unwrap_or_default(),
                server.log.lock().unwrap().join("\n")
            )
        })
        .json()
        .await
        .unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start_server(&data);
    let pid = server.child.id();
    let client = fresh_connections();
    let token = sign_in(&client, &server).await;
    let jobs_before = job_names(&client, &server, &token).await;

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
    assert_eq!(job_names(&client, &server, &token).await, jobs_before);

    // Once it has stopped, both work.
    let _ = server.child.kill();
    let _ = server.child.wait();
    let restored = labcron(&["restore", backup.to_str().unwrap(), "--force"], &data);
    assert!(restored.status.success(), "{}", text(&restored));
    let again = start_server(&data);
    let token = sign_in(&client, &again).await;
    assert_eq!(job_names(&client, &again, &token).await, jobs_before);
}

#[tokio::test]
async fn a_ledger_replaced_under_the_running_server_stops_it_and_the_next_start_uses_the_new_file()
{
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start_server(&data);
    let client = fresh_connections();
    let token = sign_in(&client, &server).await;
    create_job(&client, &server, &token, "In the backup", &data).await;
    let backup = dir.path().join("backup.zip");
    let taken = labcron(&["backup", backup.to_str().unwrap()], &data);
    assert!(taken.status.success(), "{}", text(&taken));
    create_job(&client, &server, &token, "Only in the old file", &data).await;

    // Put the backup's ledger in place the way an operator might: a rename over the file.
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&backup).unwrap()).unwrap();
    let mut entry = zip.by_name("labcron.db").unwrap();
    let new_file = data.join("labcron.db.new");
    std::io::copy(&mut entry, &mut std::fs::File::create(&new_file).unwrap()).unwrap();
    std::fs::rename(&new_file, data.join("labcron.db")).unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server kept running on a replaced ledger"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !status.success(),
        "it stops with an error, so a supervisor restarts it"
    );
    // The reader thread may still be taking the last lines off the pipe.
    std::thread::sleep(Duration::from_millis(500));
    let log = server.log.lock().unwrap().join("\n");
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
    let token = sign_in(&client, &again).await;
    let names = job_names(&client, &again, &token).await;
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
