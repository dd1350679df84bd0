//! Users and the `UserSummary` shape other objects embed.

use serde::Serialize;

use super::errors::ErrorItem;

#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub login_name: String,
    pub first_name: String,
    pub last_name: String,
    pub email_address: String,
    pub admin: bool,
    pub is_system: bool,
    pub active: bool,
    pub created_at: i64,
}

/// `{"id","loginName","firstName","lastName","emailAddress","admin"}` as embedded in jobs and runs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserSummary {
    pub id: i64,
    pub login_name: String,
    pub first_name: String,
    pub last_name: String,
    pub email_address: String,
    pub admin: bool,
}

impl From<&User> for UserSummary {
    fn from(u: &User) -> Self {
        UserSummary {
            id: u.id,
            login_name: u.login_name.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            email_address: u.email_address.clone(),
            admin: u.admin,
        }
    }
}

/// The login name of the built-in user that runs scheduled jobs; it cannot sign in.
pub const SYSTEM_LOGIN: &str = "$system";

/// Minimum length of a password set here (API, pages or `labcron user`).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password, in bytes, set here or tried at sign-in: argon2 reads all of its input, and
/// a sign-in must not be a way to make the server hash megabytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest login name, in characters after trimming.
pub const MAX_LOGIN_CHARS: usize = 100;
/// Longest login name sign-in looks at, in bytes, before normalising it: anything longer cannot
/// be an account's (a name of `MAX_LOGIN_CHARS` characters is at most 400 bytes in UTF-8), so it
/// is refused before the throttle, the hash and the audit trail see it.
pub const MAX_SIGN_IN_LOGIN_BYTES: usize = 4 * MAX_LOGIN_CHARS;
/// Longest login key (`login_key`), in bytes: what the ledger's unique index and the sign-in
/// throttle hold at most for one name. As long as the longest name's UTF-8, so an account made
/// before the key existed (100 characters, whatever their width) still signs in; only names
/// that expand under NFKC (`ﷺ` is 18 letters) can pass it.
pub const MAX_LOGIN_KEY_BYTES: usize = MAX_SIGN_IN_LOGIN_BYTES;
/// How much of a refused login name the audit trail keeps, in characters.
pub const AUDITED_LOGIN_CHARS: usize = 64;

/// The one normal form of a login name, used wherever a name is compared: the sign-in lookup and
/// its throttle, uniqueness, accounts made from the directory, `labcron user`, imports. Trimmed,
/// then Unicode NFKC (full-width `Ｄｏｒａ` is `Dora`, the `ﬁ` ligature is `fi`), then full case
/// folding (`ZOË` is `zoë`, `straße` is `strasse`, `İpek` is `i̇pek`), then NFKC again (folding can
/// undo a composition). Both ledger engines store it (`users.login_key`), so the comparison is
/// this function's and never a database collation's (SQLite's NOCASE and PostgreSQL's `lower()`
/// under the C locale fold ASCII only).
/// Look-alike letters of other scripts (Cyrillic `а` for Latin `a`) are different names: folding
/// them would merge real names of those scripts. Invisible characters are refused in new names
/// (`login_name_problem`), so two names that look the same differ in a visible letter.
pub fn login_key(login: &str) -> String {
    use unicode_casefold::UnicodeCaseFold;
    use unicode_normalization::UnicodeNormalization;
    login
        .trim()
        .nfkc()
        .case_fold()
        .collect::<String>()
        .nfkc()
        .collect()
}

/// Characters that show nothing or reorder text: zero-width spaces and joiners, word joiners,
/// the byte-order mark, soft hyphens, bidirectional embeddings, overrides and isolates, and
/// controls. A login name holding one could pass for another name on screen.
fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// Why `login` cannot be a login name, if it cannot: 1 to 100 characters after trimming, no
/// invisible character (`is_invisible`), a normal form (`login_key`) of at most 400 bytes, and
/// not starting with `$` (reserved for built-in users such as `$system`).
pub fn login_name_problem(login: &str) -> Option<ErrorItem> {
    let login = login.trim();
    if login.is_empty() {
        return Some(ErrorItem::new(
            "USER_LOGIN_NAME_REQUIRED",
            "Login name is required.",
        ));
    }
    if login.chars().any(is_invisible) {
        return Some(ErrorItem::new(
            "USER_INVALID_LOGIN_NAME",
            "Login name must not contain invisible characters (control, zero-width or text-direction characters).",
        ));
    }
    (login.chars().count() > MAX_LOGIN_CHARS
        || login.starts_with('$')
        || login_key(login).len() > MAX_LOGIN_KEY_BYTES)
        .then(|| {
            ErrorItem::new(
                "USER_INVALID_LOGIN_NAME",
                format!("Login name must be 1–{MAX_LOGIN_CHARS} characters and not start with $."),
            )
        })
}

/// The login name as sign-in may look it up, or why it is refused before anything else (the
/// throttle, the hash, the audit trail): too long to be any account's.
pub fn sign_in_login_key(login: &str) -> Result<String, ErrorItem> {
    let too_long = || {
        ErrorItem::new(
            "AUTH_CREDENTIALS_TOO_LONG",
            format!(
                "The login name is longer than any account's ({MAX_LOGIN_CHARS} characters at most)."
            ),
        )
    };
    if login.trim().len() > MAX_SIGN_IN_LOGIN_BYTES {
        return Err(too_long());
    }
    let key = login_key(login);
    if key.len() > MAX_LOGIN_KEY_BYTES {
        return Err(too_long());
    }
    Ok(key)
}

