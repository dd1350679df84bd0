//! The SQLite implementation of the ledger's interface (`store::ledger`): every SQL statement of
//! the server's ledger, one file per area, as free functions over a `rusqlite::Connection`, and
//! [`Sqlite`], the wrapper that implements the traits by delegating to them. Delegation keeps
//! each statement beside its helpers and tests (and the per-area files as they were, so edits to
//! their SQL merge across the move); the traits add only a virtual call, no allocation or
//! statement. `Db` (in `store`) owns the connections: its writer, pool and migrations.

pub mod api_tokens; // service tokens (issue 15)
pub mod audit; // the audit trail (issue 15)
mod ids; // the typed ids as SQL parameters
pub mod jobs;
pub mod maintenance; // ledger reads of the built-in INTERNAL tasks
pub mod queries; // saved queries
pub mod runs;
pub mod sessions;
pub mod users;

use std::path::Path;

use rusqlite::Connection;

use super::Error;
use super::ledger::{
    ApiTokenLedger, AuditLedger, Interrupt, JobLedger, MaintenanceLedger, NodeLedger, NodeState,
    ReportSink, RunLedger, SavedQueryLedger, SessionLedger, UserLedger,
};
use api_tokens::ApiToken;
use audit::{Event, EventFilter, StoredEvent};
use jobs::JobFilter;
use runs::{AllRunsFilter, Enqueued, FollowUpRun, NewRun, Outcome, RunFilter};
use sessions::Session;
use users::NewUser;

use crate::domain::ids::{JobId, RunId, RunOfJob, UserId};
use crate::domain::job::{Job, JobDraft};
use crate::domain::run::{Run, RunStatus};
use crate::domain::saved_query::{SavedQuery, SavedQueryDraft};
use crate::domain::user::{SessionCutoffs, User};

/// The ledger on one SQLite connection (a pooled reader, or the writer inside its transaction).
pub struct Sqlite<'a>(pub &'a Connection);

