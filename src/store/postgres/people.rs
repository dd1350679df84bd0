//! Users, their sign-in sessions and services' API tokens on PostgreSQL — the SQLite
//! implementation's meaning. Login names are compared by their normal form (`login_key`, computed
//! here from the name as given, under the unique index `users_login_key`), never by the
//! database's case mapping; a new login name is claimed by the insert itself (`ON CONFLICT DO
//! NOTHING`), so two nodes adding the same name at once make one account, not an error.

use postgres::Row;

use super::Pg;
use crate::domain::user::{SYSTEM_LOGIN, SessionCutoffs, User, login_key};
use crate::store::Error;
use crate::store::api_tokens::ApiToken;
use crate::store::audit::Event;
use crate::store::ledger::{ApiTokenLedger, AuditLedger, SessionLedger, UserLedger};
use crate::store::sessions::Session;
use crate::store::users::NewUser;

const USER_COLUMNS: &str = "id, login_name, first_name, last_name, email_address, admin, is_system, activity_status, created_at";

fn map_user(row: &Row) -> Result<User, Error> {
    Ok(User {
        id: row.try_get(0)?,
        login_name: row.try_get(1)?,
        first_name: row.try_get(2)?,
        last_name: row.try_get(3)?,
        email_address: row.try_get(4)?,
        admin: row.try_get(5)?,
        is_system: row.try_get(6)?,
        active: row.try_get::<_, String>(7)? == "Active",
        created_at: row.try_get(8)?,
    })
}

const TOKEN_COLUMNS: &str =
    "t.id, t.user_id, t.name, t.created_at, t.expires_at, t.last_used_at, t.revoked_at";

fn map_token(row: &Row) -> Result<ApiToken, Error> {
    Ok(ApiToken {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        name: row.try_get(2)?,
        created_at: row.try_get(3)?,
        expires_at: row.try_get(4)?,
        last_used_at: row.try_get(5)?,
        revoked_at: row.try_get(6)?,
    })
}

