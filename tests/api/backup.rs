//! `labcron backup` / `labcron restore` with the real binary: a backup taken while the server runs,
//! restored into a new directory, serves the same jobs, runs and downloads when the real binary
//! starts on it, and its scripts and data source still work. Restore refuses a non-empty data
//! directory without --force, and archives that would write outside the data directory.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use reqwest::Method;
use serde_json::json;

use crate::common::{Api, command, ok_json, spawn_app};
use crate::restart::start_server;

fn labcron(args: &[&str]) -> Output {
    command(args).output().expect("run labcron")
}

/// Every file under `dir` is readable by its owner only (no group or other bits).
fn assert_private_files(dir: &Path) {
    let mut files = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                files += 1;
                let mode = meta.permissions().mode();
                assert_eq!(mode & 0o077, 0, "{:?} is {mode:o}", entry.path());
            }
        }
    }
    assert!(files > 3, "only {files} files restored under {dir:?}");
}

/// A copy of the archive `from` whose every entry says `mode`, as an older labcron wrote them.
fn rewrite_with_mode(from: &Path, to: &Path, mode: u32) {
    let mut source = zip::ZipArchive::new(std::fs::File::open(from).unwrap()).unwrap();
    let mut out = zip::ZipWriter::new(std::fs::File::create(to).unwrap());
    let options = zip::write::SimpleFileOptions::default().unix_permissions(mode);
    for index in 0..source.len() {
        let mut entry = source.by_index(index).unwrap();
        let name = entry.name().to_string();
        out.start_file(name, options).unwrap();
        std::io::copy(&mut entry, &mut out).unwrap();
    }
    out.finish().unwrap();
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn entry_names(file: &Path) -> Vec<String> {
    let zip = zip::ZipArchive::new(std::fs::File::open(file).unwrap()).unwrap();
    zip.file_names().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_into_a_new_directory_serves_the_same_jobs_runs_and_downloads() {
    if crate::common::sqlite_only("`labcron backup` copies a SQLite ledger only") {
        return;
    }
    let app = spawn_app().await.with_fresh_connections();
    let data = app.data_dir.to_str().unwrap().to_string();
    app.write_script(
        "count.sh",
        "#!/bin/sh\nprintf 'site,n\\nMain,%s\\n' \"$1\" > \"$LABCRON_RESULT_DIR/counts.csv\"\n",
    );
    let external = app
        .create_job(
            &json!({"name": "Counts", "type": "EXTERNAL", "command": "count.sh",
            "repeatSchedule": "ONDEMAND", "rtArgsProvided": true}),
        )
        .await;
    let run = app.start_run(external, Some("7")).await;
    assert_eq!(app.wait_run(external, run).await["status"], "SUCCEEDED");
    let query = ok_json(
        app.post(
            "/saved-queries",
            &json!({"title": "Sites", "sql": "SELECT count(*) AS n FROM sites"}),
        )
        .await,
    )
    .await;
    let query_job = app
        .create_job(
            &json!({"name": "Site count", "type": "QUERY", "repeatSchedule": "ONDEMAND",
                            "savedQuery": {"id": query["id"]}}),
        )
        .await;
    let query_run = app.start_run(query_job, None).await;
    assert_eq!(
        app.wait_run(query_job, query_run).await["status"],
        "SUCCEEDED"
    );
    let jobs_before = ok_json(app.get("/scheduled-jobs").await).await;
    let runs_before = ok_json(app.get(&format!("/scheduled-jobs/{external}/runs")).await).await;
    let download = |job: i64, run: i64| {
        let request = app.request(
            reqwest::Method::GET,
            &format!("/scheduled-jobs/{job}/runs/{run}/result-file"),
        );
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap()
        }
    };
    let result_before = download(external, run).await;
    let query_result_before = download(query_job, query_run).await;

    // Taken while the server runs.
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.zip");
    let output = labcron(&[
        "backup",
        full.to_str().unwrap(),
        "--with-runs",
        "--data-dir",
        &data,
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        std::fs::metadata(&full).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let names = entry_names(&full);
    for expected in ["labcron.db", "scripts/count.sh", "lab.db"] {
        assert!(names.contains(&expected.to_string()), "{names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("runs/")), "{names:?}");
    assert!(
        !names.iter().any(|n| n.contains("initial-admin-password")),
        "{names:?}"
    );
    let again = labcron(&["backup", full.to_str().unwrap(), "--data-dir", &data]);
    assert!(
        !again.status.success(),
        "an existing file is never overwritten"
    );
    let small = dir.path().join("small.zip");
    let output = labcron(&["backup", small.to_str().unwrap(), "--data-dir", &data]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(!entry_names(&small).iter().any(|n| n.starts_with("runs/")));
    // Each backup taken is in the audit trail (issue 15); the refused one is not.
    let taken = ok_json(app.get("/audit-events?action=BACKUP_TAKEN").await).await;
    let taken = taken.as_array().unwrap();
    assert_eq!(taken.len(), 2, "{taken:?}");
    assert!(taken[0]["actor"].as_str().unwrap().starts_with("cli:"));
    assert_eq!(taken[0]["detail"]["via"], "cli");
    assert_eq!(taken[0]["detail"]["withRuns"], false);

    // Restore into a new directory, then start the real binary on it.
    let restored = dir.path().join("restored");
    let restored_text = restored.to_str().unwrap();
    let output = labcron(&[
        "restore",
        full.to_str().unwrap(),
        "--data-dir",
        restored_text,
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("2 jobs, 2 runs"),
        "{}",
        text(&output)
    );
    let refused = labcron(&[
        "restore",
        full.to_str().unwrap(),
        "--data-dir",
        restored_text,
    ]);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("not empty"), "{}", text(&refused));
    let forced = labcron(&[
        "restore",
        full.to_str().unwrap(),
        "--force",
        "--data-dir",
        restored_text,
    ]);
    assert!(forced.status.success(), "{}", text(&forced));
    let restored_events: i64 = rusqlite::Connection::open(restored.join("labcron.db"))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM audit_events WHERE action = 'BACKUP_RESTORED'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        restored_events, 1,
        "the forced restore's own event (the first was overwritten)"
    );
    assert_eq!(
        std::fs::metadata(restored.join("scripts/count.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o100,
        0o100,
        "scripts stay executable (by labcron's user)"
    );
    // Every restored file is private to labcron's user (run files and data sources hold lab
    // data; backups hold password hashes), also from an archive whose entries say 0644.
    assert_private_files(&restored);
    let loose = dir.path().join("loose.zip");
    rewrite_with_mode(&full, &loose, 0o644);
    let loose_dir = dir.path().join("from-loose");
    let output = labcron(&[
        "restore",
        loose.to_str().unwrap(),
        "--data-dir",
        loose_dir.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert_private_files(&loose_dir);

    let server = start_server(&restored);
    // The users came with the ledger: the admin's password is the one of the first server.
    let api: Api = server.admin().await;
    let jobs_after = ok_json(api.get("/scheduled-jobs").await).await;
    assert_eq!(jobs_after, jobs_before);
    let runs_after = ok_json(api.get(&format!("/scheduled-jobs/{external}/runs")).await).await;
    assert_eq!(runs_after, runs_before);
    for (job, run, before) in [
        (external, run, &result_before),
        (query_job, query_run, &query_result_before),
    ] {
        let response = api
            .get(&format!("/scheduled-jobs/{job}/runs/{run}/result-file"))
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(&response.bytes().await.unwrap(), before);
    }
    // The restored scripts and data source still run.
    for job in [external, query_job] {
        let run = api
            .ok(
                Method::POST,
                &format!("/scheduled-jobs/{job}/runs?response=run"),
                Some(&json!({})),
            )
            .await;
        let finished = ok_json(
            api.get(&format!(
                "/scheduled-jobs/{job}/runs/{}?waitSeconds=60",
                run["id"]
            ))
            .await,
        )
        .await;
        assert_eq!(finished["status"], "SUCCEEDED", "{finished}");
    }
    drop(server);

    // Without --with-runs the runs are there but their files are not.
    let without = dir.path().join("without-runs");
    let output = labcron(&[
        "restore",
        small.to_str().unwrap(),
        "--data-dir",
        without.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let server = start_server(&without);
    let api = server.admin().await;
    let response = api
        .get(&format!(
            "/scheduled-jobs/{external}/runs/{run}/result-file"
        ))
        .await;
    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("SCHEDULED_JOB_RESULT_DATA_FILE_NOT_FOUND")
    );
}

type ZipFile = zip::ZipWriter<std::fs::File>;
/// Adds a bad entry to an archive.
type BadEntry = Box<dyn FnOnce(&mut ZipFile)>;

/// A zip holding a ledger and one more entry written by `extra`.
fn archive_with(path: &Path, extra: impl FnOnce(&mut ZipFile)) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("labcron.db", options).unwrap();
    zip.write_all(b"").unwrap();
    extra(&mut zip);
    zip.finish().unwrap();
}

#[test]
fn restore_refuses_archives_that_would_write_outside_the_data_directory() {
    if crate::common::sqlite_only("`labcron restore` restores a SQLite ledger only") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let options = zip::write::SimpleFileOptions::default();
    let cases: Vec<(&str, BadEntry)> = vec![
        (
            "..",
            Box::new(move |z| {
                z.start_file("scripts/../../escaped.sh", options).unwrap();
                z.write_all(b"#!/bin/sh\n").unwrap();
            }),
        ),
        (
            "absolute",
            Box::new(move |z| {
                z.start_file("/tmp/labcron-escaped.sh", options).unwrap();
                z.write_all(b"#!/bin/sh\n").unwrap();
            }),
        ),
        (
            "link",
            Box::new(move |z| {
                z.add_symlink("scripts/link.sh", "/etc/passwd", options)
                    .unwrap();
            }),
        ),
    ];
    for (i, (why, extra)) in cases.into_iter().enumerate() {
        let archive = dir.path().join(format!("bad-{i}.zip"));
        archive_with(&archive, extra);
        let target = dir.path().join(format!("data-{i}"));
        let output = labcron(&[
            "restore",
            archive.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ]);
        assert!(!output.status.success(), "{why}: {}", text(&output));
        assert!(
            text(&output).contains("refusing"),
            "{why}: {}",
            text(&output)
        );
        assert!(
            !target.exists(),
            "{why}: nothing is written when the archive is refused"
        );
    }
    assert!(!dir.path().join("escaped.sh").exists());
    assert!(!Path::new("/tmp/labcron-escaped.sh").exists());
    let not_zip = dir.path().join("plain.db");
    std::fs::write(&not_zip, b"SQLite format 3\0").unwrap();
    let output = labcron(&[
        "restore",
        not_zip.to_str().unwrap(),
        "--data-dir",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("not a labcron backup"),
        "{}",
        text(&output)
    );
}