/// A consistent copy of the SQLite database at `source` written to `target` (`VACUUM INTO` reads
/// one snapshot, so a writer in another process cannot tear it), checked (`PRAGMA
/// integrity_check`) before it is used. Opened read-only when `read_only`.
pub fn copy_checked(source: &Path, target: &Path, read_only: bool) -> Result<(), String> {
    let flags = if read_only {
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
    };
    let conn = Connection::open_with_flags(source, flags)
        .map_err(|e| format!("cannot open {}: {e}", source.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    let target_text = target.to_str().ok_or("the backup path is not UTF-8")?;
    conn.execute("VACUUM INTO ?1", [target_text])
        .map_err(|e| format!("cannot copy {}: {e}", source.display()))?;
    let integrity = integrity_of(target)?;
    if integrity != "ok" {
        return Err(format!(
            "the copy of {} failed its integrity check: {integrity}",
            source.display()
        ));
    }
    Ok(())
}

/// SQLite virtual-machine steps between two looks at an `Interrupt`.
const INTERRUPT_STEPS: i32 = 10_000;

/// A consistent copy of the ledger at `source` written to `target` without writing to the
/// ledger (read-only), for the database-backup task: `interrupt` is asked every
/// `INTERRUPT_STEPS` steps of the copy and ends it when true. The copy must pass `PRAGMA
/// quick_check`; answers how many jobs and runs it holds.
pub fn copy_for_task(
    source: &Path,
    target: &Path,
    interrupt: Interrupt,
) -> Result<(i64, i64), Error> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(source, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.progress_handler(INTERRUPT_STEPS, Some(move || interrupt()))?;
    let target_text = target
        .to_str()
        .ok_or_else(|| Error::Backup("the run directory's path is not UTF-8".into()))?;
    conn.execute("VACUUM INTO ?1", [target_text])?;
    drop(conn);
    let copy = Connection::open_with_flags(target, flags)?;
    let check: String = copy.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(Error::Backup(format!(
            "the copy fails PRAGMA quick_check: {check}"
        )));
    }
    maintenance::totals(&copy)
}

/// What `PRAGMA integrity_check` says of the SQLite database at `path` (`ok` when sound).
pub fn integrity_of(path: &Path) -> Result<String, String> {
    let check = Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    check
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl RunLedger for Sqlite<'_> {
    fn run(&self, run_id: i64) -> Result<Option<Run>, Error> {
        runs::get(self.0, run_id)
    }
    fn enqueue_run(&self, run: &NewRun, max_queued: i64, now: i64) -> Result<Enqueued, Error> {
        runs::enqueue(self.0, run, max_queued, now)
    }
    fn count_runs_with_status(&self, job_id: i64, status: RunStatus) -> Result<i64, Error> {
        runs::count_with_status(self.0, job_id, status)
    }
    fn job_busy(&self, job_id: i64) -> Result<bool, Error> {
        runs::job_busy(self.0, job_id)
    }
    fn claim_runnable(&self, node: &str, limit: usize, now: i64) -> Result<Vec<i64>, Error> {
        runs::claim_runnable(self.0, node, limit, now)
    }
    fn finish_run(&self, run_id: i64, outcome: &Outcome, now: i64) -> Result<bool, Error> {
        runs::finish(self.0, run_id, outcome, now)
    }
    fn fail_queued_run(&self, run_id: i64, message: &str, now: i64) -> Result<bool, Error> {
        runs::fail_queued(self.0, run_id, message, now)
    }
    fn fail_queued_runs_of_job(
        &self,
        job_id: i64,
        message: &str,
        now: i64,
    ) -> Result<usize, Error> {
        runs::fail_all_queued(self.0, job_id, message, now)
    }
    fn runs_in_progress(&self) -> Result<Vec<RunOfJob>, Error> {
        runs::in_progress(self.0)
    }
    fn fail_runs_in_progress(&self, message: &str, now: i64) -> Result<usize, Error> {
        runs::fail_all_in_progress(self.0, message, now)
    }
    fn list_runs(
        &self,
        filter: &RunFilter,
        start_at: i64,
        max_results: i64,
    ) -> Result<Vec<Run>, Error> {
        runs::list(self.0, filter, start_at, max_results)
    }
    fn set_log_progress(&self, run_id: i64, log_size: i64, truncated: bool) -> Result<(), Error> {
        runs::set_log_progress(self.0, run_id, log_size, truncated)
    }
    fn active_run_counts(&self) -> Result<(i64, i64), Error> {
        runs::active_counts(self.0)
    }
    fn enqueue_follow_up(
        &self,
        run: &FollowUpRun,
        max_queued: i64,
        now: i64,
    ) -> Result<Enqueued, Error> {
        runs::enqueue_follow_up(self.0, run, max_queued, now)
    }
    fn insert_refused_run(&self, run: &FollowUpRun, message: &str, now: i64) -> Result<i64, Error> {
        runs::insert_refused(self.0, run, message, now)
    }
    fn mark_cancelled_by(&self, run_id: RunId, user_id: UserId) -> Result<(), Error> {
        runs::mark_cancelled_by(self.0, run_id, user_id)
    }
    fn set_series_end(&self, run_id: i64) -> Result<(), Error> {
        runs::set_series_end(self.0, run_id)
    }
    fn previous_series_end(&self, job_id: i64, before_id: i64) -> Result<Option<RunStatus>, Error> {
        runs::previous_series_end(self.0, job_id, before_id)
    }
    fn list_all_runs(
        &self,
        filter: &AllRunsFilter,
        start_at: i64,
        max_results: i64,
    ) -> Result<Vec<Run>, Error> {
        runs::list_all(self.0, filter, start_at, max_results)
    }
    fn count_all_runs(&self, filter: &AllRunsFilter) -> Result<i64, Error> {
        runs::count_all(self.0, filter)
    }
    fn last_manual_args(
        &self,
        job_id: i64,
        user_id: i64,
    ) -> Result<Option<(i64, String, bool)>, Error> {
        runs::last_manual_args(self.0, job_id, user_id)
    }
}

impl JobLedger for Sqlite<'_> {
    fn live_job(&self, id: i64) -> Result<Option<Job>, Error> {
        jobs::get_live(self.0, id)
    }
    fn job_for_update(&self, id: i64) -> Result<Option<Job>, Error> {
        // One writer: nothing can change the job before this write ends.
        jobs::get_live(self.0, id)
    }
    fn job_even_deleted(&self, id: i64) -> Result<Option<Job>, Error> {
        jobs::get_any(self.0, id)
    }
    fn live_jobs(&self) -> Result<Vec<Job>, Error> {
        jobs::list_all_live(self.0)
    }
    fn list_jobs(
        &self,
        filter: &JobFilter,
        start_at: i64,
        max_results: i64,
    ) -> Result<Vec<Job>, Error> {
        jobs::list(self.0, filter, start_at, max_results)
    }
    fn count_jobs(&self, filter: &JobFilter) -> Result<i64, Error> {
        jobs::count(self.0, filter)
    }
    fn job_name_taken(&self, name: &str, except_id: Option<i64>) -> Result<bool, Error> {
        jobs::name_taken(self.0, name, except_id)
    }
    fn job_shared_with(&self, job_id: JobId, user_id: UserId) -> Result<bool, Error> {
        jobs::is_shared_with(self.0, job_id, user_id)
    }
    fn job_recipient(&self, job_id: JobId, user_id: UserId) -> Result<bool, Error> {
        jobs::is_recipient(self.0, job_id, user_id)
    }
    fn insert_job(&self, draft: &JobDraft, created_by: i64, now: i64) -> Result<i64, Error> {
        jobs::insert(self.0, draft, created_by, now)
    }
    fn replace_job(&self, id: i64, draft: &JobDraft, now: i64) -> Result<(), Error> {
        jobs::replace(self.0, id, draft, now)
    }
    fn chain_targets(&self, job_id: i64, on_result: &str) -> Result<Vec<i64>, Error> {
        jobs::chain_targets(self.0, job_id, on_result)
    }
    fn chain_sources(&self, job_id: i64) -> Result<Vec<(i64, String)>, Error> {
        jobs::chain_sources(self.0, job_id)
    }
    fn chain_edges(&self, except_job: Option<i64>) -> Result<Vec<(i64, i64)>, Error> {
        jobs::chain_edges(self.0, except_job)
    }
    fn lock_chains(&self) -> Result<(), Error> {
        Ok(()) // one writer: chain edits are already one at a time
    }
    fn job_name(&self, id: i64) -> Result<Option<String>, Error> {
        jobs::name_of(self.0, id)
    }
    fn job_user_lists(&self, job_id: i64) -> Result<(Vec<i64>, Vec<i64>), Error> {
        jobs::user_lists(self.0, job_id)
    }
    fn soft_delete_job(&self, id: i64, now: i64) -> Result<(), Error> {
        jobs::soft_delete(self.0, id, now)
    }
    fn set_last_fired_for(&self, id: i64, instant: i64) -> Result<(), Error> {
        jobs::set_last_fired_for(self.0, id, instant)
    }
    fn last_run_on(&self, job_id: i64) -> Result<Option<i64>, Error> {
        jobs::last_run_on(self.0, job_id)
    }
    fn saved_query_title(&self, id: i64) -> Result<Option<String>, Error> {
        jobs::saved_query_title(self.0, id)
    }
    fn jobs_fingerprint(&self) -> Result<(i64, i64, f64), Error> {
        jobs::fingerprint(self.0)
    }
    fn job_for_import(&self, key: Option<&str>, name: &str) -> Result<Option<i64>, Error> {
        jobs::for_import(self.0, key, name)
    }
    fn job_key(&self, job_id: i64) -> Result<Option<String>, Error> {
        jobs::key(self.0, job_id)
    }
    fn set_job_key_if_none(&self, job_id: i64, key: &str) -> Result<(), Error> {
        jobs::set_key_if_none(self.0, job_id, key)
    }
    fn take_job_key(&self, job_id: i64, key: &str) -> Result<(), Error> {
        jobs::take_key(self.0, job_id, key)
    }
    fn touch_job(&self, job_id: i64, now: i64) -> Result<(), Error> {
        jobs::touch(self.0, job_id, now)
    }
}

