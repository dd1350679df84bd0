//! The ledger's interface on both engines, called straight from the library (`labcron::store`):
//! each area's script runs on a fresh SQLite ledger and on a fresh PostgreSQL one (a database of
//! the private test server, `common/postgres.rs`), asserts what it expects on each, and the two
//! transcripts must be equal — what goes in comes back the same way whichever engine keeps it.
//! Then what only several writers at once can break (PostgreSQL runs writes concurrently; SQLite
//! has one writer): queue limits, claims, one run in progress per job, a run's end written once,
//! migrations by nodes starting together, and an unreachable database told apart.

use std::fmt::Debug;
use std::sync::{Arc, Barrier};

use labcron::domain::ids::{JobId, RunId, UserId};
use labcron::domain::job::{
    ActivityStatus, JobDraft, JobType, MisfirePolicy, NotifyOn, Repeat, RepeatKind,
};
use labcron::domain::run::{RunStatus, Trigger};
use labcron::domain::saved_query::SavedQueryDraft;
use labcron::domain::user::SessionCutoffs;
use labcron::store::audit::{Event, EventFilter};
use labcron::store::jobs::{CHAIN_FAILURE, CHAIN_SUCCESS, JobFilter};
use labcron::store::ledger::{
    AuditLedger, Cell, Interrupt, JobLedger, MaintenanceLedger, ReportSink, RunLedger, UserLedger,
};
use labcron::store::postgres::PgLedgerDb;
use labcron::store::runs::{AllRunsFilter, Enqueued, FollowUpRun, NewRun, Outcome, RunFilter};
use labcron::store::users::NewUser;
use labcron::store::{Db, Error, Ledger};

use crate::postgres;

/// A fresh ledger on one engine (a SQLite one with the directory that holds its file).
enum Engine {
    Sqlite(Db, #[allow(dead_code)] tempfile::TempDir),
    Postgres(PgLedgerDb),
}

impl Engine {
    fn sqlite() -> Engine {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("labcron.db")).unwrap();
        Engine::Sqlite(db, dir)
    }

    fn postgres() -> Engine {
        Engine::Postgres(fresh_pg())
    }

    fn name(&self) -> &'static str {
        match self {
            Engine::Sqlite(..) => "sqlite",
            Engine::Postgres(_) => "postgres",
        }
    }

    fn write<T: Send>(&self, f: impl FnOnce(&dyn Ledger) -> Result<T, Error> + Send) -> T {
        let result = match self {
            Engine::Sqlite(db, _) => db.write_sync(f),
            Engine::Postgres(db) => db.write(|pg| f(pg)),
        };
        result.unwrap_or_else(|e| panic!("{}: a write failed: {e}", self.name()))
    }

    fn read<T: Send>(&self, f: impl FnOnce(&dyn Ledger) -> Result<T, Error> + Send) -> T {
        let result = match self {
            Engine::Sqlite(db, _) => db.read_sync(f),
            Engine::Postgres(db) => db.read(|pg| f(pg)),
        };
        result.unwrap_or_else(|e| panic!("{}: a read failed: {e}", self.name()))
    }
}

/// A PostgreSQL ledger in a new, empty database of the private server.
fn fresh_pg() -> PgLedgerDb {
    let db = postgres::server().create_database("");
    PgLedgerDb::open(&db.url()).unwrap()
}

/// What a script saw, line by line.
#[derive(Default)]
struct Transcript(Vec<String>);

impl Transcript {
    /// Notes a value (by its Debug form) and hands it back.
    fn note<T: Debug>(&mut self, what: &str, value: T) -> T {
        self.0.push(format!("{what}: {value:?}"));
        value
    }
}

/// Runs `script` on a fresh ledger of each engine; their transcripts must agree.
fn on_both_engines(script: impl Fn(&Engine, &mut Transcript)) {
    let mut transcripts = Vec::new();
    for engine in [Engine::sqlite(), Engine::postgres()] {
        let mut transcript = Transcript::default();
        script(&engine, &mut transcript);
        transcripts.push((engine.name(), transcript.0));
    }
    let (sqlite, postgres) = (&transcripts[0].1, &transcripts[1].1);
    assert!(!sqlite.is_empty());
    for (a, b) in sqlite.iter().zip(postgres) {
        assert_eq!(a, b, "the engines disagree");
    }
    assert_eq!(sqlite.len(), postgres.len());
}

/// An on-demand EXTERNAL job's draft named `name` (the store tests' job; `pg_nodes` too).
pub(crate) fn draft(name: &str) -> JobDraft {
    JobDraft {
        name: name.to_string(),
        job_type: JobType::External,
        repeat: Repeat::OnDemand,
        timezone: chrono_tz::UTC,
        start_date: 1_000,
        end_date: None,
        activity_status: ActivityStatus::Active,
        run_as: None,
        recipients: Vec::new(),
        shared_with: Vec::new(),
        task_impl_fqn: None,
        command: Some("echo.sh".into()),
        program: Some("echo.sh".into()),
        fixed_args: None,
        rt_args_provided: false,
        rt_args_help_text: None,
        saved_query_id: None,
        timeout_seconds: 60,
        misfire_policy: MisfirePolicy::Skip,
        max_queued_runs: 100,
        result_from_stdout: false,
        webhook_url: None,
        max_retries: 0,
        retry_delay_seconds: 60,
        notify_on: NotifyOn::Always,
        on_success: Vec::new(),
        on_failure: Vec::new(),
    }
}

fn new_user<'a>(login: &'a str, admin: bool) -> NewUser<'a> {
    NewUser {
        login_name: login,
        first_name: "First",
        last_name: "Last",
        email_address: "someone@lab.example",
        admin,
        password_hash: "hash",
    }
}

/// Adds a local user; its id.
fn add_user(e: &Engine, login: &str, admin: bool) -> i64 {
    let login = login.to_string();
    e.write(|l| l.insert_user(&new_user(&login, admin), 5))
        .expect("a free login name")
}

fn add_job(e: &Engine, d: JobDraft, owner: i64) -> i64 {
    e.write(|l| l.insert_job(&d, owner, 10))
}

fn manual(job_id: i64, run_by: i64) -> NewRun<'static> {
    NewRun {
        job_id,
        trigger: Trigger::Manual,
        run_by,
        rt_args: None,
        scheduled_for: None,
        idempotency_key: None,
    }
}

fn queued(e: &Engine, run: NewRun<'static>, max: i64) -> i64 {
    match e.write(|l| l.enqueue_run(&run, max, 100)) {
        Enqueued::Queued(id) => id,
        other => panic!("{}: not queued: {other:?}", e.name()),
    }
}

fn ended(succeeded: bool) -> Outcome {
    Outcome {
        succeeded,
        exit_code: Some(if succeeded { 0 } else { 3 }),
        message: (!succeeded).then(|| "exit code 3".to_string()),
        result_file: Some("out.csv".into()),
        result_file_size: Some(12),
        log_size: 40,
        log_truncated: true,
        task: None,
    }
}

