//! `labcron migrate-ledger --to postgres://…` with the real binary: a data directory made by a real
//! server (users, sessions, API tokens, saved queries, jobs with user lists and chains, runs with
//! logs and results of several 256 KiB pieces, a deleted job, the audit trail) is copied into a
//! fresh database of the private PostgreSQL server, and the copy answers every `Ledger` call the
//! same as the SQLite ledger (same ids, same values), holds each run file's bytes in pieces, and
//! gives new rows ids past the copied ones. Refused: a running server, a second migration into the
//! same target, a target with a row; `--dry-run` leaves the target empty; a link is skipped.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use labcron::domain::run::RunStatus;
use labcron::store::audit::EventFilter;
use labcron::store::jobs::{CHAIN_FAILURE, CHAIN_SUCCESS, JobFilter};
use labcron::store::ledger::{JobLedger, UserLedger};
use labcron::store::postgres::PgLedgerDb;
use labcron::store::runs::{AllRunsFilter, RunFilter};
use labcron::store::users::NewUser;
use labcron::store::{Db, Error, Ledger};
use reqwest::Method;
use serde_json::json;

use crate::common::{Launch, Server, command, write_script};
use crate::postgres::{self, TestDb};

const KIB: usize = 1024;

fn migrate(data_dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["migrate-ledger", "--data-dir", data_dir.to_str().unwrap()];
    all.extend_from_slice(args);
    command(&all).output().expect("run labcron migrate-ledger")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Rows of `sql` as the database's owner, each column as text (NULL as "NULL").
fn pg_rows(db: &TestDb, sql: &str) -> Vec<Vec<String>> {
    let (url, sql) = (db.url(), sql.to_string());
    std::thread::spawn(move || {
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        client
            .simple_query(&sql)
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                ::postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).unwrap_or("NULL").to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    })
    .join()
    .unwrap()
}

fn pg_count(db: &TestDb, sql: &str) -> i64 {
    pg_rows(db, sql)[0][0].parse().unwrap()
}