impl UserLedger for Sqlite<'_> {
    fn user(&self, id: i64) -> Result<Option<User>, Error> {
        users::get(self.0, id)
    }
    fn user_with_hash(&self, login_name: &str) -> Result<Option<(User, Option<String>)>, Error> {
        users::get_with_hash(self.0, login_name)
    }
    fn user_source_by_login(&self, login_name: &str) -> Result<Option<String>, Error> {
        users::source_by_login(self.0, login_name)
    }
    fn user_source(&self, id: i64) -> Result<Option<String>, Error> {
        users::source(self.0, id)
    }
    fn upsert_directory_user(
        &self,
        login_name: &str,
        first_name: &str,
        last_name: &str,
        email_address: &str,
        admin: bool,
        now: i64,
    ) -> Result<Option<User>, Error> {
        users::upsert_directory_user(
            self.0,
            login_name,
            first_name,
            last_name,
            email_address,
            admin,
            now,
        )
    }
    fn list_users(&self) -> Result<Vec<User>, Error> {
        users::list(self.0)
    }
    fn missing_user_ids(&self, ids: &[i64]) -> Result<Vec<i64>, Error> {
        users::missing_ids(self.0, ids)
    }
    fn system_user_id(&self) -> Result<i64, Error> {
        users::system_user_id(self.0)
    }
    fn insert_user(&self, user: &NewUser, now: i64) -> Result<Option<i64>, Error> {
        users::insert(self.0, user, now)
    }
    fn login_taken(&self, login_name: &str, except_id: Option<i64>) -> Result<bool, Error> {
        users::login_taken(self.0, login_name, except_id)
    }
    fn update_user_profile(&self, user: &User) -> Result<(), Error> {
        users::update_profile(self.0, user)
    }
    fn set_password_hash(
        &self,
        id: i64,
        hash: &str,
        keep_session: Option<&str>,
    ) -> Result<(), Error> {
        users::set_password_hash(self.0, id, hash, keep_session)
    }
    fn disable_user(&self, id: i64) -> Result<(), Error> {
        users::disable(self.0, id)
    }
    fn count_admins(&self) -> Result<i64, Error> {
        users::count_admins(self.0)
    }
    fn lock_admins(&self) -> Result<(), Error> {
        Ok(()) // one writer: no other write changes the admins meanwhile
    }
    fn any_login_user(&self) -> Result<bool, Error> {
        users::any_login_user(self.0)
    }
}