impl UserLedger for Pg<'_> {
    fn user(&self, id: i64) -> Result<Option<User>, Error> {
        self.row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"),
            &[&id],
        )?
        .as_ref()
        .map(map_user)
        .transpose()
    }

    fn user_with_hash(&self, login_name: &str) -> Result<Option<(User, Option<String>)>, Error> {
        self.row(
            &format!(
                "SELECT {USER_COLUMNS}, password_hash FROM users
                 WHERE login_key = $1"
            ),
            &[&login_key(login_name)],
        )?
        .map(|row| Ok((map_user(&row)?, row.try_get(9)?)))
        .transpose()
    }

    fn user_source_by_login(&self, login_name: &str) -> Result<Option<String>, Error> {
        Ok(self
            .row(
                "SELECT source FROM users WHERE login_key = $1",
                &[&login_key(login_name)],
            )?
            .map(|r| r.try_get(0))
            .transpose()?)
    }

    fn user_source(&self, id: i64) -> Result<Option<String>, Error> {
        Ok(self
            .row("SELECT source FROM users WHERE id = $1", &[&id])?
            .map(|r| r.try_get(0))
            .transpose()?)
    }

    fn upsert_directory_user(
        &self,
        login_name: &str,
        first_name: &str,
        last_name: &str,
        email_address: &str,
        admin: bool,
        now: i64,
    ) -> Result<Option<User>, Error> {
        // The first sign-in makes the account; when the name is taken (by an earlier sign-in,
        // or one on another node that just committed) the row is locked and read as it is.
        // Looked up first so that an existing account costs no id (a conflicting insert
        // would use one up).
        let known = self.user_source_by_login(login_name)?.is_some();
        let made = if known {
            None
        } else {
            self.row(
                "INSERT INTO users (login_name, first_name, last_name, email_address, admin,
                                password_hash, created_at, source, login_key)
             VALUES ($1, $2, $3, $4, $5, NULL, $6, 'LDAP', $7)
             ON CONFLICT (login_key) DO NOTHING RETURNING id",
                &[
                    &login_name,
                    &first_name,
                    &last_name,
                    &email_address,
                    &admin,
                    &now,
                    &login_key(login_name),
                ],
            )?
        };
        if made.is_none() {
            let source: Option<String> = self
                .row(
                    "SELECT source FROM users WHERE login_key = $1 FOR UPDATE",
                    &[&login_key(login_name)],
                )?
                .map(|r| r.try_get(0))
                .transpose()?;
            if source.as_deref() != Some("LDAP") {
                return Ok(None);
            }
            self.exec(
                "UPDATE users SET first_name = $2, last_name = $3, email_address = $4, admin = $5
                 WHERE login_key = $1 AND source = 'LDAP'",
                &[
                    &login_key(login_name),
                    &first_name,
                    &last_name,
                    &email_address,
                    &admin,
                ],
            )?;
        }
        Ok(self
            .user_with_hash(login_name)?
            .map(|(u, _)| u)
            .filter(|u| u.active && !u.is_system))
    }

    fn list_users(&self) -> Result<Vec<User>, Error> {
        self.rows(
            &format!(
                "SELECT {USER_COLUMNS} FROM users
                 WHERE NOT is_system AND activity_status = 'Active' ORDER BY id"
            ),
            &[],
        )?
        .iter()
        .map(map_user)
        .collect()
    }

    fn missing_user_ids(&self, ids: &[i64]) -> Result<Vec<i64>, Error> {
        // In the order given, repeats kept, as the SQLite implementation's loop answers.
        self.rows(
            "SELECT w.id FROM unnest($1::BIGINT[]) WITH ORDINALITY AS w (id, n)
             WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = w.id AND NOT u.is_system
                               AND u.activity_status = 'Active')
             ORDER BY w.n",
            &[&ids],
        )?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect()
    }

    fn system_user_id(&self) -> Result<i64, Error> {
        Ok(self
            .one(
                "SELECT id FROM users WHERE login_name = $1",
                &[&SYSTEM_LOGIN],
            )?
            .try_get(0)?)
    }

    fn insert_user(&self, user: &NewUser, now: i64) -> Result<Option<i64>, Error> {
        // Checked first so that a taken name costs no id; the insert checks again, so a name
        // taken meanwhile on another node (any case) is "taken" too, never a unique violation.
        if self.login_taken(user.login_name, None)? {
            return Ok(None);
        }
        Ok(self
            .row(
                "INSERT INTO users (login_name, first_name, last_name, email_address, admin,
                                    password_hash, created_at, login_key)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (login_key) DO NOTHING RETURNING id",
                &[
                    &user.login_name,
                    &user.first_name,
                    &user.last_name,
                    &user.email_address,
                    &user.admin,
                    &user.password_hash,
                    &now,
                    &login_key(user.login_name),
                ],
            )?
            .map(|r| r.try_get(0))
            .transpose()?)
    }

    fn login_taken(&self, login_name: &str, except_id: Option<i64>) -> Result<bool, Error> {
        self.exists(
            "SELECT 1 FROM users WHERE login_key = $1 AND id IS DISTINCT FROM $2",
            &[&login_key(login_name), &except_id],
        )
    }

    fn update_user_profile(&self, user: &User) -> Result<(), Error> {
        self.exec(
            "UPDATE users SET login_name = $2, first_name = $3, last_name = $4,
                 email_address = $5, admin = $6, login_key = $7
             WHERE id = $1",
            &[
                &user.id,
                &user.login_name,
                &user.first_name,
                &user.last_name,
                &user.email_address,
                &user.admin,
                &login_key(&user.login_name),
            ],
        )?;
        Ok(())
    }

    fn set_password_hash(
        &self,
        id: i64,
        hash: &str,
        keep_session: Option<&str>,
    ) -> Result<(), Error> {
        self.exec(
            "UPDATE users SET password_hash = $2 WHERE id = $1",
            &[&id, &hash],
        )?;
        self.delete_sessions_of_user(id, keep_session)?;
        Ok(())
    }

    fn disable_user(&self, id: i64) -> Result<(), Error> {
        self.exec(
            "UPDATE users SET activity_status = 'Disabled' WHERE id = $1",
            &[&id],
        )?;
        self.exec("DELETE FROM sessions WHERE user_id = $1", &[&id])?;
        Ok(())
    }

    fn count_admins(&self) -> Result<i64, Error> {
        Ok(self
            .one(
                "SELECT count(*) FROM users
                 WHERE admin AND NOT is_system AND activity_status = 'Active'",
                &[],
            )?
            .try_get(0)?)
    }

    fn lock_admins(&self) -> Result<(), Error> {
        // The rows `count_admins` counts. A second demotion waits here for the first to commit,
        // then its own count (a new statement, READ COMMITTED) sees the first one's change. NO
        // KEY UPDATE: rows that refer to a user (sessions, runs) need not wait for it.
        self.exec(
            "SELECT id FROM users
             WHERE admin AND NOT is_system AND activity_status = 'Active' FOR NO KEY UPDATE",
            &[],
        )?;
        Ok(())
    }

    fn any_login_user(&self) -> Result<bool, Error> {
        self.exists("SELECT 1 FROM users WHERE NOT is_system LIMIT 1", &[])
    }
}

