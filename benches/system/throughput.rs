//! On-demand runs of a script that exits at once: 50 jobs × 40 runs, from the first POST to the
//! last run SUCCEEDED in the ledger, against a tight loop that spawns and waits for the same
//! script (the cost of the processes alone).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    Conn, OrMessage, ServerFigures, call_json, create_ledger, launch, post_request, sign_in,
    write_script,
};
use crate::{Context, Figure, Target};

const JOBS: usize = 50;
const RUNS_PER_JOB: usize = 40;
const SCRIPT: &str = "#!/bin/sh\nexit 0\n";

pub fn runs_throughput(ctx: &Context) -> Vec<Figure> {
    let name = "on-demand runs (50 jobs x 40), POST to SUCCEEDED";
    match measure(ctx) {
        Ok((ours, baseline, note)) => vec![
            Figure::measured(name, ours, "runs/s")
                .target(Target::AtLeast(1000.0))
                .note(note.clone()),
            Figure::measured(&format!("{name}, vs spawn+wait loop"), ours, "runs/s")
                .baseline(baseline)
                .target(Target::AtLeast(0.6))
                .note("baseline: the same script spawned and waited for 2,000 times in a loop"),
        ],
        Err(e) => vec![Figure::skipped(name, "runs/s", e)],
    }
}

/// Returns (labcron runs/s, spawn-loop runs/s, note).
fn measure(ctx: &Context) -> Result<(f64, f64, String), String> {
    let data_dir = ctx.dir.join("data");
    let log = ctx.dir.join("server.log");
    let script = write_script(&data_dir, "exit0.sh", SCRIPT)?;
    create_ledger(&data_dir, &log)?;
    let (server, _) = launch(&data_dir, &log, &[])?;
    let rt = super::runtime()?;
    let ledger = rusqlite::Connection::open_with_flags(
        data_dir.join("labcron.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .msg("open the ledger")?;
    let (elapsed, posted, succeeded, server_cpu) = rt.block_on(async {
        let token = sign_in(server.port).await?;
        let mut conn = Conn::open(server.port).await?;
        let mut jobs = Vec::new();
        for i in 0..JOBS {
            let body = serde_json::json!({"name": format!("throughput {i}"), "type": "EXTERNAL",
                "command": "exit0.sh", "repeatSchedule": "ONDEMAND"});
            let job = call_json(
                &mut conn,
                &post_request("/rest/ng/scheduled-jobs", &token, &body.to_string()),
            )
            .await?;
            jobs.push(job["id"].as_i64().msg("job id")?);
        }
        // Warm-up: one run per job, then wait for the queue to empty.
        post_runs(server.port, &token, &jobs, 1).await?;
        wait_idle(&ledger, Duration::from_secs(60)).await?;
        let before: i64 = ledger
            .query_row("SELECT coalesce(max(id), 0) FROM runs", [], |r| r.get(0))
            .msg("max run id")?;

        let cpu_before = server.cpu_seconds()?;
        let started = Instant::now();
        post_runs(server.port, &token, &jobs, RUNS_PER_JOB).await?;
        let posted = started.elapsed();
        wait_idle(&ledger, Duration::from_secs(300)).await?;
        let elapsed = started.elapsed();
        let succeeded: i64 = ledger
            .query_row(
                "SELECT count(*) FROM runs WHERE id > ?1 AND status = 'SUCCEEDED'",
                [before],
                |r| r.get(0),
            )
            .msg("count runs")?;
        let server_cpu = server.cpu_seconds()? - cpu_before;
        Ok::<_, String>((elapsed, posted, succeeded, server_cpu))
    })?;
    let total = (JOBS * RUNS_PER_JOB) as f64;
    if succeeded as f64 != total {
        return Err(format!("only {succeeded} of {total} runs SUCCEEDED"));
    }
    let ours = total / elapsed.as_secs_f64();
    drop(server);

    // The baseline: the same program, spawned and waited for in a tight loop.
    let started = Instant::now();
    for _ in 0..(JOBS * RUNS_PER_JOB) {
        let status = Command::new(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .msg("spawn the script")?;
        if !status.success() {
            return Err(format!("the script failed: {status}"));
        }
    }
    let baseline = total / started.elapsed().as_secs_f64();
    let note = format!(
        "{total} runs in {:.2} s (the POSTs, 50 clients, took {:.2} s); server CPU {:.2} ms per run \
         (POST and run, the script's own process not included); runs.max_concurrent = 8 (default)",
        elapsed.as_secs_f64(),
        posted.as_secs_f64(),
        server_cpu * 1000.0 / total,
    );
    Ok((ours, baseline, note))
}

/// Every job gets `per_job` runs, one client (connection) per job, each POST after the last.
async fn post_runs(port: u16, token: &str, jobs: &[i64], per_job: usize) -> Result<(), String> {
    let mut tasks = Vec::new();
    for &job in jobs {
        let request = post_request(&format!("/rest/ng/scheduled-jobs/{job}/runs"), token, "{}");
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(port).await?;
            for _ in 0..per_job {
                let reply = conn.call(&request, false).await?;
                if reply.status != 200 {
                    return Err(format!("POST runs answered {}", reply.status));
                }
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.msg("client task")??;
    }
    Ok(())
}

/// Waits until the ledger has no QUEUED or IN_PROGRESS run (every accepted run is already a row).
async fn wait_idle(ledger: &rusqlite::Connection, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let active: i64 = ledger
            .query_row(
                "SELECT count(*) FROM runs WHERE status IN ('QUEUED', 'IN_PROGRESS')",
                [],
                |r| r.get(0),
            )
            .msg("count active runs")?;
        if active == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{active} runs still active after {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
