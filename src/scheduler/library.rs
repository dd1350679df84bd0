//! The tokio-cron-scheduler `JobScheduler` that fires labcron's scheduled runs, used in the one
//! way that avoids each of its known problems. It only ever holds one-shot entries
//! (`Job::new_one_shot_at_instant_async`) at instants the driver computed with our own `next_fire`,
//! so the library's cron parser and its frozen-offset time zones are never used. Its ticker polls
//! every 500 ms and stores instants as whole seconds, so an entry is registered `EARLY_BY_MS`
//! before the instant; its closure reports `Fired` to the driver at once, and the driver waits for
//! the exact millisecond. The entries' code lives in a code map of labcron's own (`OwnCode`): an
//! entry's code goes in before its schedule is added and comes out only when the driver removes
//! the entry, because the library's own map, kept by tasks of its own, lost the code of entries
//! that were due at once (see `OwnCode`). Its actors talk over broadcast channels whose loops
//! stop, or drop messages, when a channel lags, so the channels are sized above the number of
//! entries (`channel_capacity`), and every call into it has a time limit: a library that stops
//! answering makes the driver fail, and the watchdog starts a fresh one.
//!
//! This module owns the library instance: starting it, registering and removing entries, counting
//! what it holds (its metadata store, shared with us, and the code map labcron keeps for it), and
//! shutting it down so that every task it spawned ends (see `Library::start`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{RwLock, mpsc};
use tokio_cron_scheduler::job::job_data::JobStoredData;
use tokio_cron_scheduler::job::{JobCreator, JobDeleter};
use tokio_cron_scheduler::{
    Context, Job, JobCode, JobScheduler, JobSchedulerError, JobToRunAsync, PinnedGetFuture,
    SimpleMetadataStore, SimpleNotificationCode, SimpleNotificationStore, ToCode,
};
use uuid::Uuid;

use crate::clock::now_ms;

/// The library's own default channel size (`JobScheduler::new`).
pub const LIBRARY_DEFAULT_CHANNEL: usize = 200;
/// The smallest channel size labcron gives the library.
const MIN_CHANNEL: usize = 1024;
/// How long before its instant an entry is due in the library. The library fires an entry up to
/// 2 s before the instant passed to it (it floors to whole seconds twice) and up to 500 ms plus
/// its own processing after it; 2 s early leaves over a second of slack on a loaded machine.
pub const EARLY_BY_MS: i64 = 2_000;
/// The longest a call into the library may take before the library counts as stuck.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A fire reported by an entry's closure when the library fires it (early, by design): the
/// driver waits for the exact instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    pub job_id: i64,
    pub instant_ms: i64,
}

/// What the library holds: entries in its metadata store and closures in its job-code map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    pub entries: usize,
    pub closures: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("tokio-cron-scheduler: {0}")]
    Library(#[from] tokio_cron_scheduler::JobSchedulerError),
    #[error("tokio-cron-scheduler did not answer a {0} within {CALL_TIMEOUT:?}")]
    Timeout(&'static str),
}

type CodeMap = HashMap<Uuid, Arc<RwLock<Box<JobToRunAsync>>>>;

/// The library's job-code store, kept by labcron: `Library::register` puts an entry's code in
/// before its schedule and `Library::remove` takes it out; the library only reads it. Its own
/// store (`SimpleJobCode`) adds and drops code in two tasks of its own, listening to the entries'
/// creations and deletions, while its ticker deletes a fired one-shot's schedule 500 ms after
/// activating it and hands the activation to the runner in a task of its own. On a loaded
/// machine the activation could reach the runner after that deletion had dropped the code: the
/// entry's fire was lost ("Error getting … from job code"), the driver's stall check restarted
/// the loop with a fresh `JobScheduler` (every job missing an instant), and the old instance's
/// tasks, which then never ended (see `init_actors`), kept about 4 MB (seen in `fire_memory` with
/// the machine's load above 8: 145 lost fires at once). With this store the code outlives the
/// library's deletion.
struct OwnCode {
    map: Arc<RwLock<CodeMap>>,
}

impl ToCode<Box<JobToRunAsync>> for OwnCode {
    fn init(
        &mut self,
        context: &tokio_cron_scheduler::Context,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), JobSchedulerError>> + Send>>
    {
        // Only `Library` changes the map. But the library's deleter logs an error for every
        // deletion nobody listens to (a line per fire), and the store it replaces was that
        // listener, so the deletions are received here and ignored.
        let mut deletions = context.job_deleted_tx.subscribe();
        Box::pin(async move {
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                // Until the library's channels close (never, while its tasks live).
                while let Ok(_) | Err(RecvError::Lagged(_)) = deletions.recv().await {}
            });
            Ok(())
        })
    }

    fn get(&mut self, uuid: Uuid) -> PinnedGetFuture<Box<JobToRunAsync>> {
        let map = self.map.clone();
        Box::pin(async move { Ok(map.read().await.get(&uuid).cloned()) })
    }
}

