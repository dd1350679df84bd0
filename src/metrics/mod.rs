//! Prometheus metrics: a small registry of our own series (HTTP requests, finished runs and their
//! durations, notification deliveries, retention) and the text rendering of format 0.0.4 that also
//! exports the scheduler's counters (`scheduler::SchedulerStats`) and the run gauges. The request
//! middleware is `web::middleware::track_requests`; `GET /metrics` is `web::api::metrics`.
//!
//! Label values come from closed sets only (route patterns, not paths; known methods; job types;
//! statuses; channels), so the number of series stays small whatever the traffic. This module
//! observes; it never changes what it measures.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub mod scheduler;

use scheduler::{LATENESS_BUCKETS_MS, SchedulerStats};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The route label of requests that matched no route.
pub const UNKNOWN_ROUTE: &str = "UNKNOWN";

/// Upper bounds (seconds) of the HTTP request duration buckets.
const HTTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds (seconds) of the run duration buckets: a second to a day.
const RUN_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];
/// Job types and final statuses, so their counters exist (at 0) from the start.
const JOB_TYPES: &[&str] = &["EXTERNAL", "INTERNAL", "QUERY"];
const FINAL_STATUSES: &[&str] = &["SUCCEEDED", "FAILED"];

/// A notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Channel {
    Email,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }
}

/// How one notification delivery ended (after all its attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Delivery {
    Delivered,
    Failed,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::Failed => "failed",
        }
    }
}

/// A histogram with fixed bucket bounds: per-bucket counts (made cumulative when rendered).
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|bound| value <= *bound) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }
}

