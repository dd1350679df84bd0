//! Fuzzing the real binary against its own OpenAPI document with schemathesis (a Python tool from
//! PyPI; `scripts/test` installs it into `target/schemathesis-venv`). The test starts `labcron` on
//! 127.0.0.1 port 0 with a temporary data directory, signs in, creates users, jobs, runs and a
//! saved query so that generated paths often name real objects, then runs schemathesis with a
//! bounded number of examples per operation and fails with its report when it finds a server
//! error or a response that contradicts the document. The server's own request counter checks
//! that enough requests were made and that none answered 5xx.
//!
//! Without schemathesis the test fails with instructions; set `LABCRON_SCHEMATHESIS` to the `st`
//! program to use another installation. `LABCRON_FUZZ_EXAMPLES` (examples per operation) and
//! `LABCRON_FUZZ_SEED` change the run.

#[path = "../common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use common::{ADMIN_PASSWORD, Api, Server, start_server, write_script};
/// Examples per operation (schemathesis `--max-examples`); the phases together make several
/// requests per example, so this gives well over 2,000 requests.
const DEFAULT_EXAMPLES: u32 = 50;
/// The fixed seed makes a failure reproducible; change it with `LABCRON_FUZZ_SEED`.
const DEFAULT_SEED: &str = "20261125";
/// Requests the run must have made, as the server counted them.
const MIN_REQUESTS: u64 = 2_000;
/// A hung run fails instead of blocking the suite.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// Checks that cannot apply to this API, and why:
/// - `positive_data_acceptance` wants schema-valid requests accepted, but OpenSpecimen's contract
///   answers 400 for "not found" and "not allowed", which random ids and users mostly are;
/// - `negative_data_rejection` wants schema-invalid input rejected, but input is read leniently
///   like OpenSpecimen's Jackson setup (numeric strings for numbers, blank means absent, unknown
///   fields ignored).
const EXCLUDED_CHECKS: &str = "positive_data_acceptance,negative_data_rejection";

/// The schemathesis CLI (`st`): `LABCRON_SCHEMATHESIS`, the venv `scripts/test` makes under the
/// target directory, or `st` / `schemathesis` on PATH.
fn find_schemathesis() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("LABCRON_SCHEMATHESIS") {
        return Some(PathBuf::from(path));
    }
    let mut candidates = Vec::new();
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("schemathesis-venv/bin/st"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/schemathesis-venv/bin/st"));
    // target/<profile>/deps/fuzz-… → target
    if let Ok(exe) = std::env::current_exe()
        && let Some(target) = exe.ancestors().nth(3)
    {
        candidates.push(target.join("schemathesis-venv/bin/st"));
    }
    if let Some(found) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(found);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| [dir.join("st"), dir.join("schemathesis")])
        .find(|p| p.is_file())
}

/// Queues a run, waits for its end and returns its id.
async fn run(api: &Api, job: i64, args: Option<&str>) -> i64 {
    api.run_to_end(job, args).await["id"]
        .as_i64()
        .expect("run id")
}

/// Objects the generated requests can name: (fuzzing user, victim users, jobs, runs, queries).
struct Seeded {
    me: i64,
    victims: Vec<i64>,
    jobs: Vec<i64>,
    runs: Vec<i64>,
    queries: Vec<i64>,
}

