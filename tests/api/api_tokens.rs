//! API tokens (issue 15): made once and shown once, stored as SHA-256, accepted in
//! `X-OS-API-TOKEN` and `Authorization: Bearer` on every route (also `/metrics`), refused once
//! revoked, expired or when their user is disabled; admins list and revoke anyone's.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{TestApp, error_codes, ok_json, spawn_app};

async fn make_token(app: &TestApp, session: &str, body: Value) -> Value {
    ok_json(
        app.send_as(session, Method::POST, "/api-tokens", Some(&body))
            .await,
    )
    .await
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn status_with_bearer(app: &TestApp, token: &str, path: &str) -> StatusCode {
    app.client
        .get(format!("{}{path}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_shown_once_stored_hashed_and_works_in_both_headers_until_revoked() {
    let app = spawn_app().await;
    let made = make_token(
        &app,
        &app.token,
        json!({"name": "prometheus", "expiresAt": null}),
    )
    .await;
    let token = made["token"].as_str().expect("the secret").to_string();
    assert!(token.starts_with("lct_") && token.len() >= 40, "{token}");
    assert_eq!(made["name"], "prometheus");
    assert!(made["createdAt"].as_i64().is_some());
    assert_eq!(made["expiresAt"], Value::Null);
    assert_eq!(made["lastUsedAt"], Value::Null);
    assert_eq!(made["user"]["loginName"], "admin");
    let id = made["id"].as_i64().unwrap();

    // The ledger keeps only the SHA-256 of the token.
    let sql = crate::common::ledger::sql_text;
    let stored = sql(
        &app.data_dir,
        &format!("SELECT token_hash FROM api_tokens WHERE id = {id}"),
    );
    assert_eq!(stored, hex::encode(Sha256::digest(token.as_bytes())));
    let quoted = format!("'{}'", token.replace('\'', "''"));
    let dump = crate::common::ledger::sql_i64(
        &app.data_dir,
        &format!("SELECT count(*) FROM api_tokens WHERE token_hash = {quoted} OR name = {quoted}"),
    );
    assert_eq!(dump, 0, "the secret itself is nowhere in the table");

    // Both headers, on the API, both base paths, and /metrics.
    let jobs = app
        .send_as(&token, Method::GET, "/scheduled-jobs", None)
        .await;
    assert_eq!(jobs.status(), StatusCode::OK);
    for path in [
        "/rest/ng/scheduled-jobs",
        "/openspecimen/rest/ng/api-tokens",
        "/metrics",
    ] {
        assert_eq!(
            status_with_bearer(&app, &token, path).await,
            StatusCode::OK,
            "{path}"
        );
    }
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .header("X-OS-API-TOKEN", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.text().await.unwrap().contains("# TYPE"));

    // The list shows it (with lastUsedAt now set) but never the secret.
    let listed = ok_json(app.get("/api-tokens").await).await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id);
    assert!(listed[0].get("token").is_none(), "{}", listed[0]);
    assert!(!listed[0].to_string().contains(&token));
    let used = listed[0]["lastUsedAt"]
        .as_i64()
        .expect("lastUsedAt after use");
    assert!(used >= made["createdAt"].as_i64().unwrap());

    // An API token cannot make more tokens.
    let minted = app
        .send_as(
            &token,
            Method::POST,
            "/api-tokens",
            Some(&json!({"name": "child"})),
        )
        .await;
    assert_eq!(
        error_codes(minted, StatusCode::BAD_REQUEST).await,
        ["API_TOKEN_NOT_ALLOWED"]
    );

    let revoked = ok_json(app.delete(&format!("/api-tokens/{id}")).await).await;
    assert_eq!(revoked["id"], id);
    assert!(revoked.get("token").is_none());
    assert_eq!(
        status_with_bearer(&app, &token, "/rest/ng/scheduled-jobs").await,
        StatusCode::UNAUTHORIZED
    );
    let after = app
        .send_as(&token, Method::GET, "/scheduled-jobs", None)
        .await;
    assert_eq!(
        error_codes(after, StatusCode::UNAUTHORIZED).await,
        ["AUTH_REQUIRED"]
    );
    assert_eq!(ok_json(app.get("/api-tokens").await).await, json!([]));
    let again = app.delete(&format!("/api-tokens/{id}")).await;
    assert_eq!(
        error_codes(again, StatusCode::BAD_REQUEST).await,
        ["API_TOKEN_NOT_FOUND"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_expired_tokens_and_unknown_tokens_are_refused() {
    let app = spawn_app().await;
    let bad = app
        .post("/api-tokens", &json!({"name": " ", "expiresAt": 1000}))
        .await;
    let mut codes = error_codes(bad, StatusCode::BAD_REQUEST).await;
    codes.sort();
    assert_eq!(
        codes,
        ["API_TOKEN_INVALID_EXPIRY", "API_TOKEN_NAME_REQUIRED"]
    );
    let bad = app
        .post(
            "/api-tokens",
            &json!({"name": "x", "expiresAt": "tomorrow"}),
        )
        .await;
    assert_eq!(
        error_codes(bad, StatusCode::BAD_REQUEST).await,
        ["API_TOKEN_INVALID_EXPIRY"]
    );

    let expires_at = now_ms() + 1_500;
    let made = make_token(
        &app,
        &app.token,
        json!({"name": "short", "expiresAt": expires_at}),
    )
    .await;
    assert_eq!(made["expiresAt"], expires_at);
    let token = made["token"].as_str().unwrap().to_string();
    assert_eq!(
        status_with_bearer(&app, &token, "/rest/ng/users").await,
        StatusCode::OK
    );
    // Wait until the expiry has surely passed (no timing assertion: only "after" matters).
    while now_ms() <= expires_at + 500 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let expired = app.send_as(&token, Method::GET, "/users", None).await;
    assert_eq!(
        error_codes(expired, StatusCode::UNAUTHORIZED).await,
        ["AUTH_REQUIRED"]
    );

    // A made-up token of the right shape, and a Bearer header without a token.
    let forged = format!("lct_{}", "A".repeat(43));
    assert_eq!(
        status_with_bearer(&app, &forged, "/rest/ng/users").await,
        StatusCode::UNAUTHORIZED
    );
    let empty = app
        .client
        .get(app.url("/users"))
        .header("Authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_codes(empty, StatusCode::UNAUTHORIZED).await,
        ["AUTH_INVALID_CREDENTIALS"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_see_and_revoke_anyones_tokens_and_a_disabled_users_tokens_stop() {
    let app = spawn_app().await;
    let (bob, bob_session) = app.create_user("bob", false).await;
    let (_carol, carol_session) = app.create_user("carol", false).await;
    let bobs = make_token(&app, &bob_session, json!({"name": "bob-script"})).await;
    let bobs_second = make_token(&app, &bob_session, json!({"name": "bob-other"})).await;
    let carols = make_token(&app, &carol_session, json!({"name": "carol-script"})).await;
    let admins = make_token(&app, &app.token, json!({"name": "admin-own"})).await;

    // Bob sees only his own and may not ask for everyone's or carol's.
    let own = ok_json(
        app.send_as(&bob_session, Method::GET, "/api-tokens", None)
            .await,
    )
    .await;
    let names: Vec<&str> = own
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob-other", "bob-script"], "newest first");
    for query in ["?all=true", &format!("?userId={}", carols["user"]["id"])] {
        let refused = app
            .send_as(
                &bob_session,
                Method::GET,
                &format!("/api-tokens{query}"),
                None,
            )
            .await;
        assert_eq!(
            error_codes(refused, StatusCode::BAD_REQUEST).await,
            ["ACCESS_DENIED"],
            "{query}"
        );
    }
    // Bob cannot revoke carol's token, nor make one for her.
    let theirs = app
        .send_as(
            &bob_session,
            Method::DELETE,
            &format!("/api-tokens/{}", carols["id"]),
            None,
        )
        .await;
    assert_eq!(
        error_codes(theirs, StatusCode::BAD_REQUEST).await,
        ["API_TOKEN_NOT_FOUND"]
    );
    let for_carol = app
        .send_as(
            &bob_session,
            Method::POST,
            "/api-tokens",
            Some(&json!({"name": "x", "userId": carols["user"]["id"]})),
        )
        .await;
    assert_eq!(
        error_codes(for_carol, StatusCode::BAD_REQUEST).await,
        ["ACCESS_DENIED"]
    );

    // The admin sees everyone's, or one user's, and revokes carol's.
    let all = ok_json(app.get("/api-tokens?all=true").await).await;
    assert_eq!(all.as_array().unwrap().len(), 4);
    let just_bob = ok_json(app.get(&format!("/api-tokens?userId={bob}")).await).await;
    assert_eq!(just_bob.as_array().unwrap().len(), 2);
    assert!(
        just_bob
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["user"]["id"] == bob)
    );
    ok_json(app.delete(&format!("/api-tokens/{}", carols["id"])).await).await;
    assert_eq!(
        status_with_bearer(&app, carols["token"].as_str().unwrap(), "/rest/ng/users").await,
        StatusCode::UNAUTHORIZED
    );
    // An admin makes a token for bob; it acts as bob.
    let made_for_bob =
        make_token(&app, &app.token, json!({"name": "for-bob", "userId": bob})).await;
    assert_eq!(made_for_bob["user"]["id"], bob);
    let me = ok_json(
        app.send_as(
            made_for_bob["token"].as_str().unwrap(),
            Method::GET,
            &format!("/users/{bob}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        me["emailAddress"], "bob@lab.example",
        "bob's own view (full fields)"
    );

    // Disabling bob stops his tokens; the admin's keeps working.
    for token in [&bobs, &bobs_second, &made_for_bob] {
        assert_eq!(
            status_with_bearer(&app, token["token"].as_str().unwrap(), "/rest/ng/users").await,
            StatusCode::OK
        );
    }
    ok_json(app.delete(&format!("/users/{bob}")).await).await;
    for token in [&bobs, &bobs_second, &made_for_bob] {
        assert_eq!(
            status_with_bearer(&app, token["token"].as_str().unwrap(), "/rest/ng/users").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        status_with_bearer(&app, admins["token"].as_str().unwrap(), "/rest/ng/users").await,
        StatusCode::OK
    );
    // A non-admin's token on an admin route is still only that user.
    let (_dave, dave_session) = app.create_user("dave", false).await;
    let daves = make_token(&app, &dave_session, json!({"name": "d"})).await;
    assert_eq!(
        status_with_bearer(&app, daves["token"].as_str().unwrap(), "/metrics").await,
        StatusCode::BAD_REQUEST
    );
}
