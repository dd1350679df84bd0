//! What happens to a run. The ledger is the queue: an accepted run is a `QUEUED` row before anyone
//! is told about it. The dispatcher claims, for every job with nothing in progress, its oldest
//! queued run (so a job has at most one `IN_PROGRESS` run and its runs go in order), up to the global
//! concurrency limit, and starts a task for each. A task runs the job's program (or built-in task),
//! records the outcome, and wakes the dispatcher. Handlers never spawn processes; this module never
//! parses HTTP.

mod cgroup; // a cgroup per run where the machine delegates one
mod cluster; // the cluster's part: cancels asked elsewhere, lost nodes' runs
mod external; // EXTERNAL runs: the program, its arguments and environment, its outcome and result
pub mod followup; // retries, chained runs and notifyOn, decided when a run's end is recorded
pub mod internal; // INTERNAL runs: files-cleaner, database-backup, runs-report
pub mod process;
pub mod query_task; // QUERY runs: a saved query streamed to CSV
pub mod recovery;
mod spawn; // starting a run's program without copying the server

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::Settings;
use crate::domain::ids::{JobId, RunId, RunOfJob, UserId};
use crate::domain::job::{Job, JobType};
use crate::domain::run::{Run, RunStatus};
use crate::domain::user::User;
use crate::error::ServiceError;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::run_files::{RunFiles, RunPaths};
use crate::service;
use crate::service::runs::RunRequest;
use crate::store::Ledger;
use crate::store::{self, Db};

use store::runs::{Enqueued, Outcome};

/// A run that is executing: how to stop it, and why it was stopped.
struct RunningRun {
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

/// Handle to the executor; cheap to clone.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    settings: Arc<Settings>,
    data_dir: PathBuf,
    /// Where runs' logs and results are kept once written (the data directory or the database).
    files: RunFiles,
    wake: Notify,
    /// Signalled after every run finishes (long-polls wait on it).
    finished: Notify,
    running: Mutex<HashMap<i64, RunningRun>>,
    stop_dispatching: CancellationToken,
    /// Held while the dispatcher claims runs and registers their tasks, so that shutdown never
    /// looks at the running runs between a claim (rows IN_PROGRESS) and their registration.
    dispatching: tokio::sync::Mutex<()>,
    /// Counts finished runs (`labcron_runs_finished_total`, `labcron_run_duration_seconds`).
    metrics: Arc<Metrics>,
    /// Told about every run whose end was recorded (e-mail, webhook); never waited for.
    notifier: Notifier,
}

impl Executor {
    pub fn new(
        db: Db,
        settings: Arc<Settings>,
        data_dir: PathBuf,
        metrics: Arc<Metrics>,
        notifier: Notifier,
    ) -> Self {
        Executor {
            inner: Arc::new(Inner {
                files: RunFiles::for_ledger(&db, data_dir.clone()),
                db,
                settings,
                data_dir,
                wake: Notify::new(),
                finished: Notify::new(),
                running: Mutex::new(HashMap::new()),
                stop_dispatching: CancellationToken::new(),
                dispatching: tokio::sync::Mutex::new(()),
                metrics,
                notifier,
            }),
        }
    }

    /// Starts the dispatcher loop on the current tokio runtime. From here on this process adopts
    /// the orphans of runs (see `process`).
    pub fn start(&self) {
        if process::become_subreaper() {
            tokio::spawn(process::reap_adopted_loop());
        }
        // Run cgroups a stopped server left (a crash): what runs in them is killed.
        tokio::task::spawn_blocking(cgroup::end_stale);
        let executor = self.clone();
        tokio::spawn(async move { executor.dispatch_loop().await });
    }

    /// Stores a QUEUED run for `job_id` (checking, in the same transaction, that the job is live and
    /// active and its queue has room) and wakes the dispatcher.
    pub async fn enqueue(
        &self,
        job_id: i64,
        request: RunRequest,
    ) -> Result<Enqueued, ServiceError> {
        self.enqueue_audited(job_id, request, None).await
    }

    /// `enqueue`, recording `audit` (about the new run) in the transaction that stores the run;
    /// nothing is recorded when no run was stored (a full queue, a repeated idempotency key).
    pub async fn enqueue_audited(
        &self,
        job_id: i64,
        request: RunRequest,
        audit: Option<store::audit::Event>,
    ) -> Result<Enqueued, ServiceError> {
        let result = self
            .inner
            .db
            .write(move |tx| service::runs::accept_on_demand(tx, job_id, &request, audit, now_ms()))
            .await?;
        if matches!(result, Enqueued::Queued(_)) {
            self.wake_if_slot_free();
        }
        Ok(result)
    }