async fn seed(server: &Server, data_dir: &Path) -> (Api, Seeded) {
    let session = server.api().session("admin", ADMIN_PASSWORD).await;
    let api = Api {
        token: session["token"].as_str().expect("token").to_string(),
        ..server.api()
    };
    let me = session["id"].as_i64().expect("user id");

    write_script(
        &data_dir.join("scripts"),
        "report.sh",
        "#!/bin/sh\necho \"report $*\"\necho 'a warning' >&2\n\
         printf 'site,specimens\\nMain,42\\n' > \"$LABCRON_RESULT_DIR/counts.csv\"\n",
    );

    let mut victims = Vec::new();
    for login in ["victim1", "victim2", "victim3"] {
        let user = api
            .ok(
                Method::POST,
                "/users",
                Some(&json!({"loginName": login, "password": "victim-password-1",
                       "firstName": login, "lastName": "Fuzz", "emailAddress": format!("{login}@lab.example")})),
            )
            .await;
        victims.push(user["id"].as_i64().expect("user id"));
    }
    let query = api
        .ok(
            Method::POST,
            "/saved-queries",
            Some(&json!({"title": "Specimens", "sql": "SELECT 1 AS one, 'x' AS label"})),
        )
        .await;
    let query_id = query["id"].as_i64().expect("query id");

    let mut jobs = Vec::new();
    let mut runs = Vec::new();
    let bodies = [
        json!({"name": "Report", "type": "EXTERNAL", "command": "report.sh --site Main",
               "repeatSchedule": "ONDEMAND", "rtArgsProvided": true, "sharedWith": [{"id": victims[0]}]}),
        json!({"name": "Nightly report", "type": "EXTERNAL", "command": "report.sh",
               "repeatSchedule": "DAILY", "scheduledHour": 2, "scheduledMinute": 30,
               "timezone": "Europe/Berlin", "recipients": [{"id": victims[1]}]}),
        json!({"name": "Runs report", "type": "INTERNAL", "taskImplFqn": "runs-report",
               "repeatSchedule": "WEEKLY", "scheduledDayOfWeek": "MONDAY", "scheduledHour": 6,
               "scheduledMinute": 0}),
        json!({"name": "Specimen query", "type": "QUERY", "savedQuery": {"id": query_id},
               "repeatSchedule": "CRON", "cronExpression": "0 7 * * 1-5"}),
    ];
    for body in bodies {
        let id = api.create_job(&body).await;
        jobs.push(id);
        runs.push(run(&api, id, None).await);
    }
    runs.push(run(&api, jobs[0], Some("--from 2022-02-01 'a b'")).await);
    // A paused job too.
    let closed = api
        .create_job(&json!({"name": "Paused", "type": "INTERNAL", "taskImplFqn": "files-cleaner",
                   "repeatSchedule": "MINUTELY", "minutelyInterval": 5, "activityStatus": "Closed"}))
        .await;
    jobs.push(closed);
    (
        api,
        Seeded {
            me,
            victims,
            jobs,
            runs,
            queries: vec![query_id],
        },
    )
}

fn list(ids: &[i64]) -> String {
    ids.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The schemathesis configuration: path parameters take real ids half of the time, and a hook
/// keeps generated `PUT`/`DELETE /users/{userId}` away from the fuzzing user (whose token the
/// run needs) by sending them to a victim user instead.
fn write_config(dir: &Path, seeded: &Seeded) -> PathBuf {
    let hooks = dir.join("hooks.py");
    std::fs::write(
        &hooks,
        format!(
            r#"import schemathesis

PROTECTED = "{me}"
VICTIM = {victim}


@schemathesis.hook
def before_call(context, case, kwargs):
    params = case.path_parameters or {{}}
    if (
        case.method.upper() in ("PUT", "DELETE")
        and case.path.endswith("/users/{{userId}}")
        and str(params.get("userId")) == PROTECTED
    ):
        case.path_parameters["userId"] = VICTIM
"#,
            me = seeded.me,
            victim = seeded.victims[0],
        ),
    )
    .expect("hooks");
    let mut users = vec![seeded.me];
    users.extend(&seeded.victims);
    let config = dir.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"hooks = "{hooks}"

[parameters]
"path.jobId" = {{ dictionary = "jobs", probability = 0.5 }}
"path.runId" = {{ dictionary = "runs", probability = 0.5 }}
"path.queryId" = {{ dictionary = "queries", probability = 0.5 }}
"path.userId" = {{ dictionary = "users", probability = 0.5 }}

[dictionaries.jobs]
values = [{jobs}]
[dictionaries.runs]
values = [{runs}]
[dictionaries.queries]
values = [{queries}]
[dictionaries.users]
values = [{users}]
"#,
            hooks = hooks.display(),
            jobs = list(&seeded.jobs),
            runs = list(&seeded.runs),
            queries = list(&seeded.queries),
            users = list(&users),
        ),
    )
    .expect("config");
    config
}

/// Requests the server answered, by status, from `labcron_http_requests_total`.
async fn served_requests(api: &Api) -> Vec<(String, String, String, u64)> {
    let text = api
        .client
        .get(format!("{}/metrics", api.base))
        .header("X-OS-API-TOKEN", &api.token)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let label = |line: &str, name: &str| -> String {
        line.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_string()
    };
    text.lines()
        .filter(|l| l.starts_with("labcron_http_requests_total{"))
        .filter_map(|l| {
            let count = l.rsplit(' ').next()?.parse::<f64>().ok()? as u64;
            Some((
                label(l, "route"),
                label(l, "method"),
                label(l, "status"),
                count,
            ))
        })
        .collect()
}

