//! Saved queries (API.md §4): the stored `SavedQuery`, the `SavedQueryDraft` a client's body
//! becomes, its limits and its error items. Pure: compiling the SQL against its data source is
//! `query::sources`' job.

use serde_json::{Map, Value};

use super::errors::ErrorItem;
use crate::domain::input::Fields;

/// A saved query as stored in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedQuery {
    pub id: i64,
    pub title: String,
    pub sql: String,
    pub data_source: String,
    pub created_by: i64,
    pub last_modified_on: i64,
}

/// A validated body, ready to store once its SQL has compiled against its data source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedQueryDraft {
    pub title: String,
    pub sql: String,
    pub data_source: String,
}

/// The data source a saved query uses when it names none.
pub const DEFAULT_SOURCE: &str = "lab";

/// 1 to 64 letters, digits, `_`, `-` or `.`.
pub fn valid_source_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Longest accepted title.
pub const MAX_TITLE_CHARS: usize = 255;
/// Longest accepted SQL text.
pub const MAX_SQL_CHARS: usize = 100_000;

pub fn not_found() -> ErrorItem {
    ErrorItem::new("SAVED_QUERY_NOT_FOUND", "Saved query does not exist.")
}

pub fn invalid_sql(message: &str) -> ErrorItem {
    ErrorItem::new(
        "SAVED_QUERY_INVALID_SQL",
        format!("Saved query SQL is invalid: {message}."),
    )
}

pub fn invalid_data_source(message: &str) -> ErrorItem {
    ErrorItem::new(
        "SAVED_QUERY_INVALID_DATA_SOURCE",
        format!("Saved query data source is invalid: {message}."),
    )
}

/// Reads `title`, `sql` and `dataSource` (default `lab`). Returns the draft with every problem
/// that needs no disk; the SQL check against the source is the caller's (`sources::check_sql`).
pub fn parse_saved_query(body: &Map<String, Value>) -> (SavedQueryDraft, Vec<ErrorItem>) {
    let fields = Fields::new(body);
    let mut errors = Vec::new();
    let title = fields.string("title").unwrap_or_default();
    if title.is_empty() {
        errors.push(ErrorItem::new(
            "SAVED_QUERY_TITLE_REQUIRED",
            "Saved query title is required.",
        ));
    } else if title.chars().count() > MAX_TITLE_CHARS {
        errors.push(ErrorItem::new(
            "SAVED_QUERY_TITLE_TOO_LONG",
            format!("Saved query title must be at most {MAX_TITLE_CHARS} characters."),
        ));
    }
    let sql = fields.string("sql").unwrap_or_default();
    if sql.is_empty() {
        errors.push(ErrorItem::new(
            "SAVED_QUERY_SQL_REQUIRED",
            "Saved query SQL is required.",
        ));
    } else if sql.chars().count() > MAX_SQL_CHARS {
        errors.push(invalid_sql(&format!(
            "it is longer than {MAX_SQL_CHARS} characters"
        )));
    }
    let data_source = fields
        .string("dataSource")
        .unwrap_or_else(|| DEFAULT_SOURCE.to_string());
    (
        SavedQueryDraft {
            title,
            sql,
            data_source,
        },
        errors,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> (SavedQueryDraft, Vec<String>) {
        let (draft, errors) = parse_saved_query(body.as_object().unwrap());
        (draft, errors.into_iter().map(|e| e.code).collect())
    }

    #[test]
    fn source_names_are_short_plain_words() {
        assert!(valid_source_name("lab-2.b_c"));
        assert!(!valid_source_name(""));
        assert!(!valid_source_name("a b"));
        assert!(!valid_source_name("../x"));
    }

    #[test]
    fn bodies_are_trimmed_and_default_to_the_lab_source() {
        let (draft, errors) =
            parse(json!({"title": "  Weekly  ", "sql": " SELECT 1 ", "extra": 1}));
        assert!(errors.is_empty());
        assert_eq!(
            draft,
            SavedQueryDraft {
                title: "Weekly".into(),
                sql: "SELECT 1".into(),
                data_source: "lab".into()
            }
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let (_, errors) = parse(json!({"title": " ", "sql": null}));
        assert_eq!(
            errors,
            vec!["SAVED_QUERY_TITLE_REQUIRED", "SAVED_QUERY_SQL_REQUIRED"]
        );
        let (_, errors) = parse(json!({"title": "x".repeat(256), "sql": "SELECT 1"}));
        assert_eq!(errors, vec!["SAVED_QUERY_TITLE_TOO_LONG"]);
    }
}
