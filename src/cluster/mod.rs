//! Several labcron nodes sharing one PostgreSQL ledger: this node's membership. At start-up it
//! registers `(name, new incarnation)` in the ledger's `nodes` (refusing to start while another
//! live process holds the name); then every `HEARTBEAT` (5 s, less for short timeouts) it writes
//! its heartbeat (the database's clock stamps it, never this machine's), and declares lost every
//! node silent for longer than `node_timeout_seconds`, failing their IN_PROGRESS runs "node <name>
//! lost" through the follow-ups of a run's end (a node silent for half that long already loses
//! the firing lock: `firing_silence`). When its own heartbeat finds it was declared lost
//! (it was cut off from the database for too long), it kills what it still runs without writing
//! their outcome, fails what it claimed since, and registers again. When instead another process
//! took its name over (this one was frozen or cut off, and a new one started under the name), it
//! kills what it runs without writing their outcome and stops the server with an error: the name
//! is the other's now, and taking it back would fail that one's runs. A node that has written no
//! heartbeat for longer than the timeout (cut off from the database) fences itself: it kills its
//! runs' processes, as the others may have failed those runs and retried them elsewhere. Every
//! `CANCEL_POLL` it looks for cancels of its runs asked through other nodes. A task of its own
//! holds (or tries to take) the firing lock, and the scheduler fires only while this node holds
//! it; each fire checks again in its own transaction (`NodeLedger::still_fires`). On SQLite there
//! is one node: none of this runs, and the scheduler always fires.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::ServiceError;
use crate::executor::Executor;
use crate::scheduler::Scheduler;
use crate::store::Db;

/// How often a node writes its heartbeat (and looks for lost nodes), at most: a third of
/// `node_timeout_seconds` when that is shorter, so a live node always beats at least twice within
/// the timeout.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// The heartbeat interval for a node timeout.
pub fn heartbeat_every(timeout: Duration) -> Duration {
    (timeout / 3).clamp(Duration::from_secs(1), HEARTBEAT)
}

/// The silence after which a node loses the firing lock, before it is declared lost: half the
/// timeout, and at least two and a half heartbeats (a busy node that beats late keeps it). With
/// the default 30 s, 15 s, so a hung firing node is replaced within about 22 s (plus one
/// heartbeat of the noticing node and one check of the lock), not after the whole timeout.
pub fn firing_silence(timeout: Duration) -> Duration {
    (timeout / 2).max(heartbeat_every(timeout) * 5 / 2)
}
/// How often a node looks for cancels of its runs asked through another node.
const CANCEL_POLL: Duration = Duration::from_secs(1);
/// How often the firing lock is checked (held) or tried (not held): a dead holder is replaced
/// within about this long once the database has noticed its connection is gone.
pub const FIRING_LOCK_POLL: Duration = Duration::from_secs(2);

/// This node's membership of the cluster.
pub struct Node {
    db: Db,
    name: String,
    incarnation: std::sync::Mutex<String>,
    timeout: Duration,
    stop: CancellationToken,
    /// Whether this node holds the firing lock (the scheduler's gate).
    firing: watch::Sender<bool>,
    lock_task_done: Arc<AtomicBool>,
    /// Set (with the reason) when another process took this node's name over: the server stops.
    replaced: watch::Sender<Option<String>>,
}

impl Node {
    /// Registers this node in the ledger under `name` with a new incarnation. Refuses when
    /// another live process beats under the same name: its heartbeat is watched for a little
    /// longer than a heartbeat interval, and a new beat means it is alive (a node that crashed
    /// moments ago stays silent, and this start takes its name over). Blocking.
    pub fn join(db: &Db, name: &str, timeout: Duration) -> Result<Arc<Node>, ServiceError> {
        let (firing, _) = watch::channel(!db.is_shared());
        let node = Node {
            db: db.clone(),
            name: name.to_string(),
            incarnation: std::sync::Mutex::new(String::new()),
            timeout,
            stop: CancellationToken::new(),
            firing,
            lock_task_done: Arc::new(AtomicBool::new(false)),
            replaced: watch::channel(None).0,
        };
        if db.is_shared() {
            node.refuse_a_live_namesake()?;
            node.register()?;
        }
        Ok(Arc::new(node))
    }

    /// The node's name (what `runs.node` records).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Becomes `Some(why)` when another process took this node's name over: the server must
    /// stop (its runs are killed already, their outcomes not written).
    pub fn replaced(&self) -> watch::Receiver<Option<String>> {
        self.replaced.subscribe()
    }

