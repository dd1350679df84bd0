//! The use cases the API, the web pages, the CLI and the background workers share. Each rule lives
//! here once (or in `domain` when it is pure), so no caller can go around it. No HTTP types: the
//! web layer turns what these return into responses.

pub mod seed; // the first start: the demo database, example saved queries and jobs