impl SessionLedger for Sqlite<'_> {
    fn insert_session(&self, token_hash: &str, user_id: i64, now: i64) -> Result<(), Error> {
        sessions::insert(self.0, token_hash, user_id, now)
    }
    fn session(&self, token_hash: &str) -> Result<Option<Session>, Error> {
        sessions::lookup(self.0, token_hash)
    }
    fn delete_sessions_of_user(&self, user_id: i64, keep: Option<&str>) -> Result<usize, Error> {
        sessions::delete_for_user(self.0, user_id, keep)
    }
    fn touch_session(&self, token_hash: &str, now: i64) -> Result<(), Error> {
        sessions::touch(self.0, token_hash, now)
    }
    fn delete_session(&self, token_hash: &str) -> Result<(), Error> {
        sessions::delete(self.0, token_hash)
    }
    fn delete_expired_sessions(&self, cutoffs: SessionCutoffs) -> Result<usize, Error> {
        sessions::delete_expired(self.0, cutoffs)
    }
}

impl SavedQueryLedger for Sqlite<'_> {
    fn live_saved_query(&self, id: i64) -> Result<Option<SavedQuery>, Error> {
        queries::get_live(self.0, id)
    }
    fn list_saved_queries(
        &self,
        query: Option<&str>,
        start_at: i64,
        max_results: i64,
    ) -> Result<Vec<SavedQuery>, Error> {
        queries::list(self.0, query, start_at, max_results)
    }
    fn insert_saved_query(
        &self,
        draft: &SavedQueryDraft,
        created_by: i64,
        now: i64,
    ) -> Result<i64, Error> {
        queries::insert(self.0, draft, created_by, now)
    }
    fn replace_saved_query(&self, id: i64, draft: &SavedQueryDraft, now: i64) -> Result<(), Error> {
        queries::replace(self.0, id, draft, now)
    }
    fn soft_delete_saved_query(&self, id: i64, now: i64) -> Result<(), Error> {
        queries::soft_delete(self.0, id, now)
    }
    fn saved_query_even_deleted(&self, id: i64) -> Result<Option<SavedQuery>, Error> {
        queries::get_any(self.0, id)
    }
    fn live_saved_queries_titled(&self, title: &str) -> Result<Vec<SavedQuery>, Error> {
        queries::live_titled(self.0, title)
    }
}