/// The pieces of one run file in the target: (start_at, data), in order.
fn pieces(db: &TestDb, run_id: i64, kind: &str) -> Vec<(i64, Vec<u8>)> {
    let (url, kind) = (db.url(), kind.to_string());
    std::thread::spawn(move || {
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        client
            .query(
                "SELECT start_at, data FROM run_files WHERE run_id = $1 AND kind = $2
                  ORDER BY start_at",
                &[&run_id, &kind],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    })
    .join()
    .unwrap()
}

/// What a real server leaves in its data directory: the ids the checks look at.
struct Made {
    big_job: i64,
    big_runs: Vec<i64>,
    linked: (i64, i64),
}

/// A data directory filled by a real server through its API; the server is still running.
async fn fill(data_dir: &Path) -> (Server, Made) {
    let scripts = data_dir.join("scripts");
    // A log of 300 KiB (two pieces) and a result of 600 KiB (three pieces), varying by argument.
    write_script(
        &scripts,
        "big.sh",
        "#!/bin/sh\nhead -c 307200 /dev/urandom | od -An -tx1 | head -c 307200\n\
         head -c 614400 /dev/urandom > \"$LABCRON_RESULT_DIR/out-$1.bin\"\n",
    );
    write_script(
        &scripts,
        "small.sh",
        "#!/bin/sh\necho \"hello $1\"\necho 'a,b' > \"$LABCRON_RESULT_DIR/small.csv\"\n",
    );
    write_script(&scripts, "fail.sh", "#!/bin/sh\necho nope >&2\nexit 3\n");
    let server = Launch::new(data_dir).no_example_jobs().start();
    let admin = server.admin().await;
    let (alice, alice_api) = admin.create_user_api("alice", false).await;
    let (bob, _) = admin.create_user("bob", true).await;
    admin
        .ok(
            Method::POST,
            "/api-tokens",
            Some(&json!({"name": "ci robot", "expiresAt": 4_102_444_800_000_i64})),
        )
        .await;
    let revoked = admin
        .ok(Method::POST, "/api-tokens", Some(&json!({"name": "old"})))
        .await;
    admin
        .ok(
            Method::DELETE,
            &format!("/api-tokens/{}", revoked["id"]),
            None,
        )
        .await;
    let query = admin
        .ok(
            Method::POST,
            "/saved-queries",
            Some(&json!({"title": "Blood samples ✓", "sql": "SELECT 1 AS one"})),
        )
        .await;
    let gone = admin
        .ok(
            Method::POST,
            "/saved-queries",
            Some(&json!({"title": "Old", "sql": "SELECT 2"})),
        )
        .await;
    admin
        .ok(
            Method::DELETE,
            &format!("/saved-queries/{}", gone["id"]),
            None,
        )
        .await;
    let alert = admin
        .create_job(
            &json!({"name": "alert", "type": "EXTERNAL", "command": "small.sh",
                            "repeatSchedule": "ONDEMAND"}),
        )
        .await;
    let big_job = admin
        .create_job(
            &json!({"name": "big export", "type": "EXTERNAL", "command": "big.sh",
            "repeatSchedule": "ONDEMAND", "rtArgsProvided": true, "rtArgsHelpText": "a tag",
            "recipients": [{"id": alice}], "sharedWith": [{"id": alice}, {"id": bob}],
            "onFailure": [{"id": alert}], "maxRetries": 1, "retryDelaySeconds": 5}),
        )
        .await;
    let failing = admin
        .create_job(
            &json!({"name": "failing", "type": "EXTERNAL", "command": "fail.sh",
            "repeatSchedule": "ONDEMAND", "onFailure": [{"id": alert}]}),
        )
        .await;
    let query_job = admin
        .create_job(
            &json!({"name": "query", "type": "QUERY", "repeatSchedule": "ONDEMAND",
                            "savedQuery": {"id": query["id"]}}),
        )
        .await;
    let doomed = admin.create_external_job("doomed", "small.sh").await;
    let mut big_runs = Vec::new();
    for tag in ["one", "two"] {
        let run = admin.run_to_end(big_job, Some(tag)).await;
        assert_eq!(run["status"], "SUCCEEDED", "{run}");
        big_runs.push(run["id"].as_i64().unwrap());
    }
    let failed = admin.run_to_end(failing, None).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(
        admin.run_to_end(query_job, None).await["status"],
        "SUCCEEDED"
    );
    let alice_run = alice_api.run_to_end(big_job, Some("alice")).await;
    assert_eq!(alice_run["status"], "SUCCEEDED", "{alice_run}");
    big_runs.push(alice_run["id"].as_i64().unwrap());
    let linked_run = admin.run_to_end(doomed, None).await;
    let linked = (doomed, linked_run["id"].as_i64().unwrap());
    admin
        .ok(Method::DELETE, &format!("/scheduled-jobs/{doomed}"), None)
        .await;
    // The chained alert of the failed run ends too before the server stops.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let runs = admin
            .ok(Method::GET, &format!("/scheduled-jobs/{alert}/runs"), None)
            .await;
        let runs = runs.as_array().unwrap().clone();
        if !runs.is_empty()
            && runs
                .iter()
                .all(|r| matches!(r["status"].as_str(), Some("SUCCEEDED" | "FAILED")))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "alert runs: {runs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (
        server,
        Made {
            big_job,
            big_runs,
            linked,
        },
    )
}

