//! Users and the `UserSummary` shape other objects embed.

use serde::Serialize;

use super::errors::ErrorItem;

#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub login_name: String,
    pub first_name: String,
    pub last_name: String,
    pub email_address: String,
    pub admin: bool,
    pub is_system: bool,
    pub active: bool,
    pub created_at: i64,
}

/// `{"id","loginName","firstName","lastName","emailAddress","admin"}` as embedded in jobs and runs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserSummary {
    pub id: i64,
    pub login_name: String,
    pub first_name: String,
    pub last_name: String,
    pub email_address: String,
    pub admin: bool,
}

impl From<&User> for UserSummary {
    fn from(u: &User) -> Self {
        UserSummary {
            id: u.id,
            login_name: u.login_name.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            email_address: u.email_address.clone(),
            admin: u.admin,
        }
    }
}

/// The login name of the built-in user that runs scheduled jobs; it cannot sign in.
pub const SYSTEM_LOGIN: &str = "$system";

/// Minimum length of a password set here (API, pages or `labcron user`).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest login name.
pub const MAX_LOGIN_CHARS: usize = 100;

/// Why `login` cannot be a login name, if it cannot: 1 to 100 characters after trimming, and not
/// starting with `$` (reserved for built-in users such as `$system`).
pub fn login_name_problem(login: &str) -> Option<ErrorItem> {
    let login = login.trim();
    if login.is_empty() {
        return Some(ErrorItem::new(
            "USER_LOGIN_NAME_REQUIRED",
            "Login name is required.",
        ));
    }
    (login.chars().count() > MAX_LOGIN_CHARS || login.starts_with('$')).then(|| {
        ErrorItem::new(
            "USER_INVALID_LOGIN_NAME",
            format!("Login name must be 1–{MAX_LOGIN_CHARS} characters and not start with $."),
        )
    })
}

/// Why `password` cannot be a password, if it cannot.
pub fn password_problem(password: &str) -> Option<ErrorItem> {
    (password.chars().count() < MIN_PASSWORD_CHARS).then(|| {
        ErrorItem::new(
            "USER_PASSWORD_TOO_SHORT",
            format!("Password must have at least {MIN_PASSWORD_CHARS} characters."),
        )
    })
}

/// The instants before which a session is dead at a given moment: last used before
/// `idle_before` (idle too long) or signed in before `created_before` (too old).
#[derive(Debug, Clone, Copy)]
pub struct SessionCutoffs {
    pub idle_before: i64,
    pub created_before: i64,
}

impl SessionCutoffs {
    pub fn is_expired(&self, last_used_at: i64, created_at: i64) -> bool {
        last_used_at < self.idle_before || created_at < self.created_before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names_and_passwords_follow_one_rule() {
        assert!(login_name_problem("alice").is_none());
        assert_eq!(
            login_name_problem("  ").map(|e| e.code),
            Some("USER_LOGIN_NAME_REQUIRED".to_string())
        );
        for bad in ["$system", "$x", &"a".repeat(101)] {
            assert_eq!(
                login_name_problem(bad).map(|e| e.code),
                Some("USER_INVALID_LOGIN_NAME".to_string()),
                "{bad}"
            );
        }
        assert!(
            login_name_problem(&"é".repeat(100)).is_none(),
            "characters, not bytes"
        );
        assert!(password_problem("1234567").is_some());
        assert!(password_problem("12345678").is_none());
    }
}
