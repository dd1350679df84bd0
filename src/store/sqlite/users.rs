//! SQL for users: lookup, listing, creation, updates and soft deletion. Login names are compared
//! by their normal form (`domain::user::login_key`), which each row keeps in `login_key` under a
//! unique index; the functions here take a login name as given and key it themselves, so no
//! caller can compare another way.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::Error;
use crate::domain::user::{SYSTEM_LOGIN, User, login_key};

const COLUMNS: &str = "id, login_name, first_name, last_name, email_address, admin, is_system, activity_status, created_at";

fn map_user(row: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        login_name: row.get(1)?,
        first_name: row.get(2)?,
        last_name: row.get(3)?,
        email_address: row.get(4)?,
        admin: row.get::<_, i64>(5)? != 0,
        is_system: row.get::<_, i64>(6)? != 0,
        active: row.get::<_, String>(7)? == "Active",
        created_at: row.get(8)?,
    })
}

pub fn get(conn: &Connection, id: i64) -> Result<Option<User>, Error> {
    // Every signed-in request reads its user: a cached statement spares parsing it each time.
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE id = ?1"))?
        .query_row([id], map_user)
        .optional()?)
}

/// A user with their password hash, by login name (any spelling with the same key), for sign-in.
pub fn get_with_hash(
    conn: &Connection,
    login_name: &str,
) -> Result<Option<(User, Option<String>)>, Error> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS}, password_hash FROM users WHERE login_key = ?1"),
            [login_key(login_name)],
            |row| Ok((map_user(row)?, row.get::<_, Option<String>>(9)?)),
        )
        .optional()?)
}

/// Where a user signs in: `LOCAL` (a password here) or `LDAP` (the directory), by login name.
pub fn source_by_login(conn: &Connection, login_name: &str) -> Result<Option<String>, Error> {
    Ok(conn
        .prepare_cached("SELECT source FROM users WHERE login_key = ?1")?
        .query_row([login_key(login_name)], |r| r.get(0))
        .optional()?)
}

/// Where a user signs in, by id.
pub fn source(conn: &Connection, id: i64) -> Result<Option<String>, Error> {
    Ok(conn
        .prepare_cached("SELECT source FROM users WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// A directory user's account after a successful directory sign-in: made at the first (source
/// LDAP, no password), its names, e-mail and admin flag refreshed at each. `None` when the login
/// name belongs to a local account (the two may not share a name) or a disabled one.
pub fn upsert_directory_user(
    conn: &Connection,
    login_name: &str,
    first_name: &str,
    last_name: &str,
    email_address: &str,
    admin: bool,
    now: i64,
) -> Result<Option<User>, Error> {
    match source_by_login(conn, login_name)?.as_deref() {
        None => {
            conn.execute(
                "INSERT INTO users (login_name, first_name, last_name, email_address, admin, password_hash, created_at, source, login_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, 'LDAP', ?7)",
                params![login_name, first_name, last_name, email_address, admin, now, login_key(login_name)],
            )?;
        }
        Some("LDAP") => {
            conn.execute(
                "UPDATE users SET first_name = ?2, last_name = ?3, email_address = ?4, admin = ?5
                 WHERE login_key = ?1 AND source = 'LDAP'",
                params![
                    login_key(login_name),
                    first_name,
                    last_name,
                    email_address,
                    admin
                ],
            )?;
        }
        Some(_) => return Ok(None),
    }
    Ok(get_with_hash(conn, login_name)?
        .map(|(u, _)| u)
        .filter(|u| u.active && !u.is_system))
}

/// Active, non-system users, ordered by id.
pub fn list(conn: &Connection) -> Result<Vec<User>, Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM users WHERE is_system = 0 AND activity_status = 'Active' ORDER BY id"
    ))?;
    let users = stmt
        .query_map([], map_user)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(users)
}

/// Ids of `ids` that are not active users (the system user counts as missing).
pub fn missing_ids(conn: &Connection, ids: &[i64]) -> Result<Vec<i64>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT 1 FROM users WHERE id = ?1 AND is_system = 0 AND activity_status = 'Active'",
    )?;
    let mut missing = Vec::new();
    for id in ids {
        if !stmt.exists([id])? {
            missing.push(*id);
        }
    }
    Ok(missing)
}

