//! Fire lateness: 2,000 CRON jobs, written into the ledger while the server is stopped, all fire
//! at the same second. A fire counts when its run is committed (visible to a reader of the
//! ledger), so each run's lateness is the instant this bench first saw its row (polling every
//! 2 ms) minus its scheduled instant. The server's own histogram (`/metrics`) is a cross-check.

use std::time::{Duration, Instant};

use base64::Engine;
use rusqlite::params;

use super::{
    ADMIN_PASSWORD, Conn, OrMessage, create_ledger, launch, now_ms, percentile, write_script,
};
use crate::{Context, Figure, Target};

const JOBS: i64 = 2_000;

pub fn fire_lateness(ctx: &Context) -> Vec<Figure> {
    let name = "fire lateness p99, 2,000 jobs firing together";
    match measure(ctx) {
        Ok((p99, note)) => vec![
            Figure::measured(name, p99, "ms")
                .target(Target::AtMost(100.0))
                .note(note),
        ],
        Err(e) => vec![Figure::skipped(name, "ms", e)],
    }
}

fn measure(ctx: &Context) -> Result<(f64, String), String> {
    let data_dir = ctx.dir.join("data");
    let log = ctx.dir.join("server.log");
    write_script(&data_dir, "quick.sh", "#!/bin/sh\nexit 0\n")?;
    create_ledger(&data_dir, &log)?;
    let ledger_path = data_dir.join("labcron.db");
    // The whole second at least 6 s away: time enough to start.
    let fire_at = (now_ms() / 1000 + 7) * 1000;
    {
        let mut conn = rusqlite::Connection::open(&ledger_path).msg("open the ledger")?;
        let fire = chrono::DateTime::from_timestamp_millis(fire_at).msg("fire instant")?;
        let cron = fire.format("%S %M %H %d %m *").to_string();
        let now = now_ms();
        let admin: i64 = conn
            .query_row("SELECT id FROM users WHERE login_name = 'admin'", [], |r| {
                r.get(0)
            })
            .msg("admin id")?;
        let tx = conn.transaction().msg("begin")?;
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO jobs (name, type, repeat_schedule, cron_expression, timezone, start_date,
                        activity_status, created_by, command, timeout_seconds, max_queued_runs, created_at,
                        updated_at)
                     VALUES (?1, 'EXTERNAL', 'CRON', ?2, 'UTC', ?3, 'Active', ?4, 'quick.sh', 60, 10, ?3, ?3)",
                )
                .msg("prepare")?;
            for i in 0..JOBS {
                insert
                    .execute(params![format!("together {i}"), cron, now, admin])
                    .msg("insert a job")?;
            }
        }
        tx.commit().msg("commit")?;
    }
    let (server, _) = launch(&data_dir, &log, &[])?;
    if now_ms() >= fire_at - 500 {
        return Err("the server took too long to start for the fire instant".into());
    }
    let reader = rusqlite::Connection::open_with_flags(
        &ledger_path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .msg("open the ledger to read")?;
    let mut seen: Vec<(i64, i64, i64)> = Vec::new(); // (seen at, scheduled for, queued at)
    let mut last_id = 0i64;
    let deadline =
        Instant::now() + Duration::from_millis((fire_at - now_ms()).max(0) as u64 + 60_000);
    while (seen.len() as i64) < JOBS {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {JOBS} jobs fired within 60 s",
                seen.len()
            ));
        }
        let mut stmt = reader
            .prepare_cached(
                "SELECT id, scheduled_for, queued_at FROM runs WHERE id > ?1 AND scheduled_for IS NOT NULL ORDER BY id",
            )
            .msg("prepare the poll")?;
        let rows: Vec<(i64, i64, i64)> = stmt
            .query_map([last_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .msg("poll")?
            .collect::<Result<_, _>>()
            .msg("poll rows")?;
        let at = now_ms();
        for (id, scheduled_for, queued_at) in rows {
            last_id = last_id.max(id);
            seen.push((at, scheduled_for, queued_at));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if let Some((_, other, _)) = seen.iter().find(|(_, s, _)| *s != fire_at) {
        return Err(format!("a run was scheduled for {other}, not {fire_at}"));
    }
    let mut committed: Vec<i64> = seen.iter().map(|(at, s, _)| at - s).collect();
    committed.sort_unstable();
    let mut queued: Vec<i64> = seen.iter().map(|(_, s, q)| q - s).collect();
    queued.sort_unstable();
    let p99 = percentile(&committed, 99.0).unwrap_or(0) as f64;
    let metrics = metrics_p99_bucket(server.port).unwrap_or_else(|e| format!("unavailable ({e})"));
    drop(server);
    let note = format!(
        "lateness = row first visible (2 ms polls) - scheduled instant; p50 {} ms, max {} ms; \
         queued_at - scheduled p99 {} ms; /metrics p99 bucket {metrics}",
        percentile(&committed, 50.0).unwrap_or(0),
        committed.last().copied().unwrap_or(0),
        percentile(&queued, 99.0).unwrap_or(0),
    );
    Ok((p99, note))
}

/// The upper bound of the `labcron_fire_lateness_seconds` bucket holding the 99th percentile.
fn metrics_p99_bucket(port: u16) -> Result<String, String> {
    let rt = super::runtime()?;
    rt.block_on(async {
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_PASSWORD}"));
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {credentials}\r\n\r\n"
        );
        let mut conn = Conn::open(port).await?;
        let reply = conn.call(request.as_bytes(), true).await?;
        if reply.status != 200 {
            return Err(format!("/metrics answered {}", reply.status));
        }
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        let buckets: Vec<(String, f64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("labcron_fire_lateness_seconds_bucket{le=\""))
            .filter_map(|rest| {
                let (le, count) = rest.split_once("\"} ")?;
                Some((le.to_string(), count.trim().parse().ok()?))
            })
            .collect();
        let total = buckets
            .last()
            .map(|(_, c)| *c)
            .msg("no lateness histogram")?;
        buckets
            .iter()
            .find(|(_, count)| *count >= 0.99 * total)
            .map(|(le, _)| format!("le {le} s (of {total} fires)"))
            .msg("no bucket")
    })
}