#[test]
fn jobs_come_back_with_their_schedules_user_lists_and_chains_on_both_engines() {
    on_both_engines(|e, t| {
        let owner = add_user(e, "owner", true);
        let ann = add_user(e, "ann", false);
        let bob = add_user(e, "bob", false);
        let target = add_job(e, draft("target"), owner);
        let other = add_job(e, draft("other"), owner);
        let mut nightly = draft("Nightly_report 100%");
        nightly.repeat = Repeat::Weekly {
            day: chrono::Weekday::Tue,
            hour: 23,
            minute: 45,
        };
        nightly.timezone = chrono_tz::Europe::Berlin;
        nightly.end_date = Some(9_000);
        nightly.recipients = vec![bob, ann];
        nightly.shared_with = vec![ann];
        nightly.on_success = vec![other, target];
        nightly.on_failure = vec![target];
        nightly.rt_args_provided = true;
        nightly.result_from_stdout = true;
        nightly.webhook_url = Some("https://hooks.lab.example/x".into());
        nightly.max_retries = 2;
        nightly.notify_on = NotifyOn::Change;
        nightly.misfire_policy = MisfirePolicy::RunOnce;
        let id = add_job(e, nightly, owner);
        let job = t.note("job", e.read(|l| l.live_job(id))).expect("the job");
        assert_eq!(job.name, "Nightly_report 100%");
        assert_eq!(job.repeat.kind(), RepeatKind::Weekly);
        assert_eq!(job.repeat.day_of_week(), Some(chrono::Weekday::Tue));
        assert_eq!(job.repeat.hour(), Some(23));
        assert_eq!(job.timezone, chrono_tz::Europe::Berlin);
        assert!(job.rt_args_provided && job.result_from_stdout);
        assert_eq!(job.misfire_policy, MisfirePolicy::RunOnce);
        assert_eq!(job.notify_on, NotifyOn::Change);
        let lists = t.note("user lists", e.read(|l| l.job_user_lists(id)));
        let mut recipients = vec![ann, bob];
        recipients.sort();
        assert_eq!(lists, (recipients, vec![ann]));
        assert!(e.read(|l| l.job_shared_with(JobId(id), UserId(ann))));
        assert!(!e.read(|l| l.job_shared_with(JobId(id), UserId(bob))));
        assert!(e.read(|l| l.job_recipient(JobId(id), UserId(bob))));
        let on_success = t.note(
            "chain targets",
            e.read(|l| l.chain_targets(id, CHAIN_SUCCESS)),
        );
        assert_eq!(on_success, vec![other, target], "in the order given");
        assert_eq!(e.read(|l| l.chain_targets(id, CHAIN_FAILURE)), vec![target]);
        t.note("chain sources", e.read(|l| l.chain_sources(target)));
        let mut edges = e.read(|l| l.chain_edges(None));
        edges.sort();
        assert_eq!(
            t.note("chain edges", edges),
            vec![(id, target), (id, other)]
        );
        assert_eq!(e.read(|l| l.chain_edges(Some(id))), vec![]);

        // Lists: newest first, filtered by who sees them, by name (any case, wildcards literal).
        let everyone = JobFilter {
            visible_to: None,
            query: None,
            job_type: None,
        };
        let page: Vec<i64> = e
            .read(|l| l.list_jobs(&everyone, 1, 2))
            .iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(t.note("page", page), vec![other, target]);
        assert_eq!(e.read(|l| l.count_jobs(&everyone)), 3);
        let literal = JobFilter {
            visible_to: None,
            query: Some("REPORT 100%"),
            job_type: Some(JobType::External),
        };
        assert_eq!(e.read(|l| l.count_jobs(&literal)), 1);
        let wildcard = JobFilter {
            visible_to: None,
            query: Some("t_"),
            job_type: None,
        };
        assert_eq!(e.read(|l| l.count_jobs(&wildcard)), 0, "`_` matches itself");
        let underscore = JobFilter {
            visible_to: None,
            query: Some("y_R"),
            job_type: None,
        };
        assert_eq!(e.read(|l| l.count_jobs(&underscore)), 1);
        let anns = JobFilter {
            visible_to: Some(ann),
            query: None,
            job_type: None,
        };
        let seen: Vec<i64> = e
            .read(|l| l.list_jobs(&anns, 0, 10))
            .iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(t.note("ann sees", seen), vec![id]);
        assert!(e.read(|l| l.job_name_taken("target", None)));
        assert!(!e.read(|l| l.job_name_taken("target", Some(target))));
        assert!(!e.read(|l| l.job_name_taken("TARGET", None)), "exact names");

        // A full replace, then keys, fingerprints, soft deletion.
        let before = e.read(|l| l.jobs_fingerprint());
        let mut changed = draft("target renamed");
        changed.repeat = Repeat::Cron {
            expression: "0 */5 * * * *".into(),
        };
        e.write(|l| l.replace_job(target, &changed, 20));
        let replaced = t.note("replaced", e.read(|l| l.live_job(target))).unwrap();
        assert_eq!(replaced.updated_at, 20);
        assert_ne!(
            t.note("fingerprint", e.read(|l| l.jobs_fingerprint())),
            before
        );
        e.write(|l| l.set_job_key_if_none(target, "k-1"));
        e.write(|l| l.set_job_key_if_none(target, "k-2"));
        assert_eq!(e.read(|l| l.job_key(target)), Some("k-1".into()));
        assert_eq!(e.read(|l| l.job_for_import(Some("k-1"), "x")), Some(target));
        assert_eq!(e.read(|l| l.job_for_import(None, "other")), Some(other));
        e.write(|l| l.take_job_key(other, "k-1"));
        assert_eq!(e.read(|l| l.job_key(target)), None);
        e.write(|l| l.set_last_fired_for(id, 777));
        e.write(|l| l.touch_job(id, 30));
        e.write(|l| l.soft_delete_job(target, 40));
        assert!(e.read(|l| l.live_job(target)).is_none());
        let gone = e.read(|l| l.job_even_deleted(target)).unwrap();
        assert_eq!(t.note("deleted name", gone.name), "target renamed_40");
        assert_eq!(gone.activity_status, ActivityStatus::Disabled);
        assert_eq!(
            e.read(|l| l.chain_targets(id, CHAIN_SUCCESS)),
            vec![other],
            "a deleted job drops out of chains"
        );
        // In no particular order (SQLite reads them along an index of names).
        let mut live: Vec<i64> = e.read(|l| l.live_jobs()).iter().map(|j| j.id).collect();
        live.sort();
        assert_eq!(t.note("live", live), vec![other, id]);
        assert_eq!(
            e.read(|l| l.job_name(target)),
            Some("target renamed_40".into())
        );
        t.note(
            "last fired",
            e.read(|l| l.live_job(id)).unwrap().last_fired_for,
        );
        // A second job with a live name is refused by the index, as a unique violation.
        let refused = match e {
            Engine::Sqlite(db, _) => db.write_sync(|l| l.insert_job(&draft("other"), owner, 50)),
            Engine::Postgres(db) => db.write(|l| l.insert_job(&draft("other"), owner, 50)),
        };
        assert!(refused.is_err_and(|e| e.is_unique_violation()));
    });
}

