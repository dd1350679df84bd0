//! Users as the API, the pages and `labcron user` change them, with one set of rules: the login
//! name and password rules of `domain::user`, unique login names, the last admin stays an admin,
//! the built-in user and directory (LDAP) accounts get no password here. Each function runs in
//! the caller's write transaction and records the caller's audit event in it. Passwords arrive
//! hashed: hashing is slow, so callers do it before the write.

use crate::domain::user::{User, login_name_problem};
use crate::error::ServiceError;
use crate::store;
use crate::store::Ledger;
use crate::store::audit::Event;

fn duplicate_login(login: &str) -> ServiceError {
    ServiceError::user(
        "USER_DUP_LOGIN_NAME",
        format!("Login name {login} is already in use."),
    )
}

/// Creates `user` (trimmed login name); `audit` is recorded with the new user's id.
pub fn create(
    tx: &dyn Ledger,
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
    let id = tx
        .insert_user(&user, now)?
        .ok_or_else(|| duplicate_login(login))?;
    tx.record_audit(&audit.object("USER", id), now)?;
    Ok(id)
}

/// Stores `user`'s profile (names, e-mail, login name, admin), refusing a taken or invalid login
/// name and taking the admin role from the last admin.
pub fn save_profile(
    tx: &dyn Ledger,
    user: &User,
    audit: Option<&Event>,
    now: i64,
) -> Result<(), ServiceError> {
    if let Some(problem) = login_name_problem(&user.login_name) {
        return Err(ServiceError::User(vec![problem]));
    }
    if tx.login_taken(&user.login_name, Some(user.id))? {
        return Err(duplicate_login(&user.login_name));
    }
    if !user.admin {
        // Two admins demoting each other at once: the second waits, then counts the first's change.
        tx.lock_admins()?;
    }
    let was_admin = tx.user(user.id)?.is_some_and(|u| u.admin);
    // A name taken meanwhile on another node (PostgreSQL) is refused by the unique index.
    tx.update_user_profile(user).map_err(|e| {
        if e.is_unique_violation() {
            duplicate_login(&user.login_name)
        } else {
            e.into()
        }
    })?;
    if was_admin && !user.admin && tx.count_admins()? == 0 {
        return Err(ServiceError::user(
            "USER_LAST_ADMIN",
            "The last admin cannot stop being an admin.",
        ));
    }
    if let Some(audit) = audit {
        tx.record_audit(audit, now)?;
    }
    Ok(())
}

/// Refuses a password for an account that signs in elsewhere: the directory keeps an LDAP user's
/// password, and the built-in user never signs in.
pub fn refuse_password_here(conn: &dyn Ledger, user_id: i64) -> Result<(), ServiceError> {
    if conn.user(user_id)?.is_some_and(|u| u.is_system) {
        return Err(ServiceError::user_not_found());
    }
    if conn.user_source(user_id)?.as_deref() == Some("LDAP") {
        return Err(ServiceError::user(
            "USER_DIRECTORY_ACCOUNT",
            "This user signs in with the directory (LDAP); change the password there.",
        ));
    }
    Ok(())
}

/// Sets `user_id`'s password hash; the user's sessions and API tokens end but `keep_session` (one's
/// own change keeps the session or token it was made with): a stolen credential must stop working
/// once the password it may have come with is changed.
pub fn set_password(
    tx: &dyn Ledger,
    user_id: i64,
    hash: &str,
    keep_session: Option<&str>,
    audit: &Event,
    now: i64,
) -> Result<(), ServiceError> {
    refuse_password_here(tx, user_id)?;
    tx.set_password_hash(user_id, hash, keep_session)?;
    tx.revoke_api_tokens_of_user(user_id, keep_session, now)?;
    tx.record_audit(audit, now)?;
    Ok(())
}

/// Disables (softly deletes) `user_id`, unless they are the last admin: no more sign-ins, and
/// their sessions and API tokens end.
pub fn disable(tx: &dyn Ledger, user_id: i64, audit: &Event, now: i64) -> Result<(), ServiceError> {
    // Two admins disabling each other at once: the second waits, then counts the first's change.
    tx.lock_admins()?;
    tx.disable_user(user_id)?;
    tx.revoke_api_tokens_of_user(user_id, None, now)?;
    tx.record_audit(audit, now)?;
    if tx.count_admins()? == 0 {
        return Err(ServiceError::user(
            "USER_LAST_ADMIN",
            "The last admin cannot be deleted.",
        ));
    }
    Ok(())
}

/// A live, ordinary user by id (not the built-in one), or `USER_NOT_FOUND`.
pub fn live_user(conn: &dyn Ledger, user_id: i64) -> Result<User, ServiceError> {
    conn.user(user_id)?
        .filter(|u| u.active && !u.is_system)
        .ok_or_else(ServiceError::user_not_found)
}