impl JobCode for OwnCode {}

/// Channel size for a library holding `entries` entries: every fire of a burst puts one message
/// on the activation channel, three on the notification channel and one on the deletion channel,
/// so four times the entries, never less than `MIN_CHANNEL`, rounded to a power of two (the size
/// tokio's broadcast channel allocates anyway).
pub fn channel_capacity(entries: usize) -> usize {
    entries
        .saturating_mul(4)
        .max(MIN_CHANNEL)
        .next_power_of_two()
}

/// One running `JobScheduler`. `shutdown` (or dropping it) stops its ticker; once its last handle
/// is gone, every task it spawned ends.
pub struct Library {
    scheduler: JobScheduler,
    entries: Arc<RwLock<HashMap<Uuid, JobStoredData>>>,
    code: Arc<RwLock<CodeMap>>,
    ticker_stop: Arc<AtomicBool>,
    capacity: usize,
    fired: mpsc::UnboundedSender<Fired>,
}

impl Library {
    /// Starts a `JobScheduler` with channels of `capacity`; its entries report to `fired`.
    pub async fn start(
        capacity: usize,
        fired: mpsc::UnboundedSender<Fired>,
    ) -> Result<Library, LibraryError> {
        let store = SimpleMetadataStore::default();
        let entries = store.data.clone();
        let code_map = Arc::new(RwLock::new(CodeMap::new()));
        let code = OwnCode {
            map: code_map.clone(),
        };
        let scheduler = JobScheduler::new_with_storage_and_code(
            Box::new(store),
            Box::new(SimpleNotificationStore::default()),
            Box::new(code),
            Box::new(SimpleNotificationCode::default()),
            capacity,
        )
        .await?;
        init_actors(&scheduler).await?;
        let ticker_stop = scheduler.scheduler.read().await.shutdown.clone();
        scheduler.start().await?;
        Ok(Library {
            scheduler,
            entries,
            code: code_map,
            ticker_stop,
            capacity,
            fired,
        })
    }

    /// Stops the library's ticker (`JobScheduler::shutdown`). Its other tasks end when the last
    /// handle of this instance goes (they wait on channels whose senders it holds); activations
    /// already sent still reach their closures, which report to the same driver.
    pub async fn shutdown(&self) {
        let mut scheduler = self.scheduler.clone();
        if tokio::time::timeout(CALL_TIMEOUT, scheduler.shutdown())
            .await
            .is_err()
        {
            // It only sets the flag, behind the ticker's lock; the flag is set here either way.
            tracing::warn!("tokio-cron-scheduler's shutdown did not answer; stopping its ticker");
        }
        self.ticker_stop.store(true, Ordering::Relaxed);
    }

    /// The instance's context, which only the instance (and, before, its tasks) holds: it is
    /// freed once the instance and every task it spawned are gone.
    #[cfg(test)]
    pub fn context_weak(&self) -> std::sync::Weak<Context> {
        Arc::downgrade(&self.scheduler.context())
    }

