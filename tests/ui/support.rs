//! The UI test harness: `ui_test` starts the real server (the API tests' `spawn_app`) and a headless
//! Chromium, runs the test body, and on failure saves a screenshot, the page's HTML and the
//! browser console to `target/ui-screenshots/<test>.*` before failing. Every wait polls a
//! condition until a generous deadline (the machine may be busy); nothing sleeps as an assertion.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::{Value, json};

use crate::common::{ADMIN_PASSWORD, AppOptions, TestApp, spawn_app_with};
use crate::webdriver::{Browser, Element};

/// How long a condition may take to become true.
pub const DEADLINE: Duration = Duration::from_secs(45);

pub const DESKTOP: (u32, u32) = (1280, 900);
pub const PHONE: (u32, u32) = (375, 812);

pub struct Ui {
    pub app: TestApp,
    pub browser: Browser,
}

/// Makes sure the `lab` data source exists with a `specimen_details(site, …)` table: the demo
/// database when the server created one, else a small one made here.
pub fn ensure_lab_db(app: &TestApp) {
    let path = app.data_dir.join("lab.db");
    if path.exists() {
        return;
    }
    let conn = rusqlite::Connection::open(&path).expect("lab.db");
    conn.execute_batch(
        "CREATE TABLE specimen_details (label TEXT, site TEXT, specimen_type TEXT);
         INSERT INTO specimen_details VALUES ('SP-1', 'BOS', 'Plasma'), ('SP-2', 'BOS', 'Serum'),
                                             ('SP-3', 'LYO', 'Plasma');",
    )
    .expect("lab tables");
}

/// Creates a saved query (as admin) on the `lab` source and returns its id.
pub async fn create_saved_query(app: &TestApp, title: &str, sql: &str) -> i64 {
    ensure_lab_db(app);
    let query = crate::common::ok_json(
        app.post("/saved-queries", &json!({"title": title, "sql": sql}))
            .await,
    )
    .await;
    query["id"].as_i64().expect("saved query id")
}

/// Where failure artefacts (and the README screenshots' drafts) go.
pub fn artefact_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("artefact dir");
    dir
}

/// Runs one browser test against a fresh server; see the module comment.
pub async fn ui_test<F>(name: &str, body: F)
where
    F: for<'a> AsyncFnOnce(&'a Ui),
{
    ui_test_with(name, AppOptions::default(), DESKTOP, body).await
}

pub async fn ui_test_with<F>(name: &str, options: AppOptions, window: (u32, u32), body: F)
where
    F: for<'a> AsyncFnOnce(&'a Ui),
{
    let app = spawn_app_with(options).await;
    let browser = Browser::start(window.0, window.1).await;
    let ui = Ui { app, browser };
    let outcome = AssertUnwindSafe(body(&ui)).catch_unwind().await;
    let outcome = match outcome {
        Ok(()) => {
            AssertUnwindSafe(ui.assert_no_script_errors())
                .catch_unwind()
                .await
        }
        failed => failed,
    };
    if let Err(panic) = outcome {
        ui.save_failure(name).await;
        let Ui { app, browser } = ui;
        browser.quit().await;
        app.handle.stop(false).await;
        std::panic::resume_unwind(panic);
    }
    let Ui { app, browser } = ui;
    browser.quit().await;
    app.handle.stop(false).await;
}

