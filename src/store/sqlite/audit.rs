//! SQL for the audit trail (issue 15): one append-only row per state change or sensitive read,
//! written by the store function that makes the change, in its transaction, so a change and its
//! event are committed together or not at all. Events are listed newest first with filters, and
//! deleted only by the retention pass; the ledger itself refuses to change one (a trigger).

use rusqlite::{Connection, Row, params};
use serde_json::{Map, Value};

use super::Error;

/// What happened, as a handler describes it before the change is made.
#[derive(Debug, Clone, Default)]
pub struct Event {
    /// The login name of whoever acted (for a failed sign-in, the name that was tried).
    pub actor: String,
    pub action: String,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    /// A JSON object; never a secret (passwords, tokens, webhook secrets).
    pub detail: Map<String, Value>,
    pub remote_addr: Option<String>,
}

impl Event {
    pub fn new(actor: &str, action: &str, remote_addr: Option<&str>) -> Event {
        Event {
            actor: actor.to_string(),
            action: action.to_string(),
            remote_addr: remote_addr.filter(|a| !a.is_empty()).map(str::to_string),
            ..Event::default()
        }
    }

    /// The object the event is about.
    pub fn object(mut self, object_type: &str, id: impl ToString) -> Event {
        self.object_type = Some(object_type.to_string());
        self.object_id = Some(id.to_string());
        self
    }

    /// One more entry of `detail`.
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.detail.insert(key.to_string(), value.into());
        self
    }
}

/// Appends an event at `at` (epoch ms).
pub fn record(conn: &Connection, event: &Event, at: i64) -> Result<i64, Error> {
    let detail = Value::Object(event.detail.clone()).to_string();
    conn.prepare_cached(
        "INSERT INTO audit_events (at, actor, action, object_type, object_id, detail, remote_addr)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        at,
        event.actor,
        event.action,
        event.object_type,
        event.object_id,
        detail,
        event.remote_addr
    ])?;
    Ok(conn.last_insert_rowid())
}

/// An event as stored.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub detail: Value,
    pub remote_addr: Option<String>,
}

fn map_event(row: &Row) -> rusqlite::Result<StoredEvent> {
    let detail: String = row.get(6)?;
    Ok(StoredEvent {
        id: row.get(0)?,
        at: row.get(1)?,
        actor: row.get(2)?,
        action: row.get(3)?,
        object_type: row.get(4)?,
        object_id: row.get(5)?,
        detail: serde_json::from_str(&detail).unwrap_or(Value::Object(Map::new())),
        remote_addr: row.get(7)?,
    })
}

/// The filters of `GET /audit-events`; every one optional.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
}

/// The audit list's statement. The page size is written in, not bound: a bound LIMIT makes
/// SQLite plan the statement again at every execution (see `runs::list_query`). Login names and
/// the other texts compare without regard to ASCII case, as sign-in does.
pub(in crate::store) fn list_query(max_results: i64) -> String {
    format!(
        "SELECT id, at, actor, action, object_type, object_id, detail, remote_addr
         FROM audit_events
         WHERE (?1 IS NULL OR at >= ?1) AND (?2 IS NULL OR at <= ?2)
           AND (?3 IS NULL OR actor = ?3 COLLATE NOCASE)
           AND (?4 IS NULL OR action = ?4 COLLATE NOCASE)
           AND (?5 IS NULL OR object_type = ?5 COLLATE NOCASE)
           AND (?6 IS NULL OR object_id = ?6)
         ORDER BY at DESC, id DESC LIMIT {max_results} OFFSET ?7"
    )
}

/// Events matching `filter`, newest first.
pub fn list(
    conn: &Connection,
    filter: &EventFilter,
    start_at: i64,
    max_results: i64,
) -> Result<Vec<StoredEvent>, Error> {
    let mut stmt = conn.prepare_cached(&list_query(max_results))?;
    let events = stmt
        .query_map(
            params![
                filter.from,
                filter.to,
                filter.actor,
                filter.action,
                filter.object_type,
                filter.object_id,
                start_at
            ],
            map_event,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(events)
}

/// Deletes up to `limit` events older than `cutoff`; returns how many (the retention pass).
pub fn delete_older_than(conn: &Connection, cutoff: i64, limit: i64) -> Result<usize, Error> {
    Ok(conn.execute(
        "DELETE FROM audit_events WHERE id IN
           (SELECT id FROM audit_events WHERE at < ?1 ORDER BY at LIMIT ?2)",
        params![cutoff, limit],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_appended_listed_newest_first_and_never_changed() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::Db::open(&dir.path().join("labcron.db")).unwrap();
        db.write(|tx| -> Result<_, Error> {
            tx.record_audit(&Event::new("alice", "SIGN_IN", Some("10.0.0.1")), 1_000)?;
            tx.record_audit(
                &Event::new("bob", "JOB_CREATE", None)
                    .object("JOB", 7)
                    .detail("name", "nightly"),
                2_000,
            )?;
            tx.record_audit(&Event::new("alice", "SIGN_OUT", None), 3_000)
        })
        .await
        .unwrap();
        let all = db
            .read(|c| c.list_audit_events(&EventFilter::default(), 0, 100))
            .await
            .unwrap();
        let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["SIGN_OUT", "JOB_CREATE", "SIGN_IN"]);
        assert_eq!(all[1].detail["name"], "nightly");
        assert_eq!(all[2].remote_addr.as_deref(), Some("10.0.0.1"));
        let filter = EventFilter {
            actor: Some("ALICE".into()),
            from: Some(2_000),
            ..EventFilter::default()
        };
        let alice = db
            .read(move |c| c.list_audit_events(&filter, 0, 100))
            .await
            .unwrap();
        assert_eq!(alice.len(), 1);
        assert_eq!(alice[0].action, "SIGN_OUT");
        let changed = db
            .write_sqlite(|tx| {
                Ok::<_, Error>(tx.execute("UPDATE audit_events SET actor = 'mallory'", [])?)
            })
            .await;
        assert!(changed.is_err(), "the ledger refuses to change an event");
        let removed = db
            .write(|tx| tx.delete_audit_events_before(2_500, 1000))
            .await
            .unwrap();
        assert_eq!(removed, 2);
    }
}
