//! Fault, load and security suites against the real binary (`CARGO_BIN_EXE_labcron`) on 127.0.0.1:
//! SIGKILL under load, 200 clients for a minute, unauthenticated / cross-user / traversal /
//! injection / oversized / brute-force requests on every route of the served OpenAPI document,
//! and a full disk. Each stops by itself; together they take a few minutes
//! (`LABCRON_LOAD_SECONDS` shortens the load suite, 60 s by default).

#[path = "../common/mod.rs"]
mod common;
mod support;

mod cluster;
mod crash;
mod disk_full;
mod load;
mod security;

/// The crash and load suites each keep the machine busy; they take turns.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