#[derive(Default, Clone)]
struct HttpSeries {
    /// (route, method, status) → requests.
    requests: BTreeMap<(String, &'static str, u16), u64>,
    /// (route, method) → duration histogram.
    durations: BTreeMap<(String, &'static str), Histogram>,
}

#[derive(Clone)]
struct RunSeries {
    /// (job type, final status) → runs.
    finished: BTreeMap<(String, &'static str), u64>,
    /// job type → duration histogram.
    durations: BTreeMap<String, Histogram>,
}

/// The registry of the series this module owns. One per server, shared by `Arc`.
pub struct Metrics {
    http: Mutex<HttpSeries>,
    runs: Mutex<RunSeries>,
    notifications: Mutex<BTreeMap<(Channel, Delivery), u64>>,
    retention_files_removed: AtomicU64,
    retention_rows_deleted: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub fn new() -> Self {
        let mut finished = BTreeMap::new();
        let mut durations = BTreeMap::new();
        for job_type in JOB_TYPES {
            for status in FINAL_STATUSES {
                finished.insert((job_type.to_string(), *status), 0);
            }
            durations.insert(job_type.to_string(), Histogram::new(RUN_BUCKETS));
        }
        let mut notifications = BTreeMap::new();
        for channel in [Channel::Email, Channel::Webhook] {
            for outcome in [Delivery::Delivered, Delivery::Failed] {
                notifications.insert((channel, outcome), 0);
            }
        }
        Metrics {
            http: Mutex::new(HttpSeries::default()),
            runs: Mutex::new(RunSeries {
                finished,
                durations,
            }),
            notifications: Mutex::new(notifications),
            retention_files_removed: AtomicU64::new(0),
            retention_rows_deleted: AtomicU64::new(0),
        }
    }

    /// Counts one answered HTTP request. `method` is a closed set of labels (the web layer names
    /// any method outside the standard ones `OTHER`), so a client cannot grow the series.
    pub fn observe_request(
        &self,
        route: &str,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        let mut http = lock(&self.http);
        *http
            .requests
            .entry((route.to_string(), method, status))
            .or_insert(0) += 1;
        http.durations
            .entry((route.to_string(), method))
            .or_insert_with(|| Histogram::new(HTTP_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a run whose end was recorded: its job type, whether it succeeded, and how long it
    /// ran (from start to finish) when known.
    pub fn observe_run(&self, job_type: &str, succeeded: bool, duration_ms: Option<i64>) {
        let status = if succeeded { "SUCCEEDED" } else { "FAILED" };
        let mut runs = lock(&self.runs);
        *runs
            .finished
            .entry((job_type.to_string(), status))
            .or_insert(0) += 1;
        if let Some(ms) = duration_ms {
            runs.durations
                .entry(job_type.to_string())
                .or_insert_with(|| Histogram::new(RUN_BUCKETS))
                .observe(ms.max(0) as f64 / 1000.0);
        }
    }

    /// Counts one notification delivery (all attempts of it) and how it ended.
    pub fn observe_notification(&self, channel: Channel, outcome: Delivery) {
        *lock(&self.notifications)
            .entry((channel, outcome))
            .or_insert(0) += 1;
    }

    /// Counts what a retention pass removed.
    pub fn observe_retention(&self, runs_with_files_removed: u64, rows_deleted: u64) {
        self.retention_files_removed
            .fetch_add(runs_with_files_removed, Ordering::Relaxed);
        self.retention_rows_deleted
            .fetch_add(rows_deleted, Ordering::Relaxed);
    }

    /// Every series in the text exposition format 0.0.4. `queued` is the ledger's count of QUEUED
    /// runs (left out when the ledger could not be read); `running` the runs executing now.
    pub fn render(
        &self,
        scheduler: &SchedulerStats,
        queued: Option<i64>,
        running: u64,
        ledger_memory: u64,
    ) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let w = &mut out;

        family(
            w,
            "labcron_http_requests_total",
            "counter",
            "HTTP requests answered, by route pattern (UNKNOWN when no route matched), method and status.",
        );
        let http = lock(&self.http).clone();
        for ((route, method, status), count) in &http.requests {
            let status = status.to_string();
            sample(
                w,
                "labcron_http_requests_total",
                &[("route", route), ("method", method), ("status", &status)],
                *count as f64,
            );
        }
        family(
            w,
            "labcron_http_request_duration_seconds",
            "histogram",
            "Time to answer an HTTP request (until the response head is ready), by route pattern and method.",
        );
        for ((route, method), histogram) in &http.durations {
            render_histogram(
                w,
                "labcron_http_request_duration_seconds",
                &[("route", route), ("method", method)],
                histogram,
            );
        }

        let runs = lock(&self.runs).clone();
        family(
            w,
            "labcron_runs_finished_total",
            "counter",
            "Runs that ended, by job type and final status.",
        );
        for ((job_type, status), count) in &runs.finished {
            sample(
                w,
                "labcron_runs_finished_total",
                &[("job_type", job_type), ("status", status)],
                *count as f64,
            );
        }
        family(
            w,
            "labcron_run_duration_seconds",
            "histogram",
            "Time from a run's start to its end, by job type.",
        );
        for (job_type, histogram) in &runs.durations {
            render_histogram(
                w,
                "labcron_run_duration_seconds",
                &[("job_type", job_type)],
                histogram,
            );
        }

        if let Some(queued) = queued {
            gauge(
                w,
                "labcron_runs_queued",
                "Runs waiting to start (QUEUED in the ledger).",
                queued as f64,
            );
        }
        gauge(
            w,
            "labcron_runs_running",
            "Runs executing now.",
            running as f64,
        );

        gauge(
            w,
            "labcron_ledger_memory_bytes",
            "Memory SQLite holds for the ledger's connections (page caches, statements, schemas); 0 on PostgreSQL.",
            ledger_memory as f64,
        );

        render_scheduler(w, scheduler);

        family(
            w,
            "labcron_notifications_total",
            "counter",
            "Notification deliveries (one per e-mail recipient or webhook call, retries included), by channel and outcome.",
        );
        let notifications = lock(&self.notifications).clone();
        for ((channel, outcome), count) in &notifications {
            sample(
                w,
                "labcron_notifications_total",
                &[("channel", channel.as_str()), ("outcome", outcome.as_str())],
                *count as f64,
            );
        }

        counter(
            w,
            "labcron_retention_run_files_removed_total",
            "Runs whose result file and log the daily retention pass removed.",
            self.retention_files_removed.load(Ordering::Relaxed) as f64,
        );
        counter(
            w,
            "labcron_retention_run_rows_deleted_total",
            "Finished runs whose ledger rows the daily retention pass deleted (retention.runs_days).",
            self.retention_rows_deleted.load(Ordering::Relaxed) as f64,
        );
        out
    }
}

fn render_scheduler(w: &mut String, stats: &SchedulerStats) {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    family(
        w,
        "labcron_fire_lateness_seconds",
        "histogram",
        "How late scheduled fires were queued: actual minus scheduled instant.",
    );
    let mut cumulative = 0;
    for (i, bound_ms) in LATENESS_BUCKETS_MS.iter().enumerate() {
        cumulative += stats
            .lateness_buckets
            .get(i)
            .map(|b| b.load(Ordering::Relaxed))
            .unwrap_or(0);
        let le = format_value(*bound_ms as f64 / 1000.0);
        sample(
            w,
            "labcron_fire_lateness_seconds_bucket",
            &[("le", &le)],
            cumulative as f64,
        );
    }
    let count = stats.lateness_count.load(Ordering::Relaxed);
    sample(
        w,
        "labcron_fire_lateness_seconds_bucket",
        &[("le", "+Inf")],
        count as f64,
    );
    sample(
        w,
        "labcron_fire_lateness_seconds_sum",
        &[],
        load(&stats.lateness_sum_ms) / 1000.0,
    );
    sample(w, "labcron_fire_lateness_seconds_count", &[], count as f64);

    counter(
        w,
        "labcron_fires_total",
        "Scheduled fires that queued a run.",
        load(&stats.fires),
    );
    counter(
        w,
        "labcron_fires_skipped_busy_total",
        "Scheduled fires skipped because the job already had a run queued or running.",
        load(&stats.skipped_busy),
    );
    counter(
        w,
        "labcron_fires_missed_total",
        "Scheduled instants that passed without a fire (downtime, or a loop running late).",
        load(&stats.missed),
    );
    counter(
        w,
        "labcron_catch_up_runs_total",
        "Catch-up runs queued for missed fires of jobs with misfirePolicy RUN_ONCE (after downtime, or for a job found late).",
        load(&stats.catch_ups),
    );
    counter(
        w,
        "labcron_scheduler_restarts_total",
        "Times the watchdog restarted the scheduler loop.",
        load(&stats.restarts),
    );
    counter(
        w,
        "labcron_fire_errors_total",
        "Scheduled fires that could not be recorded in the ledger.",
        load(&stats.errors),
    );
    gauge(
        w,
        "labcron_scheduled_jobs",
        "Active jobs with a pending scheduled fire.",
        load(&stats.pending),
    );
}

fn family(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(w, "# TYPE {name} {kind}");
}

fn counter(w: &mut String, name: &str, help: &str, value: f64) {
    family(w, name, "counter", help);
    sample(w, name, &[], value);
}

fn gauge(w: &mut String, name: &str, help: &str, value: f64) {
    family(w, name, "gauge", help);
    sample(w, name, &[], value);
}

fn render_histogram(w: &mut String, name: &str, labels: &[(&str, &str)], h: &Histogram) {
    let bucket_name = format!("{name}_bucket");
    let mut cumulative = 0;
    for (bound, count) in h.bounds.iter().zip(&h.counts) {
        cumulative += count;
        let le = format_value(*bound);
        let mut with_le = labels.to_vec();
        with_le.push(("le", &le));
        sample(w, &bucket_name, &with_le, cumulative as f64);
    }
    let mut with_le = labels.to_vec();
    with_le.push(("le", "+Inf"));
    sample(w, &bucket_name, &with_le, h.count as f64);
    sample(w, &format!("{name}_sum"), labels, h.sum);
    sample(w, &format!("{name}_count"), labels, h.count as f64);
}

fn sample(w: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    w.push_str(name);
    if !labels.is_empty() {
        w.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                w.push(',');
            }
            let _ = write!(w, "{key}=\"{}\"", escape_label(value));
        }
        w.push('}');
    }
    let _ = writeln!(w, " {}", format_value(value));
}

/// A sample value as Prometheus reads it: integers without a fraction, `+Inf`/`-Inf`/`NaN`.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        // Display of f64 never uses an exponent and prints integers without ".0".
        format!("{value}")
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Help texts escape backslash and line feed.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let metrics = Metrics::new();
        metrics.observe_run("QUERY", true, Some(300));
        metrics.observe_run("QUERY", false, Some(4_000));
        metrics.observe_run("QUERY", true, Some(200_000_000));
        let text = metrics.render(&SchedulerStats::default(), Some(2), 1, 4096);
        assert!(
            text.contains("labcron_run_duration_seconds_bucket{job_type=\"QUERY\",le=\"0.5\"} 1\n")
        );
        assert!(
            text.contains("labcron_run_duration_seconds_bucket{job_type=\"QUERY\",le=\"5\"} 2\n")
        );
        assert!(
            text.contains(
                "labcron_run_duration_seconds_bucket{job_type=\"QUERY\",le=\"86400\"} 2\n"
            )
        );
        assert!(
            text.contains(
                "labcron_run_duration_seconds_bucket{job_type=\"QUERY\",le=\"+Inf\"} 3\n"
            )
        );
        assert!(text.contains("labcron_run_duration_seconds_count{job_type=\"QUERY\"} 3\n"));
        assert!(
            text.contains("labcron_runs_finished_total{job_type=\"QUERY\",status=\"FAILED\"} 1\n")
        );
        assert!(
            text.contains(
                "labcron_runs_finished_total{job_type=\"EXTERNAL\",status=\"FAILED\"} 0\n"
            )
        );
        assert!(text.contains("labcron_runs_queued 2\n"));
        assert!(text.contains("labcron_runs_running 1\n"));
    }

    /// The gauge reports what a SQLite ledger's `Db` says SQLite holds in this process: an
    /// in-memory database keeps its pages in SQLite's page cache, so one holding a 200 kB value
    /// shows at least that.
    #[test]
    fn ledger_memory_is_what_sqlite_holds() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::Db::open(&dir.path().join("labcron.db")).unwrap();
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (randomblob(200000));")
            .unwrap();
        let text = Metrics::new().render(&SchedulerStats::default(), None, 0, db.memory_used());
        let value: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("labcron_ledger_memory_bytes "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no labcron_ledger_memory_bytes in {text}"));
        assert!(
            value >= 200_000.0,
            "{value} bytes with a 200 kB database open"
        );
        drop(conn);
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new();
        metrics.observe_request("/a\"b\\c\nd", "OTHER", 418, Duration::from_millis(3));
        let text = metrics.render(&SchedulerStats::default(), None, 0, 0);
        assert!(
            text.contains(
                "labcron_http_requests_total{route=\"/a\\\"b\\\\c\\nd\",method=\"OTHER\",status=\"418\"} 1\n"
            ),
            "{text}"
        );
        assert!(!text.contains("labcron_runs_queued"));
    }

    #[test]
    fn values_print_as_prometheus_reads_them() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.005), "0.005");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(1e21), "1000000000000000000000");
    }
}