    fn incarnation(&self) -> String {
        self.incarnation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn refuse_a_live_namesake(&self) -> Result<(), ServiceError> {
        let name = self.name.clone();
        let Some(first) = self.db.read_sync(move |l| l.node(&name))? else {
            return Ok(());
        };
        if first.lost || first.silent_ms > self.timeout.as_millis() as i64 {
            return Ok(());
        }
        let watch_until = Instant::now() + heartbeat_every(self.timeout) + Duration::from_secs(2);
        while Instant::now() < watch_until {
            std::thread::sleep(Duration::from_millis(500));
            let name = self.name.clone();
            let Some(now) = self.db.read_sync(move |l| l.node(&name))? else {
                return Ok(());
            };
            if now.lost {
                return Ok(());
            }
            if now.incarnation != first.incarnation || now.silent_ms < first.silent_ms {
                return Err(ServiceError::Internal(anyhow::anyhow!(
                    "another labcron node named `{}` is running on this database (its heartbeat \
                     is {} ms old): give this one another name (setting `node_name`, \
                     --node-name), or stop the other first",
                    self.name,
                    now.silent_ms
                )));
            }
        }
        tracing::warn!(
            node = %self.name,
            "a node of this name stopped beating moments ago (a crash?): taking its name over"
        );
        Ok(())
    }

    /// Registers a new incarnation and makes the ledger write ends under it. Blocking.
    fn register(&self) -> Result<(), ServiceError> {
        let incarnation = uuid::Uuid::new_v4().to_string();
        let (name, inc) = (self.name.clone(), incarnation.clone());
        self.db.write_sync(move |l| l.register_node(&name, &inc))?;
        self.db.set_node(&self.name, &incarnation);
        *self.incarnation.lock().unwrap_or_else(|p| p.into_inner()) = incarnation;
        tracing::info!(node = %self.name, "registered in the cluster");
        Ok(())
    }

    /// Starts the heartbeat, the cancel poll and the firing lock's task, and the scheduler
    /// gated on the lock. On SQLite, only the scheduler (always firing).
    pub fn start(self: &Arc<Self>, executor: Executor, scheduler: &Scheduler) {
        scheduler.start_when(self.firing.subscribe());
        if !self.db.is_shared() {
            return;
        }
        let node = self.clone();
        let beating = executor.clone();
        tokio::spawn(async move { node.heartbeat_loop(beating).await });
        let node = self.clone();
        tokio::spawn(async move { node.cancel_loop(executor).await });
        let node = self.clone();
        tokio::spawn(async move { node.firing_lock_loop().await });
    }

    /// Stops the loops, lets the firing lock go and marks the node gone (a clean shutdown: the
    /// others need not wait `node_timeout_seconds` to know). Call after the runs have stopped.
    pub async fn leave(&self) {
        self.stop.cancel();
        if !self.db.is_shared() {
            return;
        }
        let deadline = Instant::now() + FIRING_LOCK_POLL * 3;
        while !self.lock_task_done.load(Ordering::Relaxed) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (name, incarnation) = (self.name.clone(), self.incarnation());
        if let Err(e) = self
            .db
            .write(move |l| l.node_left(&name, &incarnation))
            .await
        {
            tracing::warn!(error = %e, "could not mark this node gone in the ledger");
        }
    }

    async fn heartbeat_loop(self: Arc<Self>, executor: Executor) {
        // Since when this node's heartbeats have been written without a gap: only a node that has
        // itself been beating for a whole timeout may call another silent (after the database
        // was down, every node was silent, and none must fail the others' runs for it).
        let mut beating_since: Option<Instant> = None;
        // When its last heartbeat was written, and whether it has fenced itself since.
        let (mut last_beat, mut fenced) = (Instant::now(), false);
        let mut tick = tokio::time::interval(heartbeat_every(self.timeout));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop.cancelled() => return,
            }
            match self.beat(&executor, &mut beating_since).await {
                Ok(()) => (last_beat, fenced) = (Instant::now(), false),
                Err(e) => {
                    beating_since = None;
                    tracing::warn!(error = %e, "could not write this node's heartbeat; retrying");
                    // Silent for longer than the timeout, this node may have been declared lost
                    // and its runs failed and retried elsewhere: it fences itself (kills their
                    // processes) so that no job's run executes twice. Their ends are written
                    // when the database is back, unless another node has decided them already.
                    if !fenced && last_beat.elapsed() > self.timeout {
                        fenced = true;
                        if executor.running_count() > 0 {
                            tracing::error!(
                                node = %self.name,
                                "no heartbeat written for longer than node_timeout_seconds: \
                                 killing this node's runs (the others may declare it lost)"
                            );
                            executor
                                .abandon_runs(&format!(
                                    "node {} cut off from the database for longer than \
                                     node_timeout_seconds",
                                    self.name
                                ))
                                .await;
                        }
                    }
                }
            }
        }
    }

    async fn beat(
        self: &Arc<Self>,
        executor: &Executor,
        beating_since: &mut Option<Instant>,
    ) -> Result<(), ServiceError> {
        let (name, incarnation) = (self.name.clone(), self.incarnation());
        let alive = self
            .db
            .write(move |l| l.node_heartbeat(&name, &incarnation))
            .await?;
        if !alive {
            *beating_since = None;
            // Declared lost (this incarnation still holds the name, marked lost): it may join
            // again. Anything else (another incarnation holds the name) is a takeover.
            let name = self.name.clone();
            let now = self.db.read(move |l| l.node(&name)).await?;
            let mine = self.incarnation();
            if now.is_some_and(|n| n.lost && n.incarnation == mine) {
                if !self.rejoin(executor).await? {
                    self.step_down(executor).await;
                }
            } else {
                self.step_down(executor).await;
            }
            return Ok(());
        }
        let since = *beating_since.get_or_insert_with(Instant::now);
        // Like a declaration, only from a node that has itself been beating long enough.
        let silence = firing_silence(self.timeout);
        if since.elapsed() >= silence {
            let silence_ms = silence.as_millis() as i64;
            let ended = self
                .db
                .write(move |l| l.end_firing_of_silent_nodes(silence_ms))
                .await?;
            for node in ended {
                tracing::warn!(node = %node, "a silent node's firing-lock connection was ended: another node fires");
            }
        }
        if since.elapsed() < self.timeout {
            return Ok(());
        }
        let timeout_ms = self.timeout.as_millis() as i64;
        let lost = self
            .db
            .write(move |l| l.declare_silent_nodes_lost(timeout_ms))
            .await?;
        for node in lost {
            let failed = executor.fail_runs_of_lost_node(&node).await?;
            tracing::warn!(node = %node, runs = failed, "declared a silent node lost; its runs FAILED");
        }
        Ok(())
    }

    /// This node was declared lost: its runs were failed by another; it stops them without
    /// writing their outcome, fails what it claimed after the declaration, and registers again,
    /// only while its lost incarnation still holds the name (false: another process took it).
    async fn rejoin(self: &Arc<Self>, executor: &Executor) -> Result<bool, ServiceError> {
        tracing::error!(
            node = %self.name,
            "this node was declared lost (no heartbeat for longer than node_timeout_seconds): \
             killing its runs and joining again"
        );
        let reason = format!("node {} lost", self.name);
        executor.abandon_runs(&reason).await;
        executor.fail_runs_of_lost_node(&self.name).await?;
        let incarnation = uuid::Uuid::new_v4().to_string();
        let (name, lost, new) = (self.name.clone(), self.incarnation(), incarnation.clone());
        if !self
            .db
            .write(move |l| l.rejoin_node(&name, &lost, &new))
            .await?
        {
            return Ok(false);
        }
        self.db.set_node(&self.name, &incarnation);
        *self.incarnation.lock().unwrap_or_else(|p| p.into_inner()) = incarnation;
        tracing::info!(node = %self.name, "registered in the cluster again");
        Ok(true)
    }

    /// Another process holds this node's name now: this one stops firing, kills its runs without
    /// writing their outcome (the ledger refuses them: the incarnation is not current) and has
    /// the server stop with an error. It never registers again.
    async fn step_down(&self, executor: &Executor) {
        let why = format!(
            "another labcron process took the node name `{}` over while this one was frozen or \
             cut off from the database: this process stops (its runs were killed, their outcomes \
             left to the ledger) and never takes the name back",
            self.name
        );
        tracing::error!(node = %self.name, "{why}");
        self.firing.send_replace(false);
        self.stop.cancel();
        executor
            .abandon_runs(&format!("node {} taken over", self.name))
            .await;
        self.replaced.send_replace(Some(why));
    }

    async fn cancel_loop(self: Arc<Self>, executor: Executor) {
        let mut tick = tokio::time::interval(CANCEL_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop.cancelled() => return,
            }
            if executor.running_count() == 0 {
                continue;
            }
            if let Err(e) = executor.act_on_cancels(&self.name).await {
                tracing::debug!(error = %e, "could not look for cancels asked elsewhere");
            }
        }
    }

    /// Holds the firing lock (or tries to take it) every `FIRING_LOCK_POLL`, on a blocking
    /// thread, and opens the scheduler's gate while it is held. A task, not a thread of its own:
    /// when the runtime ends (the server stops), the lock's connection ends with it.
    async fn firing_lock_loop(self: Arc<Self>) {
        let mut lock = Some(self.db.firing_lock());
        while !self.stop.is_cancelled() {
            let Some(mut taken) = lock.take() else { break };
            let Ok((returned, held)) = tokio::task::spawn_blocking(move || {
                let held = taken.hold();
                (taken, held)
            })
            .await
            else {
                break;
            };
            lock = Some(returned);
            let held = match held {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the firing lock; not firing meanwhile");
                    false
                }
            };
            self.firing.send_if_modified(|open| {
                let changed = *open != held;
                *open = held;
                changed
            });
            tokio::select! {
                _ = tokio::time::sleep(FIRING_LOCK_POLL) => {}
                _ = self.stop.cancelled() => {}
            }
        }
        self.firing.send_replace(false);
        if let Some(mut lock) = lock {
            let _ = tokio::task::spawn_blocking(move || lock.release()).await;
        }
        self.lock_task_done.store(true, Ordering::Relaxed);
    }
}
