//! Security: the routes are read from the served `/openapi.json` (`support::served_routes`), so a
//! new route is covered without touching this file. Without credentials
//! every route but the public ones answers 401; a non-admin reaches no other user's job, run, log or
//! file; path traversal in any path parameter gets a JSON 400/404, never a file; injection strings
//! are stored and handled literally, never a 500; oversized bodies get 413 and oversized headers
//! 431 or 400 without bringing the server down; repeated failed sign-ins get 429 with Retry-After.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{client, integrity_check, raw_get, raw_request, start_server, write_script};
use crate::support::{fill, parameters, served_routes};

/// Routes that answer without credentials: (method, path suffix).
const PUBLIC: &[(&str, &str)] = &[
    ("POST", "/sessions"),
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
];

/// The start of a long body, for assertion messages.
fn short(text: &str) -> String {
    text.chars().take(300).collect()
}

fn is_public(method: &Method, path: &str) -> bool {
    PUBLIC
        .iter()
        .any(|(m, suffix)| method.as_str() == *m && path.ends_with(suffix))
}

/// A data directory with a script that records its arguments and writes a result and a log.
fn prepared_data_dir(dir: &std::path::Path) -> std::path::PathBuf {
    let data_dir = dir.join("data");
    write_script(
        &data_dir.join("scripts"),
        "echo-args.sh",
        "#!/bin/sh\necho \"secret log of run $LABCRON_RUN_ID\"\n\
         printf '%s\\n' \"$@\" > \"$LABCRON_RESULT_DIR/args.txt\"\n",
    );
    data_dir
}

