//! The `CurrentUser` extractor: who is calling. Accepts an `X-OS-API-TOKEN` header (OpenSpecimen
//! clients), the `labcron_session` cookie (the web page), `Authorization: Basic` (scripts) or
//! `Authorization: Bearer` (services). A header token is a session token or an API token (those
//! start with `lct_`). Session tokens expire after inactivity; API tokens when they are revoked,
//! reach their `expiresAt` or their user is disabled; Basic sign-ins are throttled like password
//! sign-ins.
//! A state-changing request authenticated by the cookie alone must also carry the session's
//! anti-forgery token in `X-CSRF-Token` (the web page sends it), so other sites cannot post with it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header::HeaderValue;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::params::client_addr;
use crate::auth::{API_TOKEN_PREFIX, HashingBusy, dummy_hash, token_hash};
use crate::clock::now_ms;
use crate::domain::errors::ErrorItem;
use crate::domain::user::{User, audited_login, sign_in_login_key, sign_in_password_problem};
use crate::error::ServiceError;
use crate::store;
use crate::web::AppState;
use crate::web::access_log::SignedInAs;

pub const TOKEN_HEADER: &str = "X-OS-API-TOKEN";
pub const SESSION_COOKIE: &str = "labcron_session";
pub const CSRF_HEADER: &str = "X-CSRF-Token";

/// The signed-in user of a request.
pub struct CurrentUser(pub User);

/// Set on a request authenticated by an API token (its id): such a request may not mint more
/// tokens, so a leaked service token cannot outlive its own revocation.
#[derive(Clone, Copy, Debug)]
pub struct ByApiToken(pub i64);

impl CurrentUser {
    pub fn require_admin(&self) -> Result<(), ServiceError> {
        if self.0.admin {
            Ok(())
        } else {
            Err(ServiceError::access_denied())
        }
    }
}

/// How a request says who is calling. A credential header that is present but empty or malformed
/// is `Malformed` (a 401), never a reason to look at the cookie instead: otherwise an empty
/// `X-OS-API-TOKEN` beside the session cookie would pass as "authenticated by header" and skip the
/// anti-forgery check.
enum Credential {
    None,
    Token(String),
    Basic(String, String),
    Cookie(String),
    Malformed(&'static str),
}

fn credential(req: &HttpRequest) -> Credential {
    if let Some(value) = req.headers().get(TOKEN_HEADER) {
        return match value.to_str().map(str::trim) {
            Ok(token) if !token.is_empty() => Credential::Token(token.to_string()),
            _ => Credential::Malformed("The X-OS-API-TOKEN header is empty or malformed."),
        };
    }
    if let Some(value) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        if let Some(token) = bearer_token(value) {
            return Credential::Token(token);
        }
        return match basic_credentials(value) {
            Some((login, password)) => Credential::Basic(login, password),
            None => Credential::Malformed(
                "The Authorization header is neither Basic credentials (Basic base64(login:password)) nor a Bearer token.",
            ),
        };
    }
    match req.cookie(SESSION_COOKIE) {
        Some(cookie) if !cookie.value().is_empty() => {
            Credential::Cookie(cookie.value().to_string())
        }
        _ => Credential::None,
    }
}

/// The session token a request carries (header or cookie), if any.
pub fn request_token(req: &HttpRequest) -> Option<String> {
    match credential(req) {
        Credential::Token(token) | Credential::Cookie(token) => Some(token),
        _ => None,
    }
}

/// The anti-forgery token of a web session: derived from the (HttpOnly, never shown) session token,
/// so only pages served to that session know it, and it differs from what the ledger stores.
pub fn csrf_token(session_token: &str) -> String {
    hex::encode(Sha256::digest(format!("labcron-csrf\n{session_token}")))
}

