//! Browser tests of the web pages: each test starts the real server (port 0, temp data dir) and a
//! headless Chromium driven over WebDriver by our own small client (`webdriver.rs`). They need
//! Debian's `chromium` and `chromium-driver`; without them they fail and say so. On failure a
//! screenshot, the page HTML and the console go to `target/ui-screenshots/`.

#[path = "../common/mod.rs"]
mod common;
mod support;
mod webdriver;

mod all_runs;
mod audit;
mod auth;
mod job_form;
mod job_page;
mod jobs;
mod runs;
mod saved_queries;
mod screenshots;
mod users;
