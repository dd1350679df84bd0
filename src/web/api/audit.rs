//! `GET /audit-events` (issue 15): the audit trail, admins only, newest first, with the run list's
//! date formats and paging. No route changes or deletes an event. Also the one way handlers start
//! an event (`event`), so every event names its actor and client address alike.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::all_runs::client_tz;
use super::auth::{CurrentUser, client_addr};
use super::params::Query;
use crate::clock::now_ms;
use crate::domain::dates::{ACCEPTED_FORMATS, Bound, parse_date_param};
use crate::domain::user::User;
use crate::error::ApiError;
use crate::store;
use crate::store::audit::{Event, EventFilter, StoredEvent};
use crate::web::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/audit-events").route(web::get().to(list)));
}

/// Action names of the events (the `action` filter takes them).
pub mod actions {
    pub const SIGN_IN: &str = "SIGN_IN";
    pub const SIGN_IN_FAILED: &str = "SIGN_IN_FAILED";
    pub const SIGN_OUT: &str = "SIGN_OUT";
    pub const USER_CREATE: &str = "USER_CREATE";
    pub const USER_UPDATE: &str = "USER_UPDATE";
    pub const USER_DISABLE: &str = "USER_DISABLE";
    pub const USER_PASSWORD_CHANGE: &str = "USER_PASSWORD_CHANGE";
    pub const API_TOKEN_CREATE: &str = "API_TOKEN_CREATE";
    pub const API_TOKEN_REVOKE: &str = "API_TOKEN_REVOKE";
    pub const JOB_CREATE: &str = "JOB_CREATE";
    pub const JOB_UPDATE: &str = "JOB_UPDATE";
    pub const JOB_DELETE: &str = "JOB_DELETE";
    pub const RUN_REQUEST: &str = "RUN_REQUEST";
    pub const RUN_CANCEL: &str = "RUN_CANCEL";
    pub const RESULT_DOWNLOAD: &str = "RESULT_DOWNLOAD";
    pub const LOG_DOWNLOAD: &str = "LOG_DOWNLOAD";
    pub const SAVED_QUERY_CREATE: &str = "SAVED_QUERY_CREATE";
    pub const SAVED_QUERY_UPDATE: &str = "SAVED_QUERY_UPDATE";
    pub const SAVED_QUERY_DELETE: &str = "SAVED_QUERY_DELETE";
    pub const BACKUP_TAKEN: &str = "BACKUP_TAKEN";
    pub const BACKUP_RESTORED: &str = "BACKUP_RESTORED";
}

/// A new event by `me`, from the request's client address.
pub fn event(me: &User, req: &HttpRequest, action: &str) -> Event {
    Event::new(&me.login_name, action, Some(&client_addr(req)))
}

/// Records an event that goes with no change (a download, a sign-in): its own small write. A
/// failure is logged, never the caller's error: the read it records has already been allowed.
pub async fn record_alone(state: &AppState, event: Event) {
    let action = event.action.clone();
    if let Err(e) = state
        .db
        .write(move |tx| store::audit::record(tx, &event, now_ms()))
        .await
    {
        tracing::error!(error = ?e, action, "the audit event could not be written");
    }
}

/// Fields of a job that change by themselves (the schedule moving on) and say nothing about
/// what someone changed.
const NOT_CHANGES: &[&str] = &["nextRunOn", "lastRunOn", "isActiveJob"];

/// Fields whose values may hold a secret (a webhook address often carries a token): that they
/// changed is recorded, never their values.
const SECRET_FIELDS: &[&str] = &["webhookUrl", "password", "token", "webhookSecret"];

/// Users by login name, so an event reads well and survives the user's later renames.
fn readable(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(o) if o.contains_key("loginName") => o["loginName"].clone(),
        Value::Array(items) => Value::Array(items.iter().map(readable).collect()),
        other => other.clone(),
    }
}