    /// `enqueue_audited` for a client's request, in one write: `check` first (who may run the
    /// job; it returns the job), then the run is accepted, then `answer` builds what the client
    /// is told about the new (or repeated) run. Doing the check and the answer in the write
    /// transaction saves two reads, each a trip to the blocking pool, per request.
    pub async fn enqueue_answered<A, C, F>(
        &self,
        job_id: i64,
        request: RunRequest,
        audit: store::audit::Event,
        check: C,
        answer: F,
    ) -> Result<(Job, Enqueued, Option<A>), ServiceError>
    where
        A: Send + 'static,
        C: FnOnce(&dyn store::Ledger) -> Result<Job, ServiceError> + Send + 'static,
        F: FnOnce(&dyn store::Ledger, &Job, i64) -> Result<A, ServiceError> + Send + 'static,
    {
        let result = self
            .inner
            .db
            .write(move |tx| -> Result<_, ServiceError> {
                let job = check(tx)?;
                let enqueued =
                    service::runs::accept_on_demand(tx, job_id, &request, Some(audit), now_ms())?;
                let answered = match enqueued {
                    Enqueued::Queued(id) | Enqueued::Duplicate(id) => Some(answer(tx, &job, id)?),
                    Enqueued::QueueFull => None,
                };
                Ok((job, enqueued, answered))
            })
            .await?;
        if matches!(result.1, Enqueued::Queued(_)) {
            self.wake_if_slot_free();
        }
        Ok(result)
    }

    /// Cancels a run: a QUEUED one fails at once; an IN_PROGRESS one has its process group stopped.
    /// Returns false when the run had already finished.
    pub async fn cancel(&self, run_id: i64, by: &User) -> Result<bool, ServiceError> {
        self.cancel_audited(run_id, by, None).await
    }

