//! `POST /sessions` signs in (OpenSpecimen's shape: the user plus a `token`); `DELETE /sessions`
//! ends the caller's token.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::audit_trail::event;
use super::auth::{CurrentUser, request_token, sign_in};
use super::params::{client_addr, json_object};
use super::routes::Routes;
use crate::auth::{API_TOKEN_PREFIX, new_token, token_hash};
use crate::clock::now_ms;
use crate::domain::audit::actions;
use crate::domain::input::Fields;
use crate::error::ServiceError;
use crate::store::audit::Event;
use crate::web::AppState;
use crate::web::error::ErrorList;

pub fn routes(r: &mut Routes) {
    r.add(__path_create, create);
    r.add(__path_delete, delete);
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub id: i64,
    pub login_name: String,
    pub first_name: String,
    pub last_name: String,
    pub email_address: String,
    pub admin: bool,
    pub token: String,
}

/// Signs in and returns a new token (also used by the web page's sign-in form).
pub async fn open_session(
    state: &AppState,
    login: &str,
    password: &str,
    client: &str,
    via: &str,
) -> Result<SessionView, ServiceError> {
    let user = sign_in(state, login, password, client).await?;
    let token = new_token();
    let hash = token_hash(&token);
    let user_id = user.id;
    let auth = state.settings.auth.clone();
    let event = Event::new(&user.login_name, actions::SIGN_IN, Some(client))
        .object("USER", user.id)
        .detail("via", via);
    state
        .db
        .write(move |tx| -> Result<_, ServiceError> {
            let now = now_ms();
            // Expired sessions are removed as new ones open, so the table stays small.
            tx.delete_expired_sessions(auth.session_cutoffs(now))?;
            tx.insert_session(&hash, user_id, now)?;
            tx.record_audit(&event, now)?;
            Ok(())
        })
        .await?;
    Ok(SessionView {
        id: user.id,
        login_name: user.login_name,
        first_name: user.first_name,
        last_name: user.last_name,
        email_address: user.email_address,
        admin: user.admin,
        token,
    })
}

#[utoipa::path(post, path = "/sessions", tag = "Sessions", operation_id = "signIn",
    summary = "Sign in",
    description = "Checks the password (throttled per login name and client address) and \
        returns the user with a new `token` for `X-OS-API-TOKEN`.",
    request_body = SignInRequest,
    responses(
        (status = 200, description = "Signed in.", body = SessionView),
        (status = 503, description = "Directory sign-in (`[auth.ldap]`) is on and the \
            directory cannot be reached in time (`AUTH_DIRECTORY_UNAVAILABLE`); local \
            accounts still sign in.", body = ErrorList),
    ),
    security(()))]
async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ServiceError> {
    let body = json_object(&body, false)?;
    let fields = Fields::new(&body);
    let login = fields.string("loginName").unwrap_or_default();
    // Passwords are not trimmed: spaces may be part of one.
    let password = body
        .get("password")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    if login.is_empty() || password.is_empty() {
        return Err(ServiceError::user(
            "AUTH_CREDENTIALS_REQUIRED",
            "loginName and password are required.",
        ));
    }
    let session = open_session(&state, &login, &password, &client_addr(&req), "api").await?;
    Ok(HttpResponse::Ok().json(session))
}

#[utoipa::path(delete, path = "/sessions", tag = "Sessions", operation_id = "signOut",
    summary = "Sign out", description = "Ends the token the request carries.",
    responses((status = 200, description = "Signed out.", body = SignedOut)))]
async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: CurrentUser,
) -> Result<HttpResponse, ServiceError> {
    // An API token is not a session: "signing out" with one ends nothing.
    if let Some(token) = request_token(&req).filter(|t| !t.starts_with(API_TOKEN_PREFIX)) {
        let hash = token_hash(&token);
        let event = event(&user.0, &req, actions::SIGN_OUT).object("USER", user.0.id);
        state
            .db
            .write(move |tx| -> Result<_, ServiceError> {
                tx.delete_session(&hash)?;
                tx.record_audit(&event, now_ms())?;
                Ok(())
            })
            .await?;
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "success"})))
}

// ---- For the document only: the bodies this module reads by hand (leniently, with messages
// naming the field) or builds with `json!`. ----

/// `DELETE /sessions`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
struct SignedOut {
    #[schema(examples("success"))]
    status: String,
}

/// `POST /sessions`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SignInRequest {
    #[schema(min_length = 1)]
    login_name: String,
    /// Not trimmed: spaces may be part of a password.
    #[schema(min_length = 1)]
    password: String,
    /// Accepted and ignored (OpenSpecimen's field).
    domain_name: Option<String>,
}
