//! Black-box API tests: each test starts the real server on port 0 with a temp data dir and talks
//! HTTP to it. Modules follow the API's resources.

#[path = "../common/mod.rs"]
mod common;
use common::postgres;

mod allocator; // glibc malloc set-up of the real binary
mod api_tokens;
mod audit;
mod auth;
mod backup;
mod cli;
mod daemons;
mod hardening;
mod internal;
mod jobs;
mod ldap;
mod ledger_guard;
mod metrics;
mod migrate_ledger;
mod notifications;
mod openapi;
mod openspecimen_client;
mod packaging;
mod pg_ledger;
mod pg_nodes;
mod pg_run_files; // run logs and results kept in PostgreSQL, through RunFiles
mod pg_sources;
mod pg_tls; // TLS to PostgreSQL: sslmode, sslrootcert, a server of its own that speaks TLS
mod queries;
mod query_limits;
mod readme;
mod restart;
mod retention;
mod run_links; // run files never through a link (#11)
mod runs;
mod scheduler;
mod scripts;
mod series;
mod signin; // issue #11's sign-in and account findings
