//! labcron: a single-binary job scheduler that keeps a SQLite ledger of every run and serves
//! OpenSpecimen's scheduled-jobs REST API. `main.rs` only parses the command line; everything else
//! lives here so that the integration tests can start the real application in-process.

pub mod allocator; // glibc malloc: arenas capped at one per core, free pages handed back
pub mod api; // HTTP resources, one module each, plus the auth extractor
pub mod auth; // password hashing, session tokens, sign-in throttling
pub mod cli; // the administration subcommands: users, backup, jobs files, healthcheck
pub mod clock; // the one source of "now"
pub mod config; // settings: defaults < TOML file < LABCRON_* env < flags
pub mod config_overrides; // LABCRON_* variables and --flags for every setting
pub mod domain; // plain types and validation: jobs, runs, users, arguments, dates, the access policy
pub mod error; // ApiError: the one mapping from failures to OpenSpecimen's error array
pub mod executor; // durable run queue, dispatcher, process runner
pub mod ldap; // directory sign-in: the LDAP search and bind (issue 15)
pub mod metrics; // Prometheus series, their text rendering, the request middleware, GET /metrics
pub mod notify; // e-mails and signed webhooks about finished runs
pub mod query; // saved queries: read-only data sources, CSV streaming, the demo lab database
pub mod retention; // the daily pass removing old run files (and, if asked, rows)
pub mod scheduler; // when jobs fire: next-fire computation
pub mod startup; // Application::build and run_until_stopped
pub mod store; // every SQL statement: pool, migrations, jobs, runs, users, sessions
pub mod ui; // the Jobs web pages: server-rendered shells, embedded assets, sign-in cookie
