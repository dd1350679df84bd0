//! Users as the API, the pages and `labcron user` change them, with one set of rules: the login
//! name and password rules of `domain::user`, unique login names, the last admin stays an admin,
//! the built-in user and directory (LDAP) accounts get no password here. Each function runs in
//! the caller's write transaction and records the caller's audit event in it. Passwords arrive
//! hashed: hashing is slow, so callers do it before the write.

use rusqlite::Connection;

use crate::domain::user::{User, login_name_problem};
use crate::error::ServiceError;
use crate::store;
use crate::store::audit::Event;

fn duplicate_login(login: &str) -> ServiceError {
    ServiceError::user(
        "USER_DUP_LOGIN_NAME",
        format!("Login name {login} is already in use."),
    )
}

/// Creates `user` (trimmed login name); `audit` is recorded with the new user's id.
pub fn create(
    tx: &Connection,
    user: &store::users::NewUser,
    audit: Event,
    now: i64,
) -> Result<i64, ServiceError> {
    let login = user.login_name.trim();
    if let Some(problem) = login_name_problem(login) {
        return Err(ServiceError::User(vec![problem]));
    }
    let user = store::users::NewUser {
        login_name: login,
        ..*user
    };
    let id = store::users::insert(tx, &user, now)?.ok_or_else(|| duplicate_login(login))?;
    store::audit::record(tx, &audit.object("USER", id), now)?;
    Ok(id)
}

/// Stores `user`'s profile (names, e-mail, login name, admin), refusing a taken or invalid login
/// name and taking the admin role from the last admin.
pub fn save_profile(
    tx: &Connection,
    user: &User,
    audit: Option<&Event>,
    now: i64,
) -> Result<(), ServiceError> {
    if let Some(problem) = login_name_problem(&user.login_name) {
        return Err(ServiceError::User(vec![problem]));
    }
    if store::users::login_taken(tx, &user.login_name, Some(user.id))? {
        return Err(duplicate_login(&user.login_name));
    }
    let was_admin = store::users::get(tx, user.id)?.is_some_and(|u| u.admin);
    store::users::update_profile(tx, user)?;
    if was_admin && !user.admin && store::users::count_admins(tx)? == 0 {
        return Err(ServiceError::user(
            "USER_LAST_ADMIN",
            "The last admin cannot stop being an admin.",
        ));
    }
    if let Some(audit) = audit {
        store::audit::record(tx, audit, now)?;
    }
    Ok(())
}

/// Refuses a password for an account that signs in elsewhere: the directory keeps an LDAP user's
/// password, and the built-in user never signs in.
pub fn refuse_password_here(conn: &Connection, user_id: i64) -> Result<(), ServiceError> {
    if store::users::get(conn, user_id)?.is_some_and(|u| u.is_system) {
        return Err(ServiceError::user_not_found());
    }
    if store::users::source(conn, user_id)?.as_deref() == Some("LDAP") {
        return Err(ServiceError::user(
            "USER_DIRECTORY_ACCOUNT",
            "This user signs in with the directory (LDAP); change the password there.",
        ));
    }
    Ok(())
}

/// Sets `user_id`'s password hash; the user's sessions end but `keep_session` (one's own change
/// keeps the session it was made in).
pub fn set_password(
    tx: &Connection,
    user_id: i64,
    hash: &str,
    keep_session: Option<&str>,
    audit: &Event,
    now: i64,
) -> Result<(), ServiceError> {
    refuse_password_here(tx, user_id)?;
    store::users::set_password_hash(tx, user_id, hash, keep_session)?;
    store::audit::record(tx, audit, now)?;
    Ok(())
}

/// Disables (softly deletes) `user_id`, unless they are the last admin.
pub fn disable(tx: &Connection, user_id: i64, audit: &Event, now: i64) -> Result<(), ServiceError> {
    store::users::disable(tx, user_id)?;
    store::audit::record(tx, audit, now)?;
    if store::users::count_admins(tx)? == 0 {
        return Err(ServiceError::user(
            "USER_LAST_ADMIN",
            "The last admin cannot be deleted.",
        ));
    }
    Ok(())
}

/// A live, ordinary user by id (not the built-in one), or `USER_NOT_FOUND`.
pub fn live_user(conn: &Connection, user_id: i64) -> Result<User, ServiceError> {
    store::users::get(conn, user_id)?
        .filter(|u| u.active && !u.is_system)
        .ok_or_else(ServiceError::user_not_found)
}
