//! The ledger's interface, engine-neutral: what the layers above may ask of the ledger, one trait
//! per area (runs, jobs, users, sessions, saved queries, audit, API tokens, maintenance), and
//! [`Ledger`], all of them at once. `Db::read` and `Db::write` hand a `&dyn Ledger` to their
//! closure: a read sees one consistent state, a write's calls are one all-or-nothing step. Every
//! method says *what* it does, never how; the SQL is the implementation's (`store::sqlite` now,
//! a PostgreSQL one later, which keeps its transaction in a `RefCell` behind the same `&self`).
//! No engine type appears here, and nothing borrows the connection past a call: lists come back
//! as `Vec`s.

use super::Error;
use super::api_tokens::ApiToken;
use super::audit::{Event, EventFilter, StoredEvent};
use super::jobs::JobFilter;
use super::runs::{AllRunsFilter, Enqueued, FollowUpRun, NewRun, Outcome, RunFilter};
use super::sessions::Session;
use super::users::NewUser;
use crate::domain::ids::{JobId, RunId, RunOfJob, UserId};
use crate::domain::job::{Job, JobDraft};
use crate::domain::run::{Run, RunStatus};
use crate::domain::saved_query::{SavedQuery, SavedQueryDraft};
use crate::domain::user::{SessionCutoffs, User};

/// Runs: acceptance, the dispatcher's claim, the end, cancelling, lists, recovery.
pub trait RunLedger {
    /// The run with this id, with its job's name.
    fn run(&self, run_id: i64) -> Result<Option<Run>, Error>;
    /// Accepts a QUEUED run unless it duplicates an earlier one (idempotency key or scheduled
    /// instant) or the job already has `max_queued` runs waiting. Checks and insert are one step.
    fn enqueue_run(&self, run: &NewRun, max_queued: i64, now: i64) -> Result<Enqueued, Error>;
    /// How many runs of the job have this status.
    fn count_runs_with_status(&self, job_id: i64, status: RunStatus) -> Result<i64, Error>;
    /// Whether the job has a run waiting or executing.
    fn job_busy(&self, job_id: i64) -> Result<bool, Error>;
    /// Starts up to `limit` runs: for each job with nothing in progress, its oldest QUEUED run
    /// whose time has come, recording `node` (this node's name) as the one executing them.
    /// Returns their ids, oldest first.
    fn claim_runnable(&self, node: &str, limit: usize, now: i64) -> Result<Vec<i64>, Error>;
    /// Records the end of an IN_PROGRESS run; false when it was no longer IN_PROGRESS.
    fn finish_run(&self, run_id: i64, outcome: &Outcome, now: i64) -> Result<bool, Error>;
    /// Fails a QUEUED run at once; false when it was not QUEUED any more.
    fn fail_queued_run(&self, run_id: i64, message: &str, now: i64) -> Result<bool, Error>;
    /// Fails every QUEUED run of a job (it is being deleted); returns how many.
    fn fail_queued_runs_of_job(&self, job_id: i64, message: &str, now: i64)
    -> Result<usize, Error>;
    /// The runs IN_PROGRESS, with their jobs, oldest first.
    fn runs_in_progress(&self) -> Result<Vec<RunOfJob>, Error>;
    /// Fails every IN_PROGRESS run with `message` (after a crash or at shutdown); how many.
    fn fail_runs_in_progress(&self, message: &str, now: i64) -> Result<usize, Error>;
    /// One page of a job's runs, newest first.
    fn list_runs(
        &self,
        filter: &RunFilter,
        start_at: i64,
        max_results: i64,
    ) -> Result<Vec<Run>, Error>;
    /// Records how much log a running run has written (so readers see progress).
    fn set_log_progress(&self, run_id: i64, log_size: i64, truncated: bool) -> Result<(), Error>;
    /// How many runs are QUEUED and how many IN_PROGRESS, across all jobs.
    fn active_run_counts(&self) -> Result<(i64, i64), Error>;
    /// Queues a retry or a chained run unless the job already has `max_queued` runs waiting.
    fn enqueue_follow_up(
        &self,
        run: &FollowUpRun,
        max_queued: i64,
        now: i64,
    ) -> Result<Enqueued, Error>;
    /// Records a follow-up run that could not be queued as FAILED at once, ending its series;
    /// returns its id.
    fn insert_refused_run(&self, run: &FollowUpRun, message: &str, now: i64) -> Result<i64, Error>;
    /// Notes who cancels a run that is still QUEUED or IN_PROGRESS (the first one to ask).
    fn mark_cancelled_by(&self, run_id: RunId, user_id: UserId) -> Result<(), Error>;
    /// Marks a finished run as the end of its series.
    fn set_series_end(&self, run_id: i64) -> Result<(), Error>;
    /// The status of the job's latest series end before run `before_id`.
    fn previous_series_end(&self, job_id: i64, before_id: i64) -> Result<Option<RunStatus>, Error>;
    /// One page of the runs of every job the filter allows, newest first.
    fn list_all_runs(
        &self,
        filter: &AllRunsFilter,
        start_at: i64,
        max_results: i64,
    ) -> Result<Vec<Run>, Error>;
    /// How many runs `list_all_runs` would return without paging.
    fn count_all_runs(&self, filter: &AllRunsFilter) -> Result<i64, Error>;
    /// The arguments last typed for a job (the newest MANUAL run with arguments among its last
    /// runs, `user_id`'s own first): (run id, arguments, whether `user_id` typed them).
    fn last_manual_args(
        &self,
        job_id: i64,
        user_id: i64,
    ) -> Result<Option<(i64, String, bool)>, Error>;
}