#[test]
fn users_sessions_and_tokens_come_back_the_same_and_login_names_ignore_case() {
    on_both_engines(|e, t| {
        let alice = add_user(e, "Alice", true);
        assert_eq!(
            e.write(|l| l.insert_user(&new_user("ALICE", false), 6)),
            None,
            "a login name taken in another case"
        );
        let (user, hash) = e.read(|l| l.user_with_hash("alice")).unwrap();
        assert_eq!(t.note("alice", &user).id, alice);
        assert_eq!(hash.as_deref(), Some("hash"));
        assert!(e.read(|l| l.login_taken("aLiCe", None)));
        assert!(!e.read(|l| l.login_taken("aLiCe", Some(alice))));
        assert_eq!(
            e.read(|l| l.user_source_by_login("ALICE")),
            Some("LOCAL".into())
        );
        // A directory user: made at the first sign-in, refreshed at the next, never over a
        // local account.
        let dir_user = e
            .write(|l| l.upsert_directory_user("dora", "Dora", "D", "d@lab", false, 7))
            .unwrap();
        let again = e
            .write(|l| l.upsert_directory_user("DORA", "Dorothea", "D", "d@lab", true, 8))
            .unwrap();
        assert_eq!(again.id, dir_user.id);
        assert!(again.admin);
        assert_eq!(t.note("refreshed", again).first_name, "Dorothea");
        assert!(
            e.write(|l| l.upsert_directory_user("alice", "A", "B", "c", false, 9))
                .is_none()
        );
        assert_eq!(e.read(|l| l.user_source(dir_user.id)), Some("LDAP".into()));
        assert_eq!(e.read(|l| l.count_admins()), 2);
        let system = e.read(|l| l.system_user_id());
        let missing = e.read(|l| l.missing_user_ids(&[999, alice, system, 999]));
        assert_eq!(t.note("missing", missing), vec![999, system, 999]);
        let users: Vec<String> = e
            .read(|l| l.list_users())
            .into_iter()
            .map(|u| u.login_name)
            .collect();
        assert_eq!(t.note("users", users), ["Alice", "dora"]);
        let mut renamed = user.clone();
        renamed.first_name = "Alicia".into();
        renamed.admin = false;
        e.write(|l| l.update_user_profile(&renamed));
        assert_eq!(e.read(|l| l.count_admins()), 1);

        // Sessions: while the user is active; a password change ends all but the caller's.
        for token in ["s1", "s2", "s3"] {
            e.write(|l| l.insert_session(token, alice, 100));
        }
        e.write(|l| l.touch_session("s2", 500));
        let s2 = e.read(|l| l.session("s2")).unwrap();
        assert_eq!(
            (s2.user_id, s2.created_at, s2.last_used_at),
            (alice, 100, 500)
        );
        e.write(|l| l.set_password_hash(alice, "new", Some("s1")));
        assert!(e.read(|l| l.session("s2")).is_none());
        assert!(e.read(|l| l.session("s1")).is_some());
        e.write(|l| l.insert_session("old", dir_user.id, 10));
        let expired = e.write(|l| {
            l.delete_expired_sessions(SessionCutoffs {
                idle_before: 50,
                created_before: 0,
            })
        });
        assert_eq!(t.note("expired", expired), 1);
        e.write(|l| l.delete_session("s1"));
        assert!(e.read(|l| l.session("s1")).is_none());

        // API tokens with their audit events.
        let token = e.write(|l| {
            l.insert_api_token(
                alice,
                "scraper",
                "th1",
                Some(9_999),
                200,
                Event::new("Alice", "API_TOKEN_CREATE", None),
            )
        });
        let other = e.write(|l| {
            l.insert_api_token(
                dir_user.id,
                "other",
                "th2",
                None,
                201,
                Event::new("dora", "API_TOKEN_CREATE", None),
            )
        });
        assert_eq!(e.read(|l| l.api_token_by_hash("th1")).unwrap().id, token);
        assert!(e.write(|l| l.touch_api_token(token, 300)));
        assert!(!e.write(|l| l.touch_api_token(token, 310)), "once a minute");
        let live: Vec<i64> = e
            .read(|l| l.live_api_tokens(None))
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(t.note("live tokens", live), vec![other, token]);
        assert_eq!(e.read(|l| l.live_api_tokens(Some(alice))).len(), 1);
        let revoke = Event::new("Alice", "API_TOKEN_REVOKE", None);
        assert!(e.write(|l| l.revoke_api_token(token, alice, 400, revoke.clone())));
        assert!(!e.write(|l| l.revoke_api_token(token, alice, 401, revoke)));
        assert!(e.read(|l| l.api_token_by_hash("th1")).is_none());
        t.note("revoked", e.read(|l| l.api_token(token)));
        let objects: Vec<Option<String>> = e
            .read(|l| l.list_audit_events(&EventFilter::default(), 0, 10))
            .into_iter()
            .map(|ev| ev.object_id)
            .collect();
        assert_eq!(
            t.note("token events", objects),
            [token, other, token].map(|id| Some(id.to_string()))
        );
        // A disabled user cannot use sessions or tokens.
        e.write(|l| l.disable_user(dir_user.id));
        assert!(e.read(|l| l.api_token_by_hash("th2")).is_none());
        assert!(e.read(|l| l.any_login_user()));
    });
}

#[test]
fn saved_queries_and_the_audit_trail_come_back_the_same() {
    on_both_engines(|e, t| {
        let owner = add_user(e, "owner", true);
        let q = |title: &str| SavedQueryDraft {
            title: title.into(),
            sql: "SELECT 1".into(),
            data_source: "demo".into(),
        };
        let first = e.write(|l| l.insert_saved_query(&q("Specimens by site"), owner, 1));
        let second = e.write(|l| l.insert_saved_query(&q("100% frozen"), owner, 2));
        let third = e.write(|l| l.insert_saved_query(&q("specimens"), owner, 3));
        let titles = |query: Option<&'static str>| -> Vec<i64> {
            e.read(|l| l.list_saved_queries(query, 0, 10))
                .iter()
                .map(|s| s.id)
                .collect()
        };
        assert_eq!(
            t.note("SPECIMENS", titles(Some("SPECIMENS"))),
            vec![third, first]
        );
        assert_eq!(titles(Some("0%")), vec![second]);
        assert_eq!(titles(Some("_")), Vec::<i64>::new());
        e.write(|l| l.replace_saved_query(first, &q("Renamed"), 4));
        e.write(|l| l.soft_delete_saved_query(third, 5));
        assert!(e.read(|l| l.live_saved_query(third)).is_none());
        assert!(e.read(|l| l.saved_query_even_deleted(third)).is_some());
        t.note("renamed", e.read(|l| l.live_saved_query(first)));
        assert_eq!(e.read(|l| l.live_saved_queries_titled("Renamed")).len(), 1);
        assert_eq!(e.read(|l| l.saved_query_title(third)), None);
        let page: Vec<i64> = e
            .read(|l| l.list_saved_queries(None, 1, 1))
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(page, vec![first]);

        // The audit trail: newest first, filters ignore case, oldest deleted in batches.
        e.write(|l| l.record_audit(&Event::new("alice", "SIGN_IN", Some("10.0.0.1")), 1_000));
        e.write(|l| {
            l.record_audit(
                &Event::new("bob", "JOB_CREATE", None)
                    .object("JOB", 7)
                    .detail("name", "nightly"),
                2_000,
            )
        });
        e.write(|l| l.record_audit(&Event::new("alice", "SIGN_OUT", None), 3_000));
        let all = e.read(|l| l.list_audit_events(&EventFilter::default(), 0, 100));
        let actions: Vec<&str> = all.iter().map(|ev| ev.action.as_str()).collect();
        assert_eq!(actions, ["SIGN_OUT", "JOB_CREATE", "SIGN_IN"]);
        assert_eq!(all[1].detail["name"], "nightly");
        t.note("events", &all);
        let alice = EventFilter {
            actor: Some("ALICE".into()),
            action: Some("sign_out".into()),
            from: Some(2_000),
            ..EventFilter::default()
        };
        assert_eq!(e.read(|l| l.list_audit_events(&alice, 0, 100)).len(), 1);
        let job7 = EventFilter {
            object_type: Some("job".into()),
            object_id: Some("7".into()),
            ..EventFilter::default()
        };
        assert_eq!(e.read(|l| l.list_audit_events(&job7, 0, 100)).len(), 1);
        assert_eq!(e.write(|l| l.delete_audit_events_before(2_500, 1)), 1);
        assert_eq!(e.write(|l| l.delete_audit_events_before(2_500, 10)), 1);
        assert_eq!(
            e.read(|l| l.list_audit_events(&EventFilter::default(), 0, 100))
                .len(),
            1
        );
    });
}

