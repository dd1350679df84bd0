//! Signing in and out, redirects to the sign-in page, the cookie's flags, and the protection of
//! cookie-authenticated requests against cross-site forgery.

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::common::{ADMIN_PASSWORD, spawn_app};
use crate::support::ui_test;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_and_out_in_the_browser() {
    ui_test("signing_in_and_out_in_the_browser", async |ui| {
        // A page needs a session: the browser lands on the sign-in form, remembering where it was.
        ui.goto("/ui/jobs?type=EXTERNAL").await;
        let path = ui.wait_path("/ui/sign-in").await;
        assert!(
            path.contains("next=%2Fui%2Fjobs%3Ftype%3DEXTERNAL"),
            "{path}"
        );

        ui.fill("#loginName", "admin").await;
        ui.fill("#password", "wrong password").await;
        ui.click("#sign-in-submit").await;
        ui.wait_contains("#sign-in-error", "Invalid login name or password")
            .await;
        assert_eq!(
            ui.js("return document.querySelector('#loginName').value;", vec![])
                .await,
            json!("admin")
        );

        ui.fill("#password", ADMIN_PASSWORD).await;
        ui.click("#sign-in-submit").await;
        let path = ui.wait_path("/ui/jobs").await;
        assert!(
            path.contains("type=EXTERNAL"),
            "back where the user was going: {path}"
        );
        ui.wait_contains(".site-header .who", "admin").await;
        // The session cookie is invisible to scripts.
        assert_eq!(ui.js("return document.cookie;", vec![]).await, json!(""));

        // `/` goes to the jobs list when signed in.
        ui.goto("/").await;
        ui.wait_path("/ui/jobs").await;

        ui.click("#sign-out").await;
        ui.wait_path("/ui/sign-in").await;
        ui.goto("/ui/jobs").await;
        ui.wait_path("/ui/sign-in").await;
    })
    .await;
}

/// Signs in through the form with reqwest and returns the session cookie value.
async fn form_sign_in(app: &crate::common::TestApp) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let form = client
        .get(format!("{}/ui/sign-in", app.base))
        .send()
        .await
        .expect("form");
    let sign_in_cookie = form
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("labcron_sign_in="))
        .expect("sign-in cookie")
        .to_string();
    let token = sign_in_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .expect("token");
    let html = form.text().await.expect("html");
    assert!(
        html.contains(&format!("value=\"{token}\"")),
        "the form echoes its token"
    );
    let response = client
        .post(format!("{}/ui/sign-in", app.base))
        .header(COOKIE, format!("labcron_sign_in={token}"))
        .form(&[
            ("loginName", "admin"),
            ("password", ADMIN_PASSWORD),
            ("csrf", &token),
            ("next", "/ui/jobs"),
        ])
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/ui/jobs");
    let cookie = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("labcron_session="))
        .expect("session cookie")
        .to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");
    cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .expect("session token")
}

#[tokio::test]
async fn cookie_requests_that_change_state_need_the_anti_forgery_token() {
    let app = spawn_app().await;
    let session = form_sign_in(&app).await;
    let cookie = format!("labcron_session={session}");
    app.write_script("ok.sh", "#!/bin/sh\necho ok\n");
    let job_id = app.create_external_job("forgery target", "ok.sh").await;

    // Reading with the cookie alone is fine.
    let read = app
        .client
        .get(app.url(&format!("/scheduled-jobs/{job_id}")))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(read.status(), StatusCode::OK);

    // What another site could make the browser send: the cookie, no token.
    let forged = app
        .client
        .post(app.url(&format!("/scheduled-jobs/{job_id}/runs")))
        .header(COOKIE, &cookie)
        .header("Origin", "https://evil.example")
        .json(&json!({}))
        .send()
        .await
        .expect("post");
    assert_eq!(
        crate::common::error_codes(forged, StatusCode::BAD_REQUEST).await,
        ["AUTH_CSRF_TOKEN_INVALID"]
    );
    let forged_delete = app
        .client
        .delete(app.url(&format!("/scheduled-jobs/{job_id}")))
        .header(COOKIE, &cookie)
        .header("X-CSRF-Token", "0".repeat(64))
        .send()
        .await
        .expect("delete");
    assert_eq!(
        crate::common::error_codes(forged_delete, StatusCode::BAD_REQUEST).await,
        ["AUTH_CSRF_TOKEN_INVALID"]
    );
    let runs: serde_json::Value =
        crate::common::ok_json(app.get(&format!("/scheduled-jobs/{job_id}/runs")).await).await;
    assert_eq!(runs.as_array().map(Vec::len), Some(0), "nothing was queued");

    // The page's token (in the page, derived from the session) makes it through.
    let page = app
        .client
        .get(format!("{}/ui/jobs", app.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = page.text().await.expect("html");
    let csrf = html
        .split("data-csrf=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("data-csrf")
        .to_string();
    let allowed = app
        .client
        .post(app.url(&format!("/scheduled-jobs/{job_id}/runs")))
        .header(COOKIE, &cookie)
        .header("X-CSRF-Token", &csrf)
        .json(&json!({}))
        .send()
        .await
        .expect("post");
    assert_eq!(allowed.status(), StatusCode::OK);

    // API clients with a token header are not affected.
    let by_header = app
        .post(&format!("/scheduled-jobs/{job_id}/runs"), &json!({}))
        .await;
    assert_eq!(by_header.status(), StatusCode::OK);

    // Sign-out needs the token too: without it the session survives.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let bad = client
        .post(format!("{}/ui/sign-out", app.base))
        .header(COOKIE, &cookie)
        .form(&[("csrf", "nope")])
        .send()
        .await
        .expect("sign out");
    assert_eq!(bad.status(), StatusCode::SEE_OTHER);
    let still = app
        .client
        .get(app.url("/users"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(still.status(), StatusCode::OK);
    let good = client
        .post(format!("{}/ui/sign-out", app.base))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("sign out");
    assert_eq!(good.status(), StatusCode::SEE_OTHER);
    let gone = app
        .client
        .get(app.url("/users"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(gone.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sign_in_form_refuses_cross_site_posts_and_foreign_redirects() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    // No form token (a post from another site cannot read or set it): no session.
    let response = client
        .post(format!("{}/ui/sign-in", app.base))
        .form(&[
            ("loginName", "admin"),
            ("password", ADMIN_PASSWORD),
            ("csrf", "guess"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .all(|c| !c.to_str().unwrap_or("").starts_with("labcron_session="))
    );
    assert!(response.text().await.expect("html").contains("expired"));

    // `next` may only name a local page.
    let page = client
        .get(format!(
            "{}/ui/sign-in?next=https://evil.example/",
            app.base
        ))
        .send()
        .await
        .expect("get");
    let html = page.text().await.expect("html");
    assert!(
        html.contains("name=\"next\" value=\"/ui/jobs\""),
        "foreign next replaced"
    );

    // Unknown pages are pages (not JSON), unknown API paths stay JSON.
    let missing = client
        .get(format!("{}/ui/no-such-page", app.base))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(
        missing.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html")
    );
    assert!(
        missing
            .text()
            .await
            .expect("html")
            .contains("Page not found")
    );
    let asset = client
        .get(format!("{}/ui/assets/ui.css", app.base))
        .send()
        .await
        .expect("css");
    assert_eq!(asset.status(), StatusCode::OK);
    assert!(
        asset.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/css")
    );
}