/// Jobs, their user lists and chains.
pub trait JobLedger {
    /// A job that is not deleted.
    fn live_job(&self, id: i64) -> Result<Option<Job>, Error>;
    /// The live job with this id, held until the write ends: a write that reads a job and then
    /// changes it or queues a run of it calls this first, so a change, Close or delete committed
    /// meanwhile by another writer is seen (it waits for that writer) and none lands after it.
    /// SQLite has one writer, so there it is `live_job`.
    fn job_for_update(&self, id: i64) -> Result<Option<Job>, Error>;
    /// A job whatever its status (runs of deleted jobs still need their job).
    fn job_even_deleted(&self, id: i64) -> Result<Option<Job>, Error>;
    /// Every job that is not deleted (for the scheduler).
    fn live_jobs(&self) -> Result<Vec<Job>, Error>;
    /// One page of the live jobs the filter allows, newest first.
    fn list_jobs(
        &self,
        filter: &JobFilter,
        start_at: i64,
        max_results: i64,
    ) -> Result<Vec<Job>, Error>;
    /// How many jobs `list_jobs` would return without paging.
    fn count_jobs(&self, filter: &JobFilter) -> Result<i64, Error>;
    /// Whether a live job other than `except_id` has this exact name.
    fn job_name_taken(&self, name: &str, except_id: Option<i64>) -> Result<bool, Error>;
    /// Whether the job is shared with the user.
    fn job_shared_with(&self, job_id: JobId, user_id: UserId) -> Result<bool, Error>;
    /// Whether the user is one of the job's notification recipients.
    fn job_recipient(&self, job_id: JobId, user_id: UserId) -> Result<bool, Error>;
    /// Stores a validated job and its user lists; returns the new id.
    fn insert_job(&self, draft: &JobDraft, created_by: i64, now: i64) -> Result<i64, Error>;
    /// Replaces every user-settable field of a job (PUT is a full replace).
    fn replace_job(&self, id: i64, draft: &JobDraft, now: i64) -> Result<(), Error>;
    /// The live jobs a job's series end queues for `on_result`, in the order given.
    fn chain_targets(&self, job_id: i64, on_result: &str) -> Result<Vec<i64>, Error>;
    /// The live jobs whose series end queues `job_id`, with the list they name it in.
    fn chain_sources(&self, job_id: i64) -> Result<Vec<(i64, String)>, Error>;
    /// Every chain edge between live jobs, except those leaving `except_job`.
    fn chain_edges(&self, except_job: Option<i64>) -> Result<Vec<(i64, i64)>, Error>;
    /// Holds the ledger-wide lock of chain edits until the write ends: a save that checks the
    /// chains for a cycle (`chain_edges`) and then stores its own takes it first, so two saves
    /// that would close a cycle together are checked one after the other. A no-op on SQLite.
    fn lock_chains(&self) -> Result<(), Error>;
    /// A job's name whatever its status.
    fn job_name(&self, id: i64) -> Result<Option<String>, Error>;
    /// The user ids of a job's recipients and of its shared users.
    fn job_user_lists(&self, job_id: i64) -> Result<(Vec<i64>, Vec<i64>), Error>;
    /// Deletes a job softly: it stays for its runs, disabled and renamed out of the way.
    fn soft_delete_job(&self, id: i64, now: i64) -> Result<(), Error>;
    /// Records the schedule instant the scheduler last fired for the job.
    fn set_last_fired_for(&self, id: i64, instant: i64) -> Result<(), Error>;
    /// When the job's newest run was queued.
    fn last_run_on(&self, job_id: i64) -> Result<Option<i64>, Error>;
    /// The title of a saved query that is not deleted.
    fn saved_query_title(&self, id: i64) -> Result<Option<String>, Error>;
    /// A summary of the jobs table that changes whenever a job is added, changed or deleted
    /// (count, newest change, sum of changes): the scheduler compares two to see whether to
    /// reload.
    fn jobs_fingerprint(&self) -> Result<(i64, i64, f64), Error>;
    /// The live job a jobs file's entry means: the one with its key; else (no key, or a key no
    /// job has yet) the one with its name that has no other key. Its id.
    fn job_for_import(&self, key: Option<&str>, name: &str) -> Result<Option<i64>, Error>;
    /// A job's key (its identity across renames in a jobs file), if it has one.
    fn job_key(&self, job_id: i64) -> Result<Option<String>, Error>;
    /// Gives a job this key unless it has one already.
    fn set_job_key_if_none(&self, job_id: i64, key: &str) -> Result<(), Error>;
    /// Gives a job this key, taking it from any other (deleted) job that had it.
    fn take_job_key(&self, job_id: i64, key: &str) -> Result<(), Error>;
    /// Marks a job as changed now (so the scheduler reloads it).
    fn touch_job(&self, job_id: i64, now: i64) -> Result<(), Error>;
}

