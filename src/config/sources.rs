//! What a data source setting (`[query_sources]`) means: a SQLite file, or a `postgres://` URL that
//! is parsed here without ever being repeated (it may hold a password); and the demo database's
//! file name. The settings check them when loaded; `query` builds the sources from them.

/// File name of the demo database in the data directory (the `lab` source's default).
pub const DEMO_FILE: &str = "lab.db";

/// Whether a data source's setting is a PostgreSQL URL rather than a SQLite file.
pub fn is_postgres_url(text: &str) -> bool {
    let lower = text.get(..13).unwrap_or(text).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// Parses a `postgres://` URL without ever repeating it (it may hold a password).
pub fn parse_url(url: &str) -> Result<postgres::Config, String> {
    let config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
        // The crate's parse errors name the option, never its value; still, hide any password.
        let message = e.to_string();
        match password_in_url(url) {
            Some(pw) if !pw.is_empty() => message.replace(&pw, "***"),
            _ => message,
        }
    })?;
    if config.get_hosts().is_empty() {
        return Err("the URL names no host".into());
    }
    if config.get_dbname().is_none() {
        return Err("the URL names no database (postgres://user@host:5432/DATABASE)".into());
    }
    if config.get_user().is_none() {
        return Err("the URL names no user (postgres://USER@host:5432/database)".into());
    }
    if config.get_ssl_mode() == postgres::config::SslMode::Require {
        return Err("sslmode=require is not supported yet (labcron connects without TLS)".into());
    }
    Ok(config)
}

/// The password part of a URL, percent-decoded, to hide it from messages.
fn password_in_url(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let pw = parsed.password()?;
    Some(percent_decode(pw).unwrap_or_else(|| pw.to_string()))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_recognised_and_checked_without_being_repeated() {
        assert!(is_postgres_url("postgres://u@h/db"));
        assert!(is_postgres_url("PostgreSQL://u@h/db"));
        assert!(!is_postgres_url("lab.db"));
        assert!(!is_postgres_url("/srv/postgres/x.db"));
        parse_url("postgres://reader:s3cret@db.lab:5433/lims").unwrap();
        for (url, says) in [
            ("postgres://reader@db.lab", "no database"),
            ("postgres://db.lab/lims", "no user"),
            (
                "postgres://reader:s3cret@db.lab/lims?sslmode=require",
                "sslmode",
            ),
            ("postgres://reader:s3cret@db.lab:notaport/lims", ""),
        ] {
            let err = parse_url(url).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("s3cret"), "{url}: {err}");
        }
    }
}
