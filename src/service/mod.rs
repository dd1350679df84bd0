//! The use cases the API, the web pages, the CLI and the background workers share. Each rule lives
//! here once (or in `domain` when it is pure), so no caller can go around it. No HTTP types: the
//! web layer turns what these return into responses.

pub mod access; // the access policy with the ledger facts it needs (shared with, recipient)
pub mod jobs; // a job from a body, its ledger checks and its one way into the ledger
pub mod runs; // accepting a run: the one way a run enters the ledger, for clients and fires
pub mod saved_queries; // the parameters a saved query takes; no runtime arguments without them
pub mod seed; // the first start: the demo database, example saved queries and jobs
pub mod users; // user rules for the API and `labcron user`: login names, last admin, passwords
