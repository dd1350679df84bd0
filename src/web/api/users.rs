//! `/users`: anyone signed in lists users (to pick recipients and shared users; admins see every
//! field); admins create, update and (softly) delete them; a user may change their own password
//! and names. `PUT /users/password` changes a password the way OpenSpecimen's call does (admins
//! without the old one, everyone else with it), and a user created without a password (as
//! OpenSpecimen creates them) cannot sign in until one is set.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::audit_trail::event;
use super::auth::{CurrentUser, hashing_busy, request_token};
use super::params::{PathOf, UserPath, json_object};
use super::routes::Routes;
use crate::auth::token_hash;
use crate::clock::now_ms;
use crate::domain::audit::actions;
use crate::domain::errors::ErrorItem;
use crate::domain::input::{Field, Fields};
use crate::domain::user::{User, login_name_problem, password_problem};
use crate::error::ServiceError;
use crate::service;
use crate::store;
use crate::web::AppState;

pub fn routes(r: &mut Routes) {
    r.add(__path_list, list);
    r.add(__path_create, create);
    // Added before `/users/{userId}`, which would otherwise take `password` for an id.
    r.add(__path_change_password, change_password);
    r.add(__path_get, get);
    r.add(__path_update, update);
    r.add(__path_delete, delete);
}

/// A user as the API shows it; `emailAddress`, `admin` and `activityStatus` only to admins and to
/// the user themself.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: i64,
    pub login_name: String,
    pub first_name: String,
    pub last_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity_status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<i64>,
}

fn view(user: &User, full: bool) -> UserView {
    UserView {
        id: user.id,
        login_name: user.login_name.clone(),
        first_name: user.first_name.clone(),
        last_name: user.last_name.clone(),
        email_address: full.then(|| user.email_address.clone()),
        admin: full.then_some(user.admin),
        activity_status: full.then_some(if user.active { "Active" } else { "Disabled" }),
        creation_date: full.then_some(user.created_at),
    }
}

#[utoipa::path(get, path = "/users", tag = "Users", operation_id = "listUsers",
    summary = "List users",
    description = "Every active user. `emailAddress`, `admin`, `activityStatus` and \
        `creationDate` only to admins and for the caller's own entry.",
    responses((status = 200, description = "The users.", body = Vec<UserView>)))]
async fn list(state: web::Data<AppState>, me: CurrentUser) -> Result<HttpResponse, ServiceError> {
    let users = state.db.read(|l| l.list_users()).await?;
    let views: Vec<UserView> = users
        .iter()
        .map(|u| view(u, me.0.admin || u.id == me.0.id))
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

#[utoipa::path(get, path = "/users/{userId}", tag = "Users", operation_id = "getUser",
    summary = "One user",
    params(UserPath),
    responses((status = 200, description = "The user.", body = UserView)))]
async fn get(
    state: web::Data<AppState>,
    me: CurrentUser,
    path: PathOf<UserPath>,
) -> Result<HttpResponse, ServiceError> {
    let id = path?.user_id;
    let user = load_user(&state, id).await?;
    Ok(HttpResponse::Ok().json(view(&user, me.0.admin || user.id == me.0.id)))
}

async fn load_user(state: &AppState, id: i64) -> Result<User, ServiceError> {
    state
        .db
        .read(move |c| service::users::live_user(c, id))
        .await
}

/// The profile fields that differ: `{"field": {"before": …, "after": …}}`.
fn profile_changes(before: &User, after: &User) -> Map<String, Value> {
    let mut changes = Map::new();
    let mut compare = |name: &str, old: Value, new: Value| {
        if old != new {
            changes.insert(
                name.to_string(),
                serde_json::json!({"before": old, "after": new}),
            );
        }
    };
    compare(
        "loginName",
        before.login_name.clone().into(),
        after.login_name.clone().into(),
    );
    compare(
        "firstName",
        before.first_name.clone().into(),
        after.first_name.clone().into(),
    );
    compare(
        "lastName",
        before.last_name.clone().into(),
        after.last_name.clone().into(),
    );
    compare(
        "emailAddress",
        before.email_address.clone().into(),
        after.email_address.clone().into(),
    );
    compare("admin", before.admin.into(), after.admin.into());
    changes
}

