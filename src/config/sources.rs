//! What a data source setting (`[query_sources]`) means: a SQLite file, or a `postgres://` URL
//! (taken apart by `pg_connect`, never repeated: it may hold a password); and the demo database's
//! file name. The settings check them when loaded; `query` builds the sources from them.

/// File name of the demo database in the data directory (the `lab` source's default).
pub const DEMO_FILE: &str = "lab.db";

/// Whether a data source's setting is a PostgreSQL URL rather than a SQLite file.
pub fn is_postgres_url(text: &str) -> bool {
    let lower = text.get(..13).unwrap_or(text).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_are_told_from_files() {
        assert!(is_postgres_url("postgres://u@h/db"));
        assert!(is_postgres_url("PostgreSQL://u@h/db"));
        assert!(!is_postgres_url("lab.db"));
        assert!(!is_postgres_url("/srv/postgres/x.db"));
    }
}
