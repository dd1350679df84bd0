//! The driver that fires jobs. One tokio task keeps, for every active job, exactly one pending fire
//! at the instant `next_fire` computed, ordered in a `BTreeSet`; it sleeps until the earliest (at
//! most 30 s, so wall-clock steps are noticed) and fires everything due in one ledger transaction.
//! The ledger is the source of truth: job changes arrive as `JobChanged` messages, a reconcile pass
//! every minute repairs any drift, and a watchdog restarts the loop if it stops beating.
//!
//! A fire enqueues a run (`SCHEDULED`, run by the job's `runAs` user or the system user) unless the
//! job already has a run queued or running — then it is skipped and counted, never stacked. Firing
//! is idempotent per (job, scheduled instant) through the runs table's unique index, and the instant
//! is stored as the job's `last_fired_for`, so after downtime the loop knows what it missed:
//! `SKIP` moves on, `RUN_ONCE` runs once (`CATCH_UP`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use super::next_fire;
use crate::clock::{from_ms, now_ms};
use crate::domain::job::{Job, MisfirePolicy, Schedule};
use crate::domain::run::Trigger;
use crate::error::ApiError;
use crate::executor::Executor;
use crate::store::runs::{Enqueued, NewRun};
use crate::store::{self, Db};

/// The longest the loop sleeps without looking at the clock again.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// How often the loop compares what it holds with the ledger.
const RECONCILE_EVERY: Duration = Duration::from_secs(60);
/// The loop counts as stalled when it has not beaten for this long.
const STALL_AFTER_MS: i64 = 90_000;
/// Missed instants counted per job after downtime (a MINUTELY job down for a year stops counting).
const MAX_MISSED_COUNTED: u64 = 100_000;

/// Upper bounds (ms) of the fire-lateness histogram buckets.
pub const LATENESS_BUCKETS_MS: &[u64] = &[
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 60_000,
];

/// Counters the metrics read. All monotonic except the gauges noted.
#[derive(Default)]
pub struct SchedulerStats {
    /// Fires that queued a run.
    pub fires: AtomicU64,
    /// Fires skipped because the job already had a run queued or running.
    pub skipped_busy: AtomicU64,
    /// Scheduled instants that passed without a fire (downtime, or a loop running late).
    pub missed: AtomicU64,
    /// Catch-up runs queued at start-up under `RUN_ONCE`.
    pub catch_ups: AtomicU64,
    /// Times the watchdog restarted the loop.
    pub restarts: AtomicU64,
    /// Fires that failed to reach the ledger.
    pub errors: AtomicU64,
    /// Jobs with a pending fire (gauge).
    pub pending: AtomicU64,
    /// Lateness histogram: per-bucket counts (cumulative is computed when exported), sum, count.
    pub lateness_buckets: [AtomicU64; 12],
    pub lateness_over: AtomicU64,
    pub lateness_sum_ms: AtomicU64,
    pub lateness_count: AtomicU64,
}

impl SchedulerStats {
    fn record_lateness(&self, lateness_ms: i64) {
        let ms = lateness_ms.max(0) as u64;
        match LATENESS_BUCKETS_MS.iter().position(|bound| ms <= *bound) {
            Some(i) => self.lateness_buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.lateness_over.fetch_add(1, Ordering::Relaxed),
        };
        self.lateness_sum_ms.fetch_add(ms, Ordering::Relaxed);
        self.lateness_count.fetch_add(1, Ordering::Relaxed);
    }
}

enum Command {
    /// Re-read this job from the ledger (created, updated, closed, reopened or deleted).
    JobChanged(i64),
}

/// Handle to the scheduler; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    executor: Executor,
    commands: mpsc::UnboundedSender<Command>,
    receiver: Mutex<mpsc::UnboundedReceiver<Command>>,
    stats: SchedulerStats,
    heartbeat_ms: AtomicI64,
    stop: CancellationToken,
    system_user: i64,
}

impl Scheduler {
    pub fn new(db: Db, executor: Executor) -> Result<Scheduler, ApiError> {
        let system_user = db.read_sync(store::users::system_user_id)?;
        let (commands, receiver) = mpsc::unbounded_channel();
        Ok(Scheduler {
            inner: Arc::new(Inner {
                db,
                executor,
                commands,
                receiver: Mutex::new(receiver),
                stats: SchedulerStats::default(),
                heartbeat_ms: AtomicI64::new(now_ms()),
                stop: CancellationToken::new(),
                system_user,
            }),
        })
    }