    /// `cancel`, recording `audit` in the transaction that marks the run cancelled (once, and
    /// only when the run had not finished).
    pub async fn cancel_audited(
        &self,
        run_id: i64,
        by: &User,
        audit: Option<store::audit::Event>,
    ) -> Result<bool, ServiceError> {
        let message = format!("cancelled by {}", by.login_name);
        let by_id = by.id;
        let mut audit = audit;
        for attempt in 0..50 {
            let msg = message.clone();
            let pending = audit.take();
            let (status, unrecorded) = self
                .inner
                .db
                .write(move |tx| -> Result<_, ServiceError> {
                    // `cancelledBy` on the wire; a cancelled run is never retried.
                    tx.mark_cancelled_by(RunId(run_id), UserId(by_id))?;
                    if tx.fail_queued_run(run_id, &msg, now_ms())? {
                        tx.set_series_end(run_id)?;
                        record_cancel(tx, pending, run_id, "QUEUED")?;
                        return Ok((None, None));
                    }
                    let status = tx.run(run_id)?.map(|r| r.status);
                    if status == Some(RunStatus::InProgress) {
                        record_cancel(tx, pending, run_id, "IN_PROGRESS")?;
                        return Ok((status, None));
                    }
                    Ok((status, pending))
                })
                .await?;
            audit = unrecorded;
            match status {
                None => {
                    self.inner.finished.notify_waiters();
                    return Ok(true);
                }
                Some(RunStatus::InProgress) => {
                    if self.signal_running(run_id, &message) {
                        return Ok(true);
                    }
                    // Not executing here, but on another node sharing the ledger: it sees the
                    // mark just written and stops the run itself (`cluster`).
                    if attempt >= 2 && self.inner.db.is_shared() {
                        return Ok(true);
                    }
                    // Claimed but its task not registered yet: look again shortly.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Some(_) => return Ok(false),
            }
        }
        Ok(false)
    }

    /// The ids of the runs this process executes now.
    fn running_ids(&self) -> Vec<i64> {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        running.keys().copied().collect()
    }

    fn signal_running(&self, run_id: i64, reason: &str) -> bool {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        match running.get(&run_id) {
            Some(handle) => {
                handle
                    .reason
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| reason.to_string());
                handle.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Waits until some run finishes or `timeout` passes (for long-polls).
    pub async fn wait_for_any_finish(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.finished.notified()).await;
    }

    /// Asks the dispatcher to look for runnable runs now (after runs were queued elsewhere).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Wakes the dispatcher when it could start a run: while every slot is taken its claim would
    /// find no room and return, so waking it (a wake-up of another thread, at every POST and every
    /// run's end under load) is skipped. Nothing is missed: a slot frees only when a run leaves
    /// `running`, and that run calls this after leaving, so a run queued (committed) before the
    /// check is claimed either by that wake-up or by the hand-over in a run's end.
    fn wake_if_slot_free(&self) {
        if self.running_count() < self.inner.settings.runs.max_concurrent {
            self.inner.wake.notify_one();
        }
    }

    /// Number of runs executing now.
    pub fn running_count(&self) -> usize {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Stops starting runs, lets running ones finish for `grace`, then stops the rest, which are
    /// recorded FAILED "interrupted by shutdown".
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stop_dispatching.cancel();
        // A claim in flight finishes registering its runs first; later ones see the cancel.
        drop(self.inner.dispatching.lock().await);
        let deadline = tokio::time::Instant::now() + grace;
        while self.running_count() > 0 && tokio::time::Instant::now() < deadline {
            self.wait_for_any_finish(Duration::from_millis(100)).await;
        }
        let ids = self.running_ids();
        for id in ids {
            self.signal_running(id, "interrupted by shutdown");
        }
        let kill_deadline = tokio::time::Instant::now()
            + Duration::from_secs(self.inner.settings.runs.kill_grace_seconds + 5);
        while self.running_count() > 0 && tokio::time::Instant::now() < kill_deadline {
            self.wait_for_any_finish(Duration::from_millis(100)).await;
        }
    }

    async fn dispatch_loop(self) {
        loop {
            if self.inner.stop_dispatching.is_cancelled() {
                return;
            }
            if let Err(e) = self.dispatch_once().await {
                tracing::error!(error = ?e, "dispatcher could not claim runs");
            }
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                // A safety net: runs are also found without a wake-up.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.inner.stop_dispatching.cancelled() => return,
            }
        }
    }

    async fn dispatch_once(&self) -> Result<(), ServiceError> {
        let _dispatching = self.inner.dispatching.lock().await;
        if self.inner.stop_dispatching.is_cancelled() {
            return Ok(());
        }
        let free = self
            .inner
            .settings
            .runs
            .max_concurrent
            .saturating_sub(self.running_count());
        if free == 0 {
            return Ok(());
        }
        let node = self.inner.settings.node_name.clone();
        let claimed = self
            .inner
            .db
            .write(move |tx| {
                let claimed = tx.claim_runnable(&node, free, now_ms())?;
                for &id in &claimed {
                    crate::timeline::mark(id, "claimed");
                }
                Ok::<_, ServiceError>(claimed)
            })
            .await?;
        for run_id in claimed {
            crate::timeline::mark(run_id, "committed");
            self.start_claimed(run_id);
        }
        Ok(())
    }

    /// Registers a run just claimed (IN_PROGRESS in the ledger) as running and executes it in a
    /// task of its own.
    fn start_claimed(&self, run_id: i64) {
        let handle = RunningRun {
            cancel: CancellationToken::new(),
            reason: Arc::new(Mutex::new(None)),
        };
        let (cancel, reason) = (handle.cancel.clone(), handle.reason.clone());
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id, handle);
        let executor = self.clone();
        tokio::spawn(async move {
            let span = tracing::info_span!("run", run_id, job_id = tracing::field::Empty);
            let _ = tracing::Instrument::instrument(executor.execute(run_id, cancel, reason), span)
                .await;
        });
    }

