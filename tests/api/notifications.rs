//! Notifications about finished runs, against receivers written here on loopback: an SMTP sink
//! (enough SMTP to take messages: EHLO/HELO, MAIL FROM, RCPT TO, DATA, RSET, NOOP, QUIT) checks
//! OpenSpecimen's recipient rules and the e-mails' contents; an HTTP receiver that answers 500
//! before 200 checks the webhook's signature, headers, body and retries. Dead or refusing receivers
//! never change a run's outcome. Also `webhookUrl` validation.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{
    TestApp, error_codes, ok_json, run_id_from_location, spawn_app, spawn_app_configured,
};
use crate::metrics::scrape_until;

const SECRET: &str = "webhook-test-secret";
const DEADLINE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// An SMTP sink.

/// One message the sink took.
#[derive(Debug, Clone)]
struct Mail {
    /// Envelope recipients (RCPT TO).
    rcpt: Vec<String>,
    headers: HashMap<String, String>,
    body: String,
}

impl Mail {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or_default()
    }
}

struct SmtpSink {
    port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let store = mails.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let _ = smtp_session(stream, store).await;
                });
            }
        });
        SmtpSink { port, mails }
    }

    fn taken(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// Waits until at least `n` messages arrived and returns all of them.
    async fn wait_for(&self, n: usize) -> Vec<Mail> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mails = self.taken();
            if mails.len() >= n {
                return mails;
            }
            assert!(
                Instant::now() < deadline,
                "{} e-mails arrived, expected {n}: {mails:#?}",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn smtp_session(stream: TcpStream, store: Arc<Mutex<Vec<Mail>>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let mut rcpt = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") {
            b"250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if command.starts_with("HELO") {
            b"250 sink.test\r\n"
        } else if command.starts_with("MAIL FROM:") {
            rcpt.clear();
            b"250 OK\r\n"
        } else if command.starts_with("RCPT TO:") {
            let address = line.trim_end()[8..].trim().trim_start_matches('<');
            let address = address.split('>').next().unwrap_or_default().to_string();
            rcpt.push(address);
            b"250 OK\r\n"
        } else if command == "DATA" {
            write
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut data = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                // Dot-stuffing: a leading dot was doubled by the sender.
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            store
                .lock()
                .unwrap()
                .push(parse_mail(std::mem::take(&mut rcpt), &data));
            b"250 OK queued\r\n"
        } else if command == "RSET" || command == "NOOP" {
            b"250 OK\r\n"
        } else if command == "QUIT" {
            write.write_all(b"221 Bye\r\n").await?;
            return Ok(());
        } else {
            b"502 Command not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
}

/// Splits a message into unfolded headers (lower-case names) and its decoded text body.
fn parse_mail(rcpt: Vec<String>, data: &str) -> Mail {
    let data = data.replace("\r\n", "\n");
    let (head, body) = data.split_once("\n\n").unwrap_or((&data, ""));
    let mut headers: HashMap<String, String> = HashMap::new();
    let mut last = String::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(value) = headers.get_mut(&last) {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            last = name.trim().to_ascii_lowercase();
            headers.insert(last.clone(), value.trim().to_string());
        }
    }
    let encoding = headers
        .get("content-transfer-encoding")
        .cloned()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = match encoding.as_str() {
        "" | "7bit" | "8bit" => body.to_string(),
        "quoted-printable" => decode_quoted_printable(body),
        other => panic!("unexpected Content-Transfer-Encoding {other}"),
    };
    Mail {
        rcpt,
        headers,
        body,
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).expect("QP hex"));
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("UTF-8 body")
}

// ---------------------------------------------------------------------------------------------
// An HTTP receiver for webhooks.

#[derive(Debug, Clone)]
struct HookRequest {
    method: String,
    target: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl HookRequest {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or_default()
    }
}

struct HookReceiver {
    port: u16,
    requests: Arc<Mutex<Vec<HookRequest>>>,
}

