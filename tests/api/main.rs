//! Black-box API tests: each test starts the real server on port 0 with a temp data dir and talks
//! HTTP to it. Modules follow the API's resources.

mod helpers;

mod auth;
mod cli;
mod jobs;
mod packaging;
mod restart;
mod runs;
mod scheduler;
mod internal;
mod queries;
mod metrics;
mod notifications;
mod retention;
mod openapi;