/// The answers of the ledger's read calls, as text: the same calls on both engines must agree.
fn answers(l: &dyn Ledger, session_hashes: &[String]) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let mut note = |what: String, value: String| out.push(format!("{what}: {value}"));
    note("system user".into(), format!("{:?}", l.system_user_id()?));
    note("users".into(), format!("{:?}", l.list_users()?));
    note("totals".into(), format!("{:?}", l.ledger_totals()?));
    note("active".into(), format!("{:?}", l.active_run_counts()?));
    note("fingerprint".into(), format!("{:?}", l.jobs_fingerprint()?));
    let (_, runs) = l.ledger_totals()?;
    for id in 1..=8 {
        note(format!("user {id}"), format!("{:?}", l.user(id)?));
        note(format!("source {id}"), format!("{:?}", l.user_source(id)?));
    }
    for login in ["admin", "alice", "BOB", "$system"] {
        note(
            format!("hash {login}"),
            format!("{:?}", l.user_with_hash(login)?),
        );
    }
    for hash in session_hashes {
        let session = l
            .session(hash)?
            .map(|s| (s.user_id, s.created_at, s.last_used_at));
        note(format!("session {hash}"), format!("{session:?}"));
    }
    note("tokens".into(), format!("{:?}", l.live_api_tokens(None)?));
    for id in 1..=3 {
        note(format!("token {id}"), format!("{:?}", l.api_token(id)?));
    }
    note(
        "saved queries".into(),
        format!("{:?}", l.list_saved_queries(None, 0, 100)?),
    );
    for id in 1..=3 {
        note(
            format!("saved query {id}"),
            format!("{:?}", l.saved_query_even_deleted(id)?),
        );
    }
    let all_jobs = JobFilter {
        visible_to: None,
        query: None,
        job_type: None,
    };
    note(
        "jobs".into(),
        format!("{:?}", l.list_jobs(&all_jobs, 0, 100)?),
    );
    for id in 1..=6 {
        note(
            format!("job {id}"),
            format!("{:?}", l.job_even_deleted(id)?),
        );
        note(
            format!("lists {id}"),
            format!("{:?}", l.job_user_lists(id)?),
        );
        note(
            format!("chains {id}"),
            format!(
                "{:?} {:?} {:?}",
                l.chain_targets(id, CHAIN_SUCCESS)?,
                l.chain_targets(id, CHAIN_FAILURE)?,
                l.chain_sources(id)?
            ),
        );
        note(
            format!("last run {id}"),
            format!("{:?}", l.last_run_on(id)?),
        );
        let filter = RunFilter {
            job_id: id,
            from: None,
            to: None,
            status: None,
        };
        note(
            format!("runs of {id}"),
            format!("{:?}", l.list_runs(&filter, 0, 100)?),
        );
        note(
            format!("failed of {id}"),
            format!("{:?}", l.count_runs_with_status(id, RunStatus::Failed)?),
        );
    }
    note(
        "all runs".into(),
        format!("{:?}", l.list_all_runs(&AllRunsFilter::default(), 0, 1000)?),
    );
    for id in 1..=runs + 1 {
        note(format!("run {id}"), format!("{:?}", l.run(id)?));
    }
    note(
        "audit".into(),
        format!(
            "{:?}",
            l.list_audit_events(&EventFilter::default(), 0, 1000)?
        ),
    );
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_and_its_run_files_move_to_postgresql_checked_with_the_same_ids_and_bytes() {
    if crate::common::sqlite_only("its server fills the SQLite ledger that is migrated") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (server, made) = fill(&data_dir).await;

    let target = postgres::server().create_database("");
    // A server holds the data directory: refused before the target is touched.
    let refused = migrate(&data_dir, &["--to", &target.url()]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("another labcron server"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        pg_count(
            &target,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ),
        0,
        "nothing was created in the target"
    );
    server.terminate(Duration::from_secs(60));

    // A run's result file replaced by a link (to a file outside): skipped and reported.
    let (linked_job, linked_run) = made.linked;
    let linked_dir = data_dir.join(format!("runs/{linked_job}/{linked_run}/result"));
    let outside = dir.path().join("secret.txt");
    std::fs::write(&outside, "not the run's").unwrap();
    std::fs::remove_file(linked_dir.join("small.csv")).unwrap();
    std::os::unix::fs::symlink(&outside, linked_dir.join("small.csv")).unwrap();

    let sqlite_before = std::fs::read(data_dir.join("labcron.db")).unwrap();
    let data = data_dir.clone();
    tokio::task::spawn_blocking(move || {
        // --dry-run: everything is done and checked, then rolled back.
        let dry = migrate(&data, &["--to", &target.url(), "--dry-run"]);
        assert!(dry.status.success(), "{}", text(&dry));
        assert!(text(&dry).contains("rolled back"), "{}", text(&dry));
        for table in ["jobs", "runs", "run_files", "saved_queries", "audit_events"] {
            assert_eq!(
                pg_count(&target, &format!("SELECT count(*) FROM {table}")),
                0,
                "{table} after --dry-run"
            );
        }
        assert_eq!(pg_count(&target, "SELECT count(*) FROM users"), 1);

        let output = migrate(&data, &["--to", &target.url()]);
        let report = text(&output);
        eprintln!("{report}");
        assert!(output.status.success(), "{report}");
        assert!(!report.contains(&target.password), "{report}");
        assert!(report.contains("committed"), "{report}");
        assert!(
            report.contains(&format!("runs/{linked_job}/{linked_run}/result/small.csv")),
            "the link is reported: {report}"
        );
        assert_eq!(
            std::fs::read(data.join("labcron.db")).unwrap(),
            sqlite_before,
            "the SQLite ledger is left as it was"
        );

        // The same calls answer the same on both ledgers.
        let sqlite_db = Db::open(&data.join("labcron.db")).unwrap();
        let hashes: Vec<String> = crate::common::ledger(&data)
            .prepare("SELECT token_hash FROM sessions ORDER BY token_hash")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(hashes.len() >= 2, "sessions of admin and alice");
        let pg = PgLedgerDb::open(&target.url()).unwrap();
        let expected = sqlite_db.read_sync(|l| answers(l, &hashes)).unwrap();
        let found = pg.read(|l| answers(l, &hashes)).unwrap();
        for (e, f) in expected.iter().zip(&found) {
            assert_eq!(e, f, "the copy answers differently");
        }
        assert_eq!(expected.len(), found.len());
        for (what, count) in [
            ("jobs", "SELECT count(*) FROM jobs"),
            ("chains", "SELECT count(*) FROM job_chains"),
            ("shared", "SELECT count(*) FROM job_shared_users"),
            ("tokens", "SELECT count(*) FROM api_tokens"),
            ("audit", "SELECT count(*) FROM audit_events"),
        ] {
            let there: i64 = crate::common::ledger(&data)
                .query_row(count, [], |r| r.get(0))
                .unwrap();
            assert!(there > 0, "the ledger has {what}");
            assert_eq!(pg_count(&target, count), there, "{what}");
        }

        // Every run file's bytes, in pieces of at most 256 KiB that follow each other.
        let sqlite = crate::common::ledger(&data);
        let mut runs = sqlite
            .prepare("SELECT id, job_id, result_file FROM runs ORDER BY id")
            .unwrap();
        let runs: Vec<(i64, i64, Option<String>)> = runs
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut files = 0;
        for (run, job, result) in &runs {
            let run_dir = data.join(format!("runs/{job}/{run}"));
            let mut wanted = vec![("LOG", run_dir.join("run.log"))];
            if let Some(result) = result {
                wanted.push(("RESULT", run_dir.join(result)));
            }
            for (kind, path) in wanted {
                let stored = pieces(&target, *run, kind);
                if (*run, *job) == (linked_run, linked_job) && kind == "RESULT" {
                    assert!(stored.is_empty(), "a link is not followed");
                    continue;
                }
                let Ok(bytes) = std::fs::read(&path) else {
                    assert!(stored.is_empty(), "{path:?} has no file but pieces");
                    continue;
                };
                let mut offset = 0;
                for (start_at, data) in &stored {
                    assert_eq!(*start_at, offset, "{path:?}");
                    assert!(!data.is_empty() && data.len() <= 256 * KIB, "{path:?}");
                    offset += data.len() as i64;
                }
                let joined: Vec<u8> = stored.into_iter().flat_map(|(_, d)| d).collect();
                assert!(joined == bytes, "{path:?}: the bytes differ");
                files += 1;
            }
        }
        assert!(report.contains(&format!("{files} files")), "{report}");
        for run in &made.big_runs {
            assert_eq!(pieces(&target, *run, "LOG").len(), 2, "run {run}'s log");
            assert_eq!(
                pieces(&target, *run, "RESULT").len(),
                3,
                "run {run}'s result"
            );
        }

        // New rows get ids past the copied ones.
        let max_user: i64 = sqlite
            .query_row("SELECT max(id) FROM users", [], |r| r.get(0))
            .unwrap();
        let new_user = pg
            .write(|l| {
                l.insert_user(
                    &NewUser {
                        login_name: "carol",
                        first_name: "",
                        last_name: "",
                        email_address: "",
                        admin: false,
                        password_hash: "x",
                    },
                    1,
                )
            })
            .unwrap();
        assert_eq!(new_user, Some(max_user + 1));
        let max_run: i64 = sqlite
            .query_row("SELECT max(id) FROM runs", [], |r| r.get(0))
            .unwrap();
        let next_run = pg_count(
            &target,
            "SELECT nextval(pg_get_serial_sequence('runs', 'id'))",
        );
        assert_eq!(next_run, max_run + 1);
        let job = pg.read(|l| l.live_job(made.big_job)).unwrap().unwrap();
        assert_eq!(job.name, "big export");

        // A second migration into the same target is refused and changes nothing.
        let users = pg_count(&target, "SELECT count(*) FROM users");
        let again = migrate(&data, &["--to", &target.url()]);
        assert!(!again.status.success(), "{}", text(&again));
        assert!(text(&again).contains("not empty"), "{}", text(&again));
        assert!(
            text(&again).contains("Nothing was written"),
            "{}",
            text(&again)
        );
        assert_eq!(pg_count(&target, "SELECT count(*) FROM users"), users);
    })
    .await
    .unwrap();
}

#[test]
fn a_target_with_a_row_or_a_missing_ledger_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir: PathBuf = dir.path().join("data");
    // A ledger as a first start leaves it (Db::open makes the same file the server does).
    std::fs::create_dir_all(&data_dir).unwrap();
    let missing = migrate(&data_dir, &["--to", "postgres://u:p@127.0.0.1:1/none"]);
    assert!(!missing.status.success());
    assert!(text(&missing).contains("no ledger"), "{}", text(&missing));
    let sqlite = Db::open(&data_dir.join("labcron.db")).unwrap();
    drop(sqlite);

    let target = postgres::server().create_database("");
    let pg = PgLedgerDb::open(&target.url()).unwrap();
    pg.write(|l| {
        l.insert_user(
            &NewUser {
                login_name: "already-here",
                first_name: "",
                last_name: "",
                email_address: "",
                admin: true,
                password_hash: "x",
            },
            1,
        )
    })
    .unwrap();
    let output = migrate(&data_dir, &["--to", &target.url()]);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("not empty (users: 1)"),
        "{}",
        text(&output)
    );
    assert_eq!(
        pg_rows(&target, "SELECT login_name FROM users ORDER BY id"),
        [["$system"], ["already-here"]]
    );

    // An empty ledger moves into an empty target (the schema's system user becomes the ledger's).
    let fresh = postgres::server().create_database("");
    let output = migrate(&data_dir, &["--to", &fresh.url()]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        pg_rows(&fresh, "SELECT id, login_name, is_system FROM users"),
        [["1", "$system", "t"]]
    );

    // A ledger at another schema version than this labcron's is refused before the target is
    // opened (it is read-only here, so it cannot be upgraded on the way).
    let version: i64 = crate::common::ledger(&data_dir)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    crate::common::ledger(&data_dir)
        .pragma_update(None, "user_version", version - 1)
        .unwrap();
    let untouched = postgres::server().create_database("");
    let output = migrate(&data_dir, &["--to", &untouched.url()]);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains(&format!("schema version {}", version - 1)),
        "{}",
        text(&output)
    );
    assert_eq!(
        pg_count(
            &untouched,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ),
        0
    );
}