    /// Executes one claimed run and records its outcome, whatever happens.
    async fn execute(
        &self,
        run_id: i64,
        cancel: CancellationToken,
        reason: Arc<Mutex<Option<String>>>,
    ) {
        // For the metrics: the job's type and when the run started.
        let mut measured = None;
        let mut job_id = None;
        crate::timeline::mark(run_id, "task");
        let mut outcome = match self.load(run_id).await {
            Ok((run, job, dirs)) => {
                crate::timeline::mark(run_id, "loaded");
                // Every event of this run carries its job id from here on.
                tracing::Span::current().record("job_id", job.id);
                tracing::info!(job = %job.name, "run started");
                measured = Some((job.job_type, run.started_at));
                job_id = Some(job.id);
                let upload = self.inner.files.start_log(run.of_job());
                let mut outcome = self.perform(&run, &job, dirs, cancel, reason).await;
                // Before the end is recorded: a run that says SUCCEEDED has its files wherever
                // they are kept.
                self.keep_files(run.of_job(), upload, &mut outcome).await;
                // What produced the result decides who may download it later, whatever the job
                // becomes (a backup stays admin-only).
                if job.job_type == JobType::Internal {
                    outcome.task = job.task_impl_fqn.clone();
                }
                outcome
            }
            Err(e) => Outcome {
                message: Some(format!("could not load the run: {e}")),
                ..Outcome::default()
            },
        };
        let succeeded = outcome.succeeded;
        let finished_at = now_ms();
        // The run hands its slot to the next runnable run, claimed in the transaction that
        // records its end: one commit less per run when runs are waiting (the dispatcher's own
        // claim would be a second commit, and with `synchronous = FULL` every commit is an
        // fsync). The slot count is unchanged by a hand-over, so `runs.max_concurrent` holds
        // without taking the dispatcher's lock; and since the successor is registered before
        // this run leaves `running`, a shutdown waiting for `running` to empty sees it.
        //
        // The successor starts only once this commit is synced, though nobody has been told
        // about its start yet: a claim that only rode a later commit could be lost with power
        // while its program runs, and the run, QUEUED again after the restart, would run twice.
        // Recovery can only fail a run whose claim is on disk. (What may happen before the sync
        // is work a restart repeats harmlessly; the measured slot timeline, README "Durability",
        // puts waiting for this commit at 44 % of a slot's cycle on average, on a machine whose
        // cores were saturated, where that wait cost no throughput.)
        crate::timeline::mark(run_id, "end_queued");
        let recorded = self
            .record_end(run_id, job_id, &mut outcome, finished_at)
            .await;
        crate::timeline::mark(run_id, "end_committed");
        let (recorded, successor) = match recorded {
            Ok((follow_up, successor)) => (Ok(follow_up), successor),
            Err(e) => (Err(e), None),
        };
        if let Some(job_id) = job_id {
            self.inner
                .files
                .clear_local(RunOfJob::new(JobId(job_id), RunId(run_id)))
                .await;
        }
        // Registered before this run leaves `running`, so the dispatcher never sees a free slot
        // that is already handed over.
        if let Some(next) = successor {
            crate::timeline::mark(next, "committed");
            crate::timeline::line(format_args!("S {run_id} {next}"));
            self.start_claimed(next);
        }
        match recorded {
            Ok(Some(follow_up)) => {
                if let Some((job_type, started_at)) = measured {
                    let duration_ms = started_at.map(|start| finished_at - start);
                    self.inner
                        .metrics
                        .observe_run(job_type.as_str(), succeeded, duration_ms);
                }
                // After the outcome is in the ledger; delivery runs in its own tasks. A run whose
                // retry is queued, or whose job's notifyOn says no, sends nothing; nor does one
                // with no channel (no webhook, e-mail off), which is not even read again.
                if follow_up.notify && self.inner.notifier.would_send(follow_up.webhook) {
                    self.inner.notifier.run_finished(run_id);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = ?e, "could not record the end of run {run_id}"),
        }
        // A failed run is what an operator must notice; a successful one is routine.
        let reason = outcome.message.as_deref().unwrap_or("");
        if succeeded {
            tracing::info!(succeeded, reason, "run finished");
        } else {
            tracing::warn!(succeeded, reason, "run finished");
        }
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run_id);
        self.inner.finished.notify_waiters();
        self.wake_if_slot_free();
        crate::timeline::mark(run_id, "done");
        crate::timeline::flush(run_id);
    }

