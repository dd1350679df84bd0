//! PostgreSQL's own words for a failed call, for messages and logs: `postgres::Error` alone says
//! only "db error". One place for the ledger (`store`) and the data sources (`query`), which do not
//! know each other.

/// PostgreSQL's own message (with its detail and hint), or the client's error with its causes
/// ("error connecting to server: Connection refused (os error 111)"), without the crate's decoration.
pub fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = db.message().to_string();
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => {
            // "error connecting to server: Connection refused (os error 111)" and the like.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                let more = inner.to_string();
                if !text.contains(&more) {
                    text.push_str(&format!(": {more}"));
                }
                source = inner.source();
            }
            text
        }
    }
}
