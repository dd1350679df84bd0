//! A measuring aid for a run slot's timeline, off unless `LABCRON_TIMELINE_FILE` (or
//! `TIMELINE_FILE`: the tests' and benches' launcher clears every `LABCRON_` variable but passes
//! this one on) names a file when the server starts. When on, each run's phases (claimed, claim
//! committed, task started, loaded, spawned, exited, swept, drained, end queued, end executed,
//! end committed, done) are stamped with the wall clock and written as one line per run
//! (`R <run> phase=ns ...`), each hand-over as `S <run> <successor>`, and each group commit of
//! the ledger writer as `B <writes> <began> <commit started> <committed>`, so where a slot's
//! milliseconds go can be read off (README, "Durability"). Off, a stamp is one atomic load.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

struct Sink {
    file: Mutex<std::fs::File>,
    runs: Mutex<HashMap<i64, Vec<(&'static str, u64)>>>,
}

fn sink() -> Option<&'static Sink> {
    static SINK: OnceLock<Option<Sink>> = OnceLock::new();
    SINK.get_or_init(|| {
        let path = std::env::var_os("LABCRON_TIMELINE_FILE")
            .or_else(|| std::env::var_os("TIMELINE_FILE"))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()?;
        Some(Sink {
            file: Mutex::new(file),
            runs: Mutex::new(HashMap::new()),
        })
    })
    .as_ref()
}

/// Wall-clock nanoseconds (comparable with other processes' samples).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Stamps `phase` of run `run_id` now.
pub fn mark(run_id: i64, phase: &'static str) {
    if let Some(sink) = sink() {
        let t = now_ns();
        sink.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(run_id)
            .or_default()
            .push((phase, t));
    }
}

/// Writes run `run_id`'s stamps as one line (`R <id> phase=ns ...`) and forgets them.
pub fn flush(run_id: i64) {
    if let Some(sink) = sink() {
        let marks = sink
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run_id)
            .unwrap_or_default();
        let mut line = format!("R {run_id}");
        for (phase, t) in marks {
            line.push_str(&format!(" {phase}={t}"));
        }
        line.push('\n');
        let _ = sink
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(line.as_bytes());
    }
}

/// Writes one line of free-form fields (`B` for a group commit: its writes and stamps).
pub fn line(text: std::fmt::Arguments<'_>) {
    if let Some(sink) = sink() {
        let _ = writeln!(
            sink.file.lock().unwrap_or_else(|p| p.into_inner()),
            "{text}"
        );
    }
}

/// Whether stamps are being taken.
pub fn enabled() -> bool {
    sink().is_some()
}
