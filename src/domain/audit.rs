//! What the audit trail records (issue 15): the action names, and the change between two JSON views
//! of an object with secrets hidden and users by login name. Pure; the events are written by
//! `store::audit` in the transaction of the change they describe.

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
