//! Sign-in, tokens, Basic auth, throttling, users, and the first admin.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{ADMIN_PASSWORD, error_codes, ok_json, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_returns_the_user_and_a_token_that_works_until_signed_out() {
    let app = spawn_app().await;
    let body = ok_json(
        app.client
            .post(format!("{}/openspecimen/rest/ng/sessions", app.base))
            .json(&json!({"loginName": "admin", "password": ADMIN_PASSWORD, "domainName": "openspecimen"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["loginName"], "admin");
    assert_eq!(body["admin"], true);
    let token = body["token"].as_str().unwrap().to_string();
    assert!(token.len() >= 22, "token too short for 128 bits: {token}");

    let jobs = app
        .send_as(&token, Method::GET, "/scheduled-jobs", None)
        .await;
    assert_eq!(jobs.status(), StatusCode::OK);

    let out = app.send_as(&token, Method::DELETE, "/sessions", None).await;
    assert_eq!(out.status(), StatusCode::OK);
    let after = app
        .send_as(&token, Method::GET, "/scheduled-jobs", None)
        .await;
    assert_eq!(
        error_codes(after, StatusCode::UNAUTHORIZED).await,
        vec!["AUTH_REQUIRED"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_needs_auth_but_health_and_sign_in() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/rest/ng/scheduled-jobs"),
        (Method::POST, "/rest/ng/scheduled-jobs"),
        (Method::GET, "/rest/ng/scheduled-jobs/count"),
        (Method::GET, "/rest/ng/scheduled-jobs/1"),
        (Method::PUT, "/rest/ng/scheduled-jobs/1"),
        (Method::DELETE, "/rest/ng/scheduled-jobs/1"),
        (Method::GET, "/rest/ng/scheduled-jobs/1/next-runs"),
        (Method::GET, "/rest/ng/scheduled-jobs/1/runs"),
        (Method::POST, "/rest/ng/scheduled-jobs/1/runs"),
        (Method::GET, "/rest/ng/scheduled-jobs/1/runs/1"),
        (Method::GET, "/rest/ng/scheduled-jobs/1/runs/1/result-file"),
        (Method::GET, "/rest/ng/scheduled-jobs/1/runs/1/log"),
        (Method::POST, "/rest/ng/scheduled-jobs/1/runs/1/cancel"),
        (Method::GET, "/rest/ng/users"),
        (Method::POST, "/rest/ng/users"),
        (Method::DELETE, "/rest/ng/sessions"),
        (Method::GET, "/openspecimen/rest/ng/scheduled-jobs"),
    ] {
        let response = app
            .client
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_codes(response, StatusCode::UNAUTHORIZED).await,
            vec!["AUTH_REQUIRED"],
            "{method} {path}"
        );
    }
    let health = app
        .client
        .get(format!("{}/health", app.base))
        .send()
        .await
        .unwrap();
    let health = ok_json(health).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_works_and_bad_credentials_are_rejected() {
    let app = spawn_app().await;
    let ok = app
        .client
        .get(app.url("/scheduled-jobs/count"))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(ok_json(ok).await["count"], 0);
    let bad = app
        .client
        .get(app.url("/scheduled-jobs"))
        .basic_auth("admin", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_codes(bad, StatusCode::UNAUTHORIZED).await,
        vec!["AUTH_INVALID_CREDENTIALS"]
    );
    let bad_token = app
        .send_as("not-a-token", Method::GET, "/scheduled-jobs", None)
        .await;
    assert_eq!(
        error_codes(bad_token, StatusCode::UNAUTHORIZED).await,
        vec!["AUTH_REQUIRED"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_sign_ins_are_throttled_with_retry_after() {
    let app = spawn_app().await;
    for _ in 0..5 {
        let r = app
            .client
            .post(app.url("/sessions"))
            .json(&json!({"loginName": "admin", "password": "wrong"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_codes(r, StatusCode::UNAUTHORIZED).await,
            vec!["AUTH_INVALID_CREDENTIALS"]
        );
    }
    // Even the right password is refused while locked out.
    let locked = app
        .client
        .post(app.url("/sessions"))
        .json(&json!({"loginName": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0);
    assert_eq!(
        error_codes(locked, StatusCode::TOO_MANY_REQUESTS).await,
        vec!["AUTH_TOO_MANY_ATTEMPTS"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_tokens_are_stored_only_as_hashes_and_idle_tokens_expire() {
    let app = spawn_app().await;
    // On the tests' engine (`LABCRON_TEST_LEDGER`).
    let hash = crate::common::ledger::sql_text(
        &app.data_dir,
        "SELECT password_hash FROM users WHERE login_name = 'admin'",
    );
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(ADMIN_PASSWORD));
    let stored = crate::common::ledger::sql_i64(
        &app.data_dir,
        &format!(
            "SELECT count(*) FROM sessions WHERE token_hash = '{}'",
            app.token.replace('\'', "''")
        ),
    );
    assert_eq!(stored, 0, "the raw token must not be stored");

    // Make every session look idle for two hours: the token stops working.
    crate::common::ledger::sql_rows(
        &app.data_dir,
        "UPDATE sessions SET last_used_at = last_used_at - 7200000",
    );
    let expired = app.get("/scheduled-jobs").await;
    assert_eq!(
        error_codes(expired, StatusCode::UNAUTHORIZED).await,
        vec!["AUTH_REQUIRED"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_users_and_others_may_not() {
    let app = spawn_app().await;
    let (bob_id, bob) = app.create_user("bob", false).await;

    // Everyone may list users (to pick recipients) but only sees others' public fields.
    let users = ok_json(app.send_as(&bob, Method::GET, "/users", None).await).await;
    let admin = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["loginName"] == "admin")
        .unwrap();
    assert!(admin.get("emailAddress").is_none());
    let users = ok_json(app.get("/users").await).await;
    let listed = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["loginName"] == "bob")
        .unwrap();
    assert_eq!(listed["emailAddress"], "bob@lab.example");
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["loginName"] != "$system")
    );

    let denied = app
        .send_as(
            &bob,
            Method::POST,
            "/users",
            Some(&json!({"loginName": "eve", "password": "eve-password"})),
        )
        .await;
    assert_eq!(
        error_codes(denied, StatusCode::BAD_REQUEST).await,
        vec!["ACCESS_DENIED"]
    );

    let dup = app
        .post(
            "/users",
            &json!({"loginName": "BOB", "password": "another-pass"}),
        )
        .await;
    assert_eq!(
        error_codes(dup, StatusCode::BAD_REQUEST).await,
        vec!["USER_DUP_LOGIN_NAME"]
    );
    let invalid = app
        .post("/users", &json!({"loginName": " ", "password": "short"}))
        .await;
    assert_eq!(
        error_codes(invalid, StatusCode::BAD_REQUEST).await,
        vec!["USER_LOGIN_NAME_REQUIRED", "USER_PASSWORD_TOO_SHORT"]
    );

    // Bob changes his own password; he cannot make himself admin.
    let own = app
        .send_as(
            &bob,
            Method::PUT,
            &format!("/users/{bob_id}"),
            Some(&json!({"password": "bob-new-password"})),
        )
        .await;
    assert_eq!(own.status(), StatusCode::OK);
    app.sign_in("bob", "bob-new-password").await;
    let promote = app
        .send_as(
            &bob,
            Method::PUT,
            &format!("/users/{bob_id}"),
            Some(&json!({"admin": true})),
        )
        .await;
    assert_eq!(
        error_codes(promote, StatusCode::BAD_REQUEST).await,
        vec!["ACCESS_DENIED"]
    );

    // Deleting a user ends their sessions.
    assert_eq!(
        app.delete(&format!("/users/{bob_id}")).await.status(),
        StatusCode::OK
    );
    let gone = app
        .send_as(&bob, Method::GET, "/scheduled-jobs", None)
        .await;
    assert_eq!(
        error_codes(gone, StatusCode::UNAUTHORIZED).await,
        vec!["AUTH_REQUIRED"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_without_a_configured_password_writes_a_generated_one() {
    use labcron::config::{Settings, SettingsArgs};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let args = SettingsArgs {
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().join("data")),
        ..SettingsArgs::default()
    };
    let app = labcron::startup::Application::build(Settings::load(&args).unwrap())
        .await
        .unwrap();
    let port = app.port();
    tokio::spawn(app.run_until_stopped());
    let file = dir.path().join("data/initial-admin-password");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let password = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(password.len() >= 16);
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/rest/ng/sessions"))
        .json(&json!({"loginName": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_by_default_and_allows_only_configured_origins() {
    use crate::common::{AppOptions, spawn_app_with};
    let plain = spawn_app().await;
    let response = plain
        .request(Method::GET, "/scheduled-jobs")
        .header("Origin", "https://openspecimen.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let app = spawn_app_with(AppOptions {
        configure: Some(|s| s.http.cors_origins = vec!["https://openspecimen.example.org".into()]),
        ..AppOptions::default()
    })
    .await;
    let preflight = app
        .client
        .request(Method::OPTIONS, app.url("/scheduled-jobs/1/runs"))
        .header("Origin", "https://openspecimen.example.org")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "x-os-api-token, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::OK);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://openspecimen.example.org"
    );
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("x-os-api-token"), "{allowed}");
    let actual = app
        .request(Method::GET, "/scheduled-jobs")
        .header("Origin", "https://openspecimen.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(
        actual.headers()["access-control-allow-origin"],
        "https://openspecimen.example.org"
    );
    let stranger = app
        .request(Method::GET, "/scheduled-jobs")
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        stranger
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

/// OpenSpecimen's clients add a trailing slash (OpenSpecimenAPIconnector's `delete_user` sends
/// `DELETE /users/{id}/?close=true`); as in OpenSpecimen, it is the same route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailing_slash_reaches_the_same_route() {
    let app = spawn_app().await;
    let (id, token) = app.create_user("slashed", false).await;
    let listed = app.get("/scheduled-jobs/").await;
    assert_eq!(ok_json(listed).await, json!([]));
    let closed = app.delete(&format!("/users/{id}/?close=true")).await;
    assert_eq!(ok_json(closed).await["activityStatus"], "Disabled");
    let gone = app
        .send_as(&token, Method::GET, "/scheduled-jobs/count", None)
        .await;
    assert_eq!(gone.status(), StatusCode::UNAUTHORIZED);
}