#[test]
fn runs_are_accepted_claimed_ended_and_listed_the_same_on_both_engines() {
    on_both_engines(|e, t| {
        let owner = add_user(e, "owner", true);
        let ann = add_user(e, "ann", false);
        let jobs: Vec<i64> = (1..=4)
            .map(|n| add_job(e, draft(&format!("job {n}")), owner))
            .collect();
        let mut shared = draft("shared");
        shared.shared_with = vec![ann];
        let shared = add_job(e, shared, owner);
        // Acceptance: duplicates by key and by scheduled instant, the queue limit.
        let keyed = NewRun {
            idempotency_key: Some("key-1"),
            ..manual(jobs[0], owner)
        };
        let first = queued(e, keyed, 3);
        let again = NewRun {
            idempotency_key: Some("key-1"),
            ..manual(jobs[0], owner)
        };
        let dup = e.write(|l| l.enqueue_run(&again, 3, 200));
        assert!(matches!(t.note("dup", dup), Enqueued::Duplicate(id) if id == first));
        let fired = NewRun {
            trigger: Trigger::Scheduled,
            scheduled_for: Some(60_000),
            ..manual(jobs[1], owner)
        };
        let scheduled = queued(e, fired, 3);
        let refire = NewRun {
            trigger: Trigger::Scheduled,
            scheduled_for: Some(60_000),
            ..manual(jobs[1], owner)
        };
        assert!(matches!(
            e.write(|l| l.enqueue_run(&refire, 3, 100)),
            Enqueued::Duplicate(id) if id == scheduled
        ));
        let second = queued(e, manual(jobs[0], owner), 3);
        let third = queued(e, manual(jobs[0], owner), 3);
        assert!(matches!(
            e.write(|l| l.enqueue_run(&manual(jobs[0], owner), 3, 100)),
            Enqueued::QueueFull
        ));
        // A retry waiting for its delay holds its job's later runs back.
        let waiting = FollowUpRun {
            job_id: jobs[2],
            trigger: Trigger::Retry,
            run_by: owner,
            rt_args: None,
            attempt: 2,
            retry_of: Some(first),
            chained_from: None,
            not_before: Some(500),
        };
        let retry = match e.write(|l| l.enqueue_follow_up(&waiting, 5, 100)) {
            Enqueued::Queued(id) => id,
            other => panic!("{other:?}"),
        };
        let behind = queued(e, manual(jobs[2], owner), 5);
        let shared_run = queued(
            e,
            NewRun {
                rt_args: Some("--site 4"),
                ..manual(shared, ann)
            },
            5,
        );
        assert_eq!(e.read(|l| l.active_run_counts()), (7, 0));
        assert!(e.read(|l| l.job_busy(jobs[0])));
        assert!(!e.read(|l| l.job_busy(jobs[3])));

        // Claims: each free job's oldest runnable run, oldest first, up to the limit.
        let claimed = e.write(|l| l.claim_runnable("node-1", 2, 100));
        assert_eq!(t.note("claim 1", claimed), vec![first, scheduled]);
        let claimed = e.write(|l| l.claim_runnable("node-1", 10, 100));
        assert_eq!(t.note("claim 2", claimed), vec![shared_run]);
        assert!(e.write(|l| l.claim_runnable("node-1", 10, 100)).is_empty());
        assert!(e.write(|l| l.claim_runnable("node-1", 0, 600)).is_empty());
        assert_eq!(e.read(|l| l.active_run_counts()), (4, 3));
        assert_eq!(
            e.read(|l| l.count_runs_with_status(jobs[0], RunStatus::Queued)),
            2
        );
        let in_progress: Vec<i64> = e
            .read(|l| l.runs_in_progress())
            .iter()
            .map(|r| r.run.0)
            .collect();
        assert_eq!(in_progress, vec![first, scheduled, shared_run]);
        e.write(|l| l.set_log_progress(first, 10, false));

        // Ends: written once.
        assert!(e.write(|l| l.finish_run(first, &ended(true), 150)));
        assert!(
            !e.write(|l| l.finish_run(first, &ended(false), 160)),
            "a run ends once"
        );
        let done = t.note("finished", e.read(|l| l.run(first))).unwrap();
        assert_eq!(done.status, RunStatus::Succeeded);
        assert_eq!(done.finished_at, Some(150));
        assert!(done.log_truncated);
        e.write(|l| l.set_series_end(first));
        assert!(e.write(|l| l.finish_run(scheduled, &ended(false), 170)));
        e.write(|l| l.set_series_end(scheduled));
        assert_eq!(
            e.read(|l| l.previous_series_end(jobs[0], first + 1000)),
            Some(RunStatus::Succeeded)
        );
        assert_eq!(e.read(|l| l.previous_series_end(jobs[0], first)), None);
        // Cancelling, failing queued runs.
        e.write(|l| l.mark_cancelled_by(RunId(second), UserId(ann)));
        e.write(|l| l.mark_cancelled_by(RunId(second), UserId(owner)));
        assert!(e.write(|l| l.fail_queued_run(second, "cancelled", 180)));
        assert!(!e.write(|l| l.fail_queued_run(second, "cancelled", 181)));
        let cancelled = e.read(|l| l.run(second)).unwrap();
        assert_eq!(cancelled.cancelled_by, Some(ann), "the first to ask");
        // The retry's time comes.
        let claimed = e.write(|l| l.claim_runnable("node-1", 10, 600));
        assert_eq!(t.note("claim 3", claimed), vec![third, retry]);
        let refused = FollowUpRun {
            job_id: jobs[3],
            trigger: Trigger::Chained,
            run_by: owner,
            rt_args: None,
            attempt: 1,
            retry_of: None,
            chained_from: Some(first),
            not_before: None,
        };
        let refused = e.write(|l| l.insert_refused_run(&refused, "queue full", 190));
        t.note("refused", e.read(|l| l.run(refused)));
        assert_eq!(
            e.write(|l| l.fail_queued_runs_of_job(jobs[2], "deleted", 200)),
            1
        );
        assert_eq!(e.read(|l| l.run(behind)).unwrap().status, RunStatus::Failed);
        assert_eq!(e.write(|l| l.fail_runs_in_progress("restart", 210)), 3);

        // Lists: a job's runs and all runs, with their filters and pages.
        let of_job = RunFilter {
            job_id: jobs[0],
            from: None,
            to: None,
            status: Some(RunStatus::Failed),
        };
        let failed: Vec<i64> = e
            .read(|l| l.list_runs(&of_job, 0, 10))
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(t.note("failed of job", failed), vec![third, second]);
        let all = AllRunsFilter::default();
        assert_eq!(e.read(|l| l.count_all_runs(&all)), 8);
        let page: Vec<i64> = e
            .read(|l| l.list_all_runs(&all, 1, 3))
            .iter()
            .map(|r| r.id)
            .collect();
        t.note("all runs page", page);
        let anns = AllRunsFilter {
            visible_to: Some(ann),
            ..AllRunsFilter::default()
        };
        let seen: Vec<i64> = e
            .read(|l| l.list_all_runs(&anns, 0, 10))
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(seen, vec![shared_run]);
        let filtered = AllRunsFilter {
            visible_to: None,
            from: Some(100),
            to: Some(200),
            status: Some(RunStatus::Failed),
            job_id: Some(jobs[0]),
            trigger: Some(Trigger::Manual),
            cancelled: Some(true),
        };
        assert_eq!(e.read(|l| l.count_all_runs(&filtered)), 1);
        assert_eq!(
            t.note("last args", e.read(|l| l.last_manual_args(shared, owner))),
            Some((shared_run, "--site 4".to_string(), false))
        );
        assert_eq!(e.read(|l| l.last_run_on(jobs[0])), Some(100));
        assert_eq!(t.note("totals", e.read(|l| l.ledger_totals())), (5, 8));

        // The runs report: the same columns and values, row by row.
        let mut report = Report::default();
        let all_time: Interrupt = Arc::new(|| false);
        e.read(|l| l.runs_report(0, all_time, &mut report));
        assert_eq!(report.rows.len(), 8);
        assert_eq!(report.columns[0], "runId");
        assert!(
            report.rows[0].contains("1970-01-01T00:00:00.150Z"),
            "{:?}",
            report.rows[0]
        );
        t.note("report", (&report.columns, &report.rows));
        // PostgreSQL asks the interrupt before each batch of rows (SQLite every 10,000 steps
        // of its engine, after this small report is done).
        if let Engine::Postgres(db) = e {
            let mut stopped = Report::default();
            let stop: Interrupt = Arc::new(|| true);
            let interrupted = db.read(|l| l.runs_report(0, stop, &mut stopped));
            assert!(
                matches!(interrupted, Err(Error::Interrupted)),
                "{interrupted:?}"
            );
            assert!(stopped.rows.is_empty());
        }

        // Retention's reads and deletion.
        let old = e.read(|l| l.runs_finished_before(175, RunId(0), 10));
        let old_ids: Vec<i64> = old.iter().map(|r| r.run.0).collect();
        assert_eq!(*t.note("finished before", &old_ids), vec![first, scheduled]);
        assert_eq!(e.read(|l| l.run_finished_at(old[0])), Some(150));
        assert_eq!(
            e.write(|l| l.delete_finished_runs(&[first, scheduled, third], 175)),
            2
        );
        assert!(e.read(|l| l.run(first)).is_none());
    });
}