impl HookReceiver {
    /// Answers the n-th request with `statuses[n]` (the last one repeats).
    async fn start(statuses: Vec<u16>) -> HookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let store = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                let statuses = statuses.clone();
                tokio::spawn(async move {
                    let _ = http_exchange(stream, store, &statuses).await;
                });
            }
        });
        HookReceiver { port, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn taken(&self) -> Vec<HookRequest> {
        self.requests.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<HookRequest> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let requests = self.taken();
            if requests.len() >= n {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "{} webhook requests arrived, expected {n}",
                requests.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads one HTTP/1.1 request, records it, answers and closes the connection.
async fn http_exchange(
    stream: TcpStream,
    store: Arc<Mutex<Vec<HookRequest>>>,
    statuses: &[u16],
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    let status = {
        let mut taken = store.lock().unwrap();
        taken.push(HookRequest {
            method,
            target,
            headers,
            body,
        });
        statuses[(taken.len() - 1).min(statuses.len() - 1)]
    };
    let answer =
        format!("HTTP/1.1 {status} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    reader.get_mut().write_all(answer.as_bytes()).await?;
    reader.get_mut().shutdown().await
}

/// A loopback port nothing listens on.
async fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

// ---------------------------------------------------------------------------------------------
// Helpers.

async fn app_with_smtp(port: u16) -> TestApp {
    spawn_app_configured(move |s| {
        s.notifications.smtp_host = "127.0.0.1".into();
        s.notifications.smtp_port = Some(port);
        s.notifications.smtp_security = labcron::config::primitives::SmtpSecurity::None;
        s.notifications.from_address = "Lab Jobs <jobs@lab.example>".into();
        s.notifications.public_base_url = "https://jobs.lab.example/".into();
    })
    .await
}

/// Creates a job as the user with `token` and returns its id.
async fn create_job_as(app: &TestApp, token: &str, body: Value) -> i64 {
    let response = app
        .send_as(token, Method::POST, "/scheduled-jobs", Some(&body))
        .await;
    ok_json(response).await["id"].as_i64().unwrap()
}

/// Queues a run as the user with `token` and waits for its end.
async fn run_as(app: &TestApp, token: &str, job: i64, args: Option<&str>) -> Value {
    let body = match args {
        Some(a) => json!({"args": a}),
        None => json!({}),
    };
    let response = app
        .send_as(
            token,
            Method::POST,
            &format!("/scheduled-jobs/{job}/runs"),
            Some(&body),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let run = run_id_from_location(&response);
    app.wait_run(job, run).await
}

fn recipients(mails: &[Mail]) -> BTreeSet<String> {
    for mail in mails {
        assert_eq!(mail.rcpt.len(), 1, "one e-mail per recipient: {mail:#?}");
        assert!(mail.header("To").contains(&mail.rcpt[0]), "{mail:#?}");
    }
    mails.iter().map(|m| m.rcpt[0].clone()).collect()
}

fn set(addresses: &[&str]) -> BTreeSet<String> {
    addresses.iter().map(|a| a.to_string()).collect()
}

/// A DAILY schedule that cannot fire during the test (it starts in 30 days).
fn daily_not_yet() -> Value {
    let start = chrono::Utc::now().timestamp_millis() + 30 * 24 * 3600 * 1000;
    json!({"repeatSchedule": "DAILY", "scheduledHour": 3, "scheduledMinute": 0, "startDate": start})
}

fn merged(mut a: Value, b: Value) -> Value {
    for (k, v) in b.as_object().unwrap() {
        a[k] = v.clone();
    }
    a
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_emails_go_to_recipients_plus_the_runner_of_on_demand_jobs_or_else_the_creator() {
    let sink = SmtpSink::start().await;
    let app = app_with_smtp(sink.port).await;
    let (_, boss_token) = app.create_user("boss", true).await;
    let (clicker, clicker_token) = app.create_user("clicker", false).await;
    let (watcher, _) = app.create_user("watcher", false).await;
    let (gone, _) = app.create_user("gone", false).await;
    app.write_script(
        "report.sh",
        "#!/bin/sh\nprintf 'a,b\\n1,2\\n' > \"$LABCRON_RESULT_DIR/report.csv\"\n",
    );
    app.write_script("broken.sh", "#!/bin/sh\necho boom >&2\nexit 3\n");

    // An ONDEMAND job: its recipients and the run's runner, not its creator; a disabled recipient
    // is left out.
    let on_demand = create_job_as(
        &app,
        &boss_token,
        json!({"name": "on demand report", "type": "EXTERNAL", "command": "report.sh", "repeatSchedule": "ONDEMAND",
               "recipients": [{"id": watcher}, {"id": gone}], "sharedWith": [{"id": clicker}]}),
    )
    .await;
    ok_json(app.delete(&format!("/users/{gone}")).await).await;
    let run = run_as(&app, &clicker_token, on_demand, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let run_id = run["id"].as_i64().unwrap();
    let mails = sink.wait_for(2).await;
    assert_eq!(
        recipients(&mails),
        set(&["clicker@lab.example", "watcher@lab.example"])
    );
    for mail in &mails {
        assert_eq!(
            mail.header("Subject"),
            "Scheduled job \"on demand report\" completed successfully."
        );
        assert!(
            mail.header("From").contains("jobs@lab.example"),
            "{mail:#?}"
        );
        assert!(
            mail.header("Content-Type").starts_with("text/plain"),
            "{mail:#?}"
        );
        let body = &mail.body;
        assert!(
            body.contains("Job on demand report has successfully run to completion."),
            "{body}"
        );
        assert!(
            body.contains(&format!("Run ID      : {run_id}\n")),
            "{body}"
        );
        assert!(body.contains("Start Time  : 20"), "{body}");
        assert!(body.contains("Finish Time : 20"), "{body}");
        assert!(!body.contains("Error"), "{body}");
        let link = format!(
            "https://jobs.lab.example/rest/ng/scheduled-jobs/{on_demand}/runs/{run_id}/result-file"
        );
        assert!(body.contains(&link), "{body}");
    }
    let clicker_mail = mails
        .iter()
        .find(|m| m.rcpt[0] == "clicker@lab.example")
        .unwrap();
    assert!(
        clicker_mail.body.starts_with("Hello clicker Tester,"),
        "{}",
        clicker_mail.body
    );

    // A scheduled (DAILY) job run by hand: its recipients and its creator, not the clicker.
    let daily = create_job_as(
        &app,
        &boss_token,
        merged(
            json!({"name": "nightly check", "type": "EXTERNAL", "command": "broken.sh",
                   "recipients": [{"id": watcher}], "sharedWith": [{"id": clicker}]}),
            daily_not_yet(),
        ),
    )
    .await;
    let run = run_as(&app, &clicker_token, daily, None).await;
    assert_eq!(run["status"], "FAILED", "{run}");
    let run_id = run["id"].as_i64().unwrap();
    let mails = sink.wait_for(4).await;
    let failed = &mails[2..];
    assert_eq!(
        recipients(failed),
        set(&["boss@lab.example", "watcher@lab.example"])
    );
    for mail in failed {
        assert_eq!(
            mail.header("Subject"),
            "Scheduled job \"nightly check\" has failed!"
        );
        assert!(
            mail.body.contains("Job nightly check has failed."),
            "{}",
            mail.body
        );
        assert!(
            mail.body.contains(&format!("Run ID      : {run_id}\n")),
            "{}",
            mail.body
        );
        assert!(
            mail.body.contains("Error       : exit code 3: boom\n"),
            "{}",
            mail.body
        );
        assert!(
            !mail.body.contains("result-file"),
            "no result, no link: {}",
            mail.body
        );
    }
    assert_eq!(sink.taken().len(), 4, "{:#?}", sink.taken());
    let s = scrape_until(&app, "4 e-mails counted", |s| {
        s.get(
            "labcron_notifications_total",
            &[("channel", "email"), ("outcome", "delivered")],
        ) >= 4.0
    })
    .await;
    assert_eq!(
        s.get(
            "labcron_notifications_total",
            &[("channel", "email"), ("outcome", "failed")]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_with_nobody_to_tell_goes_to_the_admins_and_a_success_to_nobody() {
    let sink = SmtpSink::start().await;
    let app = app_with_smtp(sink.port).await;
    app.create_user("ops", true).await;
    app.create_user("ops2", true).await;
    app.create_user("staff", false).await;
    app.write_script(
        "flaky.sh",
        "#!/bin/sh\n[ \"$1\" = ok ] && exit 0\necho 'disk full' >&2\nexit 1\n",
    );
    // Created and run by `admin`, who has no e-mail address, with no recipients.
    let job = app
        .create_job(&json!({"name": "flaky", "type": "EXTERNAL", "command": "flaky.sh", "repeatSchedule": "ONDEMAND",
                            "rtArgsProvided": true}))
        .await;

    let run = run_as(&app, &app.token, job, Some("ok")).await;
    assert_eq!(run["status"], "SUCCEEDED");
    let run = run_as(&app, &app.token, job, None).await;
    assert_eq!(run["status"], "FAILED");
    let mails = sink.wait_for(2).await;
    assert_eq!(
        recipients(&mails),
        set(&["ops@lab.example", "ops2@lab.example"])
    );
    for mail in &mails {
        assert_eq!(
            mail.header("Subject"),
            "Scheduled job \"flaky\" has failed!"
        );
        assert!(
            mail.body.contains("Error       : exit code 1: disk full\n"),
            "{}",
            mail.body
        );
    }
    // The success before it went to nobody.
    assert_eq!(sink.taken().len(), 2, "{:#?}", sink.taken());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_on_5xx_and_carry_the_run_while_a_dead_smtp_server_changes_nothing()
 {
    let hook = HookReceiver::start(vec![500, 200]).await;
    let dead_smtp = dead_port().await;
    let app = spawn_app_configured(move |s| {
        s.notifications.smtp_host = "127.0.0.1".into();
        s.notifications.smtp_port = Some(dead_smtp);
        s.notifications.smtp_security = labcron::config::primitives::SmtpSecurity::None;
        s.notifications.webhook_secret = SECRET.into();
    })
    .await;
    let (watcher, _) = app.create_user("watcher", false).await;
    app.write_script("ok.sh", "#!/bin/sh\necho done\n");
    let url = hook.url("/hooks/labcron?token=abc");
    let job = ok_json(
        app.post(
            "/scheduled-jobs",
            &json!({"name": "hooked", "type": "EXTERNAL", "command": "ok.sh", "repeatSchedule": "ONDEMAND",
                    "recipients": [{"id": watcher}], "webhookUrl": url}),
        )
        .await,
    )
    .await;
    assert_eq!(job["webhookUrl"], url.as_str());
    let job = job["id"].as_i64().unwrap();

    let run_id = app.start_run(job, None).await;
    let run = app.wait_run(job, run_id).await;
    assert_eq!(
        run["status"], "SUCCEEDED",
        "the dead SMTP server changes nothing: {run}"
    );

    let requests = hook.wait_for(2).await;
    let (first, second) = (&requests[0], &requests[1]);
    for request in [first, second] {
        assert_eq!(request.method, "POST");
        assert_eq!(request.target, "/hooks/labcron?token=abc");
        assert_eq!(request.header("Content-Type"), "application/json");
        assert_eq!(request.header("X-Labcron-Event"), "run.succeeded");
        let expected = format!("sha256={}", hmac_hex(SECRET, &request.body));
        assert_eq!(request.header("X-Labcron-Signature"), expected);
        let timestamp: i64 = request
            .header("X-Labcron-Timestamp")
            .parse()
            .expect("timestamp");
        assert!(
            (timestamp - chrono::Utc::now().timestamp()).abs() < 600,
            "{timestamp}"
        );
    }
    assert_eq!(first.body, second.body, "a retry sends the same body");
    assert!(!first.header("X-Labcron-Delivery").is_empty());
    assert_eq!(
        first.header("X-Labcron-Delivery"),
        second.header("X-Labcron-Delivery")
    );
    assert_ne!(
        hmac_hex("another secret", &first.body),
        hmac_hex(SECRET, &first.body)
    );
    // The body is the API's run object.
    let sent: Value = serde_json::from_slice(&second.body).expect("JSON body");
    let api = ok_json(
        app.get(&format!("/scheduled-jobs/{job}/runs/{run_id}"))
            .await,
    )
    .await;
    assert_eq!(sent, api);

    let s = scrape_until(&app, "the webhook and the e-mail counted", |s| {
        s.get(
            "labcron_notifications_total",
            &[("channel", "webhook"), ("outcome", "delivered")],
        ) >= 1.0
            && s.get(
                "labcron_notifications_total",
                &[("channel", "email"), ("outcome", "failed")],
            ) >= 1.0
    })
    .await;
    assert_eq!(
        s.get(
            "labcron_notifications_total",
            &[("channel", "webhook"), ("outcome", "delivered")]
        ),
        1.0
    );
    assert_eq!(
        s.get(
            "labcron_notifications_total",
            &[("channel", "email"), ("outcome", "failed")]
        ),
        1.0
    );
    assert_eq!(
        s.get(
            "labcron_notifications_total",
            &[("channel", "email"), ("outcome", "delivered")]
        ),
        0.0
    );
    assert_eq!(app.run_status(job, run_id).await, "SUCCEEDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_refusing_webhook_changes_no_run_and_a_4xx_is_not_retried() {
    let refusing = HookReceiver::start(vec![404]).await;
    let dead = dead_port().await;
    let app = spawn_app_configured(|s| s.notifications.webhook_max_attempts = 2).await;
    app.write_script("ok.sh", "#!/bin/sh\nexit 0\n");
    app.write_script("bad.sh", "#!/bin/sh\necho broken >&2\nexit 2\n");
    let failing = app
        .create_job(&json!({"name": "to a dead hook", "type": "EXTERNAL", "command": "bad.sh", "repeatSchedule": "ONDEMAND",
                            "webhookUrl": format!("http://127.0.0.1:{dead}/hook")}))
        .await;
    let refused = app
        .create_job(
            &json!({"name": "to a refusing hook", "type": "EXTERNAL", "command": "ok.sh",
                            "repeatSchedule": "ONDEMAND", "webhookUrl": refusing.url("/hook")}),
        )
        .await;

    let failed_run = app.start_run(failing, None).await;
    let failed = app.wait_run(failing, failed_run).await;
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["message"], "exit code 2: broken");
    let ok_run = app.start_run(refused, None).await;
    assert_eq!(app.wait_run(refused, ok_run).await["status"], "SUCCEEDED");

    scrape_until(&app, "two failed webhook deliveries", |s| {
        s.get(
            "labcron_notifications_total",
            &[("channel", "webhook"), ("outcome", "failed")],
        ) >= 2.0
    })
    .await;
    assert_eq!(refusing.taken().len(), 1, "a 404 is not retried");
    let again = ok_json(
        app.get(&format!("/scheduled-jobs/{failing}/runs/{failed_run}"))
            .await,
    )
    .await;
    assert_eq!(again, failed, "the deliveries changed nothing in the run");
    assert_eq!(app.run_status(refused, ok_run).await, "SUCCEEDED");
}

#[tokio::test]
async fn webhook_urls_are_validated_returned_and_replaced_with_the_job() {
    let app = spawn_app().await;
    let body = |url: Value| {
        json!({"name": "hooked query", "type": "INTERNAL", "taskImplFqn": "runs-report", "repeatSchedule": "ONDEMAND",
               "webhookUrl": url})
    };
    for bad in ["ftp://hooks.lab.example/x", "not a url", "http://"] {
        let response = app.post("/scheduled-jobs", &body(json!(bad))).await;
        assert_eq!(
            error_codes(response, StatusCode::BAD_REQUEST).await,
            ["SCHEDULED_JOB_INVALID_WEBHOOK_URL"],
            "{bad}"
        );
    }
    let job = ok_json(
        app.post(
            "/scheduled-jobs",
            &body(json!("https://hooks.lab.example/labcron")),
        )
        .await,
    )
    .await;
    assert_eq!(job["webhookUrl"], "https://hooks.lab.example/labcron");
    let id = job["id"].as_i64().unwrap();
    let read = ok_json(app.get(&format!("/scheduled-jobs/{id}")).await).await;
    assert_eq!(read["webhookUrl"], "https://hooks.lab.example/labcron");
    // PUT is a full replace: without webhookUrl the job has none.
    let replaced = ok_json(
        app.put(&format!("/scheduled-jobs/{id}"), &body(Value::Null))
            .await,
    )
    .await;
    assert!(replaced["webhookUrl"].is_null(), "{replaced}");
    let listed = ok_json(app.get("/scheduled-jobs").await).await;
    assert!(listed[0]["webhookUrl"].is_null());
    let response = app
        .put(&format!("/scheduled-jobs/{id}"), &body(json!("gopher://x")))
        .await;
    assert_eq!(
        error_codes(response, StatusCode::BAD_REQUEST).await,
        ["SCHEDULED_JOB_INVALID_WEBHOOK_URL"]
    );
}

// ---------------------------------------------------------------------------------------------
// notifyOn and retry series (issue 13).

/// The run ids of the webhook requests, in arrival order.
fn hooked_runs(requests: &[HookRequest]) -> Vec<i64> {
    requests
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).expect("JSON body")["id"]
                .as_i64()
                .expect("run id")
        })
        .collect()
}

/// Switches the job's `notifyOn` (a full replace with the same other fields).
async fn set_notify_on(app: &TestApp, job: i64, body: &Value, notify_on: &str) {
    ok_json(
        app.put(
            &format!("/scheduled-jobs/{job}"),
            &merged(body.clone(), json!({"notifyOn": notify_on})),
        )
        .await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_on_failure_change_and_never_govern_webhooks() {
    let hook = HookReceiver::start(vec![200]).await;
    let app = spawn_app_configured(|s| s.notifications.webhook_secret = SECRET.into()).await;
    // `exit $1`: each run says how it ends.
    app.write_script("exit.sh", "#!/bin/sh\nexit \"$1\"\n");
    let body = json!({"name": "rules", "type": "EXTERNAL", "command": "exit.sh", "repeatSchedule": "ONDEMAND",
                      "rtArgsProvided": true, "webhookUrl": hook.url("/h"), "notifyOn": "FAILURE"});
    let job = ok_json(app.post("/scheduled-jobs", &body).await).await;
    assert_eq!(job["notifyOn"], "FAILURE");
    let job = job["id"].as_i64().unwrap();
    let run = |code: &'static str| {
        let app = &app;
        async move {
            let id = app.start_run(job, Some(code)).await;
            app.wait_run(job, id).await;
            id
        }
    };

    // FAILURE: the success sends nothing, the failure does.
    let _ok = run("0").await;
    let failed = run("1").await;
    assert_eq!(hooked_runs(&hook.wait_for(1).await), [failed]);

    // CHANGE: the first failure after a success and the first success after a failure.
    set_notify_on(&app, job, &body, "CHANGE").await;
    let still_failing = run("1").await; // failed before too: no change
    let recovered = run("0").await;
    let _ok_again = run("0").await;
    let broke = run("2").await;
    // NEVER: nothing, whatever happens.
    set_notify_on(&app, job, &body, "NEVER").await;
    run("0").await;
    run("3").await;
    // ALWAYS (the default): a last run marks the end, so nothing can still be on its way.
    set_notify_on(&app, job, &body, "ALWAYS").await;
    let last = run("0").await;
    let requests = hook.wait_for(4).await;
    let mut ids = hooked_runs(&requests);
    ids.sort_unstable();
    assert_eq!(ids, [failed, recovered, broke, last]);
    assert!(!ids.contains(&still_failing));
    assert_eq!(requests.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_series_notifies_once_at_its_end_and_the_failure_email_says_why() {
    let sink = SmtpSink::start().await;
    let hook = HookReceiver::start(vec![200]).await;
    let smtp = sink.port;
    let hook_url = hook.url("/series");
    let app = spawn_app_configured(move |s| {
        s.notifications.smtp_host = "127.0.0.1".into();
        s.notifications.smtp_port = Some(smtp);
        s.notifications.smtp_security = labcron::config::primitives::SmtpSecurity::None;
        s.notifications.from_address = "Lab Jobs <jobs@lab.example>".into();
        s.notifications.public_base_url = "https://jobs.lab.example/".into();
        s.notifications.webhook_secret = SECRET.into();
    })
    .await;
    let (watcher, _) = app.create_user("watcher", false).await;
    app.write_script(
        "lims.sh",
        "#!/bin/sh\necho 'connecting to the LIMS'\necho 'still waiting'\necho 'LIMS timeout' >&2\nexit 3\n",
    );
    let job = ok_json(
        app.post(
            "/scheduled-jobs",
            &json!({"name": "lims sync", "type": "EXTERNAL", "command": "lims.sh", "repeatSchedule": "ONDEMAND",
                    "maxRetries": 2, "retryDelaySeconds": 1, "recipients": [{"id": watcher}],
                    "webhookUrl": hook_url}),
        )
        .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let first = app.start_run(job, None).await;
    // The series: three attempts; only the last one's end is told.
    let deadline = Instant::now() + DEADLINE;
    let last = loop {
        let runs = ok_json(app.get(&format!("/scheduled-jobs/{job}/runs")).await).await;
        let runs = runs.as_array().unwrap().clone();
        if runs.len() == 3 && runs[0]["status"] == "FAILED" {
            break runs[0].clone();
        }
        assert!(Instant::now() < deadline, "{runs:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(last["attempt"], 3);
    assert_eq!(last["retryOf"], first);
    let last_id = last["id"].as_i64().unwrap();
    // The watcher (the admin who ran it has no e-mail address).
    let mails = sink.wait_for(1).await;
    assert_eq!(hooked_runs(&hook.wait_for(1).await), [last_id]);
    for mail in &mails {
        assert_eq!(
            mail.header("Subject"),
            "Scheduled job \"lims sync\" has failed!"
        );
        let body = &mail.body;
        assert!(body.contains(&format!("Run ID      : {last_id}")), "{body}");
        assert!(
            body.contains("Error       : exit code 3: LIMS timeout"),
            "{body}"
        );
        assert!(body.contains("Attempts    : 3"), "{body}");
        // stdout and stderr are drained concurrently, so their lines may interleave either way.
        let tail = body
            .split("Last lines of the log:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("no log tail: {body}"));
        let tail: Vec<&str> = tail.lines().take_while(|l| l.starts_with("    ")).collect();
        let mut sorted = tail.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            [
                "    LIMS timeout",
                "    connecting to the LIMS",
                "    still waiting"
            ],
            "{body}"
        );
        assert!(
            tail.iter().position(|l| l.contains("connecting"))
                < tail.iter().position(|l| l.contains("still waiting")),
            "stdout keeps its order: {body}"
        );
        assert!(
            body.contains(&format!(
                "https://jobs.lab.example/ui/jobs/{job}/runs/{last_id}"
            )),
            "{body}"
        );
    }
    // A success afterwards (ALWAYS): the e-mails and the webhook of the series were the only
    // ones, so exactly one more of each arrives.
    app.write_script("lims.sh", "#!/bin/sh\necho synced\n");
    let ok = app.start_run(job, None).await;
    app.wait_run(job, ok).await;
    assert_eq!(hooked_runs(&hook.wait_for(2).await), [last_id, ok]);
    let mails = sink.wait_for(2).await;
    assert_eq!(mails.len(), 2, "{mails:#?}");
    assert!(
        mails[1]
            .header("Subject")
            .contains("completed successfully")
    );
}