/// Users.
pub trait UserLedger {
    /// The user with this id.
    fn user(&self, id: i64) -> Result<Option<User>, Error>;
    /// A user with their password hash, by login name (any case), for sign-in.
    fn user_with_hash(&self, login_name: &str) -> Result<Option<(User, Option<String>)>, Error>;
    /// Where a user signs in (`LOCAL` or `LDAP`), by login name.
    fn user_source_by_login(&self, login_name: &str) -> Result<Option<String>, Error>;
    /// Where a user signs in, by id.
    fn user_source(&self, id: i64) -> Result<Option<String>, Error>;
    /// A directory user's account after a directory sign-in: made at the first, refreshed at
    /// each; `None` when the name belongs to a local or disabled account.
    fn upsert_directory_user(
        &self,
        login_name: &str,
        first_name: &str,
        last_name: &str,
        email_address: &str,
        admin: bool,
        now: i64,
    ) -> Result<Option<User>, Error>;
    /// Active, non-system users, by id.
    fn list_users(&self) -> Result<Vec<User>, Error>;
    /// The ids of `ids` that are not active users (the system user counts as missing).
    fn missing_user_ids(&self, ids: &[i64]) -> Result<Vec<i64>, Error>;
    /// The system user's id (who scheduled runs are run by).
    fn system_user_id(&self) -> Result<i64, Error>;
    /// Stores a local user; `None` when the login name is taken.
    fn insert_user(&self, user: &NewUser, now: i64) -> Result<Option<i64>, Error>;
    /// Whether a user other than `except_id` has this login name (any case).
    fn login_taken(&self, login_name: &str, except_id: Option<i64>) -> Result<bool, Error>;
    /// Updates a user's names, e-mail and admin flag.
    fn update_user_profile(&self, user: &User) -> Result<(), Error>;
    /// Sets a user's password and ends their sessions but `keep_session`.
    fn set_password_hash(
        &self,
        id: i64,
        hash: &str,
        keep_session: Option<&str>,
    ) -> Result<(), Error>;
    /// Disables a user: no more sign-ins, and their sessions end.
    fn disable_user(&self, id: i64) -> Result<(), Error>;
    /// How many active admins there are.
    fn count_admins(&self) -> Result<i64, Error>;
    /// Holds the active admins' rows until the write ends: a write that takes the admin role
    /// from someone (or disables them) and then checks `count_admins` calls this first, so two
    /// such writes at once are checked one after the other and one admin always stays. A no-op
    /// on SQLite (one writer).
    fn lock_admins(&self) -> Result<(), Error>;
    /// Whether any user that can sign in exists (false only on first start).
    fn any_login_user(&self) -> Result<bool, Error>;
}