#[test]
fn the_claim_follows_the_sqlite_order_exactly() {
    // The scenario of the SQLite claim's own unit test: busy jobs, a waiting retry, the limit.
    on_both_engines(|e, t| {
        let owner = add_user(e, "owner", true);
        let jobs: Vec<i64> = (1..=4)
            .map(|n| add_job(e, draft(&format!("job {n}")), owner))
            .collect();
        let job3 = queued(e, manual(jobs[2], owner), 10); // job 3's oldest
        let done = queued(e, manual(jobs[0], owner), 10);
        let job1 = queued(e, manual(jobs[0], owner), 10);
        let busy = queued(e, manual(jobs[1], owner), 10);
        let job2 = queued(e, manual(jobs[1], owner), 10); // waits for `busy`
        let job1_next = queued(e, manual(jobs[0], owner), 10);
        let retry = FollowUpRun {
            job_id: jobs[3],
            trigger: Trigger::Retry,
            run_by: owner,
            rt_args: None,
            attempt: 2,
            retry_of: None,
            chained_from: None,
            not_before: Some(500),
        };
        let Enqueued::Queued(waiting) = e.write(|l| l.enqueue_follow_up(&retry, 10, 100)) else {
            panic!("the retry")
        };
        let job4_next = queued(e, manual(jobs[3], owner), 10);
        let job3_next = queued(e, manual(jobs[2], owner), 10);
        // `done` ends and `busy` runs, as in the SQLite test's starting rows.
        assert_eq!(e.write(|l| l.claim_runnable("node-1", 1, 50)), vec![job3]);
        assert!(e.write(|l| l.finish_run(job3, &ended(true), 60)));
        let started = e.write(|l| l.claim_runnable("node-1", 2, 60));
        assert_eq!(started, vec![done, busy]);
        assert!(e.write(|l| l.finish_run(done, &ended(true), 70)));
        let claimed = e.write(|l| l.claim_runnable("node-1", 10, 100));
        assert_eq!(t.note("claimed", claimed), vec![job1, job3_next]);
        assert!(e.write(|l| l.claim_runnable("node-1", 10, 100)).is_empty());
        for id in [job1, busy, job3_next] {
            assert!(e.write(|l| l.finish_run(id, &ended(true), 200)));
        }
        assert_eq!(
            e.write(|l| l.claim_runnable("node-1", 2, 600)),
            vec![job2, job1_next]
        );
        assert_eq!(
            e.write(|l| l.claim_runnable("node-1", 2, 600)),
            vec![waiting]
        );
        assert!(e.write(|l| l.finish_run(waiting, &ended(true), 700)));
        assert_eq!(
            e.write(|l| l.claim_runnable("node-1", 2, 700)),
            vec![job4_next]
        );
    });
}

/// A report's columns and rows, each row as its cells' Debug forms.
#[derive(Default)]
struct Report {
    columns: Vec<String>,
    rows: Vec<String>,
}