/// A directory account has no password here (`service::users::refuse_password_here`), checked
/// before the slow hashing; the write checks it again.
async fn refuse_directory_account(state: &AppState, id: i64) -> Result<(), ServiceError> {
    state
        .db
        .read(move |c| service::users::refuse_password_here(c, id))
        .await
}

fn raw_password(body: &Map<String, Value>) -> Option<String> {
    body.get("password")
        .and_then(|v| v.as_str())
        .filter(|p| !p.is_empty())
        .map(str::to_string)
}

#[utoipa::path(post, path = "/users", tag = "Users", operation_id = "createUser",
    summary = "Create a user (admins)", request_body = NewUserRequest,
    responses((status = 200, description = "The new user.", body = UserView)))]
async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    body: web::Bytes,
) -> Result<HttpResponse, ServiceError> {
    me.require_admin()?;
    let body = json_object(&body, false)?;
    let fields = Fields::new(&body);
    let mut errors = Vec::new();
    let login = fields.string("loginName").unwrap_or_default();
    errors.extend(login_name_problem(&login));
    // Without a password the user exists but cannot sign in until an admin sets one (OpenSpecimen
    // creates users without one and mails them a link; labcron sends no such mail).
    let password = raw_password(&body);
    if let Some(p) = &password {
        errors.extend(password_problem(p));
    }
    let admin = match fields.bool("admin") {
        Field::Value(v) => v,
        // OpenSpecimen's user `type`: SUPER is a super admin; the other types are plain users.
        Field::Missing => fields
            .string("type")
            .is_some_and(|t| t.eq_ignore_ascii_case("SUPER")),
        Field::Invalid => {
            errors.push(ErrorItem::new(
                "INVALID_REQUEST",
                "admin must be true or false.",
            ));
            false
        }
    };
    if !errors.is_empty() {
        return Err(ServiceError::User(errors));
    }
    // An empty hash matches no password (`verify_password` rejects it).
    let hash = match password {
        Some(p) => state.hashing.hash(p).await.map_err(hashing_busy)??,
        None => String::new(),
    };
    let first_name = fields.string("firstName").unwrap_or_default();
    let last_name = fields.string("lastName").unwrap_or_default();
    let email = fields.string("emailAddress").unwrap_or_default();
    let audit = event(&me.0, &req, actions::USER_CREATE)
        .detail("loginName", login.clone())
        .detail("firstName", first_name.clone())
        .detail("lastName", last_name.clone())
        .detail("emailAddress", email.clone())
        .detail("admin", admin)
        .detail("passwordSet", !hash.is_empty());
    let id = state
        .db
        .write(move |tx| {
            let new_user = store::users::NewUser {
                login_name: &login,
                first_name: &first_name,
                last_name: &last_name,
                email_address: &email,
                admin,
                password_hash: &hash,
            };
            service::users::create(tx, &new_user, audit, now_ms())
        })
        .await?;
    let user = load_user(&state, id).await?;
    Ok(HttpResponse::Ok().json(view(&user, true)))
}

#[utoipa::path(put, path = "/users/{userId}", tag = "Users", operation_id = "updateUser",
    summary = "Change a user",
    description = "Admins change anyone; a user may change their own names, e-mail address and \
        password. The last admin cannot stop being one. `activityStatus` `Disabled` (admins) \
        disables the user as `DELETE` does: no more sign-ins, their sessions and API tokens end.",
    params(UserPath),
    request_body = UserChangeRequest,
    responses((status = 200, description = "The user as changed.", body = UserView)))]
