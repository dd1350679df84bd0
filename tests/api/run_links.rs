//! Run files never through a link (issue #11, findings 1, 2, 3 and 13): a run's script replaces
//! its result directory, a result file, `stdout.tmp` or `run.log` by a symlink (or a hard link,
//! or a FIFO) to a file outside the data directory. The target stays as it was (bytes and mode),
//! a run whose result is not its own regular file FAILS saying why, and nothing outside is
//! served. Real server, real scripts, both engines (`LABCRON_TEST_LEDGER=postgres`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, error_codes, on_postgres, spawn_app};

/// A file outside the data directory (beside it, on the same file system, so a hard link to it
/// can be made), with its bytes and mode as they must stay.
struct Outside {
    dir: PathBuf,
    file: PathBuf,
    bytes: Vec<u8>,
    mode: u32,
}

impl Outside {
    fn new(app: &TestApp) -> Outside {
        let dir = app.data_dir.parent().unwrap().join("outside");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("target.txt");
        let bytes = b"outside the data directory\n".to_vec();
        std::fs::write(&file, &bytes).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        Outside {
            dir,
            file,
            bytes,
            mode: 0o640,
        }
    }

    fn assert_untouched(&self, what: &str) {
        let meta = std::fs::symlink_metadata(&self.file).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            self.mode,
            "{what}: mode"
        );
        assert_eq!(
            std::fs::read(&self.file).unwrap(),
            self.bytes,
            "{what}: bytes"
        );
    }
}

/// Runs `script` as a new on-demand job (with `extra` fields) to its end.
async fn run_script(app: &TestApp, name: &str, script: &str, extra: Value) -> (i64, Value) {
    app.write_script(&format!("{name}.sh"), &format!("#!/bin/sh\n{script}"));
    let mut body = json!({"name": name, "type": "EXTERNAL", "command": format!("{name}.sh"),
                          "repeatSchedule": "ONDEMAND"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let job = app.create_job(&body).await;
    let run = app.start_run(job, None).await;
    (job, app.wait_run(job, run).await)
}

/// The run FAILED with a message containing `why`, has no result and serves none.
async fn assert_failed_serving_nothing(app: &TestApp, job: i64, run: &Value, why: &str) {
    assert_eq!(run["status"], "FAILED", "{run}");
    let message = run["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "wanted `{why}` in: {run}");
    assert!(run["resultFileSize"].is_null(), "no result recorded: {run}");
    let url = format!("/scheduled-jobs/{job}/runs/{}/result-file", run["id"]);
    assert_eq!(
        error_codes(app.get(&url).await, StatusCode::BAD_REQUEST).await,
        vec!["SCHEDULED_JOB_RESULT_DATA_FILE_NOT_AVAILABLE"],
        "{run}"
    );
}

/// Files in a run's directory whose names end with `suffix` (SQLite keeps them there).
fn run_dir_files(app: &TestApp, job: i64, run: &Value, suffix: &str) -> Vec<String> {
    let dir = app.data_dir.join(format!("runs/{job}/{}", run["id"]));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect()
}

/// Findings 1 and 13: the result directory replaced by a link — to the data directory itself
/// (the ledger, its backups, every run's results) or to a directory with one file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_directory_replaced_by_a_link_fails_the_run_and_serves_nothing() {
    let app = spawn_app().await;
    let outside = Outside::new(&app);
    for (name, target) in [("whole", &app.data_dir), ("one", &outside.dir)] {
        let script = format!(
            "echo working\nrmdir \"$LABCRON_RESULT_DIR\"\nln -s '{}' \"$LABCRON_RESULT_DIR\"\n",
            target.display()
        );
        let (job, run) = run_script(&app, name, &script, json!({})).await;
        assert_failed_serving_nothing(
            &app,
            job,
            &run,
            "the result directory (LABCRON_RESULT_DIR) is a symbolic link",
        )
        .await;
        assert!(
            run_dir_files(&app, job, &run, ".zip").is_empty(),
            "{name}: nothing zipped"
        );
        outside.assert_untouched(name);
    }
}

/// A link, a hard link or a FIFO among the result files (beside a good one): the run fails
/// naming it, and the target is neither zipped nor served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_hard_links_and_fifos_among_the_results_fail_the_run_naming_them() {
    let app = spawn_app().await;
    let outside = Outside::new(&app);
    let target = outside.file.display().to_string();
    let dir = outside.dir.display().to_string();
    let cases = [
        (
            "symlinked",
            format!("ln -s '{target}' \"$R/a.csv\""),
            "`result/a.csv` is a symbolic link",
        ),
        (
            "hardlinked",
            format!("ln '{target}' \"$R/a.csv\""),
            "`result/a.csv` has another hard link",
        ),
        (
            "fifo",
            "mkfifo \"$R/a.csv\"".to_string(),
            "`result/a.csv` is not a regular file",
        ),
        (
            "subdir",
            format!("ln -s '{dir}' \"$R/sub\""),
            "`result/sub` is a symbolic link",
        ),
    ];
    for (name, plant, why) in cases {
        let script =
            format!("R=\"$LABCRON_RESULT_DIR\"\necho ok > \"$R/b.csv\"\n{plant} || exit 9\n");
        let (job, run) = run_script(&app, name, &script, json!({})).await;
        assert_failed_serving_nothing(&app, job, &run, why).await;
        assert!(run_dir_files(&app, job, &run, ".zip").is_empty(), "{name}");
        outside.assert_untouched(name);
    }
    // A result directory of regular files is still zipped and served.
    let script = "echo a > \"$LABCRON_RESULT_DIR/a.csv\"\nmkdir \"$LABCRON_RESULT_DIR/sub\"\n\
                  echo b > \"$LABCRON_RESULT_DIR/sub/b.csv\"\n";
    let (job, run) = run_script(&app, "regular", script, json!({})).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let url = format!("/scheduled-jobs/{job}/runs/{}/result-file", run["id"]);
    let zip = app.get(&url).await;
    assert_eq!(zip.status(), StatusCode::OK);
    let bytes = zip.bytes().await.unwrap();
    assert_eq!(run["resultFileSize"], bytes.len(), "{run}");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut names: Vec<String> = archive.file_names().map(String::from).collect();
    names.sort();
    assert_eq!(names, ["a.csv", "sub/b.csv"]);
    for (name, text) in [("a.csv", "a\n"), ("sub/b.csv", "b\n")] {
        let mut read = String::new();
        std::io::Read::read_to_string(&mut archive.by_name(name).unwrap(), &mut read).unwrap();
        assert_eq!(read, text, "{name}");
    }
}

/// Findings 2 and 13: `stdout.tmp` (a resultFromStdout job's result) replaced by a link to a file
/// outside, with an onSuccess chain: the run fails, the chain does not start, the target's mode
/// is not made 0444.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_replaced_by_a_link_fails_the_run_and_no_chain_changes_the_target() {
    let app = spawn_app().await;
    let outside = Outside::new(&app);
    app.write_script(
        "reader.sh",
        "#!/bin/sh\nstat -c 'mode=%a' \"$LABCRON_UPSTREAM_RESULT\"\n",
    );
    let reader = app.create_external_job("reader", "reader.sh").await;
    for (name, plant) in [("symlink", "ln -s"), ("hardlink", "ln")] {
        let script = format!(
            "echo id,value\necho 1,42\nrm -f ../stdout.tmp\n{plant} '{}' ../stdout.tmp\n",
            outside.file.display()
        );
        let extra = json!({"resultFromStdout": true, "onSuccess": [{"id": reader}]});
        let (job, run) = run_script(&app, name, &script, extra).await;
        assert_failed_serving_nothing(&app, job, &run, "`stdout.tmp` was replaced").await;
        outside.assert_untouched(name);
        assert!(
            run_dir_files(&app, job, &run, ".csv").is_empty(),
            "{name}: no result kept under the result's name"
        );
    }
    let runs = app
        .get(&format!("/scheduled-jobs/{reader}/runs"))
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(runs, json!([]), "failed runs start no onSuccess chain");

    // A result written through stdout is still handed on, read-only.
    let (job, run) = run_script(
        &app,
        "honest",
        "echo id,value\necho 1,42\n",
        json!({"resultFromStdout": true}),
    )
    .await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let url = format!("/scheduled-jobs/{job}/runs/{}/result-file", run["id"]);
    assert_eq!(
        app.get(&url).await.text().await.unwrap(),
        "id,value\n1,42\n"
    );
}

