//! The cluster's part of the PostgreSQL ledger, called straight from the library: nodes register
//! and beat, a silent node is declared lost once however many nodes notice at once, its
//! IN_PROGRESS runs fail (its QUEUED ones stay), a node writes only its own runs' ends and none
//! once declared lost, cancels asked anywhere are seen by the owning node, and the firing lock is
//! held by one node at a time and passes on when its holder's connection dies.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use labcron::domain::ids::{RunId, UserId};
use labcron::domain::run::{RunStatus, Trigger};
use labcron::store::ledger::{JobLedger, NodeLedger, RunLedger, UserLedger};
use labcron::store::postgres::{NodeId, PgLedgerDb};
use labcron::store::runs::{Enqueued, NewRun, Outcome};
use labcron::store::users::NewUser;

use crate::pg_ledger::draft;
use crate::postgres::{self, TestDb};

/// A fresh database, its ledger, an admin and `jobs` on-demand jobs.
fn cluster_ledger(jobs: usize) -> (TestDb, PgLedgerDb, i64, Vec<i64>) {
    let test_db = postgres::server().create_database("");
    let db = PgLedgerDb::open(&test_db.url()).unwrap();
    let user = NewUser {
        login_name: "ada",
        first_name: "Ada",
        last_name: "L",
        email_address: "ada@lab.example",
        admin: true,
        password_hash: "hash",
    };
    let admin = db.write(|l| l.insert_user(&user, 1)).unwrap().unwrap();
    let ids = (0..jobs)
        .map(|n| {
            let d = draft(&format!("job-{n}"));
            db.write(|l| l.insert_job(&d, admin, 1)).unwrap()
        })
        .collect();
    (test_db, db, admin, ids)
}

fn queue(db: &PgLedgerDb, job_id: i64, run_by: i64) -> i64 {
    let run = NewRun {
        job_id,
        trigger: Trigger::Manual,
        run_by,
        rt_args: None,
        scheduled_for: None,
        idempotency_key: None,
    };
    match db.write(|l| l.enqueue_run(&run, 100, 10)).unwrap() {
        Enqueued::Queued(id) => id,
        other => panic!("not queued: {other:?}"),
    }
}

/// Claims one run as `node`.
fn claim_on(db: &PgLedgerDb, node: &str) -> i64 {
    let [run] = db.write(|l| l.claim_runnable(node, 1, 20)).unwrap()[..] else {
        panic!("nothing claimed");
    };
    run
}

fn succeeded() -> Outcome {
    Outcome {
        succeeded: true,
        exit_code: Some(0),
        ..Outcome::default()
    }
}

fn status(db: &PgLedgerDb, run: i64) -> (RunStatus, Option<String>) {
    let run = db.read(|l| l.run(run)).unwrap().unwrap();
    (run.status, run.message)
}

/// Makes nodes look silent for an hour (their last heartbeat moved back), whatever the time the
/// test took.
fn silence(test_db: &TestDb, names: &[&str]) {
    let list = names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(",");
    test_db.query_text(&format!(
        "WITH s AS (UPDATE nodes SET heartbeat_at = heartbeat_at - 3600000 WHERE name IN ({list})
         RETURNING 1) SELECT count(*)::TEXT FROM s"
    ));
}

fn node(name: &str, incarnation: &str) -> NodeId {
    NodeId {
        name: name.into(),
        incarnation: incarnation.into(),
    }
}