/// Sign-in sessions (only a token's hash is kept).
pub trait SessionLedger {
    /// Starts a session for the user.
    fn insert_session(&self, token_hash: &str, user_id: i64, now: i64) -> Result<(), Error>;
    /// The session with this token hash, while its user is active.
    fn session(&self, token_hash: &str) -> Result<Option<Session>, Error>;
    /// Ends every session of a user but `keep`; returns how many ended.
    fn delete_sessions_of_user(&self, user_id: i64, keep: Option<&str>) -> Result<usize, Error>;
    /// Records a session's use.
    fn touch_session(&self, token_hash: &str, now: i64) -> Result<(), Error>;
    /// Ends a session (sign-out).
    fn delete_session(&self, token_hash: &str) -> Result<(), Error>;
    /// Ends the sessions expired by `cutoffs`; returns how many.
    fn delete_expired_sessions(&self, cutoffs: SessionCutoffs) -> Result<usize, Error>;
}

/// Saved queries.
pub trait SavedQueryLedger {
    /// A saved query that is not deleted.
    fn live_saved_query(&self, id: i64) -> Result<Option<SavedQuery>, Error>;
    /// One page of the live saved queries whose title contains `query` (any case), newest first.
    fn list_saved_queries(
        &self,
        query: Option<&str>,
        start_at: i64,
        max_results: i64,
    ) -> Result<Vec<SavedQuery>, Error>;
    /// Stores a validated saved query; returns its id.
    fn insert_saved_query(
        &self,
        draft: &SavedQueryDraft,
        created_by: i64,
        now: i64,
    ) -> Result<i64, Error>;
    /// Replaces a live saved query's title, SQL and data source.
    fn replace_saved_query(&self, id: i64, draft: &SavedQueryDraft, now: i64) -> Result<(), Error>;
    /// Deletes a saved query softly (jobs keep their reference).
    fn soft_delete_saved_query(&self, id: i64, now: i64) -> Result<(), Error>;
    /// A saved query whether or not it is deleted (a job still names it).
    fn saved_query_even_deleted(&self, id: i64) -> Result<Option<SavedQuery>, Error>;
    /// The live saved queries with exactly this title, by id.
    fn live_saved_queries_titled(&self, title: &str) -> Result<Vec<SavedQuery>, Error>;
}