async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    path: PathOf<UserPath>,
    body: web::Bytes,
) -> Result<HttpResponse, ServiceError> {
    let id = path?.user_id;
    if !me.0.admin && me.0.id != id {
        return Err(ServiceError::access_denied());
    }
    let body = json_object(&body, false)?;
    let fields = Fields::new(&body);
    let mut user = load_user(&state, id).await?;
    let before = user.clone();
    let mut errors = Vec::new();
    if let Some(first) = fields.string("firstName") {
        user.first_name = first;
    }
    if let Some(last) = fields.string("lastName") {
        user.last_name = last;
    }
    if let Some(email) = fields.string("emailAddress") {
        user.email_address = email;
    }
    if me.0.admin {
        if let Some(login) = fields.string("loginName") {
            user.login_name = login;
        }
        match fields.bool("admin") {
            Field::Value(v) => user.admin = v,
            Field::Missing => {}
            Field::Invalid => errors.push(ErrorItem::new(
                "INVALID_REQUEST",
                "admin must be true or false.",
            )),
        }
    } else if matches!(fields.bool("admin"), Field::Value(true)) {
        return Err(ServiceError::access_denied());
    }
    // `activityStatus`: `Active` changes nothing (only live users are found here); `Disabled` is
    // the soft delete of `DELETE /users/{id}`, for admins only.
    let disable = match body.get("activityStatus") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("Active") => false,
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("Disabled") => {
            if !me.0.admin {
                return Err(ServiceError::access_denied());
            }
            true
        }
        Some(_) => {
            errors.push(ErrorItem::new(
                "INVALID_REQUEST",
                "activityStatus must be Active or Disabled.",
            ));
            false
        }
    };
    let password = raw_password(&body);
    if let Some(p) = &password {
        errors.extend(password_problem(p));
    }
    if !errors.is_empty() {
        return Err(ServiceError::User(errors));
    }
    if password.is_some() {
        refuse_directory_account(&state, id).await?;
    }
    let hash = match password {
        Some(p) => Some(state.hashing.hash(p).await.map_err(hashing_busy)??),
        None => None,
    };
    let saved = user.clone();
    // Changing one's own password keeps the session it was changed in; every other session of the
    // user ends (an admin's reset ends them all).
    let keep_session = (me.0.id == id)
        .then(|| request_token(&req).map(|t| token_hash(&t)))
        .flatten();
    let changes = profile_changes(&before, &user);
    let updated = (!changes.is_empty()).then(|| {
        event(&me.0, &req, actions::USER_UPDATE)
            .object("USER", id)
            .detail("changes", Value::Object(changes))
    });
    let password_changed = hash
        .is_some()
        .then(|| event(&me.0, &req, actions::USER_PASSWORD_CHANGE).object("USER", id));
    let disabled = disable.then(|| {
        event(&me.0, &req, actions::USER_DISABLE)
            .object("USER", id)
            .detail("loginName", user.login_name.clone())
    });
    state
        .db
        .write(move |tx| -> Result<_, ServiceError> {
            let now = now_ms();
            service::users::save_profile(tx, &saved, updated.as_ref(), now)?;
            if let (Some(hash), Some(audit)) = (&hash, &password_changed) {
                let keep = keep_session.as_deref();
                service::users::set_password(tx, saved.id, hash, keep, audit, now)?;
            }
            if let Some(audit) = &disabled {
                service::users::disable(tx, saved.id, audit, now)?;
            }
            Ok(())
        })
        .await?;
    let mut shown = view(&user, true);
    if disable {
        shown.activity_status = Some("Disabled");
    }
    Ok(HttpResponse::Ok().json(shown))
}

#[utoipa::path(put, path = "/users/password", tag = "Users", operation_id = "changePassword",
    summary = "Change a password (OpenSpecimen's call)",
    description = "Admins set any user's password without the old one; changing one's own \
        password needs `oldPassword` (`USER_INVALID_OLD_PASSWD`). Answers `true`.",
    request_body = PasswordChangeRequest,
    responses((status = 200, description = "Changed.", body = bool)))]
