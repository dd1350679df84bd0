//! Signing in and out of the web pages. Sign-in checks the password through `open_session` (the
//! same throttled check as `POST /sessions`) and puts the new token in the HttpOnly,
//! SameSite=Strict `labcron_session` cookie. Both forms are protected against cross-site posts:
//! sign-in by a random token kept in its own SameSite=Strict cookie and echoed by the form (and by
//! refusing `Sec-Fetch-Site: cross-site`), sign-out by the session's anti-forgery token.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use serde::Deserialize;

use super::assets::templates;
use super::html::{Slot, escape, fill};
use super::pages::{Page, html_response, page_user, redirect, render_page, safe_next};
use crate::auth::token_hash;
use crate::error::ServiceError;
use crate::web::AppState;
use crate::web::api::auth::{SESSION_COOKIE, csrf_token_matches};
use crate::web::api::params::client_addr;
use crate::web::api::sessions::open_session;

/// Holds the sign-in form's anti-forgery token (before there is a session).
const SIGN_IN_COOKIE: &str = "labcron_sign_in";

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SignInForm {
    #[serde(default)]
    login_name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize, Default)]
struct SignOutForm {
    #[serde(default)]
    csrf: String,
}

fn is_https(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

fn cookie<'c>(req: &HttpRequest, name: &'c str, value: String, path: &'c str) -> Cookie<'c> {
    Cookie::build(name, value)
        .path(path)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(is_https(req))
        .finish()
}

fn removal<'c>(req: &HttpRequest, name: &'c str, path: &'c str) -> Cookie<'c> {
    let mut c = cookie(req, name, String::new(), path);
    c.make_removal();
    c
}

fn same_bytes(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The sign-in form, with the current form token (a new one when the browser has none).
fn sign_in_form(req: &HttpRequest, login: &str, next: &str, error: Option<&str>) -> HttpResponse {
    let token = req
        .cookie(SIGN_IN_COOKIE)
        .map(|c| c.value().to_string())
        .filter(|v| v.len() >= 32)
        .unwrap_or_else(|| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
        });
    let error = error
        .map(|e| {
            format!(
                "<p class=\"form-error\" role=\"alert\" id=\"sign-in-error\">{}</p>",
                escape(e)
            )
        })
        .unwrap_or_default();
    let shell = fill(
        templates::SIGN_IN,
        &[
            ("csrf", Slot::Text(&token)),
            ("next", Slot::Text(safe_next(next))),
            ("login", Slot::Text(login)),
            ("error", Slot::Markup(&error)),
        ],
    );
    let page = Page {
        title: "Sign in",
        name: "sign-in",
        script: "sign-in.js",
        shell: &shell,
        data: vec![("next", safe_next(next).to_string())],
    };
    let mut response = html_response(render_page(&page, None));
    let _ = response.add_cookie(&cookie(req, SIGN_IN_COOKIE, token, "/ui/sign-in"));
    response
}

fn query_next(req: &HttpRequest) -> String {
    serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "next").map(|(_, v)| v))
        .unwrap_or_default()
}

/// `GET /ui/sign-in`: the form, or straight on when the session is still valid.
pub async fn sign_in_page(req: HttpRequest) -> HttpResponse {
    let next = query_next(&req);
    if page_user(&req).await.is_some() {
        return redirect(safe_next(&next));
    }
    sign_in_form(&req, "", &next, None)
}

/// `POST /ui/sign-in` (form): on success a session cookie and a redirect to `next`; otherwise the
/// form again with the reason.
pub async fn sign_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> HttpResponse {
    let form: SignInForm = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let cross_site = req
        .headers()
        .get("Sec-Fetch-Site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
    let form_token_ok = req
        .cookie(SIGN_IN_COOKIE)
        .is_some_and(|c| !form.csrf.is_empty() && same_bytes(c.value(), &form.csrf));
    if cross_site || !form_token_ok {
        return sign_in_form(
            &req,
            &form.login_name,
            &form.next,
            Some("The sign-in form had expired. Please sign in again."),
        );
    }
    let login = form.login_name.trim();
    if login.is_empty() || form.password.is_empty() {
        return sign_in_form(
            &req,
            login,
            &form.next,
            Some("Enter your login name and password."),
        );
    }
    match open_session(&state, login, &form.password, &client_addr(&req), "page").await {
        Ok(session) => {
            let mut response = redirect(safe_next(&form.next));
            let _ = response.add_cookie(&cookie(&req, SESSION_COOKIE, session.token, "/"));
            let _ = response.add_cookie(&removal(&req, SIGN_IN_COOKIE, "/ui/sign-in"));
            tracing::info!(login = %session.login_name, "signed in to the web page");
            response
        }
        Err(e) => {
            let message = match &e {
                ServiceError::Internal(cause) => {
                    tracing::error!(error = ?cause, "web sign-in failed");
                    "Sorry, something went wrong. Please try again.".to_string()
                }
                other => other
                    .items()
                    .into_iter()
                    .next()
                    .map(|i| i.message)
                    .unwrap_or_default(),
            };
            sign_in_form(&req, login, &form.next, Some(&message))
        }
    }
}

/// `POST /ui/sign-out` (form with the session's anti-forgery token): ends the session.
pub async fn sign_out(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> HttpResponse {
    let form: SignOutForm = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let Some(token) = req.cookie(SESSION_COOKIE).map(|c| c.value().to_string()) else {
        return redirect("/ui/sign-in");
    };
    if !csrf_token_matches(&token, form.csrf.trim()) {
        // Not from our page: change nothing.
        return redirect("/ui/jobs");
    }
    let hash = token_hash(&token);
    let who = page_user(&req).await.map(|me| {
        crate::web::api::audit_trail::event(&me.user, &req, crate::domain::audit::actions::SIGN_OUT)
            .object("USER", me.user.id)
            .detail("via", "page")
    });
    if let Err(e) = state
        .db
        .write(move |tx| -> Result<_, ServiceError> {
            tx.delete_session(&hash)?;
            if let Some(event) = &who {
                tx.record_audit(event, crate::clock::now_ms())?;
            }
            Ok(())
        })
        .await
    {
        tracing::error!(error = ?e, "sign-out could not delete the session");
    }
    let mut response = redirect("/ui/sign-in");
    let _ = response.add_cookie(&removal(&req, SESSION_COOKIE, "/"));
    response
}