impl AuditLedger for Sqlite<'_> {
    fn record_audit(&self, event: &Event, at: i64) -> Result<i64, Error> {
        audit::record(self.0, event, at)
    }
    fn list_audit_events(
        &self,
        filter: &EventFilter,
        start_at: i64,
        max_results: i64,
    ) -> Result<Vec<StoredEvent>, Error> {
        audit::list(self.0, filter, start_at, max_results)
    }
    fn delete_audit_events_before(&self, cutoff: i64, limit: i64) -> Result<usize, Error> {
        audit::delete_older_than(self.0, cutoff, limit)
    }
}

impl ApiTokenLedger for Sqlite<'_> {
    fn insert_api_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &str,
        expires_at: Option<i64>,
        now: i64,
        event: Event,
    ) -> Result<i64, Error> {
        api_tokens::insert(self.0, user_id, name, token_hash, expires_at, now, event)
    }
    fn api_token(&self, id: i64) -> Result<Option<ApiToken>, Error> {
        api_tokens::get(self.0, id)
    }
    fn live_api_tokens(&self, user_id: Option<i64>) -> Result<Vec<ApiToken>, Error> {
        api_tokens::list_live(self.0, user_id)
    }
    fn api_token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>, Error> {
        api_tokens::lookup(self.0, token_hash)
    }
    fn touch_api_token(&self, id: i64, now: i64) -> Result<bool, Error> {
        api_tokens::touch(self.0, id, now)
    }
    fn revoke_api_token(&self, id: i64, by: i64, now: i64, event: Event) -> Result<bool, Error> {
        api_tokens::revoke(self.0, id, by, now, event)
    }
    fn revoke_api_tokens_of_user(
        &self,
        user_id: i64,
        keep: Option<&str>,
        now: i64,
    ) -> Result<usize, Error> {
        api_tokens::revoke_for_user(self.0, user_id, keep, now)
    }
}

impl MaintenanceLedger for Sqlite<'_> {
    fn run_finished_at(&self, ids: RunOfJob) -> Result<Option<i64>, Error> {
        maintenance::finished_at(self.0, ids)
    }
    fn runs_finished_before(
        &self,
        cutoff: i64,
        after: RunId,
        limit: i64,
    ) -> Result<Vec<RunOfJob>, Error> {
        maintenance::finished_before(self.0, cutoff, after, limit)
    }
    fn delete_finished_runs(&self, run_ids: &[i64], cutoff: i64) -> Result<u64, Error> {
        maintenance::delete_finished_runs(self.0, run_ids, cutoff)
    }
    fn ledger_totals(&self) -> Result<(i64, i64), Error> {
        maintenance::totals(self.0)
    }
    fn runs_report(
        &self,
        since: i64,
        interrupt: Interrupt,
        sink: &mut dyn ReportSink,
    ) -> Result<(), Error> {
        maintenance::runs_report(self.0, since, interrupt, sink)
    }
}

/// One node, never lost (see `NodeLedger`): the runs "on a node" are all the runs.
impl NodeLedger for Sqlite<'_> {
    fn node(&self, _name: &str) -> Result<Option<NodeState>, Error> {
        Ok(None)
    }
    fn register_node(&self, _name: &str, _incarnation: &str) -> Result<(), Error> {
        Ok(())
    }
    fn node_heartbeat(&self, _name: &str, _incarnation: &str) -> Result<bool, Error> {
        Ok(true)
    }
    fn rejoin_node(&self, _name: &str, _lost: &str, _incarnation: &str) -> Result<bool, Error> {
        Ok(true)
    }
    fn declare_silent_nodes_lost(&self, _timeout_ms: i64) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }
    fn end_firing_of_silent_nodes(&self, _silence_ms: i64) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }
    fn still_fires(&self, _firing_pid: i32) -> Result<bool, Error> {
        Ok(true)
    }
    fn node_left(&self, _name: &str, _incarnation: &str) -> Result<(), Error> {
        Ok(())
    }
    fn runs_in_progress_on(&self, _node: &str) -> Result<Vec<RunOfJob>, Error> {
        runs::in_progress(self.0)
    }
    fn fail_runs_in_progress_on(
        &self,
        _node: &str,
        message: &str,
        now: i64,
    ) -> Result<Vec<RunOfJob>, Error> {
        let failed = runs::in_progress(self.0)?;
        runs::fail_all_in_progress(self.0, message, now)?;
        Ok(failed)
    }
    fn cancels_asked_on(&self, _node: &str) -> Result<Vec<(i64, String)>, Error> {
        runs::cancels_asked(self.0)
    }
}
