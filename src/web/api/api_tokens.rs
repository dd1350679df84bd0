//! `/api-tokens` (issue 15): long-lived tokens for services (Prometheus, scripts), so they need no
//! person's password. A token is shown once, when it is made; the ledger keeps its SHA-256. Anyone
//! signed in makes, lists and revokes their own; admins also list everyone's (`?all=true` or
//! `?userId=`), make one for another user and revoke anyone's. A request authenticated by an API
//! token may not make tokens: a leaked one could otherwise outlive its own revocation.

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::audit_trail::event;
use super::auth::{ByApiToken, CurrentUser};
use super::params::{PathOf, Query, TokenPath, json_object};
use super::routes::Routes;
use crate::auth::{new_api_token, token_hash};
use crate::clock::now_ms;
use crate::domain::audit::actions;
use crate::domain::errors::ErrorItem;
use crate::domain::input::{Field, Fields};
use crate::domain::user::UserSummary;
use crate::error::ServiceError;
use crate::present::UserCache;
use crate::store::Ledger;
use crate::store::api_tokens::ApiToken;
use crate::web::AppState;

pub fn routes(r: &mut Routes) {
    r.add(__path_list, list);
    r.add(__path_create, create);
    r.add(__path_revoke, revoke);
}

const MAX_NAME_CHARS: usize = 100;

/// A token as listed (never the secret).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiTokenView {
    pub id: i64,
    pub name: String,
    /// Epoch milliseconds.
    pub created_at: i64,
    /// Epoch milliseconds, or null: the token does not expire.
    pub expires_at: Option<i64>,
    /// When the token was last used (recorded at most once a minute), or null.
    pub last_used_at: Option<i64>,
    /// Whose token it is.
    pub user: Option<UserSummary>,
}

/// A token just made: the only answer that carries the secret.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewApiTokenView {
    pub id: i64,
    pub name: String,
    /// The token itself; shown this once. Send it as `X-OS-API-TOKEN` or `Authorization: Bearer`.
    pub token: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub user: Option<UserSummary>,
}

fn view(
    conn: &dyn Ledger,
    token: &ApiToken,
    users: &mut UserCache,
) -> Result<ApiTokenView, ServiceError> {
    Ok(ApiTokenView {
        id: token.id,
        name: token.name.clone(),
        created_at: token.created_at,
        expires_at: token.expires_at,
        last_used_at: token.last_used_at,
        user: users.summary(conn, token.user_id)?,
    })
}

fn not_found() -> ServiceError {
    ServiceError::user("API_TOKEN_NOT_FOUND", "API token does not exist.")
}

#[utoipa::path(get, path = "/api-tokens", tag = "API tokens",
    operation_id = "listApiTokens", summary = "List API tokens",
    description = "The caller's tokens that are not revoked (expired ones included), newest \
        first; never the secret. Admins: `all=true` for everyone's, `userId` for one user's.",
    params(
        ("all" = Option<bool>, Query, description = "Admins: every user's tokens."),
        ("userId" = Option<i64>, Query, description = "Admins (or the user themself): this user's tokens."),
    ),
    responses((status = 200, description = "The tokens.", body = Vec<ApiTokenView>)))]
async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ServiceError> {
    let query = Query::from_request(&req)?;
    let all = query.bool("all", false)?;
    let user_id = match query.text("userId") {
        None => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            ServiceError::invalid_request(format!("userId must be a user's id, not `{text}`."))
        })?),
    };
    let me = me.0;
    // Everyone's (`all` without `userId`), one user's, or by default the caller's own.
    let whose = if all && user_id.is_none() {
        None
    } else {
        Some(user_id.unwrap_or(me.id))
    };
    if whose != Some(me.id) && !me.admin {
        return Err(ServiceError::access_denied());
    }
    let views = state
        .db
        .read(move |c| {
            let mut users = UserCache::default();
            c.live_api_tokens(whose)?
                .iter()
                .map(|t| view(c, t, &mut users))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    Ok(HttpResponse::Ok().json(views))
}

#[utoipa::path(post, path = "/api-tokens", tag = "API tokens",
    operation_id = "createApiToken", summary = "Make an API token",
    description = "Returns the token once (`token`); only its SHA-256 is kept. It \
        authenticates as its user in `X-OS-API-TOKEN` or `Authorization: Bearer` until it \
        expires or is revoked, and stops working when its user is disabled. A request \
        authenticated by an API token cannot make one (`API_TOKEN_NOT_ALLOWED`).",
    request_body = NewApiTokenRequest,
    responses((status = 200, description = "The new token, with its secret.", body = NewApiTokenView)))]
