//! The SQL text of a saved query on a PostgreSQL source, read just enough to find its named
//! parameters: `:name` outside string literals, quoted identifiers, dollar-quoted bodies and
//! comments becomes PostgreSQL's positional `$n` (the same name, the same `n`), so values are sent
//! as real bind parameters and never pasted into the SQL. `::type` casts are not parameters;
//! positional `$1` of the user's own is refused (it could not be filled by name). A final `;`
//! (and anything but comments and spaces after it) is dropped, so the statement can be wrapped.

/// A saved query's SQL ready for PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSql {
    /// The SQL with `$1`, `$2` … in place of the named parameters, without a final `;`.
    pub text: String,
    /// The parameter names (without `:`), `names[i]` being `$i+1`.
    pub names: Vec<String>,
}

fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn ident_char(b: u8) -> bool {
    ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Rewrites `sql`'s named parameters as positional ones.
pub fn rewrite(sql: &str) -> Result<PgSql, String> {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 16);
    let mut names: Vec<String> = Vec::new();
    // Where significant text ends in `out` (comments and spaces after it are not significant).
    let mut significant_end = 0;
    let mut copied = 0; // bytes of `sql` already in `out`
    let mut i = 0;
    let mut prev_ident = false; // the byte before `i` belongs to an identifier or number
    while i < bytes.len() {
        let b = bytes[i];
        let start = i;
        match b {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = memchr::memchr(b'\n', &bytes[i..]).map_or(bytes.len(), |n| i + n);
                out.push_str(&sql[copied..i]);
                copied = i;
                prev_ident = false;
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                // Comments nest in PostgreSQL.
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                if depth > 0 {
                    return Err("a /* comment is not closed".into());
                }
                out.push_str(&sql[copied..i]);
                copied = i;
                prev_ident = false;
                continue;
            }
            b'\'' => {
                // E'…' strings take backslash escapes; others only double the quote.
                let escapes = start > 0
                    && matches!(bytes[start - 1], b'e' | b'E')
                    && (start < 2 || !ident_char(bytes[start - 2]));
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err("a string literal ('…') is not closed".into()),
                        Some(b'\\') if escapes => i += 2,
                        Some(b'\'') if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                        Some(b'\'') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            b'"' => {
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err("a quoted identifier (\"…\") is not closed".into()),
                        Some(b'"') if bytes.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            b'$' if !prev_ident => {
                let mut j = i + 1;
                if bytes.get(j).is_some_and(|c| c.is_ascii_digit()) {
                    return Err(
                        "positional parameters ($1) cannot be filled; use named ones such as :from"
                            .into(),
                    );
                }
                while bytes
                    .get(j)
                    .is_some_and(|&c| ident_start(c) || c.is_ascii_digit())
                {
                    j += 1;
                }
                if bytes.get(j) == Some(&b'$') {
                    // A dollar-quoted body: up to the same tag.
                    let tag = &sql[i..=j];
                    match sql[j + 1..].find(tag) {
                        Some(n) => i = j + 1 + n + tag.len(),
                        None => return Err(format!("a {tag}-quoted string is not closed")),
                    }
                } else {
                    i = j.max(i + 1);
                }
            }
            b':' if bytes.get(i + 1) == Some(&b':') => i += 2,
            b':' if bytes.get(i + 1).is_some_and(|&c| ident_start(c)) => {
                let mut j = i + 1;
                while bytes
                    .get(j)
                    .is_some_and(|&c| ident_start(c) || c.is_ascii_digit())
                {
                    j += 1;
                }
                let name = &sql[i + 1..j];
                let n = match names.iter().position(|x| x == name) {
                    Some(p) => p + 1,
                    None => {
                        names.push(name.to_string());
                        names.len()
                    }
                };
                out.push_str(&sql[copied..i]);
                out.push('$');
                out.push_str(itoa::Buffer::new().format(n));
                copied = j;
                significant_end = out.len();
                i = j;
                prev_ident = true;
                continue;
            }
            b';' => {
                out.push_str(&sql[copied..i]);
                let rest = &sql[i + 1..];
                let only_comments = rewrite(rest)
                    .map(|r| r.text.is_empty() && r.names.is_empty())
                    .unwrap_or(false);
                if only_comments {
                    out.truncate(significant_end);
                    return Ok(PgSql { text: out, names });
                }
                return Err(
                    "only one statement is allowed (remove everything after the first `;`)".into(),
                );
            }
            c if c.is_ascii_whitespace() => {
                i += 1;
                out.push_str(&sql[copied..i]);
                copied = i;
                prev_ident = false;
                continue;
            }
            _ => {
                // A whole character, so `i` stays on a character boundary.
                i += 1;
                while bytes.get(i).is_some_and(|&c| c & 0xC0 == 0x80) {
                    i += 1;
                }
            }
        }
        prev_ident = ident_char(b) && i == start + 1;
        out.push_str(&sql[copied..i]);
        copied = i;
        significant_end = out.len();
    }
    out.push_str(&sql[copied..]);
    out.truncate(significant_end);
    Ok(PgSql { text: out, names })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(sql: &str) -> String {
        rewrite(sql).unwrap().text
    }

    #[test]
    fn named_parameters_become_positional_ones() {
        let r = rewrite("SELECT * FROM t WHERE a > :from AND b = :site OR c < :from").unwrap();
        assert_eq!(r.text, "SELECT * FROM t WHERE a > $1 AND b = $2 OR c < $1");
        assert_eq!(r.names, ["from", "site"]);
        let r = rewrite("SELECT :a::date, x::text, y:: int, arr[1:2] FROM t").unwrap();
        assert_eq!(r.text, "SELECT $1::date, x::text, y:: int, arr[1:2] FROM t");
        assert_eq!(r.names, ["a"]);
    }

    #[test]
    fn literals_identifiers_and_comments_are_left_alone() {
        for sql in [
            "SELECT ':no', 'it''s :no', E'\\' :no', \"col :no\" FROM t",
            "SELECT $$ :no $$, $tag$ :no $x$ $tag$ FROM t",
            "SELECT 1 -- :no\n",
            "SELECT /* :no /* nested :no */ still :no */ 1",
            "SELECT a$b FROM t",
        ] {
            let r = rewrite(sql).unwrap();
            assert!(r.names.is_empty(), "{sql}: {:?}", r.names);
        }
        assert_eq!(text("SELECT 'a'':b' || :c"), "SELECT 'a'':b' || $1");
        let r = rewrite("SELECT 'ü', ä, :ö FROM ünï WHERE x = :é1").unwrap();
        assert_eq!(r.text, "SELECT 'ü', ä, $1 FROM ünï WHERE x = $2");
        assert_eq!(r.names, ["ö", "é1"]);
    }

    #[test]
    fn a_final_semicolon_goes_and_a_second_statement_is_refused() {
        assert_eq!(text("SELECT 1 ;  -- done\n"), "SELECT 1");
        assert_eq!(text("SELECT 1 -- trailing"), "SELECT 1");
        assert_eq!(text("SELECT ';'"), "SELECT ';'");
        for sql in ["SELECT 1; DELETE FROM t", "SELECT 1; SELECT 2"] {
            assert!(rewrite(sql).unwrap_err().contains("one statement"), "{sql}");
        }
    }

    #[test]
    fn positional_and_unclosed_text_are_refused() {
        assert!(rewrite("SELECT $1").unwrap_err().contains("positional"));
        assert!(rewrite("SELECT 'x").unwrap_err().contains("not closed"));
        assert!(rewrite("SELECT \"x").unwrap_err().contains("not closed"));
        assert!(rewrite("SELECT $a$ x").unwrap_err().contains("not closed"));
        assert!(rewrite("SELECT /* x").unwrap_err().contains("not closed"));
    }
}
