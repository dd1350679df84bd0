//! Black-box API tests: each test starts the real server on port 0 with a temp data dir and talks
//! HTTP to it. Modules follow the API's resources.

mod helpers;

mod auth;
mod cli;
mod hardening;
mod internal;
mod jobs;
mod metrics;
mod notifications;
mod openapi;
mod packaging;
mod queries;
mod restart;
mod retention;
mod runs;
mod scheduler;
mod series;