async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    body: web::Bytes,
) -> Result<HttpResponse, ServiceError> {
    if req.extensions().get::<ByApiToken>().is_some() {
        return Err(ServiceError::user(
            "API_TOKEN_NOT_ALLOWED",
            "An API token cannot make API tokens; sign in with a password to make one.",
        ));
    }
    let body = json_object(&body, false)?;
    let fields = Fields::new(&body);
    let now = now_ms();
    let mut errors = Vec::new();
    let name = fields.string("name").unwrap_or_default();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        errors.push(ErrorItem::new(
            "API_TOKEN_NAME_REQUIRED",
            format!("name is required (1 to {MAX_NAME_CHARS} characters)."),
        ));
    }
    let expires_at = match body.get("expiresAt") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(at) if at > now => Some(at),
            Some(_) => {
                errors.push(ErrorItem::new(
                    "API_TOKEN_INVALID_EXPIRY",
                    "expiresAt must be in the future (epoch milliseconds), or null for no expiry.",
                ));
                None
            }
            None => {
                errors.push(ErrorItem::new(
                    "API_TOKEN_INVALID_EXPIRY",
                    "expiresAt must be epoch milliseconds or null.",
                ));
                None
            }
        },
    };
    let user_id = match fields.int("userId") {
        Field::Value(id) => id,
        Field::Missing => me.0.id,
        Field::Invalid => return Err(ServiceError::invalid_request("userId must be a user's id.")),
    };
    if user_id != me.0.id && !me.0.admin {
        return Err(ServiceError::access_denied());
    }
    if !errors.is_empty() {
        return Err(ServiceError::User(errors));
    }
    let token = new_api_token();
    let hash = token_hash(&token);
    let audit = event(&me.0, &req, actions::API_TOKEN_CREATE)
        .detail("name", name.clone())
        .detail("userId", user_id)
        .detail("expiresAt", expires_at);
    let (stored, user) = state
        .db
        .write(move |tx| -> Result<_, ServiceError> {
            let owner = tx
                .user(user_id)?
                .filter(|u| u.active && !u.is_system)
                .ok_or_else(ServiceError::user_not_found)?;
            let id = tx.insert_api_token(owner.id, &name, &hash, expires_at, now, audit)?;
            let stored = tx.api_token(id)?.ok_or_else(not_found)?;
            Ok((stored, UserSummary::from(&owner)))
        })
        .await?;
    tracing::info!(token_id = stored.id, user_id, "API token created");
    Ok(HttpResponse::Ok().json(NewApiTokenView {
        id: stored.id,
        name: stored.name,
        token,
        created_at: stored.created_at,
        expires_at: stored.expires_at,
        last_used_at: stored.last_used_at,
        user: Some(user),
    }))
}

#[utoipa::path(delete, path = "/api-tokens/{tokenId}", tag = "API tokens",
    operation_id = "revokeApiToken", summary = "Revoke an API token",
    description = "One's own, or (admins) anyone's. It stops working at once.",
    params(TokenPath),
    responses((status = 200, description = "The revoked token.", body = ApiTokenView)))]
async fn revoke(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    path: PathOf<TokenPath>,
) -> Result<HttpResponse, ServiceError> {
    let id = path?.token_id;
    let me = me.0;
    let audit = event(&me, &req, actions::API_TOKEN_REVOKE);
    let revoked = state
        .db
        .write(move |tx| {
            // Another user's token is "not found" to a non-admin: its existence is not theirs to know.
            let token = tx
                .api_token(id)?
                .filter(|t| t.revoked_at.is_none() && (me.admin || t.user_id == me.id))
                .ok_or_else(not_found)?;
            let audit = audit
                .detail("name", token.name.clone())
                .detail("userId", token.user_id);
            if !tx.revoke_api_token(id, me.id, now_ms(), audit)? {
                return Err(not_found());
            }
            view(tx, &token, &mut UserCache::default())
        })
        .await?;
    tracing::info!(token_id = id, "API token revoked");
    Ok(HttpResponse::Ok().json(revoked))
}

// ---- For the document only: the bodies this module reads by hand (leniently, with messages
// naming the field) or builds with `json!`. ----

/// `POST /api-tokens`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct NewApiTokenRequest {
    /// What the token is for, 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// Epoch milliseconds in the future; null or absent: the token does not expire.
    expires_at: Option<i64>,
    /// Admins only: make the token for this user (default: the caller).
    user_id: Option<i64>,
}