/// `PUT /users/password` `{"userId", "oldPassword"?, "newPassword"}`, answering `true` as
/// OpenSpecimen does. Admins may set another user's password without the old one; changing one's
/// own password always needs the old one.
async fn change_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    body: web::Bytes,
) -> Result<HttpResponse, ServiceError> {
    let body = json_object(&body, false)?;
    let fields = Fields::new(&body);
    let id = match fields.int("userId") {
        Field::Value(id) => id,
        Field::Missing => me.0.id,
        Field::Invalid => return Err(ServiceError::invalid_request("userId must be a user's id.")),
    };
    if !me.0.admin && me.0.id != id {
        return Err(ServiceError::access_denied());
    }
    let user = load_user(&state, id).await?;
    let new_password = body
        .get("newPassword")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if new_password.is_empty() {
        return Err(ServiceError::user(
            "USER_NEW_PASSWORD_REQUIRED",
            "New password is required.",
        ));
    }
    if let Some(problem) = password_problem(&new_password) {
        return Err(ServiceError::User(vec![problem]));
    }
    refuse_directory_account(&state, id).await?;
    if !me.0.admin || me.0.id == id {
        let old = body
            .get("oldPassword")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let login = user.login_name.clone();
        let stored = state
            .db
            .read(move |c| c.user_with_hash(&login))
            .await?
            .and_then(|(_, hash)| hash)
            .unwrap_or_default();
        let valid = !old.is_empty()
            && state
                .hashing
                .verify(old, stored)
                .await
                .map_err(hashing_busy)??;
        if !valid {
            return Err(ServiceError::user(
                "USER_INVALID_OLD_PASSWD",
                "Old password is incorrect.",
            ));
        }
    }
    let hash = state
        .hashing
        .hash(new_password)
        .await
        .map_err(hashing_busy)??;
    // As with PUT /users/{id}: the user's other sessions end; one's own change keeps this one.
    let keep_session = (me.0.id == id)
        .then(|| request_token(&req).map(|t| token_hash(&t)))
        .flatten();
    let audit = event(&me.0, &req, actions::USER_PASSWORD_CHANGE).object("USER", id);
    state
        .db
        .write(move |tx| {
            let keep = keep_session.as_deref();
            service::users::set_password(tx, id, &hash, keep, &audit, now_ms())
        })
        .await?;
    Ok(HttpResponse::Ok().json(true))
}

#[utoipa::path(delete, path = "/users/{userId}", tag = "Users", operation_id = "deleteUser",
    summary = "Disable a user (admins)",
    description = "A soft delete: the user can no longer sign in. The last admin cannot be deleted.",
    params(UserPath),
    responses((status = 200, description = "The user, `activityStatus` `Disabled`.", body = UserView)))]
async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    path: PathOf<UserPath>,
) -> Result<HttpResponse, ServiceError> {
    me.require_admin()?;
    let id = path?.user_id;
    let user = load_user(&state, id).await?;
    let audit = event(&me.0, &req, actions::USER_DISABLE)
        .object("USER", id)
        .detail("loginName", user.login_name.clone());
    state
        .db
        .write(move |tx| service::users::disable(tx, id, &audit, now_ms()))
        .await?;
    let mut shown = view(&user, true);
    shown.activity_status = Some("Disabled");
    Ok(HttpResponse::Ok().json(shown))
}

// ---- For the document only: the bodies this module reads by hand (leniently, with messages
// naming the field) or builds with `json!`. ----

/// `POST /users` (admins).
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct NewUserRequest {
    /// 1–100 characters, not starting with `$`; unique.
    #[schema(min_length = 1, max_length = 100)]
    login_name: String,
    /// At least the configured minimum length. Without it the user cannot sign in until a
    /// password is set (`PUT /users/password`), as in OpenSpecimen.
    #[schema(min_length = 1)]
    password: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    email_address: Option<String>,
    admin: Option<bool>,
    /// OpenSpecimen's user type: `SUPER` makes an admin when `admin` is absent; others are ignored.
    #[serde(rename = "type")]
    user_type: Option<String>,
}

/// `PUT /users/password`, OpenSpecimen's password change.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PasswordChangeRequest {
    /// The user whose password changes; default the caller.
    user_id: Option<i64>,
    /// Required unless an admin changes another user's password.
    old_password: Option<String>,
    #[schema(min_length = 1)]
    new_password: String,
}

/// `PUT /users/{userId}`: the fields to change. Admins may change anyone's; a user may change
/// their own names, e-mail address and password, but not `loginName` or `admin`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct UserChangeRequest {
    login_name: Option<String>,
    password: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    email_address: Option<String>,
    admin: Option<bool>,
    /// `Disabled` (admins): the soft delete of `DELETE /users/{userId}`. `Active` changes nothing.
    #[schema(examples("Disabled"))]
    activity_status: Option<String>,
}