/// Whether `presented` is the anti-forgery token of `session_token` (compared in constant time).
pub fn csrf_token_matches(session_token: &str, presented: &str) -> bool {
    let expected = csrf_token(session_token);
    expected.len() == presented.len()
        && expected
            .bytes()
            .zip(presented.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A request that changes state, is authenticated by the session cookie, and lacks the session's
/// anti-forgery header: what another site could make a signed-in browser send.
fn is_cross_site_forgery(req: &HttpRequest, session_token: &str) -> bool {
    use actix_web::http::Method;
    let safe = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    if safe {
        return false;
    }
    let presented = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    !csrf_token_matches(session_token, presented.trim())
}

/// `Bearer <token>` (RFC 6750), the scheme compared without regard to case.
fn bearer_token(value: &HeaderValue) -> Option<String> {
    let header = value.to_str().ok()?.trim();
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let header = value.to_str().ok()?.trim();
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (login, password) = text.split_once(':')?;
    Some((login.to_string(), password.to_string()))
}

impl FromRequest for CurrentUser {
    type Error = ServiceError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ServiceError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let credential = credential(req);
        let client = client_addr(req);
        let forged =
            matches!(&credential, Credential::Cookie(token) if is_cross_site_forgery(req, token));
        let req = req.clone();
        Box::pin(async move {
            if forged {
                return Err(ServiceError::user(
                    "AUTH_CSRF_TOKEN_INVALID",
                    "The request lacks the page's anti-forgery token (X-CSRF-Token); reload the page and try again.",
                ));
            }
            let state = state
                .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("app state missing")))?;
            let user = match credential {
                Credential::Token(token) => user_for_token(&state, &req, &token).await?,
                // The cookie only ever holds a session token, never an API token.
                Credential::Cookie(token) if token.starts_with(API_TOKEN_PREFIX) => {
                    return Err(ServiceError::auth_required());
                }
                Credential::Cookie(token) => user_for_token(&state, &req, &token).await?,
                Credential::Basic(login, password) => {
                    CurrentUser(sign_in(&state, &login, &password, &client).await?)
                }
                Credential::Malformed(why) => {
                    return Err(ServiceError::Unauthorized(ErrorItem::new(
                        "AUTH_INVALID_CREDENTIALS",
                        why,
                    )));
                }
                Credential::None => return Err(ServiceError::auth_required()),
            };
            req.extensions_mut()
                .insert(SignedInAs(user.0.login_name.clone()));
            Ok(user)
        })
    }
}

async fn user_for_token(
    state: &AppState,
    req: &HttpRequest,
    token: &str,
) -> Result<CurrentUser, ServiceError> {
    if token.starts_with(API_TOKEN_PREFIX) {
        return user_for_api_token(state, req, token).await;
    }
    let hash = token_hash(token);
    let now = now_ms();
    let cutoffs = state.settings.auth.session_cutoffs(now);
    let lookup_hash = hash.clone();
    let found = state
        .db
        .read(move |c| -> Result<_, ServiceError> {
            let Some(session) = c.session(&lookup_hash)? else {
                return Ok(None);
            };
            Ok(c.user(session.user_id)?.map(|u| (u, session)))
        })
        .await?;
    let Some((user, session)) = found else {
        return Err(ServiceError::Unauthorized(ErrorItem::new(
            "AUTH_REQUIRED",
            "The session token is not valid.",
        )));
    };
    let last_used = session.last_used_at;
    if cutoffs.is_expired(last_used, session.created_at) {
        state.db.write(move |tx| tx.delete_session(&hash)).await?;
        return Err(ServiceError::Unauthorized(ErrorItem::new(
            "AUTH_REQUIRED",
            "The session has expired; sign in again.",
        )));
    }
    // Writing on every request would serialise all readers behind the writer; a minute is precise
    // enough for an expiry counted in minutes.
    if now - last_used > 60_000 {
        state
            .db
            .write(move |tx| tx.touch_session(&hash, now))
            .await?;
    }
    Ok(CurrentUser(user))
}

/// An API token: valid while not revoked, not past `expiresAt`, and its user active. Its use is
/// recorded at most once a minute (`store::api_tokens::touch`).
async fn user_for_api_token(
    state: &AppState,
    req: &HttpRequest,
    token: &str,
) -> Result<CurrentUser, ServiceError> {
    let hash = token_hash(token);
    let found = state
        .db
        .read(move |c| -> Result<_, ServiceError> {
            let Some(token) = c.api_token_by_hash(&hash)? else {
                return Ok(None);
            };
            Ok(c.user(token.user_id)?.map(|u| (u, token)))
        })
        .await?;
    let Some((user, token)) = found else {
        return Err(ServiceError::Unauthorized(ErrorItem::new(
            "AUTH_REQUIRED",
            "The API token is not valid (unknown, revoked, or its user is disabled).",
        )));
    };
    let now = now_ms();
    if token.expires_at.is_some_and(|at| at <= now) {
        return Err(ServiceError::Unauthorized(ErrorItem::new(
            "AUTH_REQUIRED",
            "The API token has expired.",
        )));
    }
    if token.last_used_at.is_none_or(|at| now - at > 60_000) {
        let id = token.id;
        state
            .db
            .write(move |tx| tx.touch_api_token(id, now))
            .await?;
    }
    req.extensions_mut().insert(ByApiToken(token.id));
    Ok(CurrentUser(user))
}

