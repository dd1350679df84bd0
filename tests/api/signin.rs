//! Sign-in and accounts hardened (issue #11's trial, findings 6, 8, 10, 12 and 14's disabled
//! user): one normal form of a login name on every path, names and passwords no account can
//! have refused before the throttle and the audit trail, a bounded audit entry for a refused
//! name, tokens that end with a password change, and `activityStatus` `Disabled` that takes
//! effect. On the tests' engine (`LABCRON_TEST_LEDGER`).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestApp, error_codes, ok_json, spawn_app};

async fn sign_in(app: &TestApp, login: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/sessions"))
        .json(&json!({"loginName": login, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn basic_status(app: &TestApp, login: &str, password: &str) -> StatusCode {
    app.client
        .get(app.url("/scheduled-jobs"))
        .basic_auth(login, Some(password))
        .send()
        .await
        .unwrap()
        .status()
}

async fn create(app: &TestApp, login: &str, password: &str) -> reqwest::Response {
    app.post(
        "/users",
        &json!({"loginName": login, "password": password, "firstName": "F", "lastName": "L"}),
    )
    .await
}

fn failed_sign_ins(app: &TestApp) -> i64 {
    crate::common::ledger::sql_i64(
        &app.data_dir,
        "SELECT count(*) FROM audit_events WHERE action = 'SIGN_IN_FAILED'",
    )
}

/// Finding 12: names with a non-ASCII capital were made but could never sign in (SQLite's NOCASE
/// and PostgreSQL's `lower()` under C fold ASCII only, sign-in lower-cased with Unicode's rules).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_non_ascii_capitals_sign_in_by_any_spelling_and_stay_unique() {
    let app = spawn_app().await;
    for (name, spellings) in [
        ("Émile", &["Émile", "émile", "ÉMILE", "E\u{301}mile"][..]),
        ("ZOË", &["ZOË", "zoë", "Zoë", "ＺＯË"][..]),
        ("İpek", &["İpek", "i\u{307}pek", "İPEK"][..]),
        ("Straße", &["Straße", "STRASSE", "strasse"][..]),
    ] {
        let password = "a-long-password";
        let created = ok_json(create(&app, name, password).await).await;
        assert_eq!(created["loginName"], name);
        for spelling in spellings {
            let signed_in = sign_in(&app, spelling, password).await;
            assert_eq!(signed_in.status(), StatusCode::OK, "{name} as {spelling:?}");
            let body: Value = signed_in.json().await.unwrap();
            assert_eq!(body["id"], created["id"], "{spelling:?}");
            assert_eq!(
                basic_status(&app, spelling, password).await,
                StatusCode::OK,
                "Basic {spelling:?}"
            );
        }
        // Another spelling of a taken name is taken.
        let again = create(&app, spellings[1], password).await;
        assert_eq!(
            error_codes(again, StatusCode::BAD_REQUEST).await,
            ["USER_DUP_LOGIN_NAME"],
            "{name} again as {}",
            spellings[1]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_characters_are_refused_in_new_login_names() {
    let app = spawn_app().await;
    for name in [
        "al\u{200B}ice",
        "bob\u{202E}",
        "\u{2066}carol",
        "da\u{00AD}ve",
        "e\u{1b}ve",
    ] {
        let refused = create(&app, name, "a-long-password").await;
        assert_eq!(
            error_codes(refused, StatusCode::BAD_REQUEST).await,
            ["USER_INVALID_LOGIN_NAME"],
            "{name:?}"
        );
    }
}

/// Finding 6: each refused sign-in wrote the whole name (1 MB) to the audit trail, even when
/// throttled, and the throttle kept it as a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_passwords_no_account_can_have_are_refused_before_the_audit_trail() {
    let app = spawn_app().await;
    let before = failed_sign_ins(&app);
    let huge = "x".repeat(100_000);
    for _ in 0..3 {
        let refused = sign_in(&app, &huge, "whatever-password").await;
        assert_eq!(
            error_codes(refused, StatusCode::BAD_REQUEST).await,
            ["AUTH_CREDENTIALS_TOO_LONG"]
        );
    }
    // Just past the longest key, and a huge password.
    let refused = sign_in(&app, &"y".repeat(401), "whatever-password").await;
    assert_eq!(
        error_codes(refused, StatusCode::BAD_REQUEST).await,
        ["AUTH_CREDENTIALS_TOO_LONG"]
    );
    let refused = sign_in(&app, "admin", &"p".repeat(100_000)).await;
    assert_eq!(
        error_codes(refused, StatusCode::BAD_REQUEST).await,
        ["AUTH_CREDENTIALS_TOO_LONG"]
    );
    assert_eq!(
        basic_status(&app, &"x".repeat(2_000), "whatever-password").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(failed_sign_ins(&app), before, "nothing recorded for them");

    // A wrong name that could be an account's is recorded, as a bounded, sanitised prefix.
    let tried = format!("z\u{1b}[31m{}", "w".repeat(200));
    let refused = sign_in(&app, &tried, "whatever-password").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(failed_sign_ins(&app), before + 1);
    let actor = crate::common::ledger::sql_text(
        &app.data_dir,
        "SELECT actor FROM audit_events WHERE action = 'SIGN_IN_FAILED' ORDER BY id DESC LIMIT 1",
    );
    assert_eq!(actor.chars().count(), 64, "{actor}");
    assert!(actor.starts_with("z\u{FFFD}[31mwww"), "{actor:?}");
}

async fn make_api_token(app: &TestApp, session: &str) -> String {
    let made = ok_json(
        app.send_as(
            session,
            Method::POST,
            "/api-tokens",
            Some(&json!({"name": "service", "expiresAt": null})),
        )
        .await,
    )
    .await;
    made["token"].as_str().unwrap().to_string()
}

async fn status_as(app: &TestApp, token: &str) -> StatusCode {
    app.send_as(token, Method::GET, "/scheduled-jobs", None)
        .await
        .status()
}

/// Finding 10: an API token kept working after its user's password was reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_or_reset_ends_the_users_api_tokens_and_other_sessions() {
    let app = spawn_app().await;
    let (alice_id, alice) = app.create_user("alice", false).await;
    let api_token = make_api_token(&app, &alice).await;
    assert_eq!(status_as(&app, &api_token).await, StatusCode::OK);

    // An admin's reset (OpenSpecimen's call) ends all of them.
    let reset = app
        .request(Method::PUT, "/users/password")
        .json(&json!({"userId": alice_id, "newPassword": "alice-new-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::OK);
    assert_eq!(status_as(&app, &alice).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_as(&app, &api_token).await, StatusCode::UNAUTHORIZED);

    // Alice's own change (PUT /users/{id}) keeps the session she made it in, and only that.
    let session = app.sign_in("alice", "alice-new-password").await;
    let other_session = app.sign_in("alice", "alice-new-password").await;
    let api_token = make_api_token(&app, &session).await;
    let changed = app
        .send_as(
            &session,
            Method::PUT,
            &format!("/users/{alice_id}"),
            Some(&json!({"password": "alice-third-password"})),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(status_as(&app, &session).await, StatusCode::OK);
    assert_eq!(
        status_as(&app, &other_session).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_as(&app, &api_token).await, StatusCode::UNAUTHORIZED);
    // The ended token is revoked, as the token list shows.
    let live = ok_json(
        app.send_as(&session, Method::GET, "/api-tokens", None)
            .await,
    )
    .await;
    assert_eq!(live.as_array().map(Vec::len), Some(0), "{live}");
}

/// Finding 14: `PUT /users/{id}` with `activityStatus` `Disabled` answered 200 and changed
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_status_disabled_disables_the_user_and_ends_their_credentials() {
    let app = spawn_app().await;
    let (bob_id, bob) = app.create_user("bob", false).await;
    let api_token = make_api_token(&app, &bob).await;

    // Not bob's own call to make, and not a status there is.
    let own = app
        .send_as(
            &bob,
            Method::PUT,
            &format!("/users/{bob_id}"),
            Some(&json!({"activityStatus": "Disabled"})),
        )
        .await;
    assert_eq!(
        error_codes(own, StatusCode::BAD_REQUEST).await,
        ["ACCESS_DENIED"]
    );
    let odd = app
        .put(
            &format!("/users/{bob_id}"),
            &json!({"activityStatus": "Sleeping"}),
        )
        .await;
    assert_eq!(
        error_codes(odd, StatusCode::BAD_REQUEST).await,
        ["INVALID_REQUEST"]
    );
    assert_eq!(status_as(&app, &bob).await, StatusCode::OK);

    let disabled = ok_json(
        app.put(
            &format!("/users/{bob_id}"),
            &json!({"activityStatus": "Disabled"}),
        )
        .await,
    )
    .await;
    assert_eq!(disabled["activityStatus"], "Disabled");
    assert_eq!(status_as(&app, &bob).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_as(&app, &api_token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        basic_status(&app, "bob", "bob-password").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        sign_in(&app, "bob", "bob-password").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let status = crate::common::ledger::sql_text(
        &app.data_dir,
        &format!("SELECT activity_status FROM users WHERE id = {bob_id}"),
    );
    assert_eq!(status, "Disabled");
}