    /// Starts the loop and its watchdog on the current runtime.
    pub fn start(&self) {
        let inner = self.inner.clone();
        tokio::spawn(async move { supervise(inner).await });
    }

    /// Tells the scheduler a job changed; it re-reads the job at once.
    pub fn job_changed(&self, job_id: i64) {
        let _ = self.inner.commands.send(Command::JobChanged(job_id));
    }

    /// Stops firing (shutdown).
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }

    /// Whether the loop has beaten recently.
    pub fn is_healthy(&self) -> bool {
        !self.inner.stop.is_cancelled()
            && now_ms() - self.inner.heartbeat_ms.load(Ordering::Relaxed) < STALL_AFTER_MS
    }

    pub fn stats(&self) -> &SchedulerStats {
        &self.inner.stats
    }
}

/// Runs the loop, restarting it when it dies or stops beating.
async fn supervise(inner: Arc<Inner>) {
    loop {
        let task = tokio::spawn(run_loop(inner.clone()));
        let abort = task.abort_handle();
        tokio::pin!(task);
        loop {
            tokio::select! {
                result = &mut task => {
                    if inner.stop.is_cancelled() {
                        return;
                    }
                    tracing::error!(?result, "the scheduler loop ended unexpectedly; restarting it");
                    break;
                }
                _ = tokio::time::sleep(Duration::from_secs(15)) => {
                    if now_ms() - inner.heartbeat_ms.load(Ordering::Relaxed) > STALL_AFTER_MS {
                        tracing::error!("the scheduler loop stalled; restarting it");
                        abort.abort();
                        break;
                    }
                }
                _ = inner.stop.cancelled() => {
                    abort.abort();
                    return;
                }
            }
        }
        inner.stats.restarts.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the loop holds for one active job.
struct Entry {
    schedule: Schedule,
    due_ms: i64,
    /// The job's `updated_at` when this entry was computed; reconcile compares it.
    version: i64,
}

#[derive(Default)]
struct State {
    entries: HashMap<i64, Entry>,
    queue: BTreeSet<(i64, i64)>,
}

impl State {
    fn remove(&mut self, job_id: i64) {
        if let Some(old) = self.entries.remove(&job_id) {
            self.queue.remove(&(old.due_ms, job_id));
        }
    }

    fn set(&mut self, job_id: i64, entry: Entry) {
        self.remove(job_id);
        self.queue.insert((entry.due_ms, job_id));
        self.entries.insert(job_id, entry);
    }

    /// Puts `job` in line for its next fire after `after_ms` (or takes it out when it has none).
    fn schedule_job(&mut self, job: &Job, after_ms: i64) {
        if !job.is_active() {
            self.remove(job.id);
            return;
        }
        let schedule = job.schedule();
        match next_fire(&schedule, from_ms(after_ms)) {
            Some(due) => self.set(
                job.id,
                Entry {
                    schedule,
                    due_ms: due.timestamp_millis(),
                    version: job.updated_at,
                },
            ),
            None => self.remove(job.id),
        }
    }
}

async fn run_loop(inner: Arc<Inner>) {
    let mut receiver = inner.receiver.lock().await;
    let mut state = State::default();
    if let Err(e) = start_up(&inner, &mut state).await {
        tracing::error!(error = ?e, "the scheduler could not load the jobs; retrying at the next reconcile");
    }
    let mut next_reconcile = tokio::time::Instant::now() + RECONCILE_EVERY;
    loop {
        inner.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        inner
            .stats
            .pending
            .store(state.entries.len() as u64, Ordering::Relaxed);
        fire_due(&inner, &mut state).await;

        let now = now_ms();
        let wait = state
            .queue
            .first()
            .map(|(due, _)| Duration::from_millis((due - now).max(0) as u64))
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        tokio::select! {
            command = receiver.recv() => {
                let Some(first) = command else { return };
                let mut changed = vec![first];
                while let Ok(more) = receiver.try_recv() {
                    changed.push(more);
                }
                let ids: Vec<i64> = changed.into_iter().map(|Command::JobChanged(id)| id).collect();
                if let Err(e) = reload_jobs(&inner, &mut state, ids).await {
                    tracing::error!(error = ?e, "the scheduler could not re-read changed jobs");
                }
            }
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::time::sleep_until(next_reconcile) => {
                next_reconcile = tokio::time::Instant::now() + RECONCILE_EVERY;
                if let Err(e) = reconcile(&inner, &mut state).await {
                    tracing::error!(error = ?e, "scheduler reconcile failed");
                }
            }
            _ = inner.stop.cancelled() => return,
        }
    }
}

/// Loads every active job, applies the misfire policy for fires missed while the server (or this
/// loop) was not running, and lines up each job's next fire.
async fn start_up(inner: &Inner, state: &mut State) -> Result<(), ApiError> {
    let jobs = inner.db.read(store::jobs::list_all_live).await?;
    let now = now_ms();
    let mut catch_ups = Vec::new();
    for job in jobs.iter().filter(|j| j.is_active()) {
        let schedule = job.schedule();
        let baseline = job.last_fired_for.unwrap_or(i64::MIN).max(job.updated_at);
        let (missed, latest) = missed_between(&schedule, baseline, now);
        if missed > 0 {
            inner.stats.missed.fetch_add(missed, Ordering::Relaxed);
            tracing::warn!(
                job_id = job.id,
                missed,
                policy = job.misfire_policy.as_str(),
                "fires missed while down"
            );
            if job.misfire_policy == MisfirePolicy::RunOnce
                && let Some(instant) = latest
            {
                catch_ups.push((job.id, instant, Trigger::CatchUp));
            }
        }
        state.schedule_job(job, now);
    }
    if !catch_ups.is_empty() {
        let queued = fire_batch(inner, catch_ups).await?;
        inner.stats.catch_ups.fetch_add(queued, Ordering::Relaxed);
    }
    Ok(())
}

/// How many fire instants fall in (`after_ms`, `until_ms`], and the latest of them.
fn missed_between(schedule: &Schedule, after_ms: i64, until_ms: i64) -> (u64, Option<i64>) {
    let mut count = 0;
    let mut latest = None;
    let mut cursor: DateTime<Utc> = from_ms(after_ms);
    while count < MAX_MISSED_COUNTED {
        match next_fire(schedule, cursor) {
            Some(t) if t.timestamp_millis() <= until_ms => {
                count += 1;
                latest = Some(t.timestamp_millis());
                cursor = t;
            }
            _ => break,
        }
    }
    (count, latest)
}

async fn reload_jobs(inner: &Inner, state: &mut State, ids: Vec<i64>) -> Result<(), ApiError> {
    let jobs = inner
        .db
        .read(move |c| {
            ids.into_iter()
                .map(|id| Ok((id, store::jobs::get_live(c, id)?)))
                .collect::<Result<Vec<_>, ApiError>>()
        })
        .await?;
    let now = now_ms();
    for (id, job) in jobs {
        match job {
            Some(job) => state.schedule_job(&job, now),
            None => state.remove(id),
        }
    }
    Ok(())
}

/// Compares the held entries with the ledger and repairs what differs.
async fn reconcile(inner: &Inner, state: &mut State) -> Result<(), ApiError> {
    let jobs = inner.db.read(store::jobs::list_all_live).await?;
    let now = now_ms();
    let mut seen = std::collections::HashSet::with_capacity(jobs.len());
    let mut repaired = 0;
    for job in &jobs {
        seen.insert(job.id);
        let held = state.entries.get(&job.id).map(|e| e.version);
        if !job.is_active() {
            if held.is_some() {
                state.remove(job.id);
                repaired += 1;
            }
        } else if held != Some(job.updated_at) {
            state.schedule_job(job, now);
            // A job past its end date has no entry either way: that is not drift.
            if state.entries.contains_key(&job.id) || held.is_some() {
                repaired += 1;
            }
        }
    }
    let stale: Vec<i64> = state
        .entries
        .keys()
        .filter(|id| !seen.contains(id))
        .copied()
        .collect();
    for id in stale {
        state.remove(id);
        repaired += 1;
    }
    if repaired > 0 {
        tracing::warn!(repaired, "scheduler reconcile repaired drift");
    }
    Ok(())
}

/// Fires every entry that is due and lines up each one's following fire.
async fn fire_due(inner: &Inner, state: &mut State) {
    let now = now_ms();
    let due: Vec<(i64, i64)> = state
        .queue
        .iter()
        .take_while(|(due, _)| *due <= now)
        .copied()
        .collect();
    if due.is_empty() {
        return;
    }
    let batch: Vec<(i64, i64, Trigger)> = due
        .iter()
        .map(|(at, id)| (*id, *at, Trigger::Scheduled))
        .collect();
    if let Err(e) = fire_batch(inner, batch).await {
        inner
            .stats
            .errors
            .fetch_add(due.len() as u64, Ordering::Relaxed);
        tracing::error!(error = ?e, jobs = due.len(), "scheduled fires could not be recorded");
    }
    let after = now_ms();
    for (due_ms, job_id) in due {
        let Some(entry) = state.entries.get(&job_id) else {
            continue;
        };
        let schedule = entry.schedule.clone();
        let version = entry.version;
        // The next fire follows the scheduled instant, not the clock, so nothing drifts; instants
        // that already passed while this one fired are missed (counted), not fired late.
        let (missed, _) = missed_between(&schedule, due_ms, after);
        if missed > 0 {
            inner.stats.missed.fetch_add(missed, Ordering::Relaxed);
        }
        match next_fire(&schedule, from_ms(due_ms.max(after))) {
            Some(next) => state.set(
                job_id,
                Entry {
                    schedule,
                    due_ms: next.timestamp_millis(),
                    version,
                },
            ),
            None => state.remove(job_id),
        }
    }
}

/// Records fires in one write transaction. Returns how many queued a run.
async fn fire_batch(inner: &Inner, batch: Vec<(i64, i64, Trigger)>) -> Result<u64, ApiError> {
    let system_user = inner.system_user;
    let outcomes = inner
        .db
        .write(move |tx| {
            let now = now_ms();
            let mut outcomes = Vec::with_capacity(batch.len());
            for (job_id, instant, trigger) in batch {
                let Some(job) = store::jobs::get_live(tx, job_id)? else {
                    continue;
                };
                if !job.is_active() {
                    continue;
                }
                store::jobs::set_last_fired_for(tx, job_id, instant)?;
                if store::runs::job_busy(tx, job_id)? {
                    outcomes.push((job_id, instant, None));
                    continue;
                }
                let run_by = match job.run_as {
                    Some(user) if store::users::missing_ids(tx, &[user])?.is_empty() => user,
                    _ => system_user,
                };
                let new_run = NewRun {
                    job_id,
                    trigger,
                    run_by,
                    rt_args: None,
                    scheduled_for: Some(instant),
                    idempotency_key: None,
                };
                let result = store::runs::enqueue(tx, &new_run, job.max_queued_runs.max(1), now)?;
                outcomes.push((job_id, instant, Some(result)));
            }
            Ok(outcomes)
        })
        .await?;
    let fired_at = now_ms();
    let mut queued = 0;
    for (job_id, instant, outcome) in outcomes {
        match outcome {
            Some(Enqueued::Queued(run_id)) => {
                queued += 1;
                inner.stats.fires.fetch_add(1, Ordering::Relaxed);
                inner.stats.record_lateness(fired_at - instant);
                tracing::debug!(job_id, run_id, lateness_ms = fired_at - instant, "fired");
            }
            Some(Enqueued::Duplicate(_)) => {}
            Some(Enqueued::QueueFull) | None => {
                inner.stats.skipped_busy.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    job_id,
                    "fire skipped: the job's previous run is still queued or running"
                );
            }
        }
    }
    if queued > 0 {
        inner.executor.wake();
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::Repeat;

    #[test]
    fn missed_fires_are_counted_between_two_instants() {
        let schedule = Schedule {
            repeat: Repeat::Minutely { interval: 1 },
            timezone: chrono_tz::UTC,
            start_date: 0,
            end_date: None,
        };
        // From 00:00:30 to 00:05:00 the fires at 1, 2, 3, 4 and 5 minutes passed.
        assert_eq!(
            missed_between(&schedule, 30_000, 300_000),
            (5, Some(300_000))
        );
        assert_eq!(missed_between(&schedule, 300_000, 300_000), (0, None));
    }

    #[test]
    fn lateness_lands_in_the_right_bucket() {
        let stats = SchedulerStats::default();
        stats.record_lateness(3);
        stats.record_lateness(400);
        stats.record_lateness(-5);
        stats.record_lateness(120_000);
        assert_eq!(stats.lateness_buckets[0].load(Ordering::Relaxed), 2);
        assert_eq!(stats.lateness_buckets[6].load(Ordering::Relaxed), 1);
        assert_eq!(stats.lateness_over.load(Ordering::Relaxed), 1);
        assert_eq!(stats.lateness_count.load(Ordering::Relaxed), 4);
    }
}