#[test]
fn the_help_tells_what_is_copied_and_checked_and_shows_only_the_data_directory() {
    let output = command(&["migrate-ledger", "--help"]).output().unwrap();
    let help = text(&output);
    assert!(output.status.success(), "{help}");
    for word in [
        "--to",
        "--dry-run",
        "--data-dir",
        "256 KiB",
        "rolls everything back",
    ] {
        assert!(help.contains(word), "{word}: {help}");
    }
    assert!(!help.contains("--runs-max-concurrent"), "{help}");
}

/// A ledger made with SQL (as a server's would be, only faster): `jobs` jobs and `runs` finished
/// runs spread over them, each with a message and a result file name.
fn ledger_of_runs(data_dir: &Path, jobs: i64, runs: i64) {
    drop(Db::open(&data_dir.join("labcron.db")).unwrap());
    let ledger = crate::common::ledger(data_dir);
    ledger
        .execute_batch(&format!(
            "BEGIN;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {jobs})
             INSERT INTO jobs (id, name, type, repeat_schedule, timezone, start_date, activity_status,
                               created_by, command, timeout_seconds, max_queued_runs, created_at,
                               updated_at)
             SELECT i, 'job ' || i, 'EXTERNAL', 'ONDEMAND', 'UTC', 0, 'Active', 1, 'run.sh', 60, 10,
                    i, i FROM n;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {runs})
             INSERT INTO runs (id, job_id, status, run_trigger, run_by, queued_at, started_at,
                               finished_at, exit_code, message, result_file, result_file_size,
                               log_size, series_end)
             SELECT i, 1 + i % {jobs}, CASE WHEN i % 7 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END,
                    'MANUAL', 1, 1700000000000 + i * 1000, 1700000000000 + i * 1000 + 5,
                    1700000000000 + i * 1000 + 900, i % 7, 'finished with exit code ' || (i % 7),
                    'result/out.csv', 1234, 0, 1 FROM n;
             COMMIT;"
        ))
        .unwrap();
}