    /// Records the end of a run in the ledger, with what follows it (`followup`) and the claim of
    /// the run that takes over its slot (unless shutting down), in one transaction; no follow-up
    /// when the run was no longer IN_PROGRESS. A full disk must not leave the run IN_PROGRESS:
    /// when the write fails for lack of space, a failed run's (partial) result is removed to make
    /// room, saying so in its message, and the write is tried again every second for a while.
    async fn record_end(
        &self,
        run_id: i64,
        job_id: Option<i64>,
        outcome: &mut Outcome,
        finished_at: i64,
    ) -> Result<(Option<followup::FollowUp>, Option<i64>), ServiceError> {
        let mut freed = false;
        let mut attempts = 0;
        let mut collisions = 0;
        let mut waits = 0;
        loop {
            let recorded = {
                let outcome = outcome.clone();
                // Looked at inside the transaction: a shutdown that began before it hands over
                // nothing.
                let stopping = self.inner.stop_dispatching.clone();
                let node = self.inner.settings.node_name.clone();
                self.inner
                    .db
                    .write(move |tx| -> Result<_, ServiceError> {
                        crate::timeline::mark(run_id, "end_exec");
                        if !tx.finish_run(run_id, &outcome, finished_at)? {
                            return Ok((None, None));
                        }
                        let follow_up = followup::after_end(tx, run_id, finished_at)?;
                        let successor = if !stopping.is_cancelled() {
                            let next = tx.claim_runnable(&node, 1, finished_at)?.pop();
                            if let Some(id) = next {
                                crate::timeline::mark(id, "claimed");
                            }
                            next
                        } else {
                            None
                        };
                        Ok((Some(follow_up), successor))
                    })
                    .await
            };
            match recorded {
                Err(e) if e.is_disk_full() && attempts < DISK_FULL_ATTEMPTS => {
                    attempts += 1;
                    if !freed && !outcome.succeeded {
                        freed = true;
                        if let Some(job_id) = job_id
                            && self
                                .remove_result(RunOfJob::new(JobId(job_id), RunId(run_id)), outcome)
                                .await
                        {
                            continue;
                        }
                    }
                    if attempts == 1 {
                        tracing::warn!(
                            "the disk is full: retrying to record the end of run {run_id}"
                        );
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                // PostgreSQL rolled the write back for another one at the same time (two chained
                // ends locking each other's jobs): nothing was written, so it is written again.
                Err(e) if e.is_retryable() && collisions < RETRYABLE_ATTEMPTS => {
                    collisions += 1;
                    tracing::debug!(run_id, "retrying the end of a run after a write conflict");
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(collisions))).await;
                }
                // The database is down (PostgreSQL): the run has ended all the same, and its
                // end waits until the database answers again.
                Err(e) if e.is_unreachable() && waits < store::error::UNREACHABLE_WAITS => {
                    waits += 1;
                    if waits == 1 {
                        tracing::warn!(
                            "the ledger is unreachable: the end of run {run_id} is written when it is back"
                        );
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => return other,
            }
        }
    }

    /// Removes a failed run's result files (partial, when the disk filled up) and notes it in the
    /// outcome. Returns whether anything was removed.
    async fn remove_result(&self, ids: RunOfJob, outcome: &mut Outcome) -> bool {
        let removed = self
            .inner
            .files
            .remove_result(ids, outcome.result_file.as_deref())
            .await;
        if removed {
            outcome.result_file = None;
            outcome.result_file_size = None;
            let why = outcome.message.take().unwrap_or_else(|| "failed".into());
            outcome.message = Some(format!(
                "{why} (the disk is full: the run's partial result was removed)"
            ));
        }
        removed
    }

    /// Keeps a run's log and result where run files are kept (`RunFiles::keep`); when they
    /// cannot be kept, the run fails saying so, without a result.
    async fn keep_files(
        &self,
        ids: RunOfJob,
        upload: crate::run_files::LogUpload,
        outcome: &mut Outcome,
    ) {
        match self
            .inner
            .files
            .keep(ids, upload, outcome.result_file.as_deref())
            .await
        {
            Ok(Some(size)) => outcome.result_file_size = Some(size as i64),
            Ok(None) => {}
            Err(why) => {
                outcome.succeeded = false;
                outcome.result_file = None;
                outcome.result_file_size = None;
                outcome.message = Some(match outcome.message.take() {
                    Some(before) => format!("{why}; {before}"),
                    None => why,
                });
            }
        }
    }

    /// Reads the claimed run and its job, and creates the run's directories, in one trip to the
    /// blocking pool: each trip is a hand-off to another thread and back (wake-ups, context
    /// switches), and at hundreds of runs a second those hand-offs were a good part of the
    /// server's CPU. The directories' outcome is the caller's to report.
    async fn load(&self, run_id: i64) -> Result<(Run, Job, std::io::Result<()>), ServiceError> {
        let db = self.inner.db.clone();
        let data_dir = self.inner.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            let (run, job) = db.read_sync(|c| -> Result<_, ServiceError> {
                let run = c.run(run_id)?.ok_or_else(ServiceError::run_not_found)?;
                let job = c
                    .job_even_deleted(run.job_id)?
                    .ok_or_else(ServiceError::job_not_found)?;
                Ok((run, job))
            })?;
            let dirs = prepare_dirs(&RunPaths::new(&data_dir, run.of_job()));
            Ok((run, job, dirs))
        })
        .await
        .map_err(|e| ServiceError::Internal(e.into()))?
    }

