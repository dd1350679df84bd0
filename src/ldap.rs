//! Directory sign-in (issue 15): checks a login name and password against an LDAP directory
//! (OpenLDAP, Active Directory) as `[auth.ldap]` says. One connection per sign-in: bind as the
//! search account (or anonymously), find the user by `user_filter` (the login escaped per RFC
//! 4515), read the names, e-mail and admin-group membership, then bind as the user with the
//! password. The whole exchange has one deadline (`timeout_seconds`): a directory that is down or
//! silent is an `Unavailable` answer, never a hang. TLS (`ldaps://`, StartTLS) is rustls: with
//! `ca_file` only its CAs are trusted, else the system's trust store; a certificate that is not
//! trusted or not for the address's name is also `Unavailable` (with why), never "wrong password".
//! No ledger or HTTP here; `api::auth` decides.

use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};

use crate::config::LdapSettings;

/// What the directory says about a user who gave the right password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub dn: String,
    /// The entry's own login name (`login_attribute`), which names the labcron account: the
    /// directory may match the name typed without regard to case or width, the account may not
    /// take that spelling.
    pub login: String,
    pub first_name: String,
    pub last_name: String,
    pub email_address: String,
    pub admin: bool,
}

/// Why a directory sign-in did not succeed.
#[derive(Debug)]
pub enum DirectoryError {
    /// No such user, several matches, or a wrong password.
    InvalidCredentials,
    /// The directory could not be asked (down, too slow, TLS or search-account failure).
    Unavailable(String),
}

/// Escapes a value for an LDAP search filter (RFC 4515 §3): `*`, `(`, `)`, `\` and NUL become
/// `\2a`, `\28`, `\29`, `\5c` and `\00`, so a login name can only ever be a literal value.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            other => out.push(other),
        }
    }
    out
}

/// The user filter with `{login}` replaced by the escaped login name.
pub fn user_filter(settings: &LdapSettings, login: &str) -> String {
    settings
        .user_filter
        .replace("{login}", &escape_filter_value(login))
}

