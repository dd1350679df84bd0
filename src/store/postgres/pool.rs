//! Connections to a PostgreSQL ledger: an r2d2 pool of synchronous `postgres` clients. The store's
//! design is blocking (each ledger operation runs on a blocking thread with a connection of its
//! own), which the synchronous client fits; r2d2 is what the SQLite readers already use. The
//! manager is ours, a few lines, rather than a crate wrapping the same two calls. Each pooled
//! connection keeps the statements it has prepared, so a statement is parsed once per connection
//! and every later use costs one round trip instead of two.

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::time::Duration;

use postgres::{Client, Statement};

use crate::pg_connect::PgTarget;

/// Most statements a connection keeps prepared; past it the cache starts again (the ledger's
/// statements are a few dozen, plus the lists' filter combinations).
const MAX_STATEMENTS: usize = 512;

/// A connection and the statements prepared on it.
pub struct Connection {
    pub client: Client,
    pub statements: Statements,
}

/// The statements a connection has prepared, by SQL text.
#[derive(Default)]
pub struct Statements(HashMap<String, Statement>);

impl Statements {
    /// The statement prepared for `sql`, if there is one.
    pub fn get(&self, sql: &str) -> Option<Statement> {
        self.0.get(sql).cloned()
    }

    /// Keeps a statement prepared for `sql`.
    pub fn keep(&mut self, sql: &str, statement: Statement) {
        if self.0.len() >= MAX_STATEMENTS {
            self.0.clear();
        }
        self.0.insert(sql.to_string(), statement);
    }
}

/// How long a ledger call waits for a connection before it fails (and the API answers 503):
/// short, so a database that is down is reported at once instead of queueing every request.
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// Set on every ledger connection: a node that hangs (stopped, swapping) in the middle of a
/// transaction would hold its row locks for as long as it hangs (its job's row, its `nodes` row),
/// and the other nodes' fires and their declaring it lost would wait behind them. The server
/// ends such a session after 10 s; labcron's own transactions never wait between statements.
const SESSION_SETTINGS: &str = "SET idle_in_transaction_session_timeout = 10000";

/// Opens a connection to the URL's server (with the TLS its `sslmode` asks for).
pub struct Manager {
    target: PgTarget,
}

impl Manager {
    pub fn new(mut target: PgTarget) -> Manager {
        // A connection the database has lost (a restart, a network cut) is noticed by the
        // keepalives in seconds instead of the kernel's two hours.
        target
            .config_mut()
            .connect_timeout(CHECKOUT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .application_name("labcron");
        Manager { target }
    }
}

/// Why a connection could not be opened or kept, said plainly (`PgTarget::explain`: a refused
/// TLS certificate names what to fix); the pool's own error repeats it.
#[derive(Debug)]
pub struct ConnectError(String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = ConnectError;

    fn connect(&self) -> Result<Connection, ConnectError> {
        let mut client = self
            .target
            .connect()
            .map_err(|e| ConnectError(self.target.explain(&e)))?;
        client
            .batch_execute(SESSION_SETTINGS)
            .map_err(|e| ConnectError(crate::pg_connect::error_text(&e)))?;
        Ok(Connection {
            client,
            statements: Statements::default(),
        })
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), ConnectError> {
        conn.client
            .simple_query("")
            .map(|_| ())
            .map_err(|e| ConnectError(crate::pg_connect::error_text(&e)))
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.client.is_closed()
    }
}

/// The pool, owned by every handle of one ledger (behind an `Arc`): dropping a `Client` blocks on
/// the client's own runtime, which panics on an async runtime's thread, so when the last handle
/// goes on a thread that has a runtime the pool (and its connections) is dropped on a thread of
/// its own.
pub struct Owned(ManuallyDrop<r2d2::Pool<Manager>>);

impl Owned {
    pub fn new(pool: r2d2::Pool<Manager>) -> Owned {
        Owned(ManuallyDrop::new(pool))
    }
}

impl std::ops::Deref for Owned {
    type Target = r2d2::Pool<Manager>;
    fn deref(&self) -> &r2d2::Pool<Manager> {
        &self.0
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: `self.0` is taken once, here, and never used again (the value is being dropped).
        let pool = unsafe { ManuallyDrop::take(&mut self.0) };
        if tokio::runtime::Handle::try_current().is_err() {
            return drop(pool);
        }
        // Kept from dropping until the thread has it: when no thread can be had (the process is
        // ending), the pool leaks rather than panics.
        let pool = ManuallyDrop::new(pool);
        if std::thread::Builder::new()
            .name("ledger-pool-drop".into())
            .spawn(move || drop(ManuallyDrop::into_inner(pool)))
            .is_err()
        {
            tracing::warn!("could not close the PostgreSQL ledger's connections");
        }
    }
}