/// Checks a login name and password (throttled). Used by Basic auth, `POST /sessions` and the
/// page's form. A name or password longer than any account's is refused first (a 400, nothing
/// recorded); then the throttle, by the login key; then the hash, within the hashing gate.
pub async fn sign_in(
    state: &AppState,
    login: &str,
    password: &str,
    client: &str,
) -> Result<User, ServiceError> {
    // One normal form for the throttle and the lookup alike, on every sign-in path.
    let login = sign_in_login_key(login).map_err(|e| ServiceError::User(vec![e]))?;
    if let Some(problem) = sign_in_password_problem(password) {
        return Err(ServiceError::User(vec![problem]));
    }
    let login = login.as_str();
    if let Some(retry_after_secs) = state.throttle.retry_after(login, client) {
        failed_sign_in(state, login, client, "too many failed sign-ins").await;
        return Err(ServiceError::TooManyAttempts { retry_after_secs });
    }
    let lookup = login.to_string();
    let (found, source) = state
        .db
        .read(move |c| -> Result<_, ServiceError> {
            Ok((c.user_with_hash(&lookup)?, c.user_source_by_login(&lookup)?))
        })
        .await?;
    let ldap = &state.settings.auth.ldap;
    // The directory is asked about names it may own: unknown ones and directory accounts. A local
    // account never is, so local admins sign in whatever the directory's state.
    let verified = if ldap.enabled() && source.as_deref() != Some("LOCAL") {
        directory_sign_in(state, login, password, client).await?
    } else {
        // Same work for unknown users, so timing does not reveal which names exist.
        let (user, hash) = match found {
            Some((user, Some(hash))) if user.active && !user.is_system => (Some(user), hash),
            _ => (None, dummy_hash().to_string()),
        };
        let matches = state
            .hashing
            .verify(password.to_string(), hash)
            .await
            .map_err(hashing_busy)??;
        user.filter(|_| matches)
    };
    match verified {
        Some(user) => {
            state.throttle.record_success(login, client);
            Ok(user)
        }
        None => {
            state.throttle.record_failure(login, client);
            failed_sign_in(state, login, client, "wrong login name or password").await;
            // Slow down guessing a little even before the lockout.
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(ServiceError::invalid_credentials())
        }
    }
}

/// Every hashing slot stayed busy: a 503 with Retry-After, in the contract's shape.
pub fn hashing_busy(busy: HashingBusy) -> ServiceError {
    ServiceError::Busy {
        retry_after_secs: busy.retry_after_secs,
    }
}

/// A sign-in against the directory: the user's labcron account (made or refreshed) on success,
/// `None` for wrong credentials, a 503 when the directory cannot be asked.
async fn directory_sign_in(
    state: &AppState,
    login: &str,
    password: &str,
    client: &str,
) -> Result<Option<User>, ServiceError> {
    match crate::ldap::authenticate(&state.settings.auth.ldap, login, password).await {
        Ok(found) => {
            // The account is the directory's: named by its own login attribute (normalised),
            // never by the spelling typed, so `ＤＯＲＡ` and `dora` are one account.
            let name = crate::domain::user::login_key(&found.login);
            let user = state
                .db
                .write(move |tx| {
                    tx.upsert_directory_user(
                        &name,
                        &found.first_name,
                        &found.last_name,
                        &found.email_address,
                        found.admin,
                        now_ms(),
                    )
                })
                .await?;
            Ok(user)
        }
        Err(crate::ldap::DirectoryError::InvalidCredentials) => Ok(None),
        Err(crate::ldap::DirectoryError::Unavailable(why)) => {
            tracing::warn!(reason = %why, "directory sign-in: the directory cannot be asked");
            failed_sign_in(state, login, client, "the directory is unavailable").await;
            Err(ServiceError::Unavailable(ErrorItem::new(
                "AUTH_DIRECTORY_UNAVAILABLE",
                "The sign-in directory cannot be reached; try again later (local accounts can still sign in).",
            )))
        }
    }
}

/// The audit event of a refused sign-in, on every path (JSON, Basic, the page form).
async fn failed_sign_in(state: &AppState, login: &str, client: &str, reason: &str) {
    let event = store::audit::Event::new(
        &audited_login(login),
        crate::domain::audit::actions::SIGN_IN_FAILED,
        Some(client),
    )
    .detail("reason", reason);
    super::audit_trail::record_alone(state, event).await;
}
