//! labcron: a single-binary job scheduler that keeps a SQLite ledger of every run and serves
//! OpenSpecimen's scheduled-jobs REST API. `main.rs` only parses the command line; everything else
//! lives here so that the integration tests can start the real application in-process.
//!
//! The layers point one way: `web` → `service` → `domain` / `store` / `run_files` / `present`.
//! The workers (`scheduler`, `executor`, `notify`, `retention`) and `cli` use `service` and
//! `store`, never `web`; `startup` wires them all. `tests/architecture` checks it.

// A failed `unwrap()` in the server is a crash with no message for the user: errors are returned.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod allocator; // glibc malloc: arenas capped at one per core, free pages handed back
pub mod auth; // password hashing, session tokens, sign-in throttling
pub mod cli; // the administration subcommands: users, backup, jobs files, healthcheck
pub mod clock; // the one source of "now"
pub mod cluster; // several nodes on one PostgreSQL ledger: heartbeats, lost nodes, the firing node
pub mod config; // settings: defaults < TOML file < LABCRON_* env < flags
pub mod domain; // pure types and rules: jobs, runs, users, schedules, the access policy, audit diffs
pub mod error; // ServiceError: what use cases and workers fail with, in the contract's terms (no HTTP)
pub mod executor; // durable run queue, dispatcher, process runner
pub mod ldap; // directory sign-in: the LDAP search and bind (issue 15)
pub mod metrics; // Prometheus series and their text rendering, the scheduler's counters
pub mod notify; // e-mails and signed webhooks about finished runs
pub mod pg_connect; // every PostgreSQL connection: the URL's TLS words (sslmode, sslrootcert), the connector
pub mod present; // the OpenSpecimen JSON shapes of jobs, runs and saved queries (used by web, cli, notify)
pub mod query; // what saved queries read: read-only data sources, CSV streaming, the demo database
pub mod retention; // the daily pass removing old run files (and, if asked, rows), expired sessions
pub mod run_files; // <data>/runs/<job>/<run>/: layout, program lookup in the scripts dir, zip of results
pub mod scheduler; // when jobs fire: the driver and its JobScheduler entries (next_fire is in domain)
pub mod service; // use cases shared by web, cli and the workers: one place for each rule
pub mod startup; // Application::build and run_until_stopped
pub mod store; // every SQL statement: pool, migrations, jobs, runs, users, sessions; store::Error
pub mod timeline; // env-gated stamps of each run's phases, for measuring (LABCRON_TIMELINE_FILE)
pub mod web; // HTTP: the OpenSpecimen API (web::api) and the Jobs pages (web::ui); nothing below names it