/// Checks `login` and `password` against the directory within `timeout_seconds`.
pub async fn authenticate(
    settings: &LdapSettings,
    login: &str,
    password: &str,
) -> Result<DirectoryUser, DirectoryError> {
    // An empty password is an "unauthenticated bind" that many directories accept (RFC 4513
    // §5.1.2): it must never count as a sign-in.
    if password.is_empty() || login.is_empty() {
        return Err(DirectoryError::InvalidCredentials);
    }
    let limit = Duration::from_secs(settings.timeout_seconds);
    match tokio::time::timeout(limit, exchange(settings, login, password, limit)).await {
        Ok(result) => result,
        Err(_) => Err(DirectoryError::Unavailable(format!(
            "the directory did not answer within {} s",
            settings.timeout_seconds
        ))),
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> DirectoryError {
    DirectoryError::Unavailable(format!("{what}: {e}"))
}

/// LDAP result code 49: invalidCredentials.
const INVALID_CREDENTIALS: u32 = 49;

async fn exchange(
    settings: &LdapSettings,
    login: &str,
    password: &str,
    limit: Duration,
) -> Result<DirectoryUser, DirectoryError> {
    let mut conn_settings = LdapConnSettings::new()
        .set_conn_timeout(limit)
        .set_starttls(settings.start_tls);
    if let Some(config) = tls_config(settings)? {
        conn_settings = conn_settings.set_config(config);
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(conn_settings, settings.url.trim())
        .await
        .map_err(|e| connect_error(settings, e))?;
    ldap3::drive!(conn);
    ldap.with_timeout(limit);

    let bind_password = settings
        .bind_password()
        .map_err(|e| unavailable("the search account's password", e))?;
    if !settings.bind_dn.is_empty() {
        ldap.simple_bind(&settings.bind_dn, &bind_password)
            .await
            .and_then(|r| r.success())
            .map_err(|e| unavailable("the search account cannot bind", e))?;
    }
    let attributes = vec![
        settings.login_attribute.as_str(),
        settings.first_name_attribute.as_str(),
        settings.last_name_attribute.as_str(),
        settings.email_attribute.as_str(),
        "memberOf",
    ];
    let (entries, _) = ldap
        .search(
            &settings.user_search_base,
            Scope::Subtree,
            &user_filter(settings, login),
            attributes,
        )
        .await
        .and_then(|r| r.success())
        .map_err(|e| unavailable("the user search failed", e))?;
    if entries.len() != 1 {
        if entries.len() > 1 {
            tracing::warn!(
                matches = entries.len(),
                "directory sign-in: the user filter matches more than one entry; refused"
            );
        }
        let _ = ldap.unbind().await;
        return Err(DirectoryError::InvalidCredentials);
    }
    let Some(entry) = entries.into_iter().next().map(SearchEntry::construct) else {
        return Err(DirectoryError::InvalidCredentials);
    };
    let first = |name: &str| {
        entry
            .attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.first().cloned())
            .unwrap_or_default()
    };
    let directory_login = first(&settings.login_attribute);
    if directory_login.trim().is_empty() {
        tracing::warn!(
            attribute = %settings.login_attribute,
            "directory sign-in: the user's entry has no login attribute; refused"
        );
        let _ = ldap.unbind().await;
        return Err(DirectoryError::InvalidCredentials);
    }
    let admin = is_admin(settings, &mut ldap, &entry, &directory_login).await?;
    let user = DirectoryUser {
        dn: entry.dn.clone(),
        login: directory_login,
        first_name: first(&settings.first_name_attribute),
        last_name: first(&settings.last_name_attribute),
        email_address: first(&settings.email_attribute),
        admin,
    };
    // Last, the password itself: a bind as the user.
    let bound = ldap.simple_bind(&user.dn, password).await;
    let _ = ldap.unbind().await;
    match bound {
        Ok(result) if result.rc == 0 => Ok(user),
        Ok(result) if result.rc == INVALID_CREDENTIALS => Err(DirectoryError::InvalidCredentials),
        // Other refusals (a locked or expired account on Active Directory, …) are not a sign-in.
        Ok(result) => {
            tracing::info!(rc = result.rc, text = %result.text, "directory refused the user's bind");
            Err(DirectoryError::InvalidCredentials)
        }
        Err(e) => Err(unavailable("the user's bind failed", e)),
    }
}

/// The TLS client configuration when `ca_file` is set: those CAs, and only those, are the roots.
/// Only them, not them added to the system's store: the file names who signs the directory's
/// certificate, and trusting every public CA as well would let any of them vouch for the
/// directory's name. Without `ca_file`, ldap3's default is used: the system's store (rustls-
/// native-certs: `/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`; ldap3 trusts nothing if
/// reading it reports any error). Either way the server's
/// certificate must be valid for the host of `url`; there is no switch to skip that check.
fn tls_config(
    settings: &LdapSettings,
) -> Result<Option<Arc<rustls::ClientConfig>>, DirectoryError> {
    let Some(roots) = settings
        .ca_roots()
        .map_err(|e| DirectoryError::Unavailable(format!("{e:#}")))?
    else {
        return Ok(None);
    };
    // ring named here, as ldap3 and the rest of the binary use it, rather than rustls' process
    // default, which would be ambiguous if another provider were ever linked in.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| unavailable("TLS set-up", e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

/// A failed connection, said plainly when it is the TLS handshake that failed (the certificate
/// not trusted, not for this name, expired, …): that is what an operator must fix.
fn connect_error(settings: &LdapSettings, e: ldap3::LdapError) -> DirectoryError {
    let tls = match &e {
        ldap3::LdapError::Io { source } => source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    match tls {
        Some(rustls::Error::InvalidCertificate(why)) => {
            let why = match why {
                rustls::CertificateError::UnknownIssuer => {
                    "it is not signed by a trusted CA (UnknownIssuer)".to_string()
                }
                other => other.to_string(),
            };
            let trusted = if settings.ca_file.is_empty() {
                "the system's trust store (set `auth.ldap.ca_file` to the CA that signs it)".into()
            } else {
                format!("`auth.ldap.ca_file` {}", settings.ca_file)
            };
            DirectoryError::Unavailable(format!(
                "the directory's TLS certificate is not accepted: {why}; trusted: {trusted}"
            ))
        }
        Some(other) => unavailable("TLS with the directory failed", other),
        None => unavailable("cannot connect to the directory", e),
    }
}

/// Membership of `admin_group`: the user's `memberOf` (Active Directory, OpenLDAP's memberof
/// overlay), else the group entry naming the user (`member`, `uniqueMember`, or `memberUid`).
async fn is_admin(
    settings: &LdapSettings,
    ldap: &mut ldap3::Ldap,
    entry: &SearchEntry,
    login: &str,
) -> Result<bool, DirectoryError> {
    let group = settings.admin_group.trim();
    if group.is_empty() {
        return Ok(false);
    }
    let listed = entry
        .attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("memberOf"))
        .flat_map(|(_, v)| v)
        .any(|dn| dn.eq_ignore_ascii_case(group));
    if listed {
        return Ok(true);
    }
    let dn = escape_filter_value(&entry.dn);
    let uid = escape_filter_value(login);
    let filter = format!("(|(member={dn})(uniqueMember={dn})(memberUid={uid}))");
    match ldap.search(group, Scope::Base, &filter, vec!["1.1"]).await {
        Ok(result) => match result.success() {
            Ok((entries, _)) => Ok(!entries.is_empty()),
            // 32 noSuchObject: the group does not exist; nobody is an admin by it.
            Err(ldap3::LdapError::LdapResult { result }) if result.rc == 32 => {
                tracing::warn!(group, "directory sign-in: admin_group does not exist");
                Ok(false)
            }
            Err(e) => Err(unavailable("the admin group search failed", e)),
        },
        Err(e) => Err(unavailable("the admin group search failed", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_escaped_per_rfc_4515() {
        assert_eq!(escape_filter_value("alice"), "alice");
        assert_eq!(escape_filter_value("*"), "\\2a");
        assert_eq!(escape_filter_value("a*)(uid=*"), "a\\2a\\29\\28uid=\\2a");
        assert_eq!(escape_filter_value("back\\slash"), "back\\5cslash");
        assert_eq!(escape_filter_value("nul\0byte"), "nul\\00byte");
        assert_eq!(escape_filter_value("*()\\\0"), "\\2a\\28\\29\\5c\\00");
        // Non-ASCII stays as UTF-8 (RFC 4515 allows it unescaped).
        assert_eq!(escape_filter_value("jürgen"), "jürgen");
        let settings = LdapSettings {
            user_filter: "(&(objectClass=person)(uid={login}))".into(),
            ..LdapSettings::default()
        };
        assert_eq!(
            user_filter(&settings, "x)(|(uid=*"),
            "(&(objectClass=person)(uid=x\\29\\28|\\28uid=\\2a))"
        );
    }

    #[tokio::test]
    async fn empty_passwords_never_reach_the_directory() {
        let settings = LdapSettings {
            // Nothing listens here; an empty password must fail before any connection.
            url: "ldap://127.0.0.1:9".into(),
            user_search_base: "dc=x".into(),
            ..LdapSettings::default()
        };
        assert!(matches!(
            authenticate(&settings, "alice", "").await,
            Err(DirectoryError::InvalidCredentials)
        ));
        assert!(matches!(
            authenticate(&settings, "alice", "pw").await,
            Err(DirectoryError::Unavailable(_))
        ));
    }
}