fn tail(text: &str, max_chars: usize) -> &str {
    let start = text.len().saturating_sub(max_chars);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    &text[start..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_response_outside_the_schema() {
    let Some(st) = find_schemathesis() else {
        panic!(
            "schemathesis is not installed. `scripts/test` installs it into \
             target/schemathesis-venv; or run `python3 -m venv target/schemathesis-venv && \
             target/schemathesis-venv/bin/pip install schemathesis`, or set LABCRON_SCHEMATHESIS \
             to its `st` program."
        );
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    // Random Basic credentials must answer 401, not trip the sign-in lockout (429), which the API
    // tests cover.
    let server = start_server(&data_dir, &["--auth-max-failed-logins", "1000000"]);
    let (api, seeded) = seed(&server, &data_dir).await;
    let config = write_config(dir.path(), &seeded);
    let before: u64 = served_requests(&api).await.iter().map(|r| r.3).sum();

    let examples = std::env::var("LABCRON_FUZZ_EXAMPLES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(DEFAULT_EXAMPLES);
    let seed = std::env::var("LABCRON_FUZZ_SEED").unwrap_or_else(|_| DEFAULT_SEED.to_string());
    let output_path = dir.path().join("schemathesis.out");
    let output = std::fs::File::create(&output_path).expect("output file");
    let started = Instant::now();
    let mut command = tokio::process::Command::new(&st);
    command
        .current_dir(dir.path())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/openapi.json", server.base))
        .args(["--header", &format!("X-OS-API-TOKEN: {}", api.token)])
        .args(["--checks", "all", "--exclude-checks", EXCLUDED_CHECKS])
        // The `/openspecimen/rest/ng` copies run the same handlers (one route list serves both;
        // tests/api/openapi.rs checks that they are served); signing out would end the run's own
        // session.
        .args(["--exclude-path-regex", "^/openspecimen/"])
        .args(["--exclude-operation-id", "signOut"])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", &seed])
        // One worker: with the fixed seed the run is the same every time (no races between
        // workers deleting what the other one just created), and still well under a minute.
        .args(["--workers", "1"])
        .args(["--request-timeout", "75"])
        .args(["--generation-database", "none"])
        .args(["--suppress-health-check", "too_slow,filter_too_much"])
        .args(["--report", "junit", "--report-dir"])
        .arg(dir.path().join("report"))
        .arg("--no-color")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("output"))
        .stderr(output)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", st.display()));
    let status = match tokio::time::timeout(RUN_TIMEOUT, child.wait()).await {
        Ok(status) => status.expect("schemathesis exit status"),
        Err(_) => {
            let _ = child.kill().await;
            panic!(
                "schemathesis did not finish in {} s; its output:\n{}",
                RUN_TIMEOUT.as_secs(),
                tail(
                    &std::fs::read_to_string(&output_path).unwrap_or_default(),
                    20_000
                )
            );
        }
    };
    let elapsed = started.elapsed();
    let report = std::fs::read_to_string(&output_path).unwrap_or_default();

    let served = served_requests(&api).await;
    let total: u64 = served.iter().map(|r| r.3).sum::<u64>() - before;
    let server_errors: Vec<_> = served.iter().filter(|r| r.2.starts_with('5')).collect();
    let log = server.log_text();
    let internal_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("internal error") || l.contains("panicked"))
        .take(20)
        .collect();
    let summary = report
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!(
        "schemathesis: {total} requests in {:.0} s ({examples} examples per operation, seed {seed})\n{summary}",
        elapsed.as_secs_f64()
    );

    assert!(
        status.success()
            && summary.contains("Test cases:")
            && !summary.contains("Failures:")
            && !summary.contains("Errors:"),
        "schemathesis found problems (exit {status}):\n{}\n\nserver errors logged:\n{}",
        tail(&report, 25_000),
        internal_errors.join("\n")
    );
    assert!(
        server_errors.is_empty() && internal_errors.is_empty(),
        "the server answered 5xx: {server_errors:?}\n{}",
        internal_errors.join("\n")
    );
    assert!(
        total >= MIN_REQUESTS,
        "only {total} requests were made (at least {MIN_REQUESTS} wanted); raise LABCRON_FUZZ_EXAMPLES.\n{summary}"
    );
}