impl ReportSink for Report {
    fn columns(&mut self, names: &[&str]) -> bool {
        self.columns = names.iter().map(|n| n.to_string()).collect();
        true
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> bool {
        let shown: Vec<String> = cells
            .iter()
            .map(|c| match c {
                Cell::Text(t) => String::from_utf8_lossy(t).into_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        self.rows.push(shown.join("|"));
        true
    }
}

/// A PostgreSQL ledger with an owner and one job with `max_queued` queued runs allowed.
fn pg_with_job(max_queued: i64) -> (PgLedgerDb, i64, i64) {
    let db = fresh_pg();
    let owner = db
        .write(|l| l.insert_user(&new_user("owner", true), 1))
        .unwrap()
        .unwrap();
    let mut d = draft("busy");
    d.max_queued_runs = max_queued;
    let job = db.write(|l| l.insert_job(&d, owner, 1)).unwrap();
    (db, owner, job)
}

/// Runs `work(thread index)` on `threads` threads released together.
fn at_once<T: Send + 'static>(
    threads: usize,
    work: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(threads));
    let work = Arc::new(work);
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (barrier, work) = (barrier.clone(), work.clone());
            std::thread::spawn(move || {
                barrier.wait();
                work(i)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn writers_enqueueing_at_once_never_exceed_the_queue_limit() {
    let (db, owner, job) = pg_with_job(5);
    let db2 = db.clone();
    let outcomes: Vec<Vec<Enqueued>> = at_once(4, move |_| {
        (0..10)
            .map(|_| {
                db2.write(|l| l.enqueue_run(&manual(job, owner), 5, 100))
                    .unwrap()
            })
            .collect()
    });
    let accepted = outcomes
        .iter()
        .flatten()
        .filter(|o| matches!(o, Enqueued::Queued(_)))
        .count();
    let full = outcomes
        .iter()
        .flatten()
        .filter(|o| matches!(o, Enqueued::QueueFull))
        .count();
    assert_eq!((accepted, full), (5, 35));
    let waiting = db
        .read(|l| l.count_runs_with_status(job, RunStatus::Queued))
        .unwrap();
    assert_eq!(waiting, 5);
    // The same idempotency key sent by many writers at once makes one run.
    let db3 = db.clone();
    let keyed: Vec<Enqueued> = at_once(4, move |_| {
        let run = NewRun {
            idempotency_key: Some("once"),
            ..manual(job, owner)
        };
        db3.write(|l| l.enqueue_run(&run, 100, 200)).unwrap()
    });
    let made: Vec<i64> = keyed
        .iter()
        .filter_map(|o| match o {
            Enqueued::Queued(id) => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(made.len(), 1, "{keyed:?}");
    assert!(
        keyed
            .iter()
            .all(|o| matches!(o, Enqueued::Queued(id) | Enqueued::Duplicate(id) if *id == made[0]))
    );
}

#[test]
fn claims_at_once_never_start_two_runs_of_one_job() {
    let test_db = postgres::server().create_database("");
    let db = PgLedgerDb::open(&test_db.url()).unwrap();
    let owner = db
        .write(|l| l.insert_user(&new_user("owner", true), 1))
        .unwrap()
        .unwrap();
    let jobs: Vec<i64> = (0..6)
        .map(|n| {
            db.write(|l| l.insert_job(&draft(&format!("j{n}")), owner, 1))
                .unwrap()
        })
        .collect();
    for _ in 0..5 {
        for &job in &jobs {
            db.write(|l| l.enqueue_run(&manual(job, owner), 100, 10))
                .unwrap();
        }
    }
    // Rounds of four claimers at once (each up to 3 runs), the winners ended between rounds:
    // every run starts exactly once, and never beside another run of its job.
    let mut started: Vec<i64> = Vec::new();
    for round in 0..40 {
        let db2 = db.clone();
        let claims: Vec<Vec<i64>> = at_once(4, move |_| {
            db2.write(|l| l.claim_runnable("node-1", 3, 100)).unwrap()
        });
        let running = db.read(|l| l.runs_in_progress()).unwrap();
        let mut running_jobs: Vec<i64> = running.iter().map(|r| r.job.0).collect();
        running_jobs.sort();
        let before = running_jobs.len();
        running_jobs.dedup();
        assert_eq!(
            before,
            running_jobs.len(),
            "round {round}: two runs of a job"
        );
        let claimed: Vec<i64> = claims.into_iter().flatten().collect();
        assert_eq!(claimed.len(), running.len(), "round {round}");
        for r in &running {
            assert!(
                db.write(|l| l.finish_run(r.run.0, &ended(true), 200))
                    .unwrap()
            );
        }
        started.extend(claimed);
        if started.len() == 30 {
            break;
        }
    }
    started.sort();
    let all = started.len();
    started.dedup();
    assert_eq!((all, started.len()), (30, 30), "every run started once");
    // The index is the backstop: a second IN_PROGRESS run of a job is refused by the database
    // itself, whatever a node's code does.
    for _ in 0..2 {
        db.write(|l| l.enqueue_run(&manual(jobs[0], owner), 100, 300))
            .unwrap();
    }
    let refused = std::thread::spawn(move || {
        let mut client = ::postgres::Config::new()
            .host("127.0.0.1")
            .port(test_db.port)
            .user(&test_db.owner)
            .password(&test_db.password)
            .dbname(&test_db.name)
            .connect(::postgres::NoTls)
            .unwrap();
        client
            .execute(
                "UPDATE runs SET status = 'IN_PROGRESS' WHERE status = 'QUEUED'",
                &[],
            )
            .map_err(Error::from)
    })
    .join()
    .unwrap();
    assert!(refused.is_err_and(|e| e.is_unique_violation()));
    assert_eq!(db.read(|l| l.active_run_counts()).unwrap(), (2, 0));
}

#[test]
fn a_run_ended_by_two_writers_at_once_ends_once() {
    let (db, owner, job) = pg_with_job(100);
    for _ in 0..20 {
        db.write(|l| l.enqueue_run(&manual(job, owner), 100, 10))
            .unwrap();
        let [run] = db.write(|l| l.claim_runnable("node-1", 1, 10)).unwrap()[..] else {
            panic!("one claimed")
        };
        let db2 = db.clone();
        let ends = at_once(2, move |i| {
            db2.write(|l| l.finish_run(run, &ended(i == 0), 20))
                .unwrap()
        });
        assert_eq!(ends.iter().filter(|&&e| e).count(), 1, "{ends:?}");
        let stored = db.read(|l| l.run(run)).unwrap().unwrap();
        assert_eq!(stored.status == RunStatus::Succeeded, ends[0]);
    }
}

#[test]
fn nodes_starting_together_migrate_once_and_a_second_open_changes_nothing() {
    let test_db = postgres::server().create_database("");
    let url = test_db.url();
    let opened = at_once(3, move |_| {
        PgLedgerDb::open(&url).map(|db| db.schema_version())
    });
    for result in opened {
        assert_eq!(
            result.unwrap().unwrap(),
            labcron::store::postgres::SCHEMA_VERSION
        );
    }
    assert_eq!(
        test_db.query_text("SELECT count(*)::text FROM ledger_schema"),
        "1"
    );
    assert_eq!(
        test_db.query_text("SELECT count(*)::text FROM users WHERE is_system"),
        "1",
        "the system user is made once"
    );
    let again = PgLedgerDb::open(&test_db.url()).unwrap();
    assert!(again.read(|l| l.system_user_id()).is_ok());
    // The audit trail refuses changes here too.
    assert!(!again.url().contains(&test_db.password), "{}", again.url());
    let id = again
        .write(|l| l.record_audit(&Event::new("a", "SIGN_IN", None), 1))
        .unwrap();
    let changed = std::panic::catch_unwind(|| {
        test_db.query_text(&format!(
            "UPDATE audit_events SET actor = 'mallory' WHERE id = {id} RETURNING actor"
        ))
    });
    assert!(changed.is_err(), "an audit event was changed");
    // A database a newer labcron migrated further is refused, not used.
    test_db.query_text("UPDATE ledger_schema SET version = 99 RETURNING version::text");
    let err = PgLedgerDb::open(&test_db.url()).unwrap_err();
    assert!(err.to_string().contains("99"), "{err}");
}

#[test]
fn an_unreachable_database_is_told_apart_from_other_failures() {
    // Nobody listens on this port: opening fails with the URL, never the password.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err =
        PgLedgerDb::open(&format!("postgres://lab:secret@127.0.0.1:{port}/ledger")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("secret"), "{text}");
    // A ledger whose database stops taking connections: calls fail as unreachable (worth a
    // 503), and work again once it takes them.
    let test_db = postgres::server().create_database("");
    let db = PgLedgerDb::open(&test_db.url()).unwrap();
    let (name, owner) = (test_db.name.clone(), test_db.owner.clone());
    postgres::server().as_admin("postgres", move |c| {
        c.batch_execute(&format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{owner}'"
        ))
        .unwrap();
    });
    let failed = db.read(|l| l.system_user_id()).unwrap_err();
    assert!(failed.is_unreachable(), "{failed:?}");
    let name = test_db.name.clone();
    postgres::server().as_admin("postgres", move |c| {
        c.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
            .unwrap();
    });
    assert!(db.read(|l| l.system_user_id()).is_ok());
    // A failure of the SQL itself is not "unreachable".
    let bad = db
        .write(|l| l.insert_job(&draft("x"), 999_999, 1))
        .unwrap_err();
    assert!(
        !bad.is_unreachable() && !bad.is_unique_violation(),
        "{bad:?}"
    );
}

#[test]
fn a_failed_write_is_rolled_back_and_a_read_cannot_write() {
    let (db, owner, job) = pg_with_job(100);
    // The closure fails after writing: nothing of it stays.
    let failed: Result<(), Error> = db.write(|l| {
        l.enqueue_run(&manual(job, owner), 100, 10)?;
        l.insert_job(&draft("half done"), owner, 10)?;
        Err(Error::Corrupt("the caller changed its mind".into()))
    });
    assert!(matches!(failed, Err(Error::Corrupt(_))));
    assert_eq!(db.read(|l| l.active_run_counts()).unwrap(), (0, 0));
    assert!(!db.read(|l| l.job_name_taken("half done", None)).unwrap());
    // A closure that panics is rolled back too, and the pool stays usable.
    let db2 = db.clone();
    let panicked = std::thread::spawn(move || {
        db2.write(|l| -> Result<(), Error> {
            l.enqueue_run(&manual(job, owner), 100, 10)?;
            panic!("a bug in the caller");
        })
    })
    .join();
    assert!(panicked.is_err());
    assert_eq!(db.read(|l| l.active_run_counts()).unwrap(), (0, 0));
    // The same statements, prepared in the transactions rolled back, serve the next ones.
    let queued = db
        .write(|l| l.enqueue_run(&manual(job, owner), 100, 10))
        .unwrap();
    assert!(matches!(queued, Enqueued::Queued(_)));
    assert_eq!(db.read(|l| l.active_run_counts()).unwrap(), (1, 0));
    // A read is read-only: a write inside one is refused by the database.
    let refused = db.read(|l| l.enqueue_run(&manual(job, owner), 100, 10));
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(db.read(|l| l.active_run_counts()).unwrap(), (1, 0));
}

#[test]
fn two_writes_locking_jobs_in_opposite_orders_fail_one_of_them_as_retryable() {
    // What two chained runs' ends can do (each locks its job, then the other's): PostgreSQL
    // breaks the deadlock by rolling one write back, which says it is worth running again.
    let (db, owner, first) = pg_with_job(100);
    let second = db
        .write(|l| l.insert_job(&draft("second"), owner, 1))
        .unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let (db2, barrier2) = (db.clone(), barrier.clone());
    let results = at_once(2, move |i| {
        let (a, b) = if i == 0 {
            (first, second)
        } else {
            (second, first)
        };
        db2.write(|l| {
            l.enqueue_run(&manual(a, owner), 100, 10)?;
            barrier2.wait();
            l.enqueue_run(&manual(b, owner), 100, 10)
        })
    });
    drop(barrier);
    let failed: Vec<&Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(failed.len(), 1, "{results:?}");
    assert!(failed[0].is_retryable(), "{:?}", failed[0]);
    assert!(!failed[0].is_unreachable());
    // The failed write left nothing; the other wrote both runs.
    assert_eq!(db.read(|l| l.active_run_counts()).unwrap(), (2, 0));
}

// ---- The use cases' locks (PostgreSQL): each read-then-write use case run while another write
// holds what it reads. The holder's write stays open until the second one is seen waiting for a
// lock (or has ended without waiting, which is what happens when its lock is missing), so the
// outcome never depends on timing.

use labcron::error::ServiceError;
use labcron::service;
use labcron::store::audit::Event as AuditEvent;

/// A PostgreSQL ledger in a new database, with its URL (to watch who waits for a lock).
fn fresh_pg_with_url() -> (PgLedgerDb, String) {
    let url = postgres::server().create_database("").url();
    (PgLedgerDb::open(&url).unwrap(), url)
}

/// Runs `holder` in a write that is kept open until `waiter`, a write started after it on
/// another thread, waits for a lock (or ends); then the holder commits. The waiter's result.
fn while_held<T: Send + 'static>(
    db: &PgLedgerDb,
    url: &str,
    holder: impl FnOnce(&dyn Ledger) -> Result<(), ServiceError> + Send + 'static,
    waiter: impl FnOnce(&dyn Ledger) -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    let (held, waited) = while_held_then(db, url, holder, waiter, |_| Ok(()));
    held.expect("the holder's write");
    waited
}

/// `while_held`, where the holder's write goes on with `then` once the waiter waits (or has
/// ended), before it commits. Both writes' results.
fn while_held_then<T: Send + 'static>(
    db: &PgLedgerDb,
    url: &str,
    holder: impl FnOnce(&dyn Ledger) -> Result<(), ServiceError> + Send + 'static,
    waiter: impl FnOnce(&dyn Ledger) -> Result<T, ServiceError> + Send + 'static,
    then: impl FnOnce(&dyn Ledger) -> Result<(), ServiceError> + Send + 'static,
) -> (Result<(), ServiceError>, Result<T, ServiceError>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let db1 = db.clone();
    let holding = std::thread::spawn(move || {
        db1.write(|l| -> Result<(), ServiceError> {
            holder(l)?;
            held_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            then(l)
        })
    });
    held_rx
        .recv()
        .expect("the holder's write failed before holding");
    let done = Arc::new(AtomicBool::new(false));
    let (db2, done2) = (db.clone(), done.clone());
    let waiting = std::thread::spawn(move || {
        let result = db2.write(|l| waiter(l));
        done2.store(true, Ordering::SeqCst);
        result
    });
    let mut watcher = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let waiters: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .unwrap()
            .get(0);
        if waiters > 0 || done.load(Ordering::SeqCst) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second write neither waited nor ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    release_tx.send(()).unwrap();
    (holding.join().unwrap(), waiting.join().unwrap())
}

/// The contract's code a use case failed with.
fn code<T: Debug>(result: &Result<T, ServiceError>) -> Option<String> {
    match result {
        Err(e) => e.first_code().map(str::to_string),
        Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

fn on_demand(run_by: i64) -> service::runs::RunRequest {
    service::runs::RunRequest {
        trigger: Trigger::Manual,
        run_by,
        args: None,
        scheduled_for: None,
        idempotency_key: None,
    }
}

fn closed(name: &str) -> JobDraft {
    JobDraft {
        activity_status: ActivityStatus::Closed,
        ..draft(name)
    }
}

#[test]
fn a_run_is_not_accepted_for_a_job_closed_or_deleted_while_it_was_being_accepted() {
    let (db, url) = fresh_pg_with_url();
    let owner = db
        .write(|l| l.insert_user(&new_user("owner", true), 1))
        .unwrap()
        .unwrap();
    let job = db
        .write(|l| l.insert_job(&draft("busy"), owner, 1))
        .unwrap();
    // A PUT closing the job commits while the run is being accepted.
    let accepted = while_held(
        &db,
        &url,
        move |l| Ok(l.replace_job(job, &closed("busy"), 2)?),
        move |l| service::runs::accept_on_demand(l, job, &on_demand(owner), None, 3),
    );
    assert_eq!(code(&accepted).as_deref(), Some("SCHEDULED_JOB_NOT_ACTIVE"));
    // Reopened, then deleted while the scheduler fires it.
    db.write(|l| l.replace_job(job, &draft("busy"), 4)).unwrap();
    let fired = while_held(
        &db,
        &url,
        move |l| Ok(l.soft_delete_job(job, 5)?),
        move |l| service::runs::accept_fire(l, job, 60_000, Trigger::Scheduled, owner, 6),
    )
    .unwrap();
    assert!(matches!(fired, service::runs::Fire::Gone), "{fired:?}");
    assert_eq!(db.read(|l| l.active_run_counts()).unwrap(), (0, 0));
}

#[test]
fn a_job_deleted_while_it_was_being_updated_stays_deleted() {
    let (db, url) = fresh_pg_with_url();
    let admin = db
        .write(|l| l.insert_user(&new_user("admin", true), 1))
        .unwrap()
        .unwrap();
    let job = db
        .write(|l| l.insert_job(&draft("doomed"), admin, 1))
        .unwrap();
    let saver = db.read(|l| l.user(admin)).unwrap().unwrap();
    let updated = while_held(
        &db,
        &url,
        move |l| Ok(l.soft_delete_job(job, 2)?),
        move |l| {
            let old = service::access::changeable_job_for_update(l, job, &saver)?;
            service::jobs::save(l, &draft("doomed"), Some(&old), &saver, 3)
        },
    );
    assert_eq!(code(&updated).as_deref(), Some("SCHEDULED_JOB_NOT_FOUND"));
    assert_eq!(db.read(|l| l.live_job(job)).unwrap().map(|j| j.id), None);
}

#[test]
fn a_chained_run_of_a_job_deleted_meanwhile_is_refused_not_queued() {
    let (db, url) = fresh_pg_with_url();
    let owner = db
        .write(|l| l.insert_user(&new_user("owner", true), 1))
        .unwrap()
        .unwrap();
    let target = db
        .write(|l| l.insert_job(&draft("target"), owner, 1))
        .unwrap();
    let source = db
        .write(|l| {
            l.insert_job(
                &JobDraft {
                    on_success: vec![target],
                    ..draft("source")
                },
                owner,
                1,
            )
        })
        .unwrap();
    let run = match db
        .write(|l| l.enqueue_run(&manual(source, owner), 10, 2))
        .unwrap()
    {
        Enqueued::Queued(id) => id,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        db.write(|l| l.claim_runnable("node-1", 1, 3)).unwrap(),
        vec![run]
    );
    let follow_up = while_held(
        &db,
        &url,
        move |l| {
            l.soft_delete_job(target, 4)?;
            Ok(())
        },
        move |l| {
            assert!(l.finish_run(run, &ended(true), 5)?);
            labcron::executor::followup::after_end(l, run, 5)
        },
    )
    .unwrap();
    assert_eq!(follow_up.chained.len(), 1, "{follow_up:?}");
    let chained = db.read(|l| l.run(follow_up.chained[0])).unwrap().unwrap();
    assert_eq!(chained.status, RunStatus::Failed);
    assert_eq!(
        db.read(|l| l.count_runs_with_status(target, RunStatus::Queued))
            .unwrap(),
        0
    );
}

#[test]
fn two_admins_removing_each_other_at_once_leave_one_admin() {
    let (db, url) = fresh_pg_with_url();
    let first = db
        .write(|l| l.insert_user(&new_user("first", true), 1))
        .unwrap()
        .unwrap();
    let second = db
        .write(|l| l.insert_user(&new_user("second", true), 1))
        .unwrap()
        .unwrap();
    // One takes the admin role from the first, the other disables the second, at once.
    let mut demoted = db.read(|l| l.user(first)).unwrap().unwrap();
    demoted.admin = false;
    let disabled = while_held(
        &db,
        &url,
        move |l| service::users::save_profile(l, &demoted, None, 2),
        move |l| {
            let audit = AuditEvent::new("first", "USER_DELETE", None);
            service::users::disable(l, second, &audit, 3)
        },
    );
    assert_eq!(code(&disabled).as_deref(), Some("USER_LAST_ADMIN"));
    assert_eq!(db.read(|l| l.count_admins()).unwrap(), 1);
    // And the other way round: a disable held while a demotion waits.
    let third = db
        .write(|l| l.insert_user(&new_user("third", true), 1))
        .unwrap()
        .unwrap();
    let mut demoted = db.read(|l| l.user(third)).unwrap().unwrap();
    demoted.admin = false;
    let saved = while_held(
        &db,
        &url,
        move |l| {
            let audit = AuditEvent::new("third", "USER_DELETE", None);
            service::users::disable(l, second, &audit, 4)
        },
        move |l| service::users::save_profile(l, &demoted, None, 5),
    );
    assert_eq!(code(&saved).as_deref(), Some("USER_LAST_ADMIN"));
    assert_eq!(db.read(|l| l.count_admins()).unwrap(), 1);
}

#[test]
fn two_saves_closing_a_chain_cycle_together_are_refused_one() {
    let (db, url) = fresh_pg_with_url();
    let admin = db
        .write(|l| l.insert_user(&new_user("admin", true), 1))
        .unwrap()
        .unwrap();
    let a = db.write(|l| l.insert_job(&draft("a"), admin, 1)).unwrap();
    let b = db.write(|l| l.insert_job(&draft("b"), admin, 1)).unwrap();
    let saver = db.read(|l| l.user(admin)).unwrap().unwrap();
    let (saver1, saver2) = (saver.clone(), saver);
    let saved = while_held(
        &db,
        &url,
        move |l| {
            let old = service::access::changeable_job_for_update(l, a, &saver1)?;
            let d = JobDraft {
                on_success: vec![b],
                ..draft("a")
            };
            service::jobs::save(l, &d, Some(&old), &saver1, 2).map(|_| ())
        },
        move |l| {
            let old = service::access::changeable_job_for_update(l, b, &saver2)?;
            let d = JobDraft {
                on_failure: vec![a],
                ..draft("b")
            };
            service::jobs::save(l, &d, Some(&old), &saver2, 3)
        },
    );
    assert_eq!(code(&saved).as_deref(), Some("SCHEDULED_JOB_CHAIN_CYCLE"));
    assert_eq!(db.read(|l| l.chain_edges(None)).unwrap(), vec![(a, b)]);
}

#[test]
fn a_name_taken_meanwhile_is_the_contracts_duplicate_error_not_a_500() {
    let (db, url) = fresh_pg_with_url();
    let admin = db
        .write(|l| l.insert_user(&new_user("admin", true), 1))
        .unwrap()
        .unwrap();
    let saver = db.read(|l| l.user(admin)).unwrap().unwrap();
    let (saver1, saver2) = (saver.clone(), saver);
    let created = while_held(
        &db,
        &url,
        move |l| service::jobs::save(l, &draft("twin"), None, &saver1, 2).map(|_| ()),
        move |l| service::jobs::save(l, &draft("twin"), None, &saver2, 3),
    );
    assert_eq!(
        code(&created).as_deref(),
        Some("SCHEDULED_JOB_DUP_JOB_NAME")
    );
    assert_eq!(
        db.read(|l| l.count_jobs(&JobFilter {
            visible_to: None,
            query: None,
            job_type: None,
        }))
        .unwrap(),
        1
    );
    // A login name: one node creates "Taken" while another renames a user to "taken".
    let other = db
        .write(|l| l.insert_user(&new_user("other", false), 1))
        .unwrap()
        .unwrap();
    let mut renamed = db.read(|l| l.user(other)).unwrap().unwrap();
    renamed.login_name = "taken".into();
    let saved = while_held(
        &db,
        &url,
        move |l| {
            let audit = AuditEvent::new("admin", "USER_CREATE", None);
            service::users::create(l, &new_user("Taken", false), audit, 4).map(|_| ())
        },
        move |l| service::users::save_profile(l, &renamed, None, 5),
    );
    assert_eq!(code(&saved).as_deref(), Some("USER_DUP_LOGIN_NAME"));
    assert_eq!(
        db.read(|l| l.user(other)).unwrap().unwrap().login_name,
        "other"
    );
}

#[test]
fn a_save_chaining_to_a_job_another_save_holds_does_not_deadlock_with_it() {
    // One save holds job b (its update began), the other saves a → b under the chains' lock,
    // then the first checks its own chains: the second must not wait for b's row meanwhile.
    let (db, url) = fresh_pg_with_url();
    let admin = db
        .write(|l| l.insert_user(&new_user("admin", true), 1))
        .unwrap()
        .unwrap();
    let [a, b, c] =
        ["a", "b", "c"].map(|n| db.write(|l| l.insert_job(&draft(n), admin, 1)).unwrap());
    let saver = db.read(|l| l.user(admin)).unwrap().unwrap();
    let (saver1, saver2) = (saver.clone(), saver);
    let (held, waited) = while_held_then(
        &db,
        &url,
        move |l| {
            service::access::changeable_job_for_update(l, b, &saver1)?;
            Ok(())
        },
        move |l| {
            let old = service::access::changeable_job_for_update(l, a, &saver2)?;
            let d = JobDraft {
                on_success: vec![b],
                ..draft("a")
            };
            service::jobs::save(l, &d, Some(&old), &saver2, 2)
        },
        move |l| {
            let saver = l.user(admin)?.ok_or_else(ServiceError::user_not_found)?;
            let old = service::access::changeable_job_for_update(l, b, &saver)?;
            let d = JobDraft {
                on_success: vec![c],
                ..draft("b")
            };
            service::jobs::save(l, &d, Some(&old), &saver, 3).map(|_| ())
        },
    );
    assert!(held.is_ok(), "{held:?}");
    assert_eq!(waited.unwrap(), a);
    let mut edges = db.read(|l| l.chain_edges(None)).unwrap();
    edges.sort_unstable();
    assert_eq!(edges, vec![(a, b), (b, c)]);
}

/// A node that hangs in the middle of a write (stopped, swapping) must not hold its row locks for
/// as long as it hangs: the server ends its session after 10 s idle in the transaction, so another
/// node's write on the same job goes through while the hung one still sleeps, and the hung
/// write's commit fails instead of landing late.
#[test]
fn a_writer_hung_inside_its_transaction_loses_its_locks() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (db, _owner, job) = pg_with_job(100);
    let woke = Arc::new(AtomicBool::new(false));
    let (locked, has_lock) = std::sync::mpsc::channel();
    let hung = {
        let (db, woke) = (db.clone(), woke.clone());
        std::thread::spawn(move || {
            db.write(|l| {
                l.job_for_update(job)?;
                locked.send(()).unwrap();
                std::thread::sleep(std::time::Duration::from_secs(25));
                woke.store(true, Ordering::SeqCst);
                l.job_for_update(job)
            })
        })
    };
    has_lock.recv().unwrap();
    let other = db.write(|l| l.job_for_update(job)).unwrap();
    assert!(other.is_some());
    assert!(
        !woke.load(Ordering::SeqCst),
        "the other write waited until the hung one woke"
    );
    let late = hung.join().unwrap();
    assert!(late.is_err(), "the hung write committed: {late:?}");
}