/// The audit trail: append-only.
pub trait AuditLedger {
    /// Appends an event at `at` (epoch ms); returns its id.
    fn record_audit(&self, event: &Event, at: i64) -> Result<i64, Error>;
    /// One page of the events matching `filter`, newest first.
    fn list_audit_events(
        &self,
        filter: &EventFilter,
        start_at: i64,
        max_results: i64,
    ) -> Result<Vec<StoredEvent>, Error>;
    /// Deletes up to `limit` events older than `cutoff`; returns how many (the retention pass).
    fn delete_audit_events_before(&self, cutoff: i64, limit: i64) -> Result<usize, Error>;
}

/// API tokens of services (only a token's hash is kept).
pub trait ApiTokenLedger {
    /// Stores a token with its audit event; returns its id.
    fn insert_api_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &str,
        expires_at: Option<i64>,
        now: i64,
        event: Event,
    ) -> Result<i64, Error>;
    /// The token with this id.
    fn api_token(&self, id: i64) -> Result<Option<ApiToken>, Error>;
    /// The tokens not revoked, of one user or (`None`) of everyone, newest first.
    fn live_api_tokens(&self, user_id: Option<i64>) -> Result<Vec<ApiToken>, Error>;
    /// The live token with this hash whose user is active.
    fn api_token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>, Error>;
    /// Records a token's use (at most once a minute); whether anything changed.
    fn touch_api_token(&self, id: i64, now: i64) -> Result<bool, Error>;
    /// Revokes a live token with its audit event; false when it was not live.
    fn revoke_api_token(&self, id: i64, by: i64, now: i64, event: Event) -> Result<bool, Error>;
    /// Revokes every live token of a user but the one whose hash is `keep` (the caller's own,
    /// when they changed their own password with it); returns how many. The audit event of the
    /// password change or the disabling says why.
    fn revoke_api_tokens_of_user(
        &self,
        user_id: i64,
        keep: Option<&str>,
        now: i64,
    ) -> Result<usize, Error>;
}

/// What the built-in maintenance tasks and the retention pass need.
pub trait MaintenanceLedger {
    /// When the run finished, if it has.
    fn run_finished_at(&self, ids: RunOfJob) -> Result<Option<i64>, Error>;
    /// Up to `limit` runs that finished before `cutoff`, with ids above `after`, by id.
    fn runs_finished_before(
        &self,
        cutoff: i64,
        after: RunId,
        limit: i64,
    ) -> Result<Vec<RunOfJob>, Error>;
    /// Deletes the runs of `run_ids` that finished before `cutoff`; returns how many went.
    fn delete_finished_runs(&self, run_ids: &[i64], cutoff: i64) -> Result<u64, Error>;
    /// How many jobs (deleted ones included) and runs the ledger holds.
    fn ledger_totals(&self) -> Result<(i64, i64), Error>;
    /// Streams the runs report into `sink`: every run queued at or after `since` (epoch ms),
    /// oldest first, one row each (times in UTC ISO 8601, the result file by name only).
    /// `interrupt` is asked now and then while the ledger works; true stops the report with an
    /// error, as does `false` from the sink (without one).
    fn runs_report(
        &self,
        since: i64,
        interrupt: Interrupt,
        sink: &mut dyn ReportSink,
    ) -> Result<(), Error>;
}

