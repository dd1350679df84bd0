//! The nodes of a cluster on PostgreSQL: `NodeLedger` (registration, heartbeats and lost nodes in
//! the `nodes` table, every time from the database's clock), the identity a node's ledger writes
//! its runs' ends under ([`NodeId`]: an end is written only while the run is this node's and the
//! node still holds its incarnation, so a node declared lost never overwrites what the others
//! decided), and the firing lock ([`FiringLock`]: a session advisory lock on a connection of its
//! own; whoever holds it fires the schedules, and PostgreSQL frees it the moment that connection
//! dies).

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use postgres::Client;

use super::Pg;
use crate::domain::ids::{JobId, RunId, RunOfJob};
use crate::pg_connect::PgTarget;
use crate::store::Error;
use crate::store::ledger::{NodeLedger, NodeState};

/// The database's clock in epoch milliseconds (`clock_timestamp()`: the time of the statement,
/// not of the transaction's start).
const DB_NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT";

/// The advisory lock key of the firing node: "lcfire" in ASCII.
const FIRING_LOCK: i64 = 0x6c63_6669_7265;

/// Who this node is, as its ledger writes runs' ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeId {
    pub name: String,
    /// New at every start (and after the node was declared lost).
    pub incarnation: String,
}

impl NodeLedger for Pg<'_> {
    fn node(&self, name: &str) -> Result<Option<NodeState>, Error> {
        let row = self.row(
            &format!(
                "SELECT incarnation, {DB_NOW} - heartbeat_at, lost_at IS NOT NULL
                 FROM nodes WHERE name = $1"
            ),
            &[&name],
        )?;
        row.map(|r| {
            Ok(NodeState {
                incarnation: r.try_get(0)?,
                silent_ms: r.try_get(1)?,
                lost: r.try_get(2)?,
            })
        })
        .transpose()
    }

    fn register_node(&self, name: &str, incarnation: &str) -> Result<(), Error> {
        self.exec(
            &format!(
                "INSERT INTO nodes (name, incarnation, started_at, heartbeat_at, lost_at)
                 VALUES ($1, $2, {DB_NOW}, {DB_NOW}, NULL)
                 ON CONFLICT (name) DO UPDATE SET incarnation = EXCLUDED.incarnation,
                     started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at,
                     lost_at = NULL"
            ),
            &[&name, &incarnation],
        )?;
        // A namesake taken over (frozen, or cut off) may still hold the firing lock on a
        // connection of its own, which a frozen machine keeps open: it is ended, or nobody would
        // fire until that process died. This process has no lock connection yet.
        self.end_lock_connection(name)?;
        Ok(())
    }

    fn node_heartbeat(&self, name: &str, incarnation: &str) -> Result<bool, Error> {
        let changed = self.exec(
            &format!(
                "UPDATE nodes SET heartbeat_at = {DB_NOW}
                 WHERE name = $1 AND incarnation = $2 AND lost_at IS NULL"
            ),
            &[&name, &incarnation],
        )?;
        Ok(changed == 1)
    }

    fn rejoin_node(
        &self,
        name: &str,
        lost_incarnation: &str,
        incarnation: &str,
    ) -> Result<bool, Error> {
        let changed = self.exec(
            &format!(
                "UPDATE nodes SET incarnation = $3, started_at = {DB_NOW}, heartbeat_at = {DB_NOW},
                     lost_at = NULL
                 WHERE name = $1 AND incarnation = $2 AND lost_at IS NOT NULL"
            ),
            &[&name, &lost_incarnation, &incarnation],
        )?;
        Ok(changed == 1)
    }

    fn declare_silent_nodes_lost(&self, timeout_ms: i64) -> Result<Vec<String>, Error> {
        // Two nodes declaring at once: the second waits for the first's row lock, then finds
        // `lost_at` set and skips the row, so each node is declared (and its runs failed) once.
        let mut lost: Vec<String> = self
            .rows(
                &format!(
                    "UPDATE nodes SET lost_at = {DB_NOW}
                     WHERE lost_at IS NULL AND heartbeat_at < {DB_NOW} - $1
                     RETURNING name"
                ),
                &[&timeout_ms],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        // A run IN_PROGRESS under a name no node ever registered here (copied by migrate-ledger
        // from a server killed mid-run, or from another ledger) has nobody to end it: that name
        // is recorded as a node lost now, once (the second writer conflicts on the name and
        // inserts nothing), and its runs fail like any lost node's. A node registers before it
        // claims a run, so a live node's name is always in `nodes`.
        let orphans: Vec<String> = self
            .rows(
                &format!(
                    "INSERT INTO nodes (name, incarnation, started_at, heartbeat_at, lost_at)
                     SELECT DISTINCT r.node, '', {DB_NOW}, {DB_NOW}, {DB_NOW} FROM runs r
                     WHERE r.status = 'IN_PROGRESS' AND r.node IS NOT NULL
                       AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.name = r.node)
                     ON CONFLICT (name) DO NOTHING
                     RETURNING name"
                ),
                &[],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        lost.extend(orphans);
        // A node that hangs (stopped, swapping) keeps its connections open, and with them the
        // firing lock: its lock connection is ended, so another node takes over. (A node whose
        // name shares the first 50 characters would lose its lock too, and take it again at its
        // next try; a node connecting as another user is left alone: ending its connection is
        // not allowed.)
        for name in &lost {
            self.end_lock_connection(name)?;
        }
        Ok(lost)
    }

    fn end_firing_of_silent_nodes(&self, silence_ms: i64) -> Result<Vec<String>, Error> {
        let me = self.node.as_ref().map_or("", |n| n.name.as_str());
        let silent: Vec<String> = self
            .rows(
                &format!(
                    "SELECT name FROM nodes
                     WHERE lost_at IS NULL AND heartbeat_at < {DB_NOW} - $1 AND name <> $2
                     ORDER BY name"
                ),
                &[&silence_ms, &me],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let mut ended = Vec::new();
        for name in silent {
            if self.end_lock_connection(&name)? > 0 {
                ended.push(name);
            }
        }
        Ok(ended)
    }

    fn still_fires(&self, firing_pid: i32) -> Result<bool, Error> {
        let Some(me) = self.node.as_deref() else {
            // A ledger without a node's identity (tools, tests) has no lock to hold.
            return Ok(true);
        };
        // This incarnation is current and not lost (share-locked: a declaration or a takeover
        // waits for this transaction), and the lock's connection still holds the advisory lock
        // (its key is split into classid and objid, objsubid 1 for a bigint key).
        let held = self.row(
            "SELECT 1 FROM nodes n
             WHERE n.name = $1 AND n.incarnation = $2 AND n.lost_at IS NULL
               AND EXISTS (SELECT 1 FROM pg_locks l
                           WHERE l.locktype = 'advisory' AND l.granted AND l.pid = $3
                             AND l.objsubid = 1
                             AND ((l.classid::BIGINT << 32) | l.objid::BIGINT) = $4)
             FOR SHARE OF n",
            &[&me.name, &me.incarnation, &firing_pid, &FIRING_LOCK],
        )?;
        Ok(held.is_some())
    }

    fn node_left(&self, name: &str, incarnation: &str) -> Result<(), Error> {
        self.exec(
            &format!(
                "UPDATE nodes SET lost_at = {DB_NOW}
                 WHERE name = $1 AND incarnation = $2 AND lost_at IS NULL"
            ),
            &[&name, &incarnation],
        )?;
        Ok(())
    }

    fn runs_in_progress_on(&self, node: &str) -> Result<Vec<RunOfJob>, Error> {
        self.rows(
            "SELECT id, job_id FROM runs WHERE status = 'IN_PROGRESS' AND node = $1 ORDER BY id",
            &[&node],
        )?
        .iter()
        .map(|r| Ok(RunOfJob::new(JobId(r.try_get(1)?), RunId(r.try_get(0)?))))
        .collect()
    }

    fn fail_runs_in_progress_on(
        &self,
        node: &str,
        message: &str,
        now: i64,
    ) -> Result<Vec<RunOfJob>, Error> {
        // Their jobs first, in id order, as a run's end locks its job before its run.
        self.exec(
            "SELECT 1 FROM jobs j
             WHERE j.id IN (SELECT r.job_id FROM runs r WHERE r.status = 'IN_PROGRESS' AND r.node = $1)
             ORDER BY j.id FOR UPDATE OF j",
            &[&node],
        )?;
        let mut failed: Vec<RunOfJob> = self
            .rows(
                "UPDATE runs SET status = 'FAILED', finished_at = $2, message = $3
                 WHERE status = 'IN_PROGRESS' AND node = $1
                 RETURNING id, job_id",
                &[&node, &now, &message],
            )?
            .iter()
            .map(|r| Ok(RunOfJob::new(JobId(r.try_get(1)?), RunId(r.try_get(0)?))))
            .collect::<Result<_, Error>>()?;
        failed.sort_by_key(|ids| ids.run.0);
        Ok(failed)
    }

    fn cancels_asked_on(&self, node: &str) -> Result<Vec<(i64, String)>, Error> {
        self.rows(
            "SELECT r.id, u.login_name FROM runs r JOIN users u ON u.id = r.cancelled_by
             WHERE r.status = 'IN_PROGRESS' AND r.node = $1 ORDER BY r.id",
            &[&node],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
    }
}

impl Pg<'_> {
    /// Ends the firing-lock connection of node `name` (and with it any lock it holds), unless it
    /// is this one; a connection of another database user is left alone (ending it is not
    /// allowed).
    /// How many connections were ended.
    fn end_lock_connection(&self, name: &str) -> Result<usize, Error> {
        let ended = self.rows(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1
               AND usename = current_user AND pid <> pg_backend_pid()",
            &[&lock_connection_name(name)],
        )?;
        Ok(ended
            .iter()
            .filter(|r| r.try_get::<_, bool>(0).unwrap_or(false))
            .count())
    }
}

/// The firing node's lock: `pg_try_advisory_lock` on a connection of its own, held as long as
/// that connection lives. A node that dies (or is cut off) loses its connection, and with it the
/// lock, so another takes over; the connection's keepalives and `tcp_user_timeout` bound how long
/// a vanished machine's connection lingers on the server. Blocking.
pub struct FiringLock {
    target: PgTarget,
    client: Option<Client>,
    held: bool,
    /// The holding connection's backend pid (0 while not held), shared with the ledger.
    pid: Arc<AtomicI32>,
}

/// How long the server waits on a silent peer of the lock's connection before dropping it (and
/// the lock): keepalive probes after 5 s idle, every 2 s, 3 of them; unacknowledged data 10 s.
const LOCK_CONNECTION_SETTINGS: &str =
    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2;
     SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000";

/// The `application_name` of a node's firing-lock connection (PostgreSQL keeps 63 bytes of it),
/// by which a node declaring it lost finds it.
pub fn lock_connection_name(node: &str) -> String {
    format!("labcron fire {}", node.chars().take(50).collect::<String>())
}

impl FiringLock {
    /// A lock for `node` (named in its connection's `application_name`).
    pub(super) fn new(mut target: PgTarget, node: &str, pid: Arc<AtomicI32>) -> FiringLock {
        target
            .config_mut()
            .application_name(&lock_connection_name(node))
            .connect_timeout(Duration::from_secs(5))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5));
        FiringLock {
            target,
            client: None,
            held: false,
            pid,
        }
    }

    fn forget(&mut self) {
        self.client = None;
        self.held = false;
        self.pid.store(0, Ordering::Relaxed);
    }

    /// Whether this node holds the lock now: checks that a held lock's connection still works
    /// (when it does not, the lock is gone with it), and tries to take it when not held.
    pub fn hold(&mut self) -> Result<bool, Error> {
        match self.try_hold() {
            Ok(held) => Ok(held),
            Err(e) => {
                // The connection (and any lock on it) is gone: start afresh next time.
                self.forget();
                Err(e)
            }
        }
    }

    fn try_hold(&mut self) -> Result<bool, Error> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.forget();
        }
        let client = match &mut self.client {
            Some(client) => client,
            None => {
                let mut client = self.target.connect()?;
                client.batch_execute(LOCK_CONNECTION_SETTINGS)?;
                self.client.insert(client)
            }
        };
        if self.held {
            client.batch_execute("SELECT 1")?;
            return Ok(true);
        }
        let row = client.query_one(
            "SELECT pg_try_advisory_lock($1), pg_backend_pid()",
            &[&FIRING_LOCK],
        )?;
        self.held = row.try_get(0)?;
        if self.held {
            self.pid.store(row.try_get(1)?, Ordering::Relaxed);
        }
        Ok(self.held)
    }

    /// Lets the lock go (a clean shutdown): another node takes over at its next try.
    pub fn release(&mut self) {
        self.forget();
    }
}
