//! Users and the `UserSummary` shape other objects embed.

use serde::Serialize;

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
