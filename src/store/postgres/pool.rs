//! Connections to a PostgreSQL ledger: an r2d2 pool of synchronous `postgres` clients. The store's
//! design is blocking (each ledger operation runs on a blocking thread with a connection of its
//! own), which the synchronous client fits; r2d2 is what the SQLite readers already use. The
//! manager is ours, a few lines, rather than a crate wrapping the same two calls.

use std::time::Duration;

use postgres::{Client, NoTls};

/// How long a ledger call waits for a connection before it fails (and the API answers 503):
/// short, so a database that is down is reported at once instead of queueing every request.
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a connection from a parsed URL.
pub struct Manager {
    config: postgres::Config,
}

impl Manager {
    pub fn new(mut config: postgres::Config) -> Manager {
        // A connection the database has lost (a restart, a network cut) is noticed by the
        // keepalives in seconds instead of the kernel's two hours.
        config
            .connect_timeout(CHECKOUT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .application_name("labcron");
        Manager { config }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Client;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Client, postgres::Error> {
        self.config.connect(NoTls)
    }

    fn is_valid(&self, client: &mut Client) -> Result<(), postgres::Error> {
        client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, client: &mut Client) -> bool {
        client.is_closed()
    }
}