impl SessionLedger for Pg<'_> {
    fn insert_session(&self, token_hash: &str, user_id: i64, now: i64) -> Result<(), Error> {
        self.exec(
            "INSERT INTO sessions (token_hash, user_id, created_at, last_used_at)
             VALUES ($1, $2, $3, $3)",
            &[&token_hash, &user_id, &now],
        )?;
        Ok(())
    }

    fn session(&self, token_hash: &str) -> Result<Option<Session>, Error> {
        self.row(
            "SELECT s.user_id, s.created_at, s.last_used_at FROM sessions s
             JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND u.activity_status = 'Active'",
            &[&token_hash],
        )?
        .map(|r| {
            Ok(Session {
                user_id: r.try_get(0)?,
                created_at: r.try_get(1)?,
                last_used_at: r.try_get(2)?,
            })
        })
        .transpose()
    }

    fn delete_sessions_of_user(&self, user_id: i64, keep: Option<&str>) -> Result<usize, Error> {
        Ok(self.exec(
            "DELETE FROM sessions WHERE user_id = $1 AND token_hash IS DISTINCT FROM $2",
            &[&user_id, &keep],
        )? as usize)
    }

    fn touch_session(&self, token_hash: &str, now: i64) -> Result<(), Error> {
        self.exec(
            "UPDATE sessions SET last_used_at = $2 WHERE token_hash = $1",
            &[&token_hash, &now],
        )?;
        Ok(())
    }

    fn delete_session(&self, token_hash: &str) -> Result<(), Error> {
        self.exec("DELETE FROM sessions WHERE token_hash = $1", &[&token_hash])?;
        Ok(())
    }

    fn delete_expired_sessions(&self, cutoffs: SessionCutoffs) -> Result<usize, Error> {
        Ok(self.exec(
            "DELETE FROM sessions WHERE last_used_at < $1 OR created_at < $2",
            &[&cutoffs.idle_before, &cutoffs.created_before],
        )? as usize)
    }
}

impl ApiTokenLedger for Pg<'_> {
    fn insert_api_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &str,
        expires_at: Option<i64>,
        now: i64,
        event: Event,
    ) -> Result<i64, Error> {
        let id: i64 = self
            .one(
                "INSERT INTO api_tokens (user_id, name, token_hash, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[&user_id, &name, &token_hash, &now, &expires_at],
            )?
            .try_get(0)?;
        self.record_audit(&event.object("API_TOKEN", id), now)?;
        Ok(id)
    }

    fn api_token(&self, id: i64) -> Result<Option<ApiToken>, Error> {
        self.row(
            &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.id = $1"),
            &[&id],
        )?
        .as_ref()
        .map(map_token)
        .transpose()
    }

    fn live_api_tokens(&self, user_id: Option<i64>) -> Result<Vec<ApiToken>, Error> {
        self.rows(
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens t
                 WHERE t.revoked_at IS NULL AND ($1::BIGINT IS NULL OR t.user_id = $1)
                 ORDER BY t.id DESC"
            ),
            &[&user_id],
        )?
        .iter()
        .map(map_token)
        .collect()
    }

    fn api_token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>, Error> {
        self.row(
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.activity_status = 'Active'"
            ),
            &[&token_hash],
        )?
        .as_ref()
        .map(map_token)
        .transpose()
    }

    fn touch_api_token(&self, id: i64, now: i64) -> Result<bool, Error> {
        Ok(self.exec(
            "UPDATE api_tokens SET last_used_at = $2
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $2::BIGINT - 60000)",
            &[&id, &now],
        )? > 0)
    }

    fn revoke_api_token(&self, id: i64, by: i64, now: i64, event: Event) -> Result<bool, Error> {
        let changed = self.exec(
            "UPDATE api_tokens SET revoked_at = $2, revoked_by = $3
             WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &now, &by],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        self.record_audit(&event.object("API_TOKEN", id), now)?;
        Ok(true)
    }

    fn revoke_api_tokens_of_user(
        &self,
        user_id: i64,
        keep: Option<&str>,
        now: i64,
    ) -> Result<usize, Error> {
        Ok(self.exec(
            "UPDATE api_tokens SET revoked_at = $3
             WHERE user_id = $1 AND revoked_at IS NULL AND token_hash IS DISTINCT FROM $2",
            &[&user_id, &keep, &now],
        )? as usize)
    }
}

/// Migration 3: every user gets their login key, as SQLite's migration 8 does
/// (`store::sqlite::users::fill_login_keys`): by id, the older of two accounts whose names share
/// a key keeps it, the newer is left without (no sign-in until an admin renames it) and is
/// returned to be reported. Never fails on such a pair.
pub(super) fn fill_login_keys(
    tx: &mut postgres::Transaction<'_>,
) -> Result<Vec<(i64, String)>, Error> {
    let users = tx.query("SELECT id, login_name FROM users ORDER BY id", &[])?;
    let mut taken = std::collections::HashSet::new();
    let mut left_without = Vec::new();
    for row in users {
        let (id, name): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
        let key = login_key(&name);
        if taken.insert(key.clone()) {
            tx.execute(
                "UPDATE users SET login_key = $2 WHERE id = $1",
                &[&id, &key],
            )?;
        } else {
            left_without.push((id, name));
        }
    }
    Ok(left_without)
}