    /// The channel size this instance was started with.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Registers a one-shot entry that reports `Fired` for `job_id` at `instant_ms`.
    pub async fn register(&self, job_id: i64, instant_ms: i64) -> Result<Uuid, LibraryError> {
        let lead = (instant_ms - EARLY_BY_MS - now_ms()).max(0) as u64;
        let due = std::time::Instant::now() + Duration::from_millis(lead);
        let report = |fired: mpsc::UnboundedSender<Fired>| {
            move |_id: Uuid,
                  _scheduler: JobScheduler|
                  -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
                // Reported at once, so the library's own work after a fire (several task
                // hand-offs and a `Done` notification per fire) is over long before the instant.
                let _ = fired.send(Fired { job_id, instant_ms });
                Box::pin(std::future::ready(()))
            }
        };
        let job = Job::new_one_shot_at_instant_async(due, report(self.fired.clone()))?;
        let id = job.guid();
        // The code goes in first: an entry due at once (every fire of an every-second job: its
        // instant is nearer than `EARLY_BY_MS`) can be activated as soon as its schedule is
        // stored. The library's own copy of the code (sent with the creation) is not kept:
        // `OwnCode` has no listener, and this closure is the same one.
        let code: Box<JobToRunAsync> = Box::new(report(self.fired.clone()));
        self.code
            .write()
            .await
            .insert(id, Arc::new(RwLock::new(code)));
        // `JobCreator::add` is what `JobScheduler::add` calls, without its info-level log line
        // per entry.
        let context = self.scheduler.context();
        let added = tokio::time::timeout(CALL_TIMEOUT, JobCreator::add(&context, job))
            .await
            .map_err(|_| LibraryError::Timeout("registration"))
            .and_then(|added| added.map_err(LibraryError::from));
        if added.is_err() {
            self.code.write().await.remove(&id);
        }
        added
    }

    /// Removes an entry (a no-op for the schedule when the library already deleted it after
    /// firing it) and its code.
    pub async fn remove(&self, entry: Uuid) -> Result<(), LibraryError> {
        let context = self.scheduler.context();
        let removed = tokio::time::timeout(CALL_TIMEOUT, JobDeleter::remove(&context, &entry))
            .await
            .map_err(|_| LibraryError::Timeout("removal"))
            .and_then(|removed| removed.map_err(LibraryError::from));
        self.code.write().await.remove(&entry);
        removed
    }

    /// What the library holds right now.
    pub async fn held(&self) -> Held {
        Held {
            entries: self.entries.read().await.len(),
            closures: self.code.read().await.len(),
        }
    }
}

/// Starts the library's actors as `JobScheduler::init` does, but hands its job runner a handle of
/// its own instead of a clone of `scheduler`. `init` gives the runner a clone of the whole
/// `JobScheduler` (for the closures' second argument, which labcron's closures ignore), and that
/// clone holds the context with every channel's sender, the runner's own activation channel
/// among them: no task could ever see its channel close, so each instance's dozen tasks and
/// channels outlived it (3.9 MB after one restart of the driver's loop in `fire_memory`). With a
/// runner handle that shares none of those senders, the ticker ends at shutdown, the instance's
/// context goes with its last `JobScheduler`, and each task ends when its channel closes. The
/// order of the actors is `init`'s.
async fn init_actors(scheduler: &JobScheduler) -> Result<(), JobSchedulerError> {
    let context = scheduler.context();
    scheduler.inited.store(true, Ordering::Relaxed);
    scheduler.job_creator.write().await.init(&context).await?;
    scheduler.job_deleter.write().await.init(&context).await?;
    scheduler
        .notification_creator
        .write()
        .await
        .init(&context)
        .await?;
    scheduler
        .notification_deleter
        .write()
        .await
        .init(&context)
        .await?;
    scheduler
        .notification_runner
        .write()
        .await
        .init(&context)
        .await?;
    scheduler
        .job_runner
        .write()
        .await
        .init(&context, runner_handle(&context))
        .await?;
    scheduler.scheduler.write().await.init(&context).await;
    Ok(())
}