/// Polls `check` until it yields a value or the deadline passes (then panics with `what`).
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Ui {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.base)
    }

    pub async fn goto(&self, path: &str) {
        self.browser.goto(&self.url(path)).await;
    }

    /// The path (and query) of the page the browser shows.
    pub async fn path(&self) -> String {
        let url = self.browser.current_url().await;
        url.strip_prefix(&self.app.base).unwrap_or(&url).to_string()
    }

    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.browser
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The text of the first element matching `css`, if there is one.
    pub async fn text(&self, css: &str) -> Option<String> {
        let value = self
            .browser
            .execute(
                "const n = document.querySelector(arguments[0]); return n ? n.innerText : null;",
                vec![json!(css)],
            )
            .await
            .ok()?;
        value.as_str().map(str::to_string)
    }

    /// The texts of all elements matching `css`.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let value = self
            .js(
                "return Array.from(document.querySelectorAll(arguments[0])).map(n => n.innerText);",
                vec![json!(css)],
            )
            .await;
        value
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn count(&self, css: &str) -> usize {
        self.js(
            "return document.querySelectorAll(arguments[0]).length;",
            vec![json!(css)],
        )
        .await
        .as_u64()
        .unwrap_or(0) as usize
    }

    /// Waits until an element matching `css` is shown (present, not hidden) and returns it.
    pub async fn wait_visible(&self, css: &str) -> Element {
        wait_for(&format!("`{css}` to be visible"), || async {
            let shown = self
                .browser
                .execute(
                    "const n = document.querySelector(arguments[0]); return !!n && n.getClientRects().length > 0 && getComputedStyle(n).visibility !== 'hidden';",
                    vec![json!(css)],
                )
                .await
                .ok()?;
            if shown.as_bool() != Some(true) {
                return None;
            }
            self.browser.find(css).await.ok()
        })
        .await
    }

    /// Waits until the text of `css` satisfies `accept`; returns the text.
    pub async fn wait_text(&self, css: &str, what: &str, accept: impl Fn(&str) -> bool) -> String {
        let mut last = None;
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = self.text(css).await;
            if let Some(t) = &text
                && accept(t)
            {
                return t.clone();
            }
            last = text.or(last);
            assert!(
                Instant::now() < deadline,
                "timed out waiting for `{css}` to show {what}; last text: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_contains(&self, css: &str, needle: &str) -> String {
        self.wait_text(css, &format!("{needle:?}"), |t| t.contains(needle))
            .await
    }

    /// Waits until the page's path starts with `prefix`.
    pub async fn wait_path(&self, prefix: &str) -> String {
        wait_for(&format!("the page to become {prefix}"), || async {
            let path = self.path().await;
            path.starts_with(prefix).then_some(path)
        })
        .await
    }

    /// Clicks the element matching `css` once it is visible; retries while the page re-renders it.
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let element = self.wait_visible(css).await;
            match self.browser.click(&element).await {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot click `{css}`: {e}"),
            }
        }
    }

    /// Replaces the value of an input with `text`, typed as keys.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.wait_visible(css).await;
        self.browser
            .clear(&element)
            .await
            .unwrap_or_else(|e| panic!("clear `{css}`: {e}"));
        if !text.is_empty() {
            self.browser
                .send_keys(&element, text)
                .await
                .unwrap_or_else(|e| panic!("type into `{css}`: {e}"));
        }
    }

    /// Chooses the option with `value` in the select `css` (by clicking the option).
    pub async fn select(&self, css: &str, value: &str) {
        self.wait_visible(css).await;
        let option = self
            .browser
            .find(&format!("{css} option[value=\"{value}\"]"))
            .await
            .unwrap_or_else(|e| panic!("no option {value} in `{css}`: {e}"));
        self.browser
            .click(&option)
            .await
            .unwrap_or_else(|e| panic!("choose {value} in `{css}`: {e}"));
    }

    /// Sets a `datetime-local` input (typing into those is locale-dependent) and fires `change`.
    pub async fn set_datetime(&self, css: &str, value: &str) {
        self.wait_visible(css).await;
        self.js(
            "const n = document.querySelector(arguments[0]); n.value = arguments[1]; n.dispatchEvent(new Event('input', {bubbles: true})); n.dispatchEvent(new Event('change', {bubbles: true}));",
            vec![json!(css), json!(value)],
        )
        .await;
    }

    /// Signs in through the form and waits for the jobs list (or `next`).
    pub async fn sign_in(&self, login: &str, password: &str) {
        self.goto("/ui/sign-in").await;
        self.fill("#loginName", login).await;
        self.fill("#password", password).await;
        self.click("#sign-in-submit").await;
        self.wait_path("/ui/jobs").await;
    }

    pub async fn sign_in_admin(&self) {
        self.sign_in("admin", ADMIN_PASSWORD).await;
    }

    /// Marks the current document; `assert_same_document` fails if the page was reloaded since.
    pub async fn mark_document(&self) {
        self.js("window.__labcronMark = 'kept';", vec![]).await;
    }

    pub async fn assert_same_document(&self) {
        let mark = self
            .js("return window.__labcronMark || null;", vec![])
            .await;
        assert_eq!(mark, json!("kept"), "the page was reloaded");
    }

    /// Saves a screenshot of the viewport to `<artefacts>/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let path = artefact_dir().join(format!("{name}.png"));
        if let Ok(png) = self.browser.screenshot().await {
            let _ = std::fs::write(&path, png);
        }
        path
    }

    /// Fails on script errors and Content-Security-Policy violations reported in the console.
    pub async fn assert_no_script_errors(&self) {
        let problems: Vec<String> = self
            .browser
            .console_messages()
            .await
            .into_iter()
            .filter(|m| {
                m.contains("Uncaught")
                    || m.contains("Content Security Policy")
                    || m.contains("Refused to")
            })
            .collect();
        assert!(
            problems.is_empty(),
            "the browser reported script errors: {problems:#?}"
        );
    }

    async fn save_failure(&self, name: &str) {
        let png = self.screenshot(name).await;
        let dir = artefact_dir();
        let html = self
            .browser
            .execute("return document.documentElement.outerHTML;", vec![])
            .await
            .unwrap_or(Value::Null);
        let _ = std::fs::write(
            dir.join(format!("{name}.html")),
            html.as_str().unwrap_or_default(),
        );
        let console = self.browser.console_messages().await.join("\n");
        let _ = std::fs::write(dir.join(format!("{name}.console.txt")), &console);
        eprintln!(
            "UI test {name} failed on {}; screenshot {}; console:\n{console}\nchromedriver log tail:\n{}",
            self.browser.current_url().await,
            png.display(),
            self.browser.driver_log_tail()
        );
    }
}
