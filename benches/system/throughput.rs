//! On-demand runs of a script that exits at once: 50 jobs × 40 runs, from the first POST to the
//! last run SUCCEEDED in the ledger, against a tight loop that spawns and waits for the same
//! script (the cost of the processes alone), measured after the servers have stopped. The same
//! load on SQLite, then on PostgreSQL with one node and with two nodes sharing one database
//! (every other job's client talks to the second node; either node may execute any run). The
//! PostgreSQL server is a private one that syncs its commits (`fsync`, `synchronous_commit` on),
//! as SQLite's `synchronous=FULL` does, on the same machine; without PostgreSQL's binaries its
//! rows are skipped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    Conn, OrMessage, ServerFigures, call_json, create_ledger_with, launch, post_request, sign_in,
    write_script,
};
use crate::common::postgres as fixture;
use crate::{Context, Figure, Target};

const JOBS: usize = 50;
const RUNS_PER_JOB: usize = 40;
const SCRIPT: &str = "#!/bin/sh\nexit 0\n";
const TOTAL: usize = JOBS * RUNS_PER_JOB;

pub fn runs_throughput(ctx: &Context) -> Vec<Figure> {
    let name = "on-demand runs (50 jobs x 40), POST to SUCCEEDED";
    let sqlite = measure(&ctx.dir.join("sqlite"), &Engine::Sqlite);
    let postgres = measure_postgres(&ctx.dir.join("postgres"));
    // The baseline once, after every server has stopped: the same program, spawned and waited
    // for in a tight loop.
    let baseline = spawn_loop(&ctx.dir.join("sqlite/data0/scripts/exit0.sh"));
    let mut figures = Vec::new();
    let baseline = match baseline {
        Ok(baseline) => baseline,
        Err(e) => return vec![Figure::skipped(name, "runs/s", e)],
    };
    let baseline_note = format!(
        "baseline: the same script spawned and waited for {TOTAL} times in a loop, \
         {baseline:.0} runs/s"
    );
    match sqlite {
        Ok(ours) => {
            figures.push(
                Figure::measured(name, ours.runs_per_second, "runs/s")
                    .target(Target::AtLeast(1000.0))
                    .note(ours.note.clone()),
            );
            figures.push(
                Figure::measured(
                    &format!("{name}, vs spawn+wait loop"),
                    ours.runs_per_second,
                    "runs/s",
                )
                .baseline(baseline)
                .target(Target::AtLeast(0.6))
                .note(baseline_note.clone()),
            );
        }
        Err(e) => figures.push(Figure::skipped(name, "runs/s", e)),
    }
    for (nodes, measured) in postgres {
        let pg_name = format!(
            "{name}, PostgreSQL, {nodes} node{}, vs spawn+wait loop",
            if nodes == 1 { "" } else { "s" }
        );
        figures.push(match measured {
            Ok(ours) => Figure::measured(&pg_name, ours.runs_per_second, "runs/s")
                .baseline(baseline)
                .note(format!("{}; {baseline_note}", ours.note)),
            Err(e) => Figure::skipped(&pg_name, "runs/s", e),
        });
    }
    figures
}

/// Where the measured servers keep their ledger.
enum Engine {
    Sqlite,
    /// `nodes` servers sharing the PostgreSQL database at `url`.
    Postgres {
        url: String,
        nodes: usize,
    },
}

/// What one measurement found.
struct Measured {
    runs_per_second: f64,
    note: String,
}

/// The one-node and two-node figures on a private, syncing PostgreSQL (a database each).
fn measure_postgres(dir: &Path) -> Vec<(usize, Result<Measured, String>)> {
    if let Err(e) = fixture::bin_dir() {
        return [1, 2].map(|nodes| (nodes, Err(e.clone()))).into();
    }
    let server = fixture::start_own_durable();
    let figures = [1, 2]
        .map(|nodes| {
            let url = server.create_database("").url();
            let engine = Engine::Postgres { url, nodes };
            (nodes, measure(&dir.join(format!("{nodes}")), &engine))
        })
        .into();
    server.stop();
    figures
}