/// The nodes of a cluster sharing one ledger: registration, heartbeats, lost nodes, and what a
/// node does about its own runs. Times of heartbeats are the database's clock, never a node's,
/// so a node whose clock is off cannot declare a live one lost. SQLite has one node, never lost:
/// registering and heartbeats are no-ops there, no node is ever declared lost, and "the runs on a
/// node" are all runs.
pub trait NodeLedger {
    /// The node registered under `name`, if any.
    fn node(&self, name: &str) -> Result<Option<NodeState>, Error>;
    /// Registers `name` as `incarnation` (a new one at every start), alive as of now, and ends
    /// the firing-lock connection of a namesake it takes over.
    fn register_node(&self, name: &str, incarnation: &str) -> Result<(), Error>;
    /// Writes the node's heartbeat; false when `name` no longer is `incarnation` or was declared
    /// lost (it must then stop what it runs: see `rejoin_node`).
    fn node_heartbeat(&self, name: &str, incarnation: &str) -> Result<bool, Error>;
    /// Registers `name` again as `incarnation`, only when it still is `lost_incarnation` (that
    /// incarnation was declared lost); false when another process took the name over meanwhile,
    /// which must then never take it back.
    fn rejoin_node(
        &self,
        name: &str,
        lost_incarnation: &str,
        incarnation: &str,
    ) -> Result<bool, Error>;
    /// Declares lost every node silent for longer than `timeout_ms`, and every node name that
    /// IN_PROGRESS runs record but no node ever registered (runs copied from another ledger by
    /// `migrate-ledger`); their names. A node is declared once, by whichever writer gets there
    /// first (the others see it lost already).
    fn declare_silent_nodes_lost(&self, timeout_ms: i64) -> Result<Vec<String>, Error>;
    /// Ends the firing-lock connection of every node not declared lost that has been silent for
    /// longer than `silence_ms` (this one aside): a hung node (stopped, swapping) keeps its
    /// connections open, and with them the lock, and nothing would fire until it was declared
    /// lost. Its runs are left alone until then. The nodes whose connection was ended.
    fn end_firing_of_silent_nodes(&self, silence_ms: i64) -> Result<Vec<String>, Error>;
    /// Whether this node may fire now, checked in the fire's own transaction: its incarnation
    /// is current and not declared lost, and the connection with backend pid `firing_pid` holds
    /// the firing lock. (A frozen node that wakes must not fire an instant it was due to fire
    /// before it was declared lost.) Always true on SQLite.
    fn still_fires(&self, firing_pid: i32) -> Result<bool, Error>;
    /// Marks the node gone after a clean shutdown (nothing of it is left to fail).
    fn node_left(&self, name: &str, incarnation: &str) -> Result<(), Error>;
    /// The runs IN_PROGRESS on `node`, oldest first.
    fn runs_in_progress_on(&self, node: &str) -> Result<Vec<RunOfJob>, Error>;
    /// Fails the runs IN_PROGRESS on `node` with `message` (their jobs locked first, as a run's
    /// end does); the runs failed.
    fn fail_runs_in_progress_on(
        &self,
        node: &str,
        message: &str,
        now: i64,
    ) -> Result<Vec<RunOfJob>, Error>;
    /// The runs IN_PROGRESS on `node` that someone asked to cancel: (run id, their login name).
    fn cancels_asked_on(&self, node: &str) -> Result<Vec<(i64, String)>, Error>;
}

/// What the ledger knows of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// Changes at every start of the node.
    pub incarnation: String,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub silent_ms: i64,
    /// Whether another node (or its own clean shutdown) declared it gone.
    pub lost: bool,
}

/// Asked now and then during long ledger work (a report, a backup): true stops it.
pub type Interrupt = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// One value of a streamed report's row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

/// Where a streamed report goes: its column names once, then each row in turn. Returning false
/// stops the report (the sink keeps its own reason).
pub trait ReportSink {
    fn columns(&mut self, names: &[&str]) -> bool;
    fn row(&mut self, cells: &[Cell<'_>]) -> bool;
}

/// The whole ledger, as `Db::read` and `Db::write` hand it out.
pub trait Ledger:
    RunLedger
    + JobLedger
    + UserLedger
    + SessionLedger
    + SavedQueryLedger
    + AuditLedger
    + ApiTokenLedger
    + MaintenanceLedger
    + NodeLedger
{
}

impl<T> Ledger for T where
    T: RunLedger
        + JobLedger
        + UserLedger
        + SessionLedger
        + SavedQueryLedger
        + AuditLedger
        + ApiTokenLedger
        + MaintenanceLedger
        + NodeLedger
{
}