#[test]
fn a_copy_that_differs_from_the_ledger_is_rolled_back_naming_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    ledger_of_runs(&data_dir, 1, 1);
    let (job, run) = (1, 1);
    let run_dir = data_dir.join(format!("runs/{job}/{run}"));
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(run_dir.join("run.log"), vec![b'x'; 300 * KIB]).unwrap();

    // Triggers in the target change what arrives: a job's name, a run file's piece. The checks
    // see the difference, and nothing stays.
    for (table, body, named) in [
        ("jobs", "NEW.name := NEW.name || '!';", "table jobs"),
        (
            "run_files",
            "NEW.data := substring(NEW.data FROM 2);",
            "table run_files",
        ),
    ] {
        let target = postgres::server().create_database("");
        drop(PgLedgerDb::open(&target.url()).unwrap());
        pg_rows(
            &target,
            &format!(
                "CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} \
                 RETURN NEW; END $$;
                 CREATE TRIGGER tamper BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION tamper();"
            ),
        );
        let output = migrate(&data_dir, &["--to", &target.url()]);
        assert!(!output.status.success(), "{}", text(&output));
        assert!(text(&output).contains(named), "{}", text(&output));
        assert!(text(&output).contains("rolled back"), "{}", text(&output));
        for table in ["jobs", "runs", "run_files"] {
            assert_eq!(
                pg_count(&target, &format!("SELECT count(*) FROM {table}")),
                0,
                "{table}"
            );
        }
    }
}