/// Finding 3: `run.log` replaced by a link (symbolic or hard) to a file outside before the
/// program's first output, then output: it goes to labcron's own log — served as the run's log —
/// and never to the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_replaced_by_a_link_is_never_written_through() {
    let app = spawn_app().await;
    let outside = Outside::new(&app);
    for (name, plant) in [("symlink", "ln -s"), ("hardlink", "ln")] {
        let script = format!(
            "rm -f ../run.log\n{plant} '{}' ../run.log\necho hi\necho there\n",
            outside.file.display()
        );
        let (job, run) = run_script(&app, name, &script, json!({})).await;
        assert_eq!(run["status"], "SUCCEEDED", "{run}");
        outside.assert_untouched(name);
        let expected = "hi\nthere\n";
        assert_eq!(run["logSize"], expected.len(), "{run}");
        let log = app
            .get(&format!("/scheduled-jobs/{job}/runs/{}/log", run["id"]))
            .await;
        assert_eq!(log.status(), StatusCode::OK);
        assert_eq!(log.text().await.unwrap(), expected, "{name}");
        if !on_postgres() {
            let file = app
                .data_dir
                .join(format!("runs/{job}/{}/run.log", run["id"]));
            assert_own_log(&file);
        }
    }
}

/// `run.log` is labcron's: a regular file with one link, readable by the server only.
fn assert_own_log(file: &Path) {
    let meta = std::fs::symlink_metadata(file).unwrap();
    assert!(meta.file_type().is_file(), "{}", file.display());
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&meta), 1);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}