fn measure(dir: &Path, engine: &Engine) -> Result<Measured, String> {
    let nodes = match engine {
        Engine::Sqlite => 1,
        Engine::Postgres { nodes, .. } => *nodes,
    };
    let mut servers = Vec::new();
    for node in 0..nodes {
        let data_dir = dir.join(format!("data{node}"));
        let log = dir.join(format!("server{node}.log"));
        write_script(&data_dir, "exit0.sh", SCRIPT)?;
        let args: Vec<String> = match engine {
            Engine::Sqlite => Vec::new(),
            Engine::Postgres { url, .. } => vec![
                "--database-url".into(),
                url.clone(),
                "--node-name".into(),
                format!("bench-{node}"),
            ],
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if node == 0 {
            create_ledger_with(&data_dir, &log, &args)?;
        }
        servers.push(launch(&data_dir, &log, &args)?.0);
    }
    let mut ledger = Probe::open(engine, &dir.join("data0"))?;
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    let rt = super::runtime()?;
    let (token, jobs) = rt.block_on(create_jobs(ports[0]))?;
    // Warm-up: one run per job, then wait for the queue to empty.
    rt.block_on(post_runs(&ports, &token, &jobs, 1))?;
    wait_idle(&mut ledger, Duration::from_secs(60))?;
    let before = ledger.integer("SELECT coalesce(max(id), 0) FROM runs")?;

    let cpu_before = total_cpu_seconds(&servers)?;
    let started = Instant::now();
    rt.block_on(post_runs(&ports, &token, &jobs, RUNS_PER_JOB))?;
    let posted = started.elapsed();
    wait_idle(&mut ledger, Duration::from_secs(300))?;
    let elapsed = started.elapsed();
    let server_cpu = total_cpu_seconds(&servers)? - cpu_before;
    let succeeded = ledger.integer(&format!(
        "SELECT count(*) FROM runs WHERE id > {before} AND status = 'SUCCEEDED'"
    ))?;
    if succeeded as usize != TOTAL {
        return Err(format!("only {succeeded} of {TOTAL} runs SUCCEEDED"));
    }
    let mut split = String::new();
    if nodes > 1 {
        let mut counts = Vec::new();
        for node in 0..nodes {
            counts.push(ledger.integer(&format!(
                "SELECT count(*) FROM runs WHERE id > {before} AND node = 'bench-{node}'"
            ))?);
        }
        let counts: Vec<String> = counts.iter().map(i64::to_string).collect();
        split = format!("; runs per node {}", counts.join(" + "));
    }
    drop(servers);
    let where_ = match engine {
        Engine::Sqlite => "SQLite, synchronous=FULL".to_string(),
        Engine::Postgres { .. } => "PostgreSQL, fsync and synchronous_commit on".to_string(),
    };
    Ok(Measured {
        runs_per_second: TOTAL as f64 / elapsed.as_secs_f64(),
        note: format!(
            "{TOTAL} runs in {:.2} s (the POSTs, {JOBS} clients, took {:.2} s); server CPU {:.2} ms \
             per run (POST and run, all nodes, the script's own process not included){split}; \
             {where_}; runs.max_concurrent = 8 (default) per node",
            elapsed.as_secs_f64(),
            posted.as_secs_f64(),
            server_cpu * 1000.0 / TOTAL as f64,
        ),
    })
}

/// Signs in on `port` and creates the jobs; answers the token (good on every node) and their ids.
async fn create_jobs(port: u16) -> Result<(String, Vec<i64>), String> {
    let token = sign_in(port).await?;
    let mut conn = Conn::open(port).await?;
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
    Ok((token, jobs))
}

fn total_cpu_seconds(servers: &[super::Server]) -> Result<f64, String> {
    servers.iter().map(|s| s.cpu_seconds()).sum()
}

/// Runs/s of `script` spawned and waited for `TOTAL` times in a loop.
fn spawn_loop(script: &Path) -> Result<f64, String> {
    let started = Instant::now();
    for _ in 0..TOTAL {
        let status = Command::new(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .msg("spawn the script")?;
        if !status.success() {
            return Err(format!("the script failed: {status}"));
        }
    }
    Ok(TOTAL as f64 / started.elapsed().as_secs_f64())
}

/// Every job gets `per_job` runs, one client (connection) per job, each POST after the last;
/// job `i`'s client talks to node `i % nodes`.
async fn post_runs(ports: &[u16], token: &str, jobs: &[i64], per_job: usize) -> Result<(), String> {
    let mut tasks = Vec::new();
    for (i, &job) in jobs.iter().enumerate() {
        let port = ports[i % ports.len()];
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

/// A read-only look at the servers' ledger from outside them.
enum Probe {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

impl Probe {
    fn open(engine: &Engine, data_dir: &Path) -> Result<Probe, String> {
        Ok(match engine {
            Engine::Sqlite => Probe::Sqlite(
                rusqlite::Connection::open_with_flags(
                    data_dir.join("labcron.db"),
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .msg("open the ledger")?,
            ),
            Engine::Postgres { url, .. } => Probe::Postgres(
                postgres::Client::connect(url, postgres::NoTls).msg("connect to the ledger")?,
            ),
        })
    }

    /// The integer in the first column of the first row of `sql` (a count or an id).
    fn integer(&mut self, sql: &str) -> Result<i64, String> {
        match self {
            Probe::Sqlite(conn) => conn.query_row(sql, [], |r| r.get(0)).msg(sql),
            Probe::Postgres(client) => client
                .query_one(sql, &[])
                .and_then(|row| row.try_get(0))
                .msg(sql),
        }
    }
}

/// Waits until the ledger has no QUEUED or IN_PROGRESS run (every accepted run is already a row).
fn wait_idle(ledger: &mut Probe, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let active = ledger
            .integer("SELECT count(*) FROM runs WHERE status IN ('QUEUED', 'IN_PROGRESS')")?;
        if active == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{active} runs still active after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
