//! The harness every test binary and the benches share, in one place: `server` starts labcron,
//! either in-process (`TestApp`, `spawn_app*`) or as the real binary (`Launch` → `Server`, with
//! the one way of learning its port: the `labcron listening` line of its log file); `requests` is
//! the one request-helper API (`Api`: a client of `/rest/ng` signed in, plus the contract's
//! checks `ok_json` and `error_codes`) and a raw HTTP/1.1 request for inputs a URL library would
//! normalise; `data` writes scripts and opens the ledger of a data directory; `process` reads
//! `/proc`; `ledger` picks the servers' engine (`LABCRON_TEST_LEDGER`); `postgres` is a private PostgreSQL server for the tests and benches that need one; `pki` makes
//! throw-away CAs and certificates. Include it with `#[path = "../common/mod.rs"] mod common;` (benches:
//! `#[path = "../tests/common/mod.rs"]`); the main items are re-exported here, so
//! `use crate::common::{spawn_app, ok_json};` works.
//!
//! Each binary uses only part of it, and a helper one binary does not call would be dead code
//! there (and a re-export it does not name, an unused import); hence the allows for the whole tree
//! rather than per item.

#![allow(dead_code, unused_imports)]

pub mod data;
pub mod ledger;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod requests;
pub mod server;

pub use data::*;
pub use ledger::{on_postgres, sqlite_only};
pub use process::*;
pub use requests::*;
pub use server::*;

/// The `admin` password of every server the harness starts (in-process or the binary).
pub const ADMIN_PASSWORD: &str = "admin-password-1";