/// The figure for the README: how long migrate-ledger takes for a ledger of many runs (default
/// 100,000, `LABCRON_MIGRATE_RUNS`) made with SQL, one in a hundred with a 10 KiB log, and how
/// much memory the command needed; then the runs table alone copied both ways the brief allows
/// (binary COPY, which the command uses, and INSERTs of 1,000 rows) into fresh databases.
/// Reported, not asserted: `cargo test --test api migrate_ledger_figures -- --ignored --nocapture`.
#[test]
#[ignore]
fn migrate_ledger_figures() {
    let runs: i64 = std::env::var("LABCRON_MIGRATE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let made = std::time::Instant::now();
    ledger_of_runs(&data_dir, 50, runs);
    let mut logs = 0;
    for run in (1..=runs).step_by(100) {
        let run_dir = data_dir.join(format!("runs/{}/{run}", 1 + run % 50));
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::write(run_dir.join("run.log"), vec![b'l'; 10 * KIB]).unwrap();
        logs += 1;
    }
    crate::common::announce(&format!(
        "made a ledger of {runs} runs and {logs} logs in {:.1} s",
        made.elapsed().as_secs_f64()
    ));
    let target = postgres::server().create_database("");
    let started = std::time::Instant::now();
    let (output, usage) = migrate_measured(&data_dir, &["--to", &target.url()]);
    let wall = started.elapsed();
    assert!(output.status.success(), "{}", text(&output));
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    crate::common::announce(&format!(
        "migrate-ledger, {runs} runs: {:.2} s wall ({:.0} runs/s), its CPU {:.2} s, its peak RSS {} MiB\n{}",
        wall.as_secs_f64(),
        runs as f64 / wall.as_secs_f64(),
        seconds(usage.ru_utime) + seconds(usage.ru_stime),
        usage.ru_maxrss / 1024,
        text(&output)
    ));
    assert_eq!(pg_count(&target, "SELECT count(*) FROM runs"), runs);

    for how in ["COPY", "INSERT"] {
        let fresh = postgres::server().create_database("");
        drop(PgLedgerDb::open(&fresh.url()).unwrap());
        let seconds = copy_runs(&data_dir, &fresh, how);
        crate::common::announce(&format!(
            "runs table alone by {how}: {seconds:.2} s ({:.0} rows/s)",
            runs as f64 / seconds
        ));
        assert_eq!(pg_count(&fresh, "SELECT count(*) FROM runs"), runs);
    }
}

/// `migrate`, with the command's own resources (`wait4` on it: its CPU time and peak memory,
/// nothing of other children such as the test PostgreSQL's initdb).
fn migrate_measured(data_dir: &Path, args: &[&str]) -> (Output, libc::rusage) {
    use std::io::Read;
    let mut all = vec!["migrate-ledger", "--data-dir", data_dir.to_str().unwrap()];
    all.extend_from_slice(args);
    // Reaped by the wait4 below, which Child::wait would not let us call.
    #[allow(clippy::zombie_processes)]
    let mut child = command(&all)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    // The summary is small; stderr is read on a thread so neither pipe can fill up.
    let errors = std::thread::spawn(move || {
        let mut text = Vec::new();
        err.read_to_end(&mut text).unwrap();
        text
    });
    let mut stdout = Vec::new();
    out.read_to_end(&mut stdout).unwrap();
    let stderr = errors.join().unwrap();
    let mut status = 0;
    // SAFETY: wait4 on our own child, with valid pointers; the Child is not waited on again.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let pid = libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage);
        assert_eq!(pid, child.id() as libc::pid_t, "wait4");
        usage
    };
    use std::os::unix::process::ExitStatusExt;
    let output = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout,
        stderr,
    };
    (output, usage)
}

