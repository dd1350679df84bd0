//! What a node of a cluster asks of `Db` beyond the ledger's interface, engine-neutral: whether
//! the ledger may be shared by several nodes at all (PostgreSQL; a SQLite ledger has one node),
//! who this node is (its runs' ends are written under that identity), and the firing lock that
//! elects the one node that fires the schedules (on SQLite the one node always holds it).

use super::{Db, Engine, Error};

/// The lock whose holder fires the schedules. Blocking: use from a thread of its own.
pub enum FiringLock {
    /// The ledger has one node: it always fires.
    Alone,
    /// A PostgreSQL advisory lock on a connection of its own.
    Postgres(Box<super::postgres::FiringLock>),
}

impl FiringLock {
    /// Whether this node holds the lock now (taking it when free; a lock whose connection died
    /// is lost, and an error says the database could not be asked).
    pub fn hold(&mut self) -> Result<bool, Error> {
        match self {
            FiringLock::Alone => Ok(true),
            FiringLock::Postgres(lock) => lock.hold(),
        }
    }

    /// Lets the lock go (a clean shutdown).
    pub fn release(&mut self) {
        if let FiringLock::Postgres(lock) = self {
            lock.release();
        }
    }
}

impl Db {
    /// Whether other nodes may share this ledger (then heartbeats, lost nodes and the firing
    /// lock apply).
    pub fn is_shared(&self) -> bool {
        match &self.engine {
            Engine::Sqlite(_) => false,
            Engine::Postgres(_) => true,
        }
    }

    /// Records who this node is, as registered in the ledger: from then on its runs' ends are
    /// written only while it holds that incarnation. Nothing to do on SQLite (one node).
    pub fn set_node(&self, name: &str, incarnation: &str) {
        match &self.engine {
            Engine::Sqlite(_) => {}
            Engine::Postgres(pg) => pg.set_node(Some(super::postgres::NodeId {
                name: name.to_string(),
                incarnation: incarnation.to_string(),
            })),
        }
    }

    /// The backend pid of the connection holding this node's firing lock (0 while not held; 0
    /// on SQLite, where nothing checks it): see `NodeLedger::still_fires`.
    pub fn firing_pid(&self) -> i32 {
        match &self.engine {
            Engine::Sqlite(_) => 0,
            Engine::Postgres(pg) => pg.firing_pid(),
        }
    }

    /// The firing lock of this ledger (not yet taken).
    pub fn firing_lock(&self) -> FiringLock {
        match &self.engine {
            Engine::Sqlite(_) => FiringLock::Alone,
            Engine::Postgres(pg) => FiringLock::Postgres(Box::new(pg.firing_lock())),
        }
    }
}
