//! Resident memory of a server firing every-second CRON jobs, over time: 1,000 jobs written into
//! the ledger while the server is stopped, each firing every second through the
//! `JobScheduler` (1,000 fires a second). Each job's first fire queues a run that holds the only
//! run slot (`--runs-max-concurrent 1`) or waits for it, so every later fire is skipped as busy:
//! the figure is the scheduler's memory (library entries, closures, timers, the fire
//! transactions), not the growth of the runs table or of run logs.
//!
//! After a warm-up, VmRSS is read every second (one read of `/proc/<pid>/status`). The server
//! trims its malloc arenas every 10 s, so VmRSS is a sawtooth: a sample at a fixed moment of it
//! says little. Each minute's window keeps its lowest reading (what a trim cannot give back) and
//! its highest (what the firing holds at its peak); the first window after the warm-up is compared
//! with the last one, for the lows and for the highs, and the row is the worse of the two ratios
//! (the other is in the note), so neither can hide growth. The run lasts an hour, the question the
//! scheduler issue asks; `LABCRON_BENCH_FIRE_MEMORY_SECONDS` shortens it (the note says how long
//! it ran). The note also gives the server's CPU per second of firing.

use std::time::{Duration, Instant};

use rusqlite::params;

use super::{OrMessage, ServerFigures, create_ledger, launch, now_ms, write_script};
use crate::{Context, Figure, Target};

const JOBS: i64 = 1_000;
const WARM_UP: Duration = Duration::from_secs(30);
/// The readings are summed up per window of this length.
const WINDOW: Duration = Duration::from_secs(60);
/// An hour unless `LABCRON_BENCH_FIRE_MEMORY_SECONDS` says otherwise (at least the warm-up and
/// two windows, a first and a last).
fn run_length() -> Result<Duration, String> {
    match std::env::var("LABCRON_BENCH_FIRE_MEMORY_SECONDS") {
        Err(_) => Ok(Duration::from_secs(3600)),
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map(|s| Duration::from_secs(s).max(WARM_UP + 2 * WINDOW))
            .map_err(|_| {
                format!("LABCRON_BENCH_FIRE_MEMORY_SECONDS={text:?} is not a number of seconds")
            }),
    }
}

pub fn fire_memory(ctx: &Context) -> Vec<Figure> {
    let name = "resident memory, 1,000 every-second CRON jobs firing: last minute vs first after warm-up (worse of lows, highs)";
    match measure(ctx) {
        Ok(m) => vec![
            Figure::measured(name, m.value, "MiB")
                .baseline(m.baseline)
                .target(Target::AtMost(1.1))
                .note(m.note),
        ],
        Err(e) => vec![Figure::skipped(name, "MiB", e)],
    }
}

/// What the row shows.
struct Measured {
    value: f64,
    baseline: f64,
    note: String,
}

/// One reading of `/proc/<pid>/status`, in MiB.
#[derive(Clone, Copy)]
struct Reading {
    rss: f64,
    anon: f64,
    file: f64,
}

fn read_status(pid: u32) -> Result<Reading, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).msg("read /proc status")?;
    let field = |name: &str| -> Result<f64, String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Reading {
        rss: field("VmRSS:")?,
        anon: field("RssAnon:")?,
        file: field("RssFile:")?,
    })
}

/// The lowest and highest reading of one window (by VmRSS).
#[derive(Clone, Copy)]
struct Window {
    low: Reading,
    high: Reading,
}

fn window_of(readings: &[Reading]) -> Option<Window> {
    let first = *readings.first()?;
    Some(readings.iter().fold(
        Window {
            low: first,
            high: first,
        },
        |w, r| Window {
            low: if r.rss < w.low.rss { *r } else { w.low },
            high: if r.rss > w.high.rss { *r } else { w.high },
        },
    ))
}

fn measure(ctx: &Context) -> Result<Measured, String> {
    let run = run_length()?;
    let data_dir = ctx.dir.join("data");
    let log = ctx.dir.join("server.log");
    // Longer than the run, so no run finishes (and frees its job) while it is measured.
    write_script(
        &data_dir,
        "hold.sh",
        &format!("#!/bin/sh\nsleep {}\n", run.as_secs() + 600),
    )?;
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
    let pid = server.pid();
    let cpu_from = server.cpu_seconds()?;
    let firing_from = Instant::now();
    // One reading a second, on a fixed grid so the windows hold the same number of readings.
    let mut readings = Vec::with_capacity(run.as_secs() as usize);
    let mut next = firing_from;
    while started.elapsed() < run {
        readings.push(read_status(pid)?);
        next += Duration::from_secs(1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let cpu = (server.cpu_seconds()? - cpu_from) / firing_from.elapsed().as_secs_f64();
    let last_fired = fired_seconds()?;
    let lag_ms = now_ms() - last_fired;
    server.stop(Duration::from_secs(30))?;
    let per_window = WINDOW.as_secs() as usize;
    let windows: Vec<Window> = readings
        .chunks(per_window)
        .filter(|c| c.len() == per_window)
        .filter_map(window_of)
        .collect();
    let (Some(first), Some(last)) = (windows.first().copied(), windows.last().copied()) else {
        return Err("too few readings for two windows".into());
    };
    let low_ratio = last.low.rss / first.low.rss;
    let high_ratio = last.high.rss / first.high.rss;
    let (value, baseline, row_is, other, other_ratio) = if low_ratio >= high_ratio {
        (last.low.rss, first.low.rss, "lows", "highs", high_ratio)
    } else {
        (last.high.rss, first.high.rss, "highs", "lows", low_ratio)
    };
    // About a dozen evenly spaced windows, so an hour's note stays one readable line.
    let step = windows.len().div_ceil(12).max(1);
    let mut shown: Vec<usize> = (0..windows.len()).step_by(step).collect();
    if shown.last() != Some(&(windows.len() - 1)) {
        shown.push(windows.len() - 1);
    }
    let trace = shown
        .iter()
        .map(|&i| {
            format!(
                "m{}: {:.1}–{:.1}",
                i + 1,
                windows[i].low.rss,
                windows[i].high.rss
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let note = format!(
        "{} s run (about {} fires), VmRSS read every second after a {} s warm-up; the row is the {row_is} \
         (last minute's {:.1} vs first minute's {:.1} MiB), the {other} went {:.1} -> {:.1} MiB ({other_ratio:.3}x); \
         lowest-highest per minute: {trace} MiB; at the lows RssAnon {:.1} -> {:.1}, RssFile {:.1} -> {:.1} MiB; \
         server CPU {:.2} cores while firing; the last instant every job had fired was {lag_ms} ms before the end",
        run.as_secs(),
        JOBS * run.as_secs() as i64,
        WARM_UP.as_secs(),
        value,
        baseline,
        if row_is == "lows" {
            first.high.rss
        } else {
            first.low.rss
        },
        if row_is == "lows" {
            last.high.rss
        } else {
            last.low.rss
        },
        first.low.anon,
        last.low.anon,
        first.low.file,
        last.low.file,
        cpu,
    );
    Ok(Measured {
        value,
        baseline,
        note,
    })
}