pub fn system_user_id(conn: &Connection) -> Result<i64, Error> {
    Ok(conn.query_row(
        "SELECT id FROM users WHERE login_name = ?1",
        [SYSTEM_LOGIN],
        |r| r.get(0),
    )?)
}

pub struct NewUser<'a> {
    pub login_name: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email_address: &'a str,
    pub admin: bool,
    pub password_hash: &'a str,
}

/// Inserts a user; `None` when the login name is taken.
pub fn insert(conn: &Connection, user: &NewUser, now: i64) -> Result<Option<i64>, Error> {
    if login_taken(conn, user.login_name, None)? {
        return Ok(None);
    }
    conn.execute(
        "INSERT INTO users (login_name, first_name, last_name, email_address, admin, password_hash, created_at, login_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![user.login_name, user.first_name, user.last_name, user.email_address, user.admin, user.password_hash, now, login_key(user.login_name)],
    )?;
    Ok(Some(conn.last_insert_rowid()))
}

pub fn login_taken(
    conn: &Connection,
    login_name: &str,
    except_id: Option<i64>,
) -> Result<bool, Error> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM users WHERE login_key = ?1 AND id IS NOT ?2")?
        .exists(params![login_key(login_name), except_id])?)
}

pub fn update_profile(conn: &Connection, user: &User) -> Result<(), Error> {
    conn.execute(
        "UPDATE users SET login_name = ?2, first_name = ?3, last_name = ?4, email_address = ?5, admin = ?6,
                          login_key = ?7
         WHERE id = ?1",
        params![user.id, user.login_name, user.first_name, user.last_name, user.email_address, user.admin, login_key(&user.login_name)],
    )?;
    Ok(())
}

/// Sets a user's password and ends their other sessions (all of them, or all but `keep_session`,
/// the token hash of the caller who changed their own password).
pub fn set_password_hash(
    conn: &Connection,
    id: i64,
    hash: &str,
    keep_session: Option<&str>,
) -> Result<(), Error> {
    conn.execute(
        "UPDATE users SET password_hash = ?2 WHERE id = ?1",
        params![id, hash],
    )?;
    super::sessions::delete_for_user(conn, id, keep_session)?;
    Ok(())
}

/// Soft delete: the user can no longer sign in and their sessions end.
pub fn disable(conn: &Connection, id: i64) -> Result<(), Error> {
    conn.execute(
        "UPDATE users SET activity_status = 'Disabled' WHERE id = ?1",
        [id],
    )?;
    conn.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
    Ok(())
}

pub fn count_admins(conn: &Connection) -> Result<i64, Error> {
    Ok(conn.query_row(
        "SELECT count(*) FROM users WHERE admin = 1 AND is_system = 0 AND activity_status = 'Active'",
        [],
        |r| r.get(0),
    )?)
}

/// Whether any user that can sign in exists (false only on first start).
pub fn any_login_user(conn: &Connection) -> Result<bool, Error> {
    Ok(conn
        .prepare("SELECT 1 FROM users WHERE is_system = 0")?
        .exists([])?)
}

/// Migration 8: every user gets their login key. Users by id, so when two existing names share a
/// key (`Émile` and `émile` were two accounts, SQLite's NOCASE folding ASCII only) the older
/// account keeps it and the newer one is left without: it cannot sign in until an admin gives it
/// another name. Those are returned (id, login name) to be reported; the migration never fails on
/// them.
pub fn fill_login_keys(conn: &Connection) -> Result<Vec<(i64, String)>, Error> {
    let users: Vec<(i64, String)> = conn
        .prepare("SELECT id, login_name FROM users ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut taken = std::collections::HashSet::new();
    let mut left_without = Vec::new();
    let mut set = conn.prepare("UPDATE users SET login_key = ?2 WHERE id = ?1")?;
    for (id, name) in users {
        let key = login_key(&name);
        if taken.insert(key.clone()) {
            set.execute(params![id, key])?;
        } else {
            left_without.push((id, name));
        }
    }
    Ok(left_without)
}
