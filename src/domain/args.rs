//! Splitting an argument string into words the way a POSIX shell splits them (quotes and
//! backslashes), with no expansion of any kind: `;`, `$(...)`, backticks and `*` stay literal
//! characters of a word. An unquoted `#` is rejected, because word splitters silently drop
//! everything after it and a user would lose arguments without a word. A NUL character is
//! rejected too: no program can receive it in an argument, so the run could only fail later.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsError {
    UnterminatedQuote,
    UnquotedHash,
    NulCharacter,
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgsError::UnterminatedQuote => write!(f, "a quote is not closed"),
            ArgsError::UnquotedHash => write!(f, "`#` must be quoted (write '#' or \\#)"),
            ArgsError::NulCharacter => write!(f, "an argument cannot contain a NUL character"),
        }
    }
}

/// Splits `text` into words. An empty or blank string gives no words.
pub fn split_args(text: &str) -> Result<Vec<String>, ArgsError> {
    if text.contains('\0') {
        return Err(ArgsError::NulCharacter);
    }
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
    // Where the last backslash stood: a backslash-newline is a line continuation, which removes
    // both and leaves the position as it was (so `\<newline>#x` starts a comment).
    let mut word_start_at_escape = false;
    for c in text.chars() {
        if escaped {
            escaped = false;
            at_word_start = c == '\n' && word_start_at_escape;
            continue;
        }
        match c {
            '\\' if !in_single => {
                escaped = true;
                word_start_at_escape = at_word_start;
            }
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
    fn a_hash_after_a_line_continuation_is_rejected() {
        // Found by tests/properties: the splitter would drop `#x` as a comment.
        assert_eq!(split_args("\\\n#x"), Err(ArgsError::UnquotedHash));
        assert_eq!(split_args("a \\\n#x"), Err(ArgsError::UnquotedHash));
        assert_eq!(split_args("a\\\n#x").unwrap(), vec!["a#x"]);
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert_eq!(split_args("'abc"), Err(ArgsError::UnterminatedQuote));
    }

    #[test]
    fn a_nul_character_is_an_error_quoted_or_not() {
        assert_eq!(split_args("a\0b"), Err(ArgsError::NulCharacter));
        assert_eq!(split_args("'a\0b'"), Err(ArgsError::NulCharacter));
    }
}