/// Asserts the reply is a contract error (JSON array of code/message) with one of `statuses`.
fn assert_json_error(
    status: u16,
    content_type: Option<&str>,
    body: &str,
    statuses: &[u16],
    what: &str,
) {
    let body_start = short(body);
    assert!(
        statuses.contains(&status),
        "{what}: status {status}, expected one of {statuses:?}: {body_start}"
    );
    assert!(
        content_type.is_some_and(|c| c.starts_with("application/json")),
        "{what}: error is not JSON ({content_type:?}): {body_start}"
    );
    let parsed: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: not JSON: {body_start}"));
    let items = parsed
        .as_array()
        .unwrap_or_else(|| panic!("{what}: not an array: {body_start}"));
    assert!(
        !items.is_empty()
            && items
                .iter()
                .all(|i| i["code"].is_string() && i["message"].is_string()),
        "{what}: not the error shape: {body_start}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_without_credentials_answers_401_except_the_public_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = prepared_data_dir(dir.path());
    let server = start_server(&data_dir, &[]);
    let admin = server.admin().await;
    let job = admin
        .create_job(
            &json!({"name": "guarded", "type": "EXTERNAL", "command": "echo-args.sh",
            "repeatSchedule": "ONDEMAND", "rtArgsProvided": true}),
        )
        .await;
    let run = admin.start_run(job, Some("a b")).await;
    admin.wait_run(job, run).await;
    let values = [
        ("jobId", job.to_string()),
        ("runId", run.to_string()),
        ("userId", "2".to_string()),
        ("queryId", "1".to_string()),
    ];
    let anonymous = client();
    let mut checked = 0;
    for route in served_routes(&server.base).await {
        for path in &route.paths {
            let url = format!("{}{}", server.base, fill(path, &values, "1"));
            for method in &route.methods {
                let credentials: [(&str, Option<(&str, String)>); 4] = [
                    ("no credentials", None),
                    (
                        "a made-up token",
                        Some(("X-OS-API-TOKEN", "not-a-token".into())),
                    ),
                    (
                        "a malformed Basic header",
                        Some(("Authorization", "Basic !!!".into())),
                    ),
                    ("a bad Bearer", Some(("Authorization", "Bearer abc".into()))),
                ];
                for (label, header) in credentials {
                    let mut request = anonymous
                        .request(method.clone(), &url)
                        .header("Content-Type", "application/json")
                        .body("{}");
                    if let Some((name, value)) = header {
                        request = request.header(name, value);
                    }
                    let response = request.send().await.expect("request");
                    let status = response.status().as_u16();
                    let content_type = response
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let body = response.text().await.unwrap_or_default();
                    let what = format!("{method} {path} with {label}");
                    if is_public(method, path) {
                        assert!(
                            status != 401 && status < 500,
                            "{what}: a public route answered {status}: {}",
                            short(&body)
                        );
                        if path.ends_with("/sessions") {
                            // Sign-in with an empty body is a user error, never a session.
                            assert_eq!(status, 400, "{what}: {}", short(&body));
                        }
                    } else {
                        assert_json_error(status, content_type.as_deref(), &body, &[401], &what);
                        assert!(
                            !body.contains("guarded") && !body.contains("secret log"),
                            "{what}: data in a 401: {body}"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    println!("security: {checked} unauthenticated requests checked");
    server.terminate(Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_admin_reaches_no_other_users_job_run_log_or_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = prepared_data_dir(dir.path());
    let server = start_server(&data_dir, &[]);
    let admin = server.admin().await;
    let (_, alice) = admin.create_user_api("alice", false).await;
    let (bob_id, bob) = admin.create_user_api("bob", false).await;

    // Alice's QUERY job on the demo database, run once: it has a run, a log and a result file.
    let query = alice
        .ok(
            Method::POST,
            "/saved-queries",
            Some(&json!({"title": "alice private specimens", "sql": "SELECT 'alice-secret-value' AS v"})),
        )
        .await;
    let alice_job = alice
        .create_job(
            &json!({"name": "alice private job", "type": "QUERY", "repeatSchedule": "ONDEMAND",
            "savedQuery": {"id": query["id"]}}),
        )
        .await;
    let alice_run = alice.start_run(alice_job, None).await;
    let finished = alice.wait_run(alice_job, alice_run).await;
    assert_eq!(finished["status"], "SUCCEEDED", "{finished}");
    // The admin's EXTERNAL job and run are another user's too.
    let admin_job = admin
        .create_job(
            &json!({"name": "admin private job", "type": "EXTERNAL", "command": "echo-args.sh",
            "repeatSchedule": "ONDEMAND", "rtArgsProvided": true}),
        )
        .await;
    let admin_run = admin.start_run(admin_job, Some("admin-secret-arg")).await;
    admin.wait_run(admin_job, admin_run).await;
    // Bob's own job, to try other users' run ids through it.
    let bob_query = bob
        .ok(
            Method::POST,
            "/saved-queries",
            Some(&json!({"title": "bob's", "sql": "SELECT 1"})),
        )
        .await;
    let bob_job = bob
        .create_job(
            &json!({"name": "bob job", "type": "QUERY", "repeatSchedule": "ONDEMAND",
            "savedQuery": {"id": bob_query["id"]}}),
        )
        .await;

    let secrets = [
        "alice private job",
        "alice-secret-value",
        "admin private job",
        "admin-secret-arg",
        "secret log",
    ];
    let allowed_codes = [
        "SCHEDULED_JOB_OP_NOT_ALLOWED",
        "SCHEDULED_JOB_NOT_FOUND",
        "SCHEDULED_JOB_JOB_RUN_NOT_FOUND",
        "ACCESS_DENIED",
        "NOT_FOUND",
    ];
    let alice_job_body = alice
        .ok(Method::GET, &format!("/scheduled-jobs/{alice_job}"), None)
        .await;
    let mut checked = 0;
    let targets = [
        (alice_job, alice_run),
        (admin_job, admin_run),
        (bob_job, alice_run),
        (bob_job, admin_run),
    ];
    for route in served_routes(&server.base).await {
        if !route.template.contains("{jobId}") {
            continue;
        }
        let path = &route.paths[0];
        for (job, run) in targets {
            let filled = fill(
                path,
                &[("jobId", job.to_string()), ("runId", run.to_string())],
                "1",
            );
            // Bob's own job without a run id is his to use.
            if job == bob_job && !route.template.contains("{runId}") {
                continue;
            }
            for method in &route.methods {
                let body = if *method == Method::PUT {
                    let mut b = alice_job_body.clone();
                    b["name"] = json!("taken over");
                    b
                } else {
                    json!({})
                };
                let response = bob
                    .client
                    .request(method.clone(), format!("{}{filled}", server.base))
                    .header("X-OS-API-TOKEN", &bob.token)
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let text = response.text().await.unwrap_or_default();
                let what = format!("bob: {method} {filled}");
                assert_json_error(status, content_type.as_deref(), &text, &[400, 404], &what);
                let codes: Vec<String> = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|i| i["code"].as_str().map(str::to_string))
                    .collect();
                assert!(
                    codes.iter().all(|c| allowed_codes.contains(&c.as_str())),
                    "{what}: unexpected codes {codes:?}"
                );
                for secret in secrets {
                    assert!(!text.contains(secret), "{what}: leaked `{secret}`: {text}");
                }
                checked += 1;
            }
        }
    }
    // Lists and counts show Bob only his own job.
    let jobs = bob
        .ok(Method::GET, "/scheduled-jobs?maxResults=1000", None)
        .await;
    let ids: Vec<i64> = jobs
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|j| j["id"].as_i64())
        .collect();
    assert_eq!(ids, vec![bob_job]);
    let count = bob.ok(Method::GET, "/scheduled-jobs/count", None).await;
    assert_eq!(count["count"], 1);
    // Nothing Alice owns can be changed by Bob either: her saved query, her user.
    for (method, path, body) in [
        (
            Method::PUT,
            format!("/saved-queries/{}", query["id"]),
            json!({"title": "x", "sql": "SELECT 2"}),
        ),
        (
            Method::DELETE,
            format!("/saved-queries/{}", query["id"]),
            json!({}),
        ),
        (
            Method::PUT,
            "/users/2".to_string(),
            json!({"firstName": "mallory", "admin": true}),
        ),
        (Method::DELETE, "/users/2".to_string(), json!({})),
    ] {
        let response = bob
            .request(method.clone(), &path)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "bob: {method} {path}"
        );
    }
    // And Bob cannot make himself an admin.
    let response = bob
        .request(Method::PUT, &format!("/users/{bob_id}"))
        .json(&json!({"admin": true}))
        .send()
        .await
        .expect("request");
    let me = bob.ok(Method::GET, &format!("/users/{bob_id}"), None).await;
    assert_ne!(
        me["admin"],
        true,
        "bob made himself admin ({})",
        response.status()
    );
    println!("security: {checked} cross-user requests checked");
    server.terminate(Duration::from_secs(60));
}

const TRAVERSALS: &[&str] = &[
    "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%252F..%252Fetc%252Fpasswd",
    "..",
    "%2F",
    "%2Fetc%2Fpasswd",
    "1%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "....%2F%2F....%2F%2Fetc%2Fpasswd",
    "%00",
    "1%00",
    "%c0%ae%c0%ae%c0%af",
    "-1",
    "0",
    "9223372036854775808",
    "1e3",
    "0x10",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_in_any_path_parameter_never_serves_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = prepared_data_dir(dir.path());
    let server = start_server(&data_dir, &[]);
    let admin = server.admin().await;
    let job = admin
        .create_job(
            &json!({"name": "traversed", "type": "EXTERNAL", "command": "echo-args.sh",
            "repeatSchedule": "ONDEMAND", "rtArgsProvided": true}),
        )
        .await;
    let run = admin.start_run(job, Some("x")).await;
    admin.wait_run(job, run).await;
    let very_long = "9".repeat(5000);
    let mut attacks: Vec<String> = TRAVERSALS.iter().map(|s| s.to_string()).collect();
    attacks.push(very_long);
    attacks.push(format!("1{}", "%2F..".repeat(300)));
    let values = [
        ("jobId", job.to_string()),
        ("runId", run.to_string()),
        ("userId", "2".to_string()),
        ("queryId", "1".to_string()),
    ];
    let mut checked = 0;
    for route in served_routes(&server.base).await {
        let params = parameters(&route.template);
        if params.is_empty() || !route.methods.contains(&Method::GET) {
            continue;
        }
        for param in &params {
            for attack in &attacks {
                let mut with_attack: Vec<(&str, String)> = values
                    .iter()
                    .filter(|(n, _)| n != param)
                    .map(|(n, v)| (*n, v.clone()))
                    .collect();
                with_attack.push((param.as_str(), attack.clone()));
                for path in &route.paths {
                    let filled = fill(path, &with_attack, "1");
                    let reply = raw_get(server.port, &filled, &admin.token)
                        .unwrap_or_else(|| panic!("no reply to GET {filled}"));
                    let text = reply.text();
                    let what = format!("GET {filled}");
                    assert!(!text.contains("root:x:0:0"), "{what}: served /etc/passwd");
                    // A very long path may be refused before routing (414/431): still no crash.
                    let statuses: &[u16] = if filled.len() > 8000 {
                        &[400, 404, 414, 431]
                    } else {
                        &[400, 404]
                    };
                    assert_json_error(
                        reply.status,
                        reply.header("content-type").as_deref(),
                        &text,
                        statuses,
                        &what,
                    );
                    checked += 1;
                }
            }
        }
    }
    // Paths that leave the API altogether, and the web page's asset files.
    for path in [
        "/rest/ng/../../../../etc/passwd",
        "/rest/ng/scheduled-jobs/1/runs/1/result-file/../../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/ui/assets/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/ui/assets/%2e%2e%2f%2e%2e%2fCargo.toml",
        "/ui/assets/../../Cargo.toml",
        "//etc/passwd",
    ] {
        let reply = raw_get(server.port, path, &admin.token)
            .unwrap_or_else(|| panic!("no reply to GET {path}"));
        let text = reply.text();
        assert!(reply.status < 500, "GET {path}: {}", reply.status);
        assert!(
            !text.contains("root:x:0:0") && !text.contains("[package]"),
            "GET {path}: served a file outside"
        );
        checked += 1;
    }
    println!("security: {checked} traversal requests checked");
    assert_eq!(
        admin
            .client
            .get(format!("{}/health", server.base))
            .send()
            .await
            .expect("health")
            .status(),
        200
    );
    server.terminate(Duration::from_secs(60));
}

/// Strings that mean something to SQL, a shell, C, HTML or a terminal.
const INJECTIONS: &[&str] = &[
    "' OR 1=1 --",
    "\" OR \"\"=\"",
    "1; DROP TABLE runs; --",
    "$(id)",
    "`id`",
    "; rm -rf /",
    "| cat /etc/passwd",
    "&& echo pwned",
    "%s%s%s%n",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "nul\u{0}byte",
    "Grüße, 日本語, emoji 😀, rtl \u{202e}gnp.exe",
    "\u{feff}bom and \u{200b}zero width",
    "line\nbreak\ttab\r",
];

/// Asserts an answer is not a server error and, when it is an error, that it is the contract's.
async fn handled(response: reqwest::Response, what: &str) -> (u16, String) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.unwrap_or_default();
    assert!(status < 500, "{what}: {status}: {}", short(&text));
    if status >= 400 {
        assert_json_error(
            status,
            content_type.as_deref(),
            &text,
            &[400, 404, 413],
            what,
        );
    }
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_strings_are_stored_and_handled_literally() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = prepared_data_dir(dir.path());
    let canary = dir.path().join("pwned");
    let server = start_server(&data_dir, &[]);
    let admin = server.admin().await;
    let plain = admin
        .create_job(
            &json!({"name": "plain job", "type": "EXTERNAL", "command": "echo-args.sh",
            "repeatSchedule": "ONDEMAND", "rtArgsProvided": true}),
        )
        .await;

    // Names (and other free text): stored as given (trimmed), found only by themselves.
    for (i, text) in INJECTIONS.iter().enumerate() {
        let name = format!("{text} #{i}");
        let response = admin
            .request(Method::POST, "/scheduled-jobs")
            .json(
                &json!({"name": name, "type": "EXTERNAL", "command": "echo-args.sh",
                "repeatSchedule": "ONDEMAND", "rtArgsHelpText": text, "fixedArgs": null}),
            )
            .send()
            .await
            .expect("request");
        let (status, body) = handled(response, &format!("create job named {name:?}")).await;
        if status != 200 {
            continue; // refused with a message (a control character, say): handled
        }
        let job: Value = serde_json::from_str(&body).expect("job");
        assert_eq!(job["name"].as_str(), Some(name.trim()), "name changed");
        let id = job["id"].as_i64().expect("id");
        let back = admin
            .ok(Method::GET, &format!("/scheduled-jobs/{id}"), None)
            .await;
        assert_eq!(back["name"].as_str(), Some(name.trim()));
        let found = admin
            .request(Method::GET, "/scheduled-jobs")
            .query(&[("query", name.trim()), ("maxResults", "1000")])
            .send()
            .await
            .expect("request");
        let (status, body) = handled(found, &format!("search for {name:?}")).await;
        assert_eq!(status, 200);
        let found: Value = serde_json::from_str(&body).expect("list");
        let names: Vec<&str> = found
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|j| j["name"].as_str())
            .collect();
        assert!(
            names.iter().all(|n| n.contains(name.trim())),
            "search for {name:?} matched other jobs: {names:?}"
        );
    }
    // User names too.
    for (i, text) in INJECTIONS.iter().enumerate() {
        let response = admin
            .request(Method::POST, "/users")
            .json(
                &json!({"loginName": format!("user{i}"), "password": "a-long-password-1",
                "firstName": text, "lastName": text, "emailAddress": format!("u{i}@lab.example")}),
            )
            .send()
            .await
            .expect("request");
        let (status, body) = handled(response, &format!("user named {text:?}")).await;
        if status == 200 {
            let user: Value = serde_json::from_str(&body).expect("user");
            assert_eq!(user["firstName"].as_str(), Some(text.trim()));
        }
    }

    // Run arguments: split into words, passed to the program as they are, never to a shell.
    let canary_text = canary.display().to_string();
    let dangerous_args = [
        format!("$(touch {canary_text})"),
        format!("`touch {canary_text}`"),
        format!("; touch {canary_text}"),
        format!("&& touch {canary_text}"),
        format!("| touch {canary_text}"),
        format!("x > {canary_text}"),
        "\"' OR 1=1 --\"".to_string(),
        "' OR 1=1 --".to_string(),
        "nul\u{0}byte".to_string(),
        "Grüße 😀".to_string(),
        "%s%n".to_string(),
    ];
    for args in &dangerous_args {
        let response = admin
            .post(
                &format!("/scheduled-jobs/{plain}/runs?response=run"),
                &json!({"args": args}),
            )
            .await;
        let (status, body) = handled(response, &format!("run with args {args:?}")).await;
        if status != 200 {
            continue; // e.g. an unbalanced quote: refused with a message
        }
        let run: Value = serde_json::from_str(&body).expect("run");
        let run_id = run["id"].as_i64().expect("run id");
        let done = admin.wait_run(plain, run_id).await;
        assert_eq!(done["status"], "SUCCEEDED", "{done}");
        assert_eq!(done["rtArgs"].as_str(), Some(args.trim()), "rtArgs changed");
        let file = admin
            .get(&format!(
                "/scheduled-jobs/{plain}/runs/{run_id}/result-file"
            ))
            .await;
        assert_eq!(file.status(), 200);
        let written = file.text().await.expect("result");
        let words = shell_words::split(args.trim()).expect("split");
        assert_eq!(
            written.lines().collect::<Vec<_>>(),
            words.iter().map(String::as_str).collect::<Vec<_>>(),
            "the program did not get the words of {args:?} literally"
        );
    }
    assert!(
        !canary.exists(),
        "an argument reached a shell: {canary_text} was created"
    );

    // Query parameters and headers: refused or used literally, never a 500.
    let params = [
        "fromDate",
        "toDate",
        "status",
        "maxResults",
        "startAt",
        "query",
        "type",
        "count",
        "waitSeconds",
        "offset",
        "follow",
        "response",
    ];
    for text in INJECTIONS {
        for param in params {
            for path in [
                "/scheduled-jobs".to_string(),
                "/scheduled-jobs/count".to_string(),
                format!("/scheduled-jobs/{plain}/runs"),
                format!("/scheduled-jobs/{plain}/next-runs"),
                "/saved-queries".to_string(),
            ] {
                let response = admin
                    .request(Method::GET, &path)
                    .query(&[(param, text)])
                    .send()
                    .await
                    .expect("request");
                handled(response, &format!("GET {path}?{param}={text:?}")).await;
            }
        }
        let response = admin
            .request(Method::GET, &format!("/scheduled-jobs/{plain}/runs"))
            .header("X-OS-CLIENT-TZ", text.replace(['\n', '\r', '\u{0}'], " "))
            .send()
            .await;
        if let Ok(response) = response {
            handled(response, &format!("X-OS-CLIENT-TZ {text:?}")).await;
        }
    }
    // Raw NUL and broken percent-encoding in the query string.
    for query in [
        "query=%00",
        "query=%",
        "query=%zz",
        "maxResults=%00",
        "query=%FF%FE",
        "&&&==&",
    ] {
        let reply = raw_get(
            server.port,
            &format!("/rest/ng/scheduled-jobs?{query}"),
            &admin.token,
        )
        .expect("reply");
        assert!(reply.status < 500, "?{query}: {}", reply.status);
    }
    // The tables are all there and the ledger is sound.
    let runs = admin
        .ok(Method::GET, &format!("/scheduled-jobs/{plain}/runs"), None)
        .await;
    assert!(!runs.as_array().expect("runs").is_empty());
    assert!(
        !server.log_text().contains("panicked"),
        "the server panicked"
    );
    server.terminate(Duration::from_secs(60));
    assert_eq!(integrity_check(&data_dir), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_and_oversized_headers_431_or_400() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = prepared_data_dir(dir.path());
    let server = start_server(&data_dir, &[]);
    let admin = server.admin().await;
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(3 * 1024 * 1024));
    for (path, signed_in) in [
        ("/rest/ng/scheduled-jobs", true),
        ("/rest/ng/sessions", false),
        ("/rest/ng/users", true),
        ("/rest/ng/saved-queries", true),
    ] {
        let mut request = admin
            .client
            .post(format!("{}{path}", server.base))
            .header("Content-Type", "application/json")
            .body(big.clone());
        if signed_in {
            request = request.header("X-OS-API-TOKEN", &admin.token);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response.text().await.unwrap_or_default();
        assert_json_error(
            status,
            content_type.as_deref(),
            &text,
            &[413],
            &format!("POST {path} with 3 MiB"),
        );
    }
    // A chunked body has no length up front: it is cut off when it passes the limit.
    let chunk = "y".repeat(64 * 1024);
    let mut raw = format!(
        "POST /rest/ng/scheduled-jobs HTTP/1.1\r\nHost: x\r\nX-OS-API-TOKEN: {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        admin.token
    );
    for _ in 0..40 {
        raw.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    raw.push_str("0\r\n\r\n");
    let reply = raw_request(server.port, raw.as_bytes()).expect("reply to a chunked body");
    assert_eq!(reply.status, 413, "chunked 2.5 MiB body: {}", reply.text());

    // Headers: one huge header, very many headers, a huge request line.
    let huge_header = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "h".repeat(256 * 1024)
    );
    let mut many_headers = String::from("GET /health HTTP/1.1\r\nHost: x\r\n");
    for i in 0..500 {
        many_headers.push_str(&format!("X-Header-{i}: value\r\n"));
    }
    many_headers.push_str("Connection: close\r\n\r\n");
    let huge_line = format!(
        "GET /rest/ng/scheduled-jobs?query={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "q".repeat(256 * 1024)
    );
    for (what, request) in [
        ("a 256 KiB header", huge_header),
        ("500 headers", many_headers),
        ("a 256 KiB request line", huge_line),
    ] {
        // The server may answer and close before reading everything; no answer at all (a reset)
        // is acceptable too, as long as the server lives on.
        if let Some(reply) = raw_request(server.port, request.as_bytes()) {
            assert!(
                [400, 431].contains(&reply.status),
                "{what}: {} {}",
                reply.status,
                reply.text()
            );
        }
        let health = raw_request(
            server.port,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .expect("the server answers after an oversized request");
        assert_eq!(health.status, 200, "after {what}");
    }
    assert!(!server.log_text().contains("panicked"));
    server.terminate(Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_sign_in_is_throttled_with_retry_after() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = prepared_data_dir(dir.path());
    let server = start_server(&data_dir, &["--auth-max-failed-logins", "5"]);
    let admin = server.admin().await;
    let (_, _) = admin.create_user_api("victim", false).await;
    let client = client();
    // Password sign-in.
    let mut throttled = None;
    for attempt in 1..=12 {
        let response = client
            .post(format!("{}/rest/ng/sessions", server.base))
            .json(&json!({"loginName": "victim", "password": format!("guess {attempt}")}))
            .send()
            .await
            .expect("request");
        match response.status().as_u16() {
            401 => {}
            429 => {
                throttled = Some((attempt, response));
                break;
            }
            other => panic!("attempt {attempt}: {other}"),
        }
    }
    let (attempt, response) = throttled.expect("no 429 after 12 failed sign-ins");
    assert!(attempt <= 6, "throttled only at attempt {attempt}");
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry_after > 0);
    let codes = response.text().await.expect("body");
    assert!(codes.contains("AUTH_TOO_MANY_ATTEMPTS"), "{codes}");
    // While locked, even the right password is refused.
    let right = client
        .post(format!("{}/rest/ng/sessions", server.base))
        .json(&json!({"loginName": "victim", "password": "victim-password"}))
        .send()
        .await
        .expect("request");
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);

    // Basic authorization is throttled the same way.
    let (_, _) = admin.create_user_api("basicvictim", false).await;
    let mut throttled = false;
    for attempt in 1..=12 {
        let response = client
            .get(format!("{}/rest/ng/scheduled-jobs", server.base))
            .basic_auth("basicvictim", Some(format!("guess {attempt}")))
            .send()
            .await
            .expect("request");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"));
            throttled = true;
            break;
        }
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    assert!(throttled, "Basic authorization was never throttled");
    // Other users are not locked out by it.
    admin.ok(Method::GET, "/scheduled-jobs", None).await;
    server.terminate(Duration::from_secs(60));
}