#[test]
fn nodes_register_beat_and_a_silent_one_is_declared_lost_once_however_many_notice() {
    let (test_db, db, _, _) = cluster_ledger(0);
    assert_eq!(db.read(|l| l.node("a")).unwrap(), None);
    for name in ["a", "b", "c"] {
        db.write(|l| l.register_node(name, &format!("{name}-1")))
            .unwrap();
    }
    let a = db.read(|l| l.node("a")).unwrap().unwrap();
    assert_eq!(a.incarnation, "a-1");
    assert!(!a.lost);
    assert!(a.silent_ms >= 0 && a.silent_ms < 60_000, "{a:?}");
    // Only the registered incarnation beats.
    assert!(db.write(|l| l.node_heartbeat("a", "a-1")).unwrap());
    assert!(!db.write(|l| l.node_heartbeat("a", "a-0")).unwrap());
    // Nobody is silent for a minute yet.
    assert!(
        db.write(|l| l.declare_silent_nodes_lost(60_000))
            .unwrap()
            .is_empty()
    );
    silence(&test_db, &["a", "c"]);
    // Four nodes notice at once that a and c are silent: each is declared by one of them.
    let barrier = Arc::new(Barrier::new(4));
    let declared: Vec<Vec<String>> = (0..4)
        .map(|_| {
            let (db, barrier) = (db.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                db.write(|l| l.declare_silent_nodes_lost(60_000)).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let mut all: Vec<String> = declared.into_iter().flatten().collect();
    all.sort();
    assert_eq!(all, ["a", "c"]);
    assert!(db.read(|l| l.node("a")).unwrap().unwrap().lost);
    assert!(!db.read(|l| l.node("b")).unwrap().unwrap().lost);
    // A lost node's heartbeat is refused until it registers again (a new incarnation).
    assert!(!db.write(|l| l.node_heartbeat("a", "a-1")).unwrap());
    db.write(|l| l.register_node("a", "a-2")).unwrap();
    assert!(db.write(|l| l.node_heartbeat("a", "a-2")).unwrap());
    assert!(!db.read(|l| l.node("a")).unwrap().unwrap().lost);
    // A clean shutdown leaves the node gone, not silent.
    db.write(|l| l.node_left("b", "b-1")).unwrap();
    assert!(db.read(|l| l.node("b")).unwrap().unwrap().lost);
    assert!(!db.write(|l| l.node_heartbeat("b", "b-1")).unwrap());
}

#[test]
fn a_lost_nodes_runs_fail_its_queued_ones_stay_and_it_cannot_overwrite_them() {
    let (test_db, db, admin, jobs) = cluster_ledger(3);
    db.write(|l| l.register_node("a", "a-1")).unwrap();
    db.write(|l| l.register_node("b", "b-1")).unwrap();
    let on_a = {
        queue(&db, jobs[0], admin);
        claim_on(&db, "a")
    };
    let on_b = {
        queue(&db, jobs[1], admin);
        claim_on(&db, "b")
    };
    let waiting = queue(&db, jobs[0], admin);
    let other_waiting = queue(&db, jobs[2], admin);
    assert_eq!(
        db.read(|l| l.runs_in_progress_on("a")).unwrap(),
        vec![labcron::domain::ids::RunOfJob::new(
            labcron::domain::ids::JobId(jobs[0]),
            RunId(on_a)
        )]
    );

    // Node a's ledger writes ends as a; b's run is not a's to end.
    let a_ledger = PgLedgerDb::open(&test_db.url()).unwrap();
    a_ledger.set_node(Some(node("a", "a-1")));
    assert!(
        !a_ledger
            .write(|l| l.finish_run(on_b, &succeeded(), 30))
            .unwrap()
    );
    assert_eq!(status(&db, on_b).0, RunStatus::InProgress);

    // a is declared lost: its run fails, the queued runs stay queued.
    silence(&test_db, &["a"]);
    let lost = db.write(|l| l.declare_silent_nodes_lost(60_000)).unwrap();
    assert_eq!(lost, ["a"]);
    let failed = db
        .write(|l| l.fail_runs_in_progress_on("a", "node a lost", 40))
        .unwrap();
    assert_eq!(failed.iter().map(|r| r.run.0).collect::<Vec<_>>(), [on_a]);
    assert_eq!(
        status(&db, on_a),
        (RunStatus::Failed, Some("node a lost".into()))
    );
    assert_eq!(status(&db, waiting).0, RunStatus::Queued);
    assert_eq!(status(&db, other_waiting).0, RunStatus::Queued);
    assert_eq!(status(&db, on_b).0, RunStatus::InProgress);

    // a comes back unaware: its end is not written over what b decided.
    assert!(
        !a_ledger
            .write(|l| l.finish_run(on_a, &succeeded(), 50))
            .unwrap()
    );
    assert_eq!(
        status(&db, on_a),
        (RunStatus::Failed, Some("node a lost".into()))
    );
    // Nor is the end of a run a claimed while it was lost, until it registers again.
    let late = claim_on(&db, "a");
    assert!(
        !a_ledger
            .write(|l| l.finish_run(late, &succeeded(), 60))
            .unwrap()
    );
    db.write(|l| l.register_node("a", "a-2")).unwrap();
    a_ledger.set_node(Some(node("a", "a-2")));
    assert!(
        a_ledger
            .write(|l| l.finish_run(late, &succeeded(), 70))
            .unwrap()
    );
    assert_eq!(status(&db, late).0, RunStatus::Succeeded);

    // b's own end goes through.
    let b_ledger = PgLedgerDb::open(&test_db.url()).unwrap();
    b_ledger.set_node(Some(node("b", "b-1")));
    assert!(
        b_ledger
            .write(|l| l.finish_run(on_b, &succeeded(), 80))
            .unwrap()
    );
    assert_eq!(status(&db, on_b).0, RunStatus::Succeeded);
    // Integrity: at most one IN_PROGRESS per job, no run left without an end but the queued.
    assert_eq!(
        test_db.query_text(
            "SELECT count(*)::TEXT FROM runs WHERE status = 'IN_PROGRESS' AND node IS NULL"
        ),
        "0"
    );
}

#[test]
fn runs_on_a_name_no_node_registered_are_lost_and_a_replaced_incarnation_neither_claims_nor_rejoins()
 {
    let (test_db, db, admin, jobs) = cluster_ledger(3);
    db.write(|l| l.register_node("live", "l-1")).unwrap();
    // A run IN_PROGRESS under a name no node registered here, as migrate-ledger copies a run of
    // a server killed mid-run: the next declaration counts that name lost, once.
    queue(&db, jobs[0], admin);
    let orphan = claim_on(&db, "vm");
    let lost = db.write(|l| l.declare_silent_nodes_lost(60_000)).unwrap();
    assert_eq!(lost, ["vm"]);
    assert!(
        db.write(|l| l.declare_silent_nodes_lost(60_000))
            .unwrap()
            .is_empty()
    );
    assert!(db.read(|l| l.node("vm")).unwrap().unwrap().lost);
    db.write(|l| l.fail_runs_in_progress_on("vm", "node vm lost", 30))
        .unwrap();
    assert_eq!(
        status(&db, orphan),
        (RunStatus::Failed, Some("node vm lost".into()))
    );
    // A node may take such a name later.
    db.write(|l| l.register_node("vm", "vm-1")).unwrap();
    assert!(!db.read(|l| l.node("vm")).unwrap().unwrap().lost);

    // "a" frozen; a second process takes the name over as a-2. The first, awake, finds its
    // heartbeat refused, claims nothing, and may not register again over a-2.
    db.write(|l| l.register_node("a", "a-1")).unwrap();
    let a1 = PgLedgerDb::open(&test_db.url()).unwrap();
    a1.set_node(Some(node("a", "a-1")));
    queue(&db, jobs[1], admin);
    assert_eq!(a1.write(|l| l.claim_runnable("a", 5, 20)).unwrap().len(), 1);
    db.write(|l| l.register_node("a", "a-2")).unwrap();
    assert!(!a1.write(|l| l.node_heartbeat("a", "a-1")).unwrap());
    queue(&db, jobs[2], admin);
    assert!(
        a1.write(|l| l.claim_runnable("a", 5, 20))
            .unwrap()
            .is_empty()
    );
    assert!(!a1.write(|l| l.rejoin_node("a", "a-1", "a-3")).unwrap());
    assert_eq!(
        db.read(|l| l.node("a")).unwrap().unwrap().incarnation,
        "a-2"
    );
    // a-2 itself, declared lost, may join again, and claims again once it has.
    silence(&test_db, &["a"]);
    assert_eq!(
        db.write(|l| l.declare_silent_nodes_lost(60_000)).unwrap(),
        ["a"]
    );
    let a2 = PgLedgerDb::open(&test_db.url()).unwrap();
    a2.set_node(Some(node("a", "a-2")));
    assert!(
        a2.write(|l| l.claim_runnable("a", 5, 20))
            .unwrap()
            .is_empty()
    );
    assert!(a2.write(|l| l.rejoin_node("a", "a-2", "a-3")).unwrap());
    let state = db.read(|l| l.node("a")).unwrap().unwrap();
    assert_eq!((state.incarnation.as_str(), state.lost), ("a-3", false));
    a2.set_node(Some(node("a", "a-3")));
    assert_eq!(a2.write(|l| l.claim_runnable("a", 5, 20)).unwrap().len(), 1);
}

#[test]
fn the_owning_node_sees_cancels_asked_through_any_node() {
    let (_test_db, db, admin, jobs) = cluster_ledger(2);
    queue(&db, jobs[0], admin);
    let on_a = claim_on(&db, "a");
    queue(&db, jobs[1], admin);
    let on_b = claim_on(&db, "b");
    assert!(db.read(|l| l.cancels_asked_on("a")).unwrap().is_empty());
    db.write(|l| l.mark_cancelled_by(RunId(on_a), UserId(admin)))
        .unwrap();
    assert_eq!(
        db.read(|l| l.cancels_asked_on("a")).unwrap(),
        vec![(on_a, "ada".to_string())]
    );
    assert!(db.read(|l| l.cancels_asked_on("b")).unwrap().is_empty());
    // Once ended, it is no longer asked.
    assert!(db.write(|l| l.finish_run(on_a, &succeeded(), 30)).unwrap());
    assert!(db.read(|l| l.cancels_asked_on("a")).unwrap().is_empty());
    assert_eq!(status(&db, on_b).0, RunStatus::InProgress);
}

/// Polls `hold()` until it answers `want` (the lock passes on at the other's next try).
fn wait_hold(lock: &mut labcron::store::postgres::FiringLock, want: bool) -> Duration {
    let start = Instant::now();
    loop {
        if lock.hold().unwrap_or(false) == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the firing lock never became {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_node_at_a_time_holds_the_firing_lock_and_it_passes_on_when_the_holder_dies() {
    let (test_db, db, _, _) = cluster_ledger(0);
    let other = PgLedgerDb::open(&test_db.url()).unwrap();
    let mut first = db.firing_lock();
    let mut second = other.firing_lock();
    assert!(first.hold().unwrap());
    assert!(!second.hold().unwrap());
    // Held means held: asked again, the holder keeps it and the other still cannot take it.
    assert!(first.hold().unwrap());
    assert!(!second.hold().unwrap());
    // A clean release hands it over at the other's next try.
    first.release();
    // (Its server process frees the lock as it exits, a moment after the connection closed.)
    wait_hold(&mut second, true);
    assert!(!first.hold().unwrap());
    // The holder's connection dies (its machine, its process): the lock goes with it.
    let killed = test_db.query_text(
        "SELECT count(pg_terminate_backend(pid))::TEXT FROM pg_stat_activity
         WHERE application_name LIKE 'labcron fire %' AND datname = current_database()
           AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)",
    );
    assert_eq!(killed, "1");
    wait_hold(&mut first, true);
    // The old holder learns it lost the lock at its next check, and cannot take it back.
    assert!(!second.hold().unwrap_or(false));
    assert!(!second.hold().unwrap_or(false));
    assert!(first.hold().unwrap());

    // A holder that hangs keeps its connection, and the lock: declared lost, it is cut off.
    let hung_db = PgLedgerDb::open(&test_db.url()).unwrap();
    hung_db.set_node(Some(node("hung", "h-1")));
    hung_db.write(|l| l.register_node("hung", "h-1")).unwrap();
    let mut hung = hung_db.firing_lock();
    first.release();
    wait_hold(&mut hung, true);
    assert!(!second.hold().unwrap_or(false));
    // Holding the lock under its current incarnation, its fires go through.
    let pid = hung_db.firing_pid();
    assert_ne!(pid, 0);
    assert!(hung_db.write(|l| l.still_fires(pid)).unwrap());
    silence(&test_db, &["hung"]);
    assert_eq!(
        db.write(|l| l.declare_silent_nodes_lost(60_000)).unwrap(),
        ["hung"]
    );
    // Woken before its next check of the lock, it still believes it holds it: the fire's own
    // transaction says no (declared lost, its lock connection ended).
    assert_eq!(hung_db.firing_pid(), pid);
    assert!(!hung_db.write(|l| l.still_fires(pid)).unwrap());
    wait_hold(&mut second, true);
    assert!(!hung.hold().unwrap_or(false));
    assert_eq!(hung_db.firing_pid(), 0);
    // A node alive under its incarnation but not holding the lock does not fire either.
    let waiting_db = PgLedgerDb::open(&test_db.url()).unwrap();
    waiting_db.set_node(Some(node("waiting", "w-1")));
    waiting_db
        .write(|l| l.register_node("waiting", "w-1"))
        .unwrap();
    let mut waiting = waiting_db.firing_lock();
    assert!(!waiting.hold().unwrap());
    assert_eq!(waiting_db.firing_pid(), 0);
    assert!(!waiting_db.write(|l| l.still_fires(0)).unwrap());
}