/// The `JobScheduler` the job runner passes to the closures: the same stores, but channels of
/// its own that nothing listens to, and no actors. It keeps no sender of the instance alive.
fn runner_handle(context: &Context) -> JobScheduler {
    JobScheduler {
        context: Arc::new(Context::new_with_channel_size(
            context.metadata_storage.clone(),
            context.notification_storage.clone(),
            context.job_code.clone(),
            context.notification_code.clone(),
            1,
        )),
        inited: Arc::new(AtomicBool::new(true)),
        job_creator: Default::default(),
        job_deleter: Default::default(),
        job_runner: Default::default(),
        notification_creator: Default::default(),
        notification_deleter: Default::default(),
        notification_runner: Default::default(),
        scheduler: Default::default(),
        shutdown_notifier: None,
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        // `JobScheduler::shutdown` only sets this flag; setting it here needs no runtime.
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// A log layer that drops the error tokio-cron-scheduler logs when one of its tasks sees its
/// channel closed ("Error receiving … Closed"): that is how each of its tasks ends once its
/// instance is gone (at every stop of the server and every restart of the driver's loop), not a
/// fault. Every other line of the library, a lagged channel's among them, passes.
pub struct QuietLibraryEnds;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for QuietLibraryEnds {
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let meta = event.metadata();
        if *meta.level() != tracing::Level::ERROR
            || !meta.target().starts_with("tokio_cron_scheduler")
        {
            return true;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        !(message.0.starts_with("Error receiving") && message.0.ends_with("Closed"))
    }
}

/// An event's `message` field, as text.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the library holds once it has caught up: it deletes a fired one-shot's schedule in a
    /// task of its own, so look again for up to two seconds.
    async fn settled(library: &Library, expected: Held) -> Held {
        let mut held = library.held().await;
        for _ in 0..100 {
            if held == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            held = library.held().await;
        }
        held
    }
    #[test]
    fn channels_are_sized_above_four_times_the_entries() {
        assert_eq!(channel_capacity(0), MIN_CHANNEL);
        assert!(channel_capacity(0) > LIBRARY_DEFAULT_CHANNEL);
        assert_eq!(channel_capacity(2_000), 8_192);
        for entries in [1, 255, 256, 257, 5_000, 10_000] {
            let capacity = channel_capacity(entries);
            assert!(capacity >= 4 * entries && capacity.is_power_of_two());
        }
    }

    /// A burst five times the library's default channel size, all entries at the same instant:
    /// every one fires once, and the library ends up holding nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_larger_than_the_default_channel_fires_every_entry_once() {
        const BURST: usize = 5 * LIBRARY_DEFAULT_CHANNEL;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let library = Library::start(channel_capacity(BURST), tx).await.unwrap();
        let instant_ms = (now_ms() / 1000 + 4) * 1000;
        let mut ids = Vec::new();
        for job_id in 0..BURST as i64 {
            ids.push(library.register(job_id, instant_ms).await.unwrap());
        }
        assert_eq!(library.held().await.entries, BURST);
        let mut seen = std::collections::HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < BURST {
            let fired = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {BURST} entries fired", seen.len()))
                .unwrap();
            assert_eq!(fired.instant_ms, instant_ms);
            assert!(
                seen.insert(fired.job_id),
                "job {} fired twice",
                fired.job_id
            );
        }
        // Nothing else arrives: each entry fired once.
        assert!(
            tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .is_err()
        );
        for id in ids {
            library.remove(id).await.unwrap();
        }
        assert_eq!(settled(&library, Held::default()).await, Held::default());
    }

    /// An entry's code is in the library's code map before its schedule is in the metadata store
    /// (the library drops an entry it finds due without code): with the code map held, a
    /// registration stores nothing until it is released, then fires.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_entrys_code_is_stored_before_its_schedule() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let library = Arc::new(Library::start(channel_capacity(1), tx).await.unwrap());
        let held = library.code.clone().write_owned().await;
        // Nearer than the early margin: due in the library at once.
        let instant_ms = now_ms() + 1_000;
        let registering = {
            let library = library.clone();
            tokio::spawn(async move { library.register(7, instant_ms).await })
        };
        // Watched for longer than two of the library's ticks (it deletes a fired one-shot's
        // schedule, so one look at the end would not do).
        let watch_until = tokio::time::Instant::now() + Duration::from_millis(1_500);
        while tokio::time::Instant::now() < watch_until {
            assert!(
                library.entries.read().await.is_empty(),
                "the schedule was stored while its code could not be"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(held);
        registering.await.unwrap().unwrap();
        let fired = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the entry fires once its code is stored")
            .unwrap();
        assert_eq!(
            fired,
            Fired {
                job_id: 7,
                instant_ms
            }
        );
    }

    /// An activation that reaches the library's runner late, after the library has already
    /// deleted the fired one-shot's schedule (its ticker does so 500 ms after activating it, and
    /// on a loaded machine the runner can be further behind), still finds the entry's code and
    /// fires. The runner is held back by holding the lock it takes before looking the code up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_activation_still_finds_the_code_after_the_library_deleted_the_entry() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let library = Library::start(channel_capacity(1), tx).await.unwrap();
        let context = library.scheduler.context();
        let runner_held = context.job_code.write().await;
        // Nearer than the early margin: due in the library at once.
        let instant_ms = now_ms() + 1_000;
        library.register(7, instant_ms).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !library.entries.read().await.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the library never deleted the activated one-shot"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(rx.try_recv().is_err(), "fired while the runner was held");
        drop(runner_held);
        let fired = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("the late activation found no code")
            .unwrap();
        assert_eq!(
            fired,
            Fired {
                job_id: 7,
                instant_ms
            }
        );
        // The code stays until the driver removes the entry, then goes.
        assert_eq!(library.held().await.closures, 1);
        let id = *library.code.read().await.keys().next().unwrap();
        library.remove(id).await.unwrap();
        assert_eq!(library.held().await, Held::default());
    }

    /// The library's deleter reports every deletion on a broadcast and logs an error for each
    /// one nobody receives (a line per fire); `OwnCode` is that receiver.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_librarys_deletions_have_a_receiver() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let library = Library::start(channel_capacity(1), tx).await.unwrap();
        let context = library.scheduler.context();
        assert!(context.job_deleted_tx.receiver_count() >= 1);
        assert!(context.job_deleted_tx.send(Ok(Uuid::new_v4())).is_ok());
    }

    /// Entries due at once (instants nearer than the early margin, as every fire of an
    /// every-second job is) all fire. Three rounds of a thousand.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_due_at_once_all_fire() {
        const ENTRIES: i64 = 1_000;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let library = Library::start(channel_capacity(ENTRIES as usize), tx)
            .await
            .unwrap();
        for round in 0..3 {
            let instant_ms = now_ms() + 1_000;
            for job_id in 0..ENTRIES {
                library.register(job_id, instant_ms).await.unwrap();
            }
            let mut seen = std::collections::HashSet::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while seen.len() < ENTRIES as usize {
                let fired = tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("round {round}: only {} of {ENTRIES} fired", seen.len())
                    })
                    .unwrap();
                if fired.instant_ms == instant_ms {
                    seen.insert(fired.job_id);
                }
            }
        }
    }

    /// An entry due later than the early margin waits in the library, then fires before its
    /// instant (by at most the margin plus a tick); a removed one never fires.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_entry_fires_early_by_the_margin_and_a_removed_one_never_does() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let library = Library::start(channel_capacity(2), tx).await.unwrap();
        let instant_ms = now_ms() + 6_000;
        library.register(1, instant_ms).await.unwrap();
        let removed = library.register(2, instant_ms).await.unwrap();
        library.remove(removed).await.unwrap();
        let expected = Held {
            entries: 1,
            closures: 1,
        };
        assert_eq!(settled(&library, expected).await, expected);
        let fired = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            fired,
            Fired {
                job_id: 1,
                instant_ms
            }
        );
        assert!(
            now_ms() < instant_ms,
            "the library fires early; the driver waits for the instant"
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(3), rx.recv())
                .await
                .is_err(),
            "the removed entry fired"
        );
    }

    /// A shut-down instance leaves nothing running: after entries went through every actor
    /// (registered, fired, removed), `shutdown` and dropping the last handle end every task the
    /// library spawned (the runtime's count of alive tasks is back where it was before it
    /// started) and free its context, which only the instance holds. With the library's own
    /// `init`, its job runner kept the context, and every task, alive for good.
    #[test]
    fn a_shut_down_library_leaves_no_task_behind() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let metrics = tokio::runtime::Handle::current().metrics();
            let before = metrics.num_alive_tasks();
            let (tx, mut rx) = mpsc::unbounded_channel();
            let library = Library::start(channel_capacity(10), tx).await.unwrap();
            let instant_ms = now_ms() + 1_000;
            let mut ids = Vec::new();
            for job_id in 0..10 {
                ids.push(library.register(job_id, instant_ms).await.unwrap());
            }
            for _ in 0..10 {
                tokio::time::timeout(Duration::from_secs(30), rx.recv())
                    .await
                    .expect("the entries fire")
                    .unwrap();
            }
            for id in ids {
                library.remove(id).await.unwrap();
            }
            assert!(
                metrics.num_alive_tasks() > before,
                "the library runs tasks of its own"
            );
            let context = Arc::downgrade(&library.scheduler.context());
            library.shutdown().await;
            drop(library);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while context.strong_count() > 0 || metrics.num_alive_tasks() > before {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} tasks alive ({before} before the library started), its context {}",
                    metrics.num_alive_tasks(),
                    if context.strong_count() > 0 {
                        "still held"
                    } else {
                        "freed"
                    }
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }

    /// Captures the ERROR events that reach it.
    #[derive(Clone, Default)]
    struct Errors(Arc<std::sync::Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Errors {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if *event.metadata().level() == tracing::Level::ERROR {
                let mut message = Message(String::new());
                event.record(&mut message);
                self.0.lock().unwrap().push(message.0);
            }
        }
    }

    /// The ends of a shut-down instance's tasks log nothing at ERROR through `QuietLibraryEnds`
    /// (each of them logs "Error receiving … Closed" as it ends; the test waits until they all
    /// ended), while the library's other errors still pass. One thread runs everything, so the
    /// library's tasks log to this test's subscriber.
    #[test]
    fn the_ends_of_the_librarys_tasks_are_not_logged_as_errors() {
        use tracing_subscriber::layer::SubscriberExt;
        let errors = Errors::default();
        let subscriber = tracing_subscriber::registry()
            .with(QuietLibraryEnds)
            .with(errors.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            runtime.block_on(async {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let library = Library::start(channel_capacity(1), tx).await.unwrap();
                let id = library.register(1, now_ms() + 1_000).await.unwrap();
                tokio::time::timeout(Duration::from_secs(30), rx.recv())
                    .await
                    .expect("the entry fires")
                    .unwrap();
                library.remove(id).await.unwrap();
                let context = library.context_weak();
                library.shutdown().await;
                drop(library);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while context.strong_count() > 0
                    || tokio::runtime::Handle::current()
                        .metrics()
                        .num_alive_tasks()
                        > 0
                {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the tasks did not end"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            tracing::error!(
                target: "tokio_cron_scheduler::job::runner",
                "Error getting {:?} from job code",
                Uuid::nil()
            );
        });
        let errors = errors.0.lock().unwrap().clone();
        assert_eq!(
            errors,
            vec![format!("Error getting {:?} from job code", Uuid::nil())]
        );
    }
}
