//! Splitting an argument string into words the way a POSIX shell splits them (quotes and
//! backslashes), with no expansion of any kind: `;`, `$(...)`, backticks and `*` stay literal
//! characters of a word. An unquoted `#` is rejected, because word splitters silently drop
//! everything after it and a user would lose arguments without a word.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsError {
    UnterminatedQuote,
    UnquotedHash,
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgsError::UnterminatedQuote => write!(f, "a quote is not closed"),
            ArgsError::UnquotedHash => write!(f, "`#` must be quoted (write '#' or \\#)"),
        }
    }
}

/// Splits `text` into words. An empty or blank string gives no words.
pub fn split_args(text: &str) -> Result<Vec<String>, ArgsError> {
    if has_unquoted_hash(text) {
        return Err(ArgsError::UnquotedHash);
    }
    shell_words::split(text).map_err(|_| ArgsError::UnterminatedQuote)
}

/// True when a `#` starts a word outside quotes (where a shell would begin a comment).
fn has_unquoted_hash(text: &str) -> bool {
    let mut in_single = false;
    let mut in_double = false;
    let mut escaped = false;
    let mut at_word_start = true;
    for c in text.chars() {
        if escaped {
            escaped = false;
            at_word_start = false;
            continue;
        }
        match c {
            '\\' if !in_single => escaped = true,
            '\'' if !in_double => in_single = !in_single,
            '"' if !in_single => in_double = !in_double,
            '#' if !in_single && !in_double && at_word_start => return true,
            _ => {}
        }
        at_word_start = !in_single && !in_double && c.is_whitespace();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_group_words_and_metacharacters_stay_literal() {
        assert_eq!(
            split_args(r#"--out "a b.csv" 'x;y' $(id) `id` * \"q"#).unwrap(),
            vec!["--out", "a b.csv", "x;y", "$(id)", "`id`", "*", "\"q"]
        );
    }

    #[test]
    fn blank_gives_no_words() {
        assert!(split_args("   ").unwrap().is_empty());
    }

    #[test]
    fn unquoted_hash_is_rejected_quoted_or_inner_hash_is_kept() {
        assert_eq!(split_args("--tag #x"), Err(ArgsError::UnquotedHash));
        assert_eq!(split_args("#x"), Err(ArgsError::UnquotedHash));
        assert_eq!(
            split_args("'#x' \\#y a#b").unwrap(),
            vec!["#x", "#y", "a#b"]
        );
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert_eq!(split_args("'abc"), Err(ArgsError::UnterminatedQuote));
    }
}