/// Copies the runs table of a ledger (whose jobs are job 1…50, user 1) into `target` by `how`;
/// the seconds the runs took.
fn copy_runs(data_dir: &Path, target: &TestDb, how: &str) -> f64 {
    use ::postgres::types::{ToSql, Type};
    let (data_dir, url, how) = (data_dir.to_path_buf(), target.url(), how.to_string());
    std::thread::spawn(move || {
        let sqlite = crate::common::ledger(&data_dir);
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        let mut tx = client.transaction().unwrap();
        tx.batch_execute(
            "INSERT INTO jobs (id, name, type, repeat_schedule, timezone, start_date, activity_status,
                               created_by, timeout_seconds, max_queued_runs, created_at, updated_at)
             SELECT i, 'job ' || i, 'EXTERNAL', 'ONDEMAND', 'UTC', 0, 'Active', 1, 60, 10, 0, 0
               FROM generate_series(1, 50) i",
        )
        .unwrap();
        let columns: Vec<(String, String)> = tx
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                  WHERE table_name = 'runs' AND column_name <> 'node' ORDER BY ordinal_position",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
        let list = names.join(", ");
        let mut select = sqlite.prepare(&format!("SELECT {list} FROM runs")).unwrap();
        let mut rows = select.query([]).unwrap();
        let value = |row: &rusqlite::Row<'_>, i: usize, kind: &str| -> Box<dyn ToSql + Sync> {
            match kind {
                "bigint" => Box::new(row.get::<_, Option<i64>>(i).unwrap()),
                "boolean" => Box::new(row.get::<_, Option<i64>>(i).unwrap().map(|v| v != 0)),
                _ => Box::new(row.get::<_, Option<String>>(i).unwrap()),
            }
        };
        let started = std::time::Instant::now();
        if how == "COPY" {
            let types: Vec<Type> = columns
                .iter()
                .map(|(_, k)| match k.as_str() {
                    "bigint" => Type::INT8,
                    "boolean" => Type::BOOL,
                    _ => Type::TEXT,
                })
                .collect();
            let copy = tx
                .copy_in(&format!("COPY runs ({list}) FROM STDIN (FORMAT binary)"))
                .unwrap();
            let mut writer = ::postgres::binary_copy::BinaryCopyInWriter::new(copy, &types);
            while let Some(row) = rows.next().unwrap() {
                let values: Vec<Box<dyn ToSql + Sync>> = columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, k))| value(row, i, k))
                    .collect();
                let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
                writer.write(&refs).unwrap();
            }
            writer.finish().unwrap();
        } else {
            const BATCH: usize = 1_000;
            let mut batch: Vec<Box<dyn ToSql + Sync>> = Vec::new();
            let flush = |tx: &mut ::postgres::Transaction<'_>,
                             batch: &mut Vec<Box<dyn ToSql + Sync>>| {
                if batch.is_empty() {
                    return;
                }
                let rows = batch.len() / columns.len();
                let tuples: Vec<String> = (0..rows)
                    .map(|r| {
                        let cells: Vec<String> = (0..columns.len())
                            .map(|c| format!("${}", r * columns.len() + c + 1))
                            .collect();
                        format!("({})", cells.join(", "))
                    })
                    .collect();
                let refs: Vec<&(dyn ToSql + Sync)> = batch.iter().map(|v| v.as_ref()).collect();
                tx.execute(
                    &format!("INSERT INTO runs ({list}) VALUES {}", tuples.join(", ")),
                    &refs,
                )
                .unwrap();
                batch.clear();
            };
            while let Some(row) = rows.next().unwrap() {
                for (i, (_, k)) in columns.iter().enumerate() {
                    batch.push(value(row, i, k));
                }
                if batch.len() == BATCH * columns.len() {
                    flush(&mut tx, &mut batch);
                }
            }
            flush(&mut tx, &mut batch);
        }
        let seconds = started.elapsed().as_secs_f64();
        tx.commit().unwrap();
        seconds
    })
    .join()
    .unwrap()
}