/// Whether a password tried at sign-in is too long to be anyone's (`MAX_PASSWORD_BYTES`).
pub fn sign_in_password_problem(password: &str) -> Option<ErrorItem> {
    (password.len() > MAX_PASSWORD_BYTES).then(|| {
        ErrorItem::new(
            "AUTH_CREDENTIALS_TOO_LONG",
            format!(
                "The password is longer than any account's ({MAX_PASSWORD_BYTES} bytes at most)."
            ),
        )
    })
}

/// What the audit trail keeps of a refused login name: its normal form's first
/// `AUDITED_LOGIN_CHARS` characters, invisible characters shown as `\u{FFFD}`, so a failed
/// sign-in can neither fill the ledger nor write control characters into it.
pub fn audited_login(login: &str) -> String {
    login_key(login)
        .chars()
        .take(AUDITED_LOGIN_CHARS)
        .map(|c| if is_invisible(c) { '\u{FFFD}' } else { c })
        .collect()
}

/// Why `password` cannot be a password, if it cannot: at least `MIN_PASSWORD_CHARS` characters,
/// at most `MAX_PASSWORD_BYTES` bytes.
pub fn password_problem(password: &str) -> Option<ErrorItem> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Some(ErrorItem::new(
            "USER_PASSWORD_TOO_LONG",
            format!("Password must have at most {MAX_PASSWORD_BYTES} bytes."),
        ));
    }
    (password.chars().count() < MIN_PASSWORD_CHARS).then(|| {
        ErrorItem::new(
            "USER_PASSWORD_TOO_SHORT",
            format!("Password must have at least {MIN_PASSWORD_CHARS} characters."),
        )
    })
}

/// The instants before which a session is dead at a given moment: last used before
/// `idle_before` (idle too long) or signed in before `created_before` (too old).
#[derive(Debug, Clone, Copy)]
pub struct SessionCutoffs {
    pub idle_before: i64,
    pub created_before: i64,
}

impl SessionCutoffs {
    pub fn is_expired(&self, last_used_at: i64, created_at: i64) -> bool {
        last_used_at < self.idle_before || created_at < self.created_before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names_and_passwords_follow_one_rule() {
        assert!(login_name_problem("alice").is_none());
        assert_eq!(
            login_name_problem("  ").map(|e| e.code),
            Some("USER_LOGIN_NAME_REQUIRED".to_string())
        );
        for bad in ["$system", "$x", &"a".repeat(101)] {
            assert_eq!(
                login_name_problem(bad).map(|e| e.code),
                Some("USER_INVALID_LOGIN_NAME".to_string()),
                "{bad}"
            );
        }
        assert!(
            login_name_problem(&"é".repeat(100)).is_none(),
            "characters, not bytes"
        );
        assert!(password_problem("1234567").is_some());
        assert!(password_problem("12345678").is_none());
        assert_eq!(
            password_problem(&"p".repeat(MAX_PASSWORD_BYTES + 1)).map(|e| e.code),
            Some("USER_PASSWORD_TOO_LONG".to_string())
        );
        for invisible in [
            "al\u{200B}ice",
            "bob\u{202E}",
            "\u{FEFF}carol",
            "da\u{00AD}ve",
            "e\u{7}ve",
        ] {
            assert_eq!(
                login_name_problem(invisible).map(|e| e.code),
                Some("USER_INVALID_LOGIN_NAME".to_string()),
                "{invisible:?}"
            );
        }
        // Within 100 characters but expanding past 400 bytes under NFKC.
        assert!(login_name_problem(&"\u{FDFA}".repeat(20)).is_some());
        assert!(
            login_name_problem(&"\u{1F600}".repeat(100)).is_none(),
            "400 bytes"
        );
    }

    #[test]
    fn one_key_for_every_spelling_of_a_name() {
        for (spelling, key) in [
            ("  Alice\t", "alice"),
            ("ＤＯＲＡ", "dora"),
            ("Ｄｏｒａ", "dora"),
            ("dｏra", "dora"),
            ("Émile", "émile"),
            ("E\u{301}mile", "émile"),
            ("ZOË", "zoë"),
            ("STRASSE", "strasse"),
            ("straße", "strasse"),
            ("ﬁona", "fiona"),
        ] {
            assert_eq!(login_key(spelling), key, "{spelling:?}");
        }
        assert_eq!(login_key("İpek"), login_key("i\u{307}pek"));
        assert_ne!(login_key("İpek"), login_key("ipek"));
        // Look-alikes of another script stay distinct names.
        assert_ne!(login_key("\u{0430}lice"), login_key("alice"));
        for name in ["ＤＯＲＡ", "İpek", "straße", "ZOË"] {
            assert_eq!(
                login_key(&login_key(name)),
                login_key(name),
                "idempotent: {name}"
            );
        }
    }

    #[test]
    fn sign_in_refuses_names_and_passwords_no_account_can_have() {
        assert_eq!(sign_in_login_key(" Bob ").unwrap(), "bob");
        assert!(sign_in_login_key(&"a".repeat(MAX_SIGN_IN_LOGIN_BYTES + 1)).is_err());
        assert!(sign_in_login_key(&"\u{FDFA}".repeat(20)).is_err());
        assert!(sign_in_password_problem(&"p".repeat(MAX_PASSWORD_BYTES)).is_none());
        assert!(sign_in_password_problem(&"p".repeat(MAX_PASSWORD_BYTES + 1)).is_some());
        let audited = audited_login(&format!("x\u{1b}[31m{}", "y".repeat(500)));
        assert_eq!(audited.chars().count(), AUDITED_LOGIN_CHARS);
        assert!(!audited.contains('\u{1b}'));
    }
}
