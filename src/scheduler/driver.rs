//! The driver that fires jobs through tokio-cron-scheduler. One tokio task (the loop) keeps, for
//! every active job, exactly one pending entry in the library's `JobScheduler` (see `library`):
//! a one-shot at the instant our pure `next_fire` computed. The library's ticker polls every
//! 500 ms and keeps whole seconds, which alone would make fires up to 1.5 s early or 0.5 s late,
//! so each entry is registered `EARLY_BY_MS` (2 s) before its instant. When the library fires it,
//! its closure reports `Fired` to the loop at once, and the loop arms the fire and waits for the
//! exact millisecond on one tokio timer. The wait is in the loop, not in each closure: measured
//! with 2,000 jobs due in the same second, 2,000 closures each sleeping to the instant cost 50 ms
//! of task wake-ups (and the library's own work after each fire) at the instant, before the
//! first commit. At the instant the loop records every armed fire in one ledger transaction
//! through the one enqueue path (`fire_batch`), so 2,000 jobs due together cost one commit; then
//! it registers each job's next instant and removes the fired entry. A fire counts only when it
//! matches the job's current entry (job and instant), so an entry left over from a change, a
//! restart or a resize of the library is ignored, never fired twice.
//!
//! The ledger is the source of truth. Changes made through the API arrive as `JobChanged`
//! messages and change what the `JobScheduler` holds at once. Changes made by another process
//! (`labcron jobs import --apply`, `labcron user`, a restored backup) are seen within a second:
//! the loop polls `PRAGMA data_version` on a read connection of its own and, when the jobs table
//! changed, reconciles. A reconcile pass also runs every minute. Whenever the loop (re)reads a job
//! whose instants passed before it knew of them (downtime, or a change it saw late), those
//! instants are misfires: counted in `labcron_fires_missed_total`, and `misfirePolicy` applies —
//! `SKIP` moves on, `RUN_ONCE` queues one `CATCH_UP` run. The one exception is the running loop's
//! own delay: a change reaches it a moment after its commit, and an instant that passed in between
//! (at most `LATE_FIRE_GRACE_MS` before) fires late as the scheduled run it was (`handle_passed`).
//! The watchdog restarts the loop, with a fresh `JobScheduler`, when the loop stops beating, when
//! a call into the library times out, or when the library leaves an entry unfired well past its
//! instant; the old instance is shut down, and its tasks end (`Library::shutdown`).
//!
//! A fire enqueues a run (`SCHEDULED`, run by the job's `runAs` user or the system user) unless the
//! job already has a run queued or running — then it is skipped and counted, never stacked. Firing
//! is idempotent per (job, scheduled instant) through the runs table's unique index, and the instant
//! is stored as the job's `last_fired_for`, so after downtime the loop knows what it missed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::library::{Fired, Held, Library, LibraryError, channel_capacity};
use crate::clock::{from_ms, now_ms};
use crate::domain::job::{Job, MisfirePolicy, Schedule};
use crate::domain::next_fire::next_fire;
use crate::domain::run::Trigger;
use crate::error::ServiceError;
use crate::executor::Executor;
use crate::metrics::scheduler::SchedulerStats;
use crate::service::runs::{Fire, accept_fire};
use crate::store::runs::Enqueued;
use crate::store::{self, ChangeWatch, Db};

/// How often the loop compares what it holds with the ledger.
const RECONCILE_EVERY: Duration = Duration::from_secs(60);
/// How often the loop beats, looks for changes made outside the server and checks the library.
const TICK: Duration = Duration::from_secs(1);
/// The loop counts as stalled when it has not beaten for this long.
const STALL_AFTER_MS: i64 = 90_000;
/// An entry still unfired this long after its instant means the library stopped firing.
const LIBRARY_LATE_MS: i64 = 15_000;
/// Registrations between two heartbeats while many entries are (re)registered.
const BEAT_EVERY: usize = 256;
/// How old an instant may be when the running loop finds it passed unfired and still fires it
/// late, as scheduled: the time a change takes to reach the loop, with room for a busy machine
/// (a change made by another process is seen at the next one-second poll).
const LATE_FIRE_GRACE_MS: i64 = 5_000;
/// Missed instants counted per job after downtime (a MINUTELY job down for a year stops counting).
const MAX_MISSED_COUNTED: u64 = 100_000;

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
    /// The library instance the loop is using, for `held`.
    library: std::sync::Mutex<Option<Arc<Library>>>,
}