    async fn perform(
        &self,
        run: &Run,
        job: &Job,
        dirs: std::io::Result<()>,
        cancel: CancellationToken,
        reason: Arc<Mutex<Option<String>>>,
    ) -> Outcome {
        let paths = RunPaths::new(&self.inner.data_dir, run.of_job());
        if let Err(e) = dirs {
            return Outcome {
                message: Some(format!("cannot create the run directory: {e}")),
                ..Outcome::default()
            };
        }
        match job.job_type {
            JobType::External => {
                self.perform_external(run, job, &paths, cancel, reason)
                    .await
            }
            JobType::Query | JobType::Internal => {
                let ctx = query_task::TaskContext {
                    db: &self.inner.db,
                    settings: &self.inner.settings,
                    data_dir: &self.inner.data_dir,
                    files: &self.inner.files,
                    run,
                    job,
                    paths: &paths,
                    cancel,
                    reason,
                };
                if job.job_type == JobType::Query {
                    query_task::perform(ctx).await
                } else {
                    internal::perform(ctx).await
                }
            }
        }
    }
}

/// How many times the end of a run is tried again while the disk is full (about a second apart).
const DISK_FULL_ATTEMPTS: u32 = 120;

/// How many times the end of a run is tried again after PostgreSQL rolled it back for a deadlock
/// or a serialization failure (each a little later than the last: about 30 s in all).
const RETRYABLE_ATTEMPTS: u32 = 75;

/// Creates the run's directory, empty, with its `result/` and `work/`: three `mkdir`s when the
/// job's directory exists (every run but its job's first). Blocking.
fn prepare_dirs(paths: &RunPaths) -> std::io::Result<()> {
    match std::fs::create_dir(&paths.run_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&paths.run_dir)?
        }
        // A run id executes once, so what is there is another ledger's (a data directory used
        // with a new database): removed, never followed (a link is removed itself, and
        // `remove_dir_all` does not follow links inside), and the run starts empty.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(&paths.run_dir)?.is_dir() {
                std::fs::remove_dir_all(&paths.run_dir)?;
            } else {
                std::fs::remove_file(&paths.run_dir)?;
            }
            tracing::warn!(dir = %paths.run_dir.display(), "removed a run directory left by another ledger");
            std::fs::create_dir(&paths.run_dir)?
        }
        other => other?,
    }
    for dir in [&paths.result_dir, &paths.work_dir] {
        match std::fs::create_dir(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            other => other?,
        }
    }
    Ok(())
}

/// Records the audit event of a cancel (if one is still to be recorded) with the run's status.
fn record_cancel(
    tx: &dyn Ledger,
    pending: Option<store::audit::Event>,
    run_id: i64,
    was: &str,
) -> Result<(), ServiceError> {
    if let Some(event) = pending {
        let event = event.object("RUN", run_id).detail("status", was);
        tx.record_audit(&event, now_ms())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_starts_in_an_empty_directory_whatever_another_ledger_left_there() {
        let data = tempfile::tempdir().unwrap();
        let paths = RunPaths::new(data.path(), RunOfJob::new(JobId(3), RunId(7)));
        // Another ledger's run 7: its log, a result, and a link out of the data directory.
        let outside = data.path().join("outside.txt");
        std::fs::write(&outside, "keep me").unwrap();
        std::fs::create_dir_all(&paths.result_dir).unwrap();
        std::fs::write(&paths.log, "an old log\n").unwrap();
        std::fs::write(paths.result_dir.join("old.csv"), "old").unwrap();
        std::os::unix::fs::symlink(&outside, paths.run_dir.join("link")).unwrap();
        prepare_dirs(&paths).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(&paths.run_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["result", "work"]);
        assert_eq!(std::fs::read_dir(&paths.result_dir).unwrap().count(), 0);
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep me");

        // A link where the run's directory belongs is removed, never followed.
        let elsewhere = data.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("theirs"), "x").unwrap();
        std::fs::remove_dir_all(&paths.run_dir).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &paths.run_dir).unwrap();
        prepare_dirs(&paths).unwrap();
        assert!(std::fs::symlink_metadata(&paths.run_dir).unwrap().is_dir());
        assert_eq!(
            std::fs::read_to_string(elsewhere.join("theirs")).unwrap(),
            "x"
        );
    }
}
