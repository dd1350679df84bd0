//! Resident memory of a server firing every-second CRON jobs, over time: 1,000 jobs written into
//! the ledger while the server is stopped, each firing every second through the
//! `JobScheduler` (1,000 fires a second). Each job's first fire queues a run that holds the only
//! run slot (`--runs-max-concurrent 1`) or waits for it, so every later fire is skipped as busy:
//! the figure is the scheduler's memory (library entries, closures, timers, the fire
//! transactions), not the growth of the runs table or of run logs. VmRSS after a warm-up is the
//! baseline; VmRSS at the end of the run is the value. The run lasts an hour, the question the
//! scheduler issue asks; `LABCRON_BENCH_FIRE_MEMORY_SECONDS` shortens it (the note says how long
//! it ran).

use std::time::{Duration, Instant};

use rusqlite::params;

use super::{OrMessage, ServerFigures, create_ledger, launch, now_ms, write_script};
use crate::{Context, Figure, Target};

const JOBS: i64 = 1_000;
const WARM_UP: Duration = Duration::from_secs(30);
/// An hour unless `LABCRON_BENCH_FIRE_MEMORY_SECONDS` says otherwise (at least the warm-up).
fn run_length() -> Result<Duration, String> {
    match std::env::var("LABCRON_BENCH_FIRE_MEMORY_SECONDS") {
        Err(_) => Ok(Duration::from_secs(3600)),
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map(|s| Duration::from_secs(s).max(WARM_UP + Duration::from_secs(30)))
            .map_err(|_| {
                format!("LABCRON_BENCH_FIRE_MEMORY_SECONDS={text:?} is not a number of seconds")
            }),
    }
}

pub fn fire_memory(ctx: &Context) -> Vec<Figure> {
    let name = "resident memory, 1,000 every-second CRON jobs firing: end vs after warm-up";
    match measure(ctx) {
        Ok((warm, end, note)) => vec![
            Figure::measured(name, end, "MiB")
                .baseline(warm)
                .target(Target::AtMost(1.1))
                .note(note),
        ],
        Err(e) => vec![Figure::skipped(name, "MiB", e)],
    }
}

fn measure(ctx: &Context) -> Result<(f64, f64, String), String> {
    let run = run_length()?;
    let data_dir = ctx.dir.join("data");
    let log = ctx.dir.join("server.log");
    // Longer than the run, so no run finishes (and frees its job) while it is measured.
    write_script(&data_dir, "hold.sh", "#!/bin/sh\nsleep 600\n")?;
    create_ledger(&data_dir, &log)?;
    {
        let mut conn =
            rusqlite::Connection::open(data_dir.join("labcron.db")).msg("open the ledger")?;
        let admin: i64 = conn
            .query_row("SELECT id FROM users WHERE login_name = 'admin'", [], |r| {
                r.get(0)
            })
            .msg("admin id")?;
        let now = now_ms();
        let tx = conn.transaction().msg("begin")?;
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO jobs (name, type, repeat_schedule, cron_expression, timezone, start_date,
                        activity_status, created_by, command, timeout_seconds, max_queued_runs, created_at,
                        updated_at)
                     VALUES (?1, 'EXTERNAL', 'CRON', '* * * * * *', 'UTC', ?2, 'Active', ?3, 'hold.sh', 3600, 10, ?2, ?2)",
                )
                .msg("prepare")?;
            for i in 0..JOBS {
                insert
                    .execute(params![format!("every second {i}"), now, admin])
                    .msg("insert a job")?;
            }
        }
        tx.commit().msg("commit")?;
    }
    let (server, _) = launch(
        &data_dir,
        &log,
        &[
            "--runs-max-concurrent",
            "1",
            "--runs-shutdown-grace-seconds",
            "1",
        ],
    )?;
    let started = Instant::now();
    let reader = rusqlite::Connection::open_with_flags(
        data_dir.join("labcron.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .msg("open the ledger to read")?;
    // Fired instants so far: every job's `last_fired_for` moves on at each fire, skipped or not.
    let fired_seconds = || -> Result<i64, String> {
        reader
            .query_row(
                "SELECT count(last_fired_for), coalesce(min(last_fired_for), 0) FROM jobs",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .map(|(jobs, oldest)| if jobs == JOBS { oldest } else { 0 })
            .msg("read the fires")
    };
    std::thread::sleep(WARM_UP);
    let warm = server.rss_mib()?;
    let mut samples = vec![warm];
    while started.elapsed() < run {
        std::thread::sleep(Duration::from_secs(30).min(run.saturating_sub(started.elapsed())));
        samples.push(server.rss_mib()?);
    }
    let end = server.rss_mib()?;
    let last_fired = fired_seconds()?;
    let lag_ms = now_ms() - last_fired;
    server.stop(Duration::from_secs(30))?;
    // About a dozen evenly spaced samples, so an hour's note stays one readable line.
    let step = samples.len().div_ceil(12).max(1);
    let trace = samples
        .iter()
        .step_by(step)
        .map(|m| format!("{m:.1}"))
        .collect::<Vec<_>>()
        .join(", ");
    let note = format!(
        "{} s run (about {} fires); VmRSS every {} s from {} s: {trace} MiB; \
         the last instant every job had fired was {lag_ms} ms before the end",
        run.as_secs(),
        JOBS * run.as_secs() as i64,
        30 * step,
        WARM_UP.as_secs(),
    );
    Ok((warm, end, note))
}
