//! How the real binary sets up glibc's malloc (`src/allocator.rs`): it runs with the per-thread
//! caches off (it starts itself again with the tunable), keeps a caller's own choice of them, and
//! the tunable never reaches a job (jobs get an environment of their own; that the server's own
//! environment goes back to the caller's is tested in `src/allocator.rs`).

use std::path::Path;

use serde_json::json;

use crate::common::{Launch, Server, write_script};

/// What the process was started with (its environment at `exec`), as `NAME=value` strings.
fn exec_environment(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// Starts the server on `data_dir` (with `tunables` as the caller's `GLIBC_TUNABLES`, or none),
/// runs a job that writes its environment, and returns the server and that environment.
async fn server_and_job_environment(
    data_dir: &Path,
    tunables: Option<&str>,
) -> (Server, Vec<String>) {
    let out = data_dir.with_file_name("job-env");
    write_script(
        &data_dir.join("scripts"),
        "env.sh",
        &format!("#!/bin/sh\nenv > {}\n", out.display()),
    );
    let launch = Launch::new(data_dir).no_example_jobs();
    let launch = match tunables {
        Some(value) => launch.env("GLIBC_TUNABLES", value),
        None => launch.env_remove("GLIBC_TUNABLES"),
    };
    let server = launch.start();
    let api = server.admin().await;
    let job = api
        .create_job(&json!({"name": "env", "type": "EXTERNAL", "command": "env.sh", "repeatSchedule": "ONDEMAND"}))
        .await;
    let run = api.run_to_end(job, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let env = std::fs::read_to_string(&out).unwrap();
    (server, env.lines().map(str::to_string).collect())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_without_thread_caches_unless_the_caller_sized_them() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (server, job_env) = server_and_job_environment(&data_dir, None).await;
    let started_with = exec_environment(server.pid());
    assert!(
        started_with.contains(&"GLIBC_TUNABLES=glibc.malloc.tcache_count=0".to_string()),
        "the server's start environment: {started_with:?}"
    );
    // Started again by its own path: the process keeps its name (`ps`, `pkill labcron`).
    let name = std::fs::read_to_string(format!("/proc/{}/comm", server.pid())).unwrap();
    assert_eq!(name.trim(), "labcron");
    assert_no_tunables_reach_the_job(&job_env);
    server.kill();

    // A caller's own tunables: the caches' tunable is added to them.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (server, job_env) =
        server_and_job_environment(&data_dir, Some("glibc.malloc.arena_max=2")).await;
    // glibc splits the value in place when it reads it (a NUL for each `:`), so the start
    // environment shows its parts; the remembered value says what the caller gave.
    let started_with = exec_environment(server.pid());
    assert!(
        started_with.contains(&"GLIBC_TUNABLES=glibc.malloc.arena_max=2".to_string())
            && started_with.contains(&"glibc.malloc.tcache_count=0".to_string())
            && started_with
                .contains(&"_LABCRON_GLIBC_TUNABLES_BEFORE==glibc.malloc.arena_max=2".to_string()),
        "the server's start environment: {started_with:?}"
    );
    assert_no_tunables_reach_the_job(&job_env);
    server.kill();

    // A caller who sized the caches keeps them: no second start, the value as given.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (server, job_env) =
        server_and_job_environment(&data_dir, Some("glibc.malloc.tcache_count=3")).await;
    let started_with = exec_environment(server.pid());
    assert!(
        started_with.contains(&"GLIBC_TUNABLES=glibc.malloc.tcache_count=3".to_string())
            && !started_with.iter().any(|v| v.starts_with("_LABCRON_")),
        "the server's start environment: {started_with:?}"
    );
    assert_no_tunables_reach_the_job(&job_env);
    server.kill();
}

/// A job's environment holds neither glibc's tunables nor the server's own marker.
fn assert_no_tunables_reach_the_job(job_env: &[String]) {
    assert!(
        !job_env
            .iter()
            .any(|v| v.starts_with("GLIBC_TUNABLES=") || v.starts_with("_LABCRON_")),
        "the job's environment: {job_env:?}"
    );
}
