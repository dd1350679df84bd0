//! `labcron user add|passwd`: manage users from the shell (e.g. to recover a lost admin password).

use anyhow::bail;

use super::open_ledger;
use crate::auth::hash_password;
use crate::clock::now_ms;
use crate::config::Settings;
use crate::domain::audit::actions;
use crate::domain::user::{login_name_problem, password_problem};
use crate::error::ServiceError;
use crate::service;
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

/// The rules of `domain::user`, as the API applies them.
fn check(problem: Option<crate::domain::errors::ErrorItem>) -> anyhow::Result<()> {
    match problem {
        Some(item) => bail!("{}", item.message),
        None => Ok(()),
    }
}

pub fn add_user(settings: &Settings, args: &NewUserArgs) -> anyhow::Result<i64> {
    check(password_problem(args.password))?;
    check(login_name_problem(args.login))?;
    let hash = hash_password(args.password)?;
    let db = open_ledger(settings)?;
    db.write_sync(|tx| {
        let user = store::users::NewUser {
            login_name: args.login,
            first_name: args.first_name,
            last_name: args.last_name,
            email_address: args.email,
            admin: args.admin,
            password_hash: &hash,
        };
        let event = audit::Event::new(&super::backup::cli_actor(), actions::USER_CREATE, None)
            .detail("loginName", args.login.trim())
            .detail("admin", args.admin)
            .detail("via", "cli");
        service::users::create(tx, &user, event, now_ms())
    })
    .map_err(super::service_error)
}

pub fn set_password(settings: &Settings, login: &str, password: &str) -> anyhow::Result<()> {
    check(password_problem(password))?;
    let hash = hash_password(password)?;
    let db = open_ledger(settings)?;
    let login = login.to_string();
    db.write_sync(|tx| {
        let user = tx
            .user_with_hash(&login)?
            .map(|(user, _)| user)
            .filter(|u| !u.is_system)
            .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("no user `{login}`")))?;
        let event = audit::Event::new(
            &super::backup::cli_actor(),
            actions::USER_PASSWORD_CHANGE,
            None,
        )
        .object("USER", user.id)
        .detail("via", "cli");
        service::users::set_password(tx, user.id, &hash, None, &event, now_ms())
    })
    .map_err(super::service_error)
}