/// What differs between two JSON views of an object: `{"field": {"before": …, "after": …}}`,
/// with secrets hidden.
pub fn changes(
    before: &serde_json::Value,
    after: &serde_json::Value,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::{Map, Value, json};
    let empty = Map::new();
    let (old, new) = (
        before.as_object().unwrap_or(&empty),
        after.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Map::new();
    for key in keys {
        if NOT_CHANGES.contains(&key.as_str()) {
            continue;
        }
        let (a, b) = (
            old.get(key).map(readable).unwrap_or(Value::Null),
            new.get(key).map(readable).unwrap_or(Value::Null),
        );
        if a == b {
            continue;
        }
        let entry = if SECRET_FIELDS.contains(&key.as_str()) {
            let shown = |v: &Value| {
                if v.is_null() {
                    Value::Null
                } else {
                    json!("(hidden)")
                }
            };
            json!({"before": shown(&a), "after": shown(&b)})
        } else {
            json!({"before": a, "after": b})
        };
        out.insert(key.clone(), entry);
    }
    out
}

/// One event as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventView {
    pub id: i64,
    /// Epoch milliseconds.
    pub at: i64,
    /// Login name of whoever acted (for a failed sign-in, the name that was tried).
    pub actor: String,
    /// `SIGN_IN`, `SIGN_IN_FAILED`, `SIGN_OUT`, `USER_CREATE`, `USER_UPDATE`, `USER_DISABLE`,
    /// `USER_PASSWORD_CHANGE`, `API_TOKEN_CREATE`, `API_TOKEN_REVOKE`, `JOB_CREATE`, `JOB_UPDATE`,
    /// `JOB_DELETE`, `RUN_REQUEST`, `RUN_CANCEL`, `RESULT_DOWNLOAD`, `LOG_DOWNLOAD`,
    /// `SAVED_QUERY_CREATE`, `SAVED_QUERY_UPDATE`, `SAVED_QUERY_DELETE`, `BACKUP_TAKEN`,
    /// `BACKUP_RESTORED`.
    pub action: String,
    /// `USER`, `API_TOKEN`, `JOB`, `RUN`, `SAVED_QUERY`, `LEDGER`, or null.
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    /// What changed (for updates `{"changes": {"field": {"before": …, "after": …}}}`); never a
    /// secret.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub remote_addr: Option<String>,
}

impl From<StoredEvent> for AuditEventView {
    fn from(e: StoredEvent) -> Self {
        AuditEventView {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            object_type: e.object_type,
            object_id: e.object_id,
            detail: e.detail,
            remote_addr: e.remote_addr,
        }
    }
}

async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ApiError> {
    me.require_admin()?;
    let query = Query::from_request(&req)?;
    let tz = client_tz(&state, &req)?;
    let date = |name: &str, bound: Bound| -> Result<Option<i64>, ApiError> {
        match query.text(name) {
            None => Ok(None),
            Some(text) => parse_date_param(text, tz, bound).map(Some).ok_or_else(|| {
                ApiError::invalid_request(format!(
                    "{name} `{text}` is not a date; use {ACCEPTED_FORMATS}."
                ))
            }),
        }
    };
    let text = |name: &str| query.text(name).map(str::to_string);
    let filter = EventFilter {
        from: date("fromDate", Bound::From)?,
        to: date("toDate", Bound::To)?,
        actor: text("actor"),
        action: text("action"),
        object_type: text("objectType"),
        object_id: text("objectId"),
    };
    let (start_at, max_results) = query.paging(100, 1000)?;
    let events = state
        .db
        .read(move |c| store::audit::list(c, &filter, start_at, max_results))
        .await?;
    let views: Vec<AuditEventView> = events.into_iter().map(Into::into).collect();
    Ok(HttpResponse::Ok().json(views))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_name_each_field_before_and_after_and_hide_secrets() {
        let before = json!({"name": "a", "timeoutSeconds": 60, "webhookUrl": "https://h/x?token=s1",
            "nextRunOn": 1, "recipients": [{"id": 1, "loginName": "bob"}], "same": true});
        let after = json!({"name": "b", "timeoutSeconds": 60, "webhookUrl": "https://h/x?token=s2",
            "nextRunOn": 2, "recipients": [], "same": true, "command": "x.sh"});
        let c = changes(&before, &after);
        assert_eq!(c["name"], json!({"before": "a", "after": "b"}));
        assert_eq!(c["recipients"], json!({"before": ["bob"], "after": []}));
        assert_eq!(c["command"], json!({"before": null, "after": "x.sh"}));
        assert_eq!(
            c["webhookUrl"],
            json!({"before": "(hidden)", "after": "(hidden)"})
        );
        assert!(!serde_json::to_string(&c).unwrap().contains("s2"));
        for unchanged in ["timeoutSeconds", "nextRunOn", "same"] {
            assert!(!c.contains_key(unchanged), "{unchanged}");
        }
    }
}
