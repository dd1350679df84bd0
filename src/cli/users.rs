//! `labcron user add|passwd`: manage users from the shell (e.g. to recover a lost admin password).

use anyhow::bail;

use super::open_ledger;
use crate::auth::{MIN_PASSWORD_CHARS, hash_password};
use crate::clock::now_ms;
use crate::config::Settings;
use crate::store;
use crate::store::audit;

pub struct NewUserArgs<'a> {
    pub login: &'a str,
    pub admin: bool,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
    pub password: &'a str,
}

fn check_password(password: &str) -> anyhow::Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        bail!("the password must have at least {MIN_PASSWORD_CHARS} characters");
    }
    Ok(())
}

pub fn add_user(settings: &Settings, args: &NewUserArgs) -> anyhow::Result<i64> {
    check_password(args.password)?;
    if args.login.trim().is_empty() || args.login.starts_with('$') {
        bail!("`{}` is not a valid login name", args.login);
    }
    let hash = hash_password(args.password)?;
    let db = open_ledger(settings)?;
    let id = db
        .write_sync(|tx| {
            let user = store::users::NewUser {
                login_name: args.login.trim(),
                first_name: args.first_name,
                last_name: args.last_name,
                email_address: args.email,
                admin: args.admin,
                password_hash: &hash,
            };
            let id = store::users::insert(tx, &user, now_ms())?;
            if let Some(id) = id {
                let event = audit::Event::new(&super::backup::cli_actor(), "USER_CREATE", None)
                    .object("USER", id)
                    .detail("loginName", user.login_name)
                    .detail("admin", args.admin)
                    .detail("via", "cli");
                audit::record(tx, &event, now_ms())?;
            }
            Ok(id)
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    match id {
        Some(id) => Ok(id),
        None => bail!("login name `{}` is already in use", args.login),
    }
}

pub fn set_password(settings: &Settings, login: &str, password: &str) -> anyhow::Result<()> {
    check_password(password)?;
    let hash = hash_password(password)?;
    let db = open_ledger(settings)?;
    let login = login.to_string();
    let changed = db
        .write_sync(|tx| {
            let Some((user, _)) = store::users::get_with_hash(tx, &login)? else {
                return Ok(false);
            };
            if user.is_system {
                return Ok(false);
            }
            store::users::set_password_hash(tx, user.id, &hash, None)?;
            let event =
                audit::Event::new(&super::backup::cli_actor(), "USER_PASSWORD_CHANGE", None)
                    .object("USER", user.id)
                    .detail("via", "cli");
            audit::record(tx, &event, now_ms())?;
            Ok(true)
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !changed {
        bail!("no user `{login}`");
    }
    Ok(())
}
