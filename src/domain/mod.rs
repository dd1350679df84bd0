//! Plain types and validation ("parse, don't validate"). Nothing here touches the database, the
//! network or the clock; callers pass in what a rule needs.

pub mod access; // the access policy: who may see, change, run, download, set runAs
pub mod args; // splitting argument strings into words without a shell
pub mod audit; // the audit trail's action names and the change diff between two views
pub mod dates; // the date formats accepted by the runs list
pub mod errors; // ErrorItem: one problem in the contract's words
pub mod ids; // JobId, RunId, UserId: ids that travel in pairs, not to be swapped
pub mod input; // lenient reading of JSON bodies (numbers as strings, trimmed strings)
pub mod job; // job enums, the stored Job, and job validation
pub mod next_fire; // the pure calendar rules: when a job fires next (nextRunOn, /next-runs, the driver)
pub mod run; // run status, trigger, the stored Run
pub mod saved_query; // saved queries: the stored type, the draft from a body, its errors
pub mod schedule; // CRON expression parsing (croner), shared by validation and next_fire
pub mod user; // users and the UserSummary shape