impl Scheduler {
    pub async fn new(db: Db, executor: Executor) -> Result<Scheduler, ServiceError> {
        let system_user = db.read(|l| l.system_user_id()).await?;
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
                library: std::sync::Mutex::new(None),
            }),
        })
    }

    /// Starts the loop and its watchdog on the current runtime.
    pub fn start(&self) {
        let (_always, gate) = watch::channel(true);
        self.start_when(gate);
    }

    /// Starts the loop and its watchdog, firing only while `gate` says so: several nodes share
    /// one ledger and only the elected one fires (the cluster's firing lock). Each time the gate
    /// opens, a fresh loop reads every job from the ledger (so the instants the previous firing
    /// node left unfired are misfires, handled by each job's policy); when it closes, the loop
    /// stops and its `JobScheduler` is shut down.
    pub fn start_when(&self, gate: watch::Receiver<bool>) {
        let inner = self.inner.clone();
        tokio::spawn(async move { supervise(inner, gate).await });
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

    /// What the `JobScheduler` holds right now (None before the loop started one).
    pub async fn held(&self) -> Option<Held> {
        let library = self
            .inner
            .library
            .lock()
            .ok()
            .and_then(|slot| slot.clone())?;
        Some(library.held().await)
    }
}

/// Runs the loop, restarting it when it dies, fails or stops beating, while `gate` is open.
async fn supervise(inner: Arc<Inner>, mut gate: watch::Receiver<bool>) {
    loop {
        if !*gate.borrow() && !wait_for_gate(&inner, &mut gate).await {
            return;
        }
        let task = tokio::spawn(run_loop(inner.clone()));
        let abort = task.abort_handle();
        tokio::pin!(task);
        loop {
            tokio::select! {
                result = &mut task => {
                    if inner.stop.is_cancelled() {
                        retire_library(&inner).await;
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
                    retire_library(&inner).await;
                    return;
                }
                _ = gate_closed(&mut gate) => {
                    tracing::info!("this node no longer fires the schedules");
                    abort.abort();
                    retire_library(&inner).await;
                    break;
                }
            }
        }
        if !*gate.borrow() {
            continue;
        }
        // The aborted loop drops its handle of the old `JobScheduler`; this one shuts it down.
        retire_library(&inner).await;
        inner.stats.restarts.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits, beating, until the gate opens (true) or the scheduler stops (false). Changes sent
/// meanwhile are dropped: the loop started when the gate opens reads every job afresh.
async fn wait_for_gate(inner: &Inner, gate: &mut watch::Receiver<bool>) -> bool {
    let mut receiver = inner.receiver.lock().await;
    loop {
        inner.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        while receiver.try_recv().is_ok() {}
        if *gate.borrow_and_update() {
            tracing::info!("this node fires the schedules");
            return true;
        }
        tokio::select! {
            changed = gate.changed() => {
                if changed.is_err() && !*gate.borrow() {
                    // Nobody can open it any more (the node is stopping).
                    return false;
                }
            }
            _ = tokio::time::sleep(TICK) => {}
            _ = inner.stop.cancelled() => return false,
        }
    }
}

/// Resolves when the gate closes; never when nobody can close it any more.
async fn gate_closed(gate: &mut watch::Receiver<bool>) {
    if gate.wait_for(|open| !*open).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Takes the library instance out of `held`'s reach and shuts it down: its ticker stops, and its
/// tasks end once the loop's handle is gone too.
async fn retire_library(inner: &Inner) {
    let old = inner.library.lock().ok().and_then(|mut slot| slot.take());
    if let Some(old) = old {
        old.shutdown().await;
    }
}

fn set_library(inner: &Inner, library: Option<Arc<Library>>) {
    if let Ok(mut slot) = inner.library.lock() {
        *slot = library;
    }
}

/// Why the loop ended.
#[derive(Debug, thiserror::Error)]
enum LoopError {
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error(transparent)]
    Ledger(#[from] ServiceError),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("the JobScheduler left job {job_id}'s fire at {due_ms} unfired")]
    LibraryStalled { job_id: i64, due_ms: i64 },
}

/// What the loop holds for one active job.
struct Entry {
    schedule: Schedule,
    due_ms: i64,
    /// The job's `updated_at` when this entry was computed; reconcile compares it.
    version: i64,
    /// The library entry that fires it.
    library_id: Uuid,
}

/// The loop's jobs and the library instance that fires them.
struct State {
    library: Arc<Library>,
    entries: HashMap<i64, Entry>,
    queue: BTreeSet<(i64, i64)>,
    /// Fires the library reported, waiting for their instant: (instant, job).
    armed: BTreeSet<(i64, i64)>,
}

impl State {
    /// Takes `job_id` out, removing its library entry.
    async fn remove(&mut self, job_id: i64) -> Result<(), LibraryError> {
        if let Some(old) = self.entries.remove(&job_id) {
            self.queue.remove(&(old.due_ms, job_id));
            self.library.remove(old.library_id).await?;
        }
        Ok(())
    }

    /// Makes `due_ms` the job's one pending fire: registers it in the library (unless it is the
    /// instant already registered) and removes the entry it replaces.
    async fn set(
        &mut self,
        job_id: i64,
        schedule: Schedule,
        due_ms: i64,
        version: i64,
    ) -> Result<(), LibraryError> {
        if let Some(held) = self.entries.get_mut(&job_id)
            && held.due_ms == due_ms
        {
            held.schedule = schedule;
            held.version = version;
            return Ok(());
        }
        let library_id = self.library.register(job_id, due_ms).await?;
        self.queue.insert((due_ms, job_id));
        let old = self.entries.insert(
            job_id,
            Entry {
                schedule,
                due_ms,
                version,
                library_id,
            },
        );
        if let Some(old) = old {
            self.queue.remove(&(old.due_ms, job_id));
            self.library.remove(old.library_id).await?;
        }
        Ok(())
    }

    /// Puts `job` in line for its next fire after `after_ms` (or takes it out when it has none).
    async fn schedule_job(&mut self, job: &Job, after_ms: i64) -> Result<(), LibraryError> {
        if !job.is_active() {
            return self.remove(job.id).await;
        }
        let schedule = job.schedule();
        match next_fire(&schedule, from_ms(after_ms)) {
            Some(due) => {
                self.set(job.id, schedule, due.timestamp_millis(), job.updated_at)
                    .await
            }
            None => self.remove(job.id).await,
        }
    }

    /// Arms a fire the library reported, when it is the job's current entry (others are left
    /// over from a change or a resize, or a second report of the same instant).
    fn arm(&mut self, fired: Fired) {
        if self
            .entries
            .get(&fired.job_id)
            .is_some_and(|e| e.due_ms == fired.instant_ms)
        {
            self.armed.insert((fired.instant_ms, fired.job_id));
        }
    }

    /// Moves every entry into a new library instance with channels sized for what it holds now.
    async fn grow(
        &mut self,
        inner: &Inner,
        fired: &mpsc::UnboundedSender<Fired>,
    ) -> Result<(), LibraryError> {
        let capacity = channel_capacity(self.entries.len());
        tracing::info!(
            entries = self.entries.len(),
            capacity,
            "moving the scheduled fires to a JobScheduler with larger channels"
        );
        let library = Arc::new(Library::start(capacity, fired.clone()).await?);
        for (n, (job_id, entry)) in self.entries.iter_mut().enumerate() {
            entry.library_id = library.register(*job_id, entry.due_ms).await?;
            if n % BEAT_EVERY == 0 {
                inner.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
            }
        }
        // Entries the old instance already fired keep reporting to the same channel, and still
        // count when they match; shutting it down stops its ticker, and its tasks end with it.
        set_library(inner, Some(library.clone()));
        let old = std::mem::replace(&mut self.library, library);
        old.shutdown().await;
        Ok(())
    }
}

async fn run_loop(inner: Arc<Inner>) -> Result<(), LoopError> {
    let mut receiver = inner.receiver.lock().await;
    let (fired_tx, mut fired_rx) = mpsc::unbounded_channel::<Fired>();
    // Before the jobs are read, so a change committed in between is seen by the first poll.
    let mut watch = LedgerWatch::open(&inner.db).await;
    let jobs = inner.db.read(|l| l.live_jobs()).await?;
    let active = jobs.iter().filter(|j| j.is_active()).count();
    let library = Arc::new(Library::start(channel_capacity(active), fired_tx.clone()).await?);
    set_library(&inner, Some(library.clone()));
    let mut state = State {
        library,
        entries: HashMap::with_capacity(active),
        queue: BTreeSet::new(),
        armed: BTreeSet::new(),
    };
    start_up(&inner, &mut state, jobs).await?;
    let mut next_reconcile = tokio::time::Instant::now() + RECONCILE_EVERY;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        inner.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        inner
            .stats
            .pending
            .store(state.entries.len() as u64, Ordering::Relaxed);
        if state.entries.len().saturating_mul(4) > state.library.capacity() {
            state.grow(&inner, &fired_tx).await?;
        }
        let next_armed = state.armed.first().map(|(instant, _)| {
            tokio::time::Instant::now() + Duration::from_millis((instant - now_ms()).max(0) as u64)
        });
        // Biased: armed fires first (time-critical, and a change must not overtake a fire whose
        // instant came), then the library's reports, then changes, then the periodic work.
        tokio::select! {
            biased;
            _ = inner.stop.cancelled() => return Ok(()),
            _ = sleep_until_some(next_armed) => {
                fire_armed(&inner, &mut state).await?;
            }
            Some(first) = fired_rx.recv() => {
                state.arm(first);
                while let Ok(more) = fired_rx.try_recv() {
                    state.arm(more);
                }
            }
            command = receiver.recv() => {
                let Some(first) = command else { return Ok(()) };
                let mut changed = vec![first];
                while let Ok(more) = receiver.try_recv() {
                    changed.push(more);
                }
                let ids: Vec<i64> = changed.into_iter().map(|Command::JobChanged(id)| id).collect();
                reload_jobs(&inner, &mut state, ids).await?;
            }
            _ = tick.tick() => {
                check_library(&state)?;
                if watch.jobs_changed().await {
                    tracing::info!("jobs changed outside the server; reconciling");
                    reconcile(&inner, &mut state).await?;
                }
            }
            _ = tokio::time::sleep_until(next_reconcile) => {
                next_reconcile = tokio::time::Instant::now() + RECONCILE_EVERY;
                reconcile(&inner, &mut state).await?;
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Fails when the earliest entry is long past its instant: the library did not fire it (fires
/// it did report were armed and fired first, the loop being biased to them).
fn check_library(state: &State) -> Result<(), LoopError> {
    match state.queue.first() {
        Some(&(due_ms, job_id)) if now_ms() - due_ms > LIBRARY_LATE_MS => {
            Err(LoopError::LibraryStalled { job_id, due_ms })
        }
        _ => Ok(()),
    }
}

/// Loads every active job, applies the misfire policy for fires missed while the server (or this
/// loop) was not running, and registers each job's next fire.
async fn start_up(inner: &Inner, state: &mut State, jobs: Vec<Job>) -> Result<(), LoopError> {
    let now = now_ms();
    let mut owed = Vec::new();
    for (n, job) in jobs.iter().filter(|j| j.is_active()).enumerate() {
        note_misfires(inner, job, None, Found::AtStart, now, &mut owed);
        state.schedule_job(job, now).await?;
        if n % BEAT_EVERY == 0 {
            inner.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        }
    }
    fire_batch(inner, owed).await?;
    Ok(())
}

/// The instants of a job that passed unfired before the loop (re)read it at `now`: those after
/// both its last change (`updated_at`) and its last fire — and, when the loop held an entry
/// (`held`: instant, version) that is already due, from that entry's instant on. Nothing when the
/// loop holds the job unchanged and not yet due.
fn passed_unfired(
    schedule: &Schedule,
    last_fired_for: Option<i64>,
    updated_at: i64,
    held: Option<(i64, i64)>,
    now: i64,
) -> (u64, Option<i64>) {
    let mut baseline = last_fired_for.unwrap_or(i64::MIN).max(updated_at);
    match held {
        Some((due_ms, _)) if due_ms <= now => baseline = baseline.min(due_ms - 1),
        Some((_, version)) if version == updated_at => return (0, None),
        _ => {}
    }
    missed_between(schedule, baseline, now)
}

/// When the loop found a job whose instants passed unfired.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Found {
    /// At the loop's start: the instants passed while nothing fired (downtime, a watchdog
    /// restart, another node's turn to fire).
    AtStart,
    /// While the loop ran: a change it was told of (or saw in the ledger) a moment after it was
    /// committed.
    WhileRunning,
}

/// What the loop does with the instants of a job that passed unfired.
#[derive(Debug, PartialEq)]
struct Handling {
    /// An instant fired now, late, as the `SCHEDULED` run it would have been.
    late: Option<i64>,
    /// Instants counted as misfires.
    missed: u64,
    /// The instant a `RUN_ONCE` job catches up for.
    catch_up: Option<i64>,
}

/// Decides for `passed` instants, the latest at `latest`, found at `now`. A change reaches the
/// running loop a moment after its commit (a message, or the next poll for another process's
/// change), so an instant that passed in between is the loop's own delay, not a misfire: the
/// latest such instant, when it is at most `LATE_FIRE_GRACE_MS` old, fires late as scheduled
/// (under `SKIP` too — nothing was down). Everything else is a misfire, and `misfirePolicy`
/// applies: `RUN_ONCE` catches up once, for the latest.
fn handle_passed(
    passed: u64,
    latest: Option<i64>,
    found: Found,
    policy: MisfirePolicy,
    now: i64,
) -> Handling {
    let Some(latest) = latest.filter(|_| passed > 0) else {
        return Handling {
            late: None,
            missed: 0,
            catch_up: None,
        };
    };
    if found == Found::WhileRunning && now - latest <= LATE_FIRE_GRACE_MS {
        return Handling {
            late: Some(latest),
            missed: passed - 1,
            catch_up: None,
        };
    }
    Handling {
        late: None,
        missed: passed,
        catch_up: (policy == MisfirePolicy::RunOnce).then_some(latest),
    }
}

/// Counts the misfires of a job the loop is (re)reading and lines up what it fires for the
/// instants that passed unfired (see `handle_passed`).
fn note_misfires(
    inner: &Inner,
    job: &Job,
    held: Option<&Entry>,
    found: Found,
    now: i64,
    fires: &mut Vec<(i64, i64, Trigger)>,
) {
    if !job.is_active() {
        return;
    }
    let (passed, latest) = passed_unfired(
        &job.schedule(),
        job.last_fired_for,
        job.updated_at,
        held.map(|e| (e.due_ms, e.version)),
        now,
    );
    let handling = handle_passed(passed, latest, found, job.misfire_policy, now);
    if let Some(instant) = handling.late {
        fires.push((job.id, instant, Trigger::Scheduled));
    }
    if let Some(instant) = handling.catch_up {
        fires.push((job.id, instant, Trigger::CatchUp));
    }
    if handling.missed == 0 {
        return;
    }
    inner
        .stats
        .missed
        .fetch_add(handling.missed, Ordering::Relaxed);
    tracing::warn!(
        job_id = job.id,
        missed = handling.missed,
        policy = job.misfire_policy.as_str(),
        "fires missed: their instants passed before the scheduler saw the job"
    );
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

async fn reload_jobs(inner: &Inner, state: &mut State, ids: Vec<i64>) -> Result<(), LoopError> {
    let jobs = inner
        .db
        .read(move |c| {
            ids.into_iter()
                .map(|id| Ok((id, c.live_job(id)?)))
                .collect::<Result<Vec<_>, ServiceError>>()
        })
        .await?;
    let now = now_ms();
    let mut owed = Vec::new();
    for (id, job) in jobs {
        match job {
            Some(job) => {
                note_misfires(
                    inner,
                    &job,
                    state.entries.get(&id),
                    Found::WhileRunning,
                    now,
                    &mut owed,
                );
                state.schedule_job(&job, now).await?;
            }
            None => state.remove(id).await?,
        }
    }
    fire_batch(inner, owed).await?;
    Ok(())
}

/// Compares the held entries with the ledger and repairs what differs.
async fn reconcile(inner: &Inner, state: &mut State) -> Result<(), LoopError> {
    let jobs = inner.db.read(|l| l.live_jobs()).await?;
    let now = now_ms();
    let mut seen = std::collections::HashSet::with_capacity(jobs.len());
    let mut repaired = 0;
    let mut owed = Vec::new();
    for job in &jobs {
        seen.insert(job.id);
        let held = state.entries.get(&job.id).map(|e| e.version);
        if !job.is_active() {
            if held.is_some() {
                state.remove(job.id).await?;
                repaired += 1;
            }
        } else if held != Some(job.updated_at) {
            note_misfires(
                inner,
                job,
                state.entries.get(&job.id),
                Found::WhileRunning,
                now,
                &mut owed,
            );
            state.schedule_job(job, now).await?;
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
        state.remove(id).await?;
        repaired += 1;
    }
    fire_batch(inner, owed).await?;
    if repaired > 0 {
        tracing::warn!(repaired, "scheduler reconcile repaired drift");
    }
    Ok(())
}

/// Records every armed fire whose instant came, in one transaction, and lines up each job's
/// following fire.
async fn fire_armed(inner: &Inner, state: &mut State) -> Result<(), LoopError> {
    let now = now_ms();
    let mut handled: Vec<(i64, i64)> = Vec::new();
    while let Some(&(instant_ms, job_id)) = state.armed.first() {
        if instant_ms > now {
            break;
        }
        state.armed.remove(&(instant_ms, job_id));
        // Still the job's current entry? (A change may have moved it since it was armed.)
        if state
            .entries
            .get(&job_id)
            .is_some_and(|e| e.due_ms == instant_ms)
        {
            handled.push((instant_ms, job_id));
        }
    }
    if handled.is_empty() {
        return Ok(());
    }
    let batch: Vec<(i64, i64, Trigger)> = handled
        .iter()
        .map(|(instant_ms, job_id)| (*job_id, *instant_ms, Trigger::Scheduled))
        .collect();
    let count = batch.len() as u64;
    if let Err(e) = fire_batch(inner, batch).await {
        inner.stats.errors.fetch_add(count, Ordering::Relaxed);
        tracing::error!(error = ?e, jobs = count, "scheduled fires could not be recorded");
    }
    let after = now_ms();
    for (n, (due_ms, job_id)) in handled.into_iter().enumerate() {
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
            Some(next) => {
                state
                    .set(job_id, schedule, next.timestamp_millis(), version)
                    .await?
            }
            None => state.remove(job_id).await?,
        }
        if n % BEAT_EVERY == 0 {
            inner.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Notices commits to the jobs table made by any connection, this server's or another
/// process's: the ledger's change marker (`Db::change_watch`, cheap) says whether anything was
/// committed since the last look, and a fingerprint of the jobs table says whether it was jobs.
struct LedgerWatch {
    watch: Option<Arc<ChangeWatch>>,
    last: Option<(i64, (i64, i64, f64))>,
}

impl LedgerWatch {
    async fn open(db: &Db) -> LedgerWatch {
        let db = db.clone();
        let opened = tokio::task::spawn_blocking(move || db.change_watch()).await;
        let watch = match opened {
            Ok(Ok(watch)) => Some(Arc::new(watch)),
            Ok(Err(e)) => {
                tracing::error!(error = ?e, "cannot watch the ledger for changes made outside the server; the minutely reconcile remains");
                None
            }
            Err(e) => {
                tracing::error!(error = ?e, "cannot watch the ledger for changes made outside the server");
                None
            }
        };
        let mut watch = LedgerWatch { watch, last: None };
        watch.jobs_changed().await;
        watch
    }

    /// Whether the jobs table changed since the last call.
    async fn jobs_changed(&mut self) -> bool {
        let Some(watch) = self.watch.clone() else {
            return false;
        };
        let known = self.last;
        let looked = tokio::task::spawn_blocking(move || {
            let marker = watch.marker()?;
            if let Some((known_marker, fingerprint)) = known
                && known_marker == marker
            {
                return Ok((marker, fingerprint));
            }
            let fingerprint = watch.read(|l| l.jobs_fingerprint())?;
            Ok::<_, store::Error>((marker, fingerprint))
        })
        .await;
        match looked {
            Ok(Ok(now)) => {
                let changed = known.is_some_and(|(_, before)| before != now.1);
                self.last = Some(now);
                changed
            }
            Ok(Err(e)) => {
                tracing::warn!(error = ?e, "could not look for changes to the jobs table");
                false
            }
            Err(_) => false,
        }
    }
}

/// Records fires in one write transaction (none for an empty batch), and counts what they did.
async fn fire_batch(inner: &Inner, batch: Vec<(i64, i64, Trigger)>) -> Result<(), ServiceError> {
    if batch.is_empty() {
        return Ok(());
    }
    let system_user = inner.system_user;
    let firing_pid = inner.db.firing_pid();
    let outcomes = inner
        .db
        .write(move |tx| -> Result<_, ServiceError> {
            // The gate opened when the lock was last checked; a node frozen since then (and
            // declared lost meanwhile) must not fire now: the check is in this transaction.
            if !tx.still_fires(firing_pid)? {
                return Ok(None);
            }
            let now = now_ms();
            let mut outcomes = Vec::with_capacity(batch.len());
            for (job_id, instant, trigger) in batch {
                let fire = accept_fire(tx, job_id, instant, trigger, system_user, now)?;
                outcomes.push((job_id, instant, trigger, fire));
            }
            Ok(Some(outcomes))
        })
        .await?;
    let Some(outcomes) = outcomes else {
        // The instants are the next holder's (misfires it counts and handles).
        tracing::warn!("not fired: this node no longer holds the firing lock");
        return Ok(());
    };
    let fired_at = now_ms();
    let mut queued = 0;
    for (job_id, instant, trigger, outcome) in outcomes {
        match outcome {
            Fire::Gone => {}
            Fire::Enqueued(Enqueued::Queued(run_id)) => {
                queued += 1;
                inner.stats.fires.fetch_add(1, Ordering::Relaxed);
                if trigger == Trigger::CatchUp {
                    inner.stats.catch_ups.fetch_add(1, Ordering::Relaxed);
                }
                inner.stats.record_lateness(fired_at - instant);
                tracing::debug!(job_id, run_id, lateness_ms = fired_at - instant, "fired");
            }
            Fire::Enqueued(Enqueued::Duplicate(_)) => {}
            Fire::Enqueued(Enqueued::QueueFull) | Fire::Busy => {
                inner.stats.skipped_busy.fetch_add(1, Ordering::Relaxed);
                // Counted (`labcron_fires_skipped_total`); a line per skip would be a line a
                // second for every busy every-second job.
                tracing::debug!(
                    job_id,
                    "fire skipped: the job's previous run is still queued or running"
                );
            }
        }
    }
    if queued > 0 {
        inner.executor.wake();
    }
    Ok(())
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

    /// The case the issue reports: a MINUTELY/15 job imported by the CLI at 08:37:50 with
    /// `nextRunOn` 08:38:00, first seen by the scheduler at 08:38:09, missed its 08:38 fire. That
    /// is one misfire (counted; `RUN_ONCE` catches up for 08:38), not a silent skip to 08:53.
    #[test]
    fn a_job_seen_after_its_instant_passed_has_that_instant_as_a_misfire() {
        let at = |h: u32, m: u32, s: u32| {
            chrono::NaiveDate::from_ymd_opt(2026, 11, 30)
                .and_then(|d| d.and_hms_opt(h, m, s))
                .map(|t| t.and_utc().timestamp_millis())
                .unwrap()
        };
        let schedule = Schedule {
            repeat: Repeat::Minutely { interval: 15 },
            timezone: chrono_tz::UTC,
            start_date: at(8, 8, 0),
            end_date: None,
        };
        let imported = at(8, 37, 50);
        let found = at(8, 38, 9);
        assert_eq!(
            next_fire(&schedule, from_ms(imported)).map(|t| t.timestamp_millis()),
            Some(at(8, 38, 0))
        );
        // Not held yet (new to the scheduler).
        assert_eq!(
            passed_unfired(&schedule, None, imported, None, found),
            (1, Some(at(8, 38, 0)))
        );
        // Seen in time: nothing missed.
        assert_eq!(
            passed_unfired(&schedule, None, imported, None, at(8, 37, 59)),
            (0, None)
        );
        // Held unchanged and not due: nothing to count, whatever the history.
        assert_eq!(
            passed_unfired(
                &schedule,
                Some(at(8, 23, 0)),
                imported,
                Some((at(8, 53, 0), imported)),
                found
            ),
            (0, None)
        );
        // Held with an entry already due but not yet reported: that instant counts.
        assert_eq!(
            passed_unfired(
                &schedule,
                None,
                at(8, 38, 5),
                Some((at(8, 38, 0), imported)),
                found
            ),
            (1, Some(at(8, 38, 0)))
        );
        // Fired before: only what came after the last fire counts.
        assert_eq!(
            passed_unfired(&schedule, Some(at(8, 38, 0)), imported, None, at(9, 10, 0)),
            (2, Some(at(9, 8, 0)))
        );
    }

    /// A job created a moment before an instant and first read by the running loop just after
    /// it fires late, as scheduled, whatever its policy; found later, or at the loop's start
    /// (downtime), the instants are misfires and the policy decides.
    #[test]
    fn an_instant_the_running_loop_found_a_moment_late_fires_late_and_older_ones_are_misfires() {
        let latest = 1_000_000;
        let handle =
            |passed, found, policy, now| handle_passed(passed, Some(latest), found, policy, now);
        let just_after = latest + 300;
        for policy in [MisfirePolicy::Skip, MisfirePolicy::RunOnce] {
            assert_eq!(
                handle(1, Found::WhileRunning, policy, just_after),
                Handling {
                    late: Some(latest),
                    missed: 0,
                    catch_up: None
                }
            );
            // Two instants passed (an every-second job seen 1.3 s late): the older one is missed.
            assert_eq!(
                handle(2, Found::WhileRunning, policy, latest + 1_300),
                Handling {
                    late: Some(latest),
                    missed: 1,
                    catch_up: None
                }
            );
        }
        assert_eq!(
            handle(
                1,
                Found::WhileRunning,
                MisfirePolicy::Skip,
                latest + LATE_FIRE_GRACE_MS + 1
            ),
            Handling {
                late: None,
                missed: 1,
                catch_up: None
            }
        );
        assert_eq!(
            handle(
                3,
                Found::WhileRunning,
                MisfirePolicy::RunOnce,
                latest + LATE_FIRE_GRACE_MS + 1
            ),
            Handling {
                late: None,
                missed: 3,
                catch_up: Some(latest)
            }
        );
        assert_eq!(
            handle(1, Found::AtStart, MisfirePolicy::Skip, just_after),
            Handling {
                late: None,
                missed: 1,
                catch_up: None
            }
        );
        assert_eq!(
            handle(2, Found::AtStart, MisfirePolicy::RunOnce, just_after),
            Handling {
                late: None,
                missed: 2,
                catch_up: Some(latest)
            }
        );
        assert_eq!(
            handle_passed(
                0,
                None,
                Found::WhileRunning,
                MisfirePolicy::RunOnce,
                just_after
            ),
            Handling {
                late: None,
                missed: 0,
                catch_up: None
            }
        );
    }

    /// A forced restart: the `JobScheduler` stops firing (its ticker shut down from here, as when
    /// the library lost an entry's code), the loop finds the entry unfired past its instant and
    /// the watchdog restarts it with a fresh instance, which fires the job again; the old
    /// instance is shut down and all its tasks end (its context, which they held, is freed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_ends_the_old_job_schedulers_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("labcron.db");
        let db = Db::open(&ledger).unwrap();
        let now = now_ms();
        // Inserted beside the store, as another process would (the interface has no raw SQL).
        let owner = db.read(|l| l.system_user_id()).await.unwrap();
        rusqlite::Connection::open(&ledger)
            .unwrap()
            .execute(
                "INSERT INTO jobs (name, type, repeat_schedule, cron_expression, timezone,
                     start_date, activity_status, created_by, command, timeout_seconds,
                     max_queued_runs, created_at, updated_at)
                 VALUES ('every second', 'EXTERNAL', 'CRON', '* * * * * *', 'UTC', ?1, 'Active',
                     ?2, 'x.sh', 60, 10, ?1, ?1)",
                rusqlite::params![now, owner],
            )
            .unwrap();
        let settings = Arc::new(crate::config::Settings::default());
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let notifier = crate::notify::Notifier::new(
            db.clone(),
            &settings,
            dir.path().to_path_buf(),
            metrics.clone(),
            "127.0.0.1:9".parse().unwrap(),
        )
        .unwrap();
        // Not started: the fires queue runs that nobody runs, so all but the first are skipped.
        let executor = Executor::new(
            db.clone(),
            settings,
            dir.path().to_path_buf(),
            metrics,
            notifier,
        );
        let scheduler = Scheduler::new(db, executor).await.unwrap();
        scheduler.start();
        let stats = scheduler.stats();
        let fired =
            || stats.fires.load(Ordering::Relaxed) + stats.skipped_busy.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while fired() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the job never fired"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let old = scheduler.inner.library.lock().unwrap().clone().unwrap();
        let old_context = old.context_weak();
        old.shutdown().await;
        drop(old);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while stats.restarts.load(Ordering::Relaxed) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watchdog never restarted the loop"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after_restart = fired();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while old_context.strong_count() > 0 || fired() < after_restart + 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "after the restart: old instance's context {}, {} fires since",
                if old_context.strong_count() > 0 {
                    "still held"
                } else {
                    "freed"
                },
                fired() - after_restart
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(stats.restarts.load(Ordering::Relaxed), 1);
        scheduler.stop();
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
