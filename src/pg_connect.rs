//! Every connection labcron opens to PostgreSQL (the ledger's pool, the firing lock,
//! `migrate-ledger`, QUERY data sources) starts here: a `postgres://` URL is taken apart once into
//! the driver's `postgres::Config` and labcron's TLS words, libpq's `sslmode` and `sslrootcert`
//! (the driver knows only some of them, and refuses the rest), and the rustls connector that
//! `sslmode` asks for is built from them. The rules, and where labcron is stricter than libpq:
//!
//! - `disable`: plain text. `prefer` (the default, as libpq's): TLS when the server offers it,
//!   plain text when it does not; the certificate is not checked, so it keeps only a passive
//!   listener out.
//! - `require` and `verify-ca`: TLS or no connection, and the certificate must chain to a CA of
//!   `sslrootcert` (else of the system's trust store). libpq's `require` checks no certificate
//!   unless a root file exists; labcron's always does, since an unchecked certificate lets any
//!   machine in the middle read everything.
//! - `verify-full`: as `verify-ca`, and the certificate must be for the URL's host name.
//! - `sslrootcert=/path/ca.pem`: only the CAs of that file are trusted (not the system's as well);
//!   `sslrootcert=system`, or none, is the system's store. libpq's `~/.postgresql/root.crt` is not
//!   read (a service has no home worth trusting). A `sslrootcert` with a mode that checks no
//!   certificate is refused rather than silently unused.
//!
//! Messages never hold the URL's password; the CA file is read when the connector is built.
//! Nothing here knows the ledger or the data sources: the store and `query` call it.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, the modes labcron knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The mode's word in a URL.
    pub fn word(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(word: &str) -> Result<SslMode, String> {
        Ok(match word {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow is not supported (use prefer, or disable for plain text)".into(),
                );
            }
            other => {
                return Err(format!(
                    "sslmode=`{other}` is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                ));
            }
        })
    }

    /// Whether the server's certificate is checked.
    fn checks_certificate(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// Where the CAs that may sign the server's certificate come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    /// The system's trust store (`/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    System,
    /// `sslrootcert=FILE`: its PEM certificates, and only them.
    File(PathBuf),
}

/// The URL's words the driver does not take that labcron does not support either: named, so the
/// message says so instead of the driver's "unknown option".
const UNSUPPORTED: &[&str] = &[
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requiressl",
];

/// A parsed PostgreSQL URL: the driver's settings and the TLS words. No file is read.
#[derive(Debug, Clone)]
pub struct PgUrl {
    pub config: postgres::Config,
    pub mode: SslMode,
    roots: Roots,
}

impl PgUrl {
    /// Takes `url` (`postgres://user:password@host:port/db?sslmode=…&sslrootcert=…`) apart and
    /// checks that it names a host, a database and a user. Errors never repeat the password.
    pub fn parse(url: &str) -> Result<PgUrl, String> {
        let hide = |message: String| match password_in_url(url) {
            Some(pw) if !pw.is_empty() => message.replace(&pw, "***"),
            _ => message,
        };
        let (driver_url, mode, roots) = split_tls_words(url).map_err(hide)?;
        let mut config: postgres::Config = driver_url
            .parse()
            // The driver's parse errors name the option, never its value; still, hide a password.
            .map_err(|e: postgres::Error| hide(error_text(&e)))?;
        if config.get_hosts().is_empty() {
            return Err("the URL names no host".into());
        }
        if config.get_dbname().is_none() {
            return Err("the URL names no database (postgres://user@host:5432/DATABASE)".into());
        }
        if config.get_user().is_none() {
            return Err("the URL names no user (postgres://USER@host:5432/database)".into());
        }
        config.ssl_mode(match mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            // The driver then insists on TLS; the verifier below does the checking.
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                postgres::config::SslMode::Require
            }
        });
        Ok(PgUrl {
            config,
            mode,
            roots,
        })
    }

    /// `postgres://user@host:port/db` (with `?sslmode=…` when not the default), never the
    /// password: what messages show.
    pub fn shown(&self) -> String {
        let shown = shown_config(&self.config);
        if self.mode == SslMode::Prefer {
            shown
        } else {
            format!("{shown}?sslmode={}", self.mode.word())
        }
    }

    /// The connector this URL's `sslmode` asks for, reading `sslrootcert` (or the system's trust
    /// store) when the mode checks certificates.
    pub fn target(self) -> Result<PgTarget, String> {
        let tls = connector(self.mode, &self.roots)?;
        Ok(PgTarget { url: self, tls })
    }
}

/// A PostgreSQL server to connect to: the parsed URL and its TLS connector. Cheap to clone.
#[derive(Clone)]
pub struct PgTarget {
    url: PgUrl,
    tls: MakeRustlsConnect,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("url", &self.url.shown())
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// Parses `url` and builds its connector (`PgUrl::parse`, `PgUrl::target`).
    pub fn open(url: &str) -> Result<PgTarget, String> {
        PgUrl::parse(url)?.target()
    }

    /// The driver's settings (the caller may add timeouts, keepalives, a name).
    pub fn config(&self) -> &postgres::Config {
        &self.url.config
    }

    pub fn config_mut(&mut self) -> &mut postgres::Config {
        &mut self.url.config
    }

    pub fn mode(&self) -> SslMode {
        self.url.mode
    }

    /// The URL as messages show it (`PgUrl::shown`).
    pub fn shown(&self) -> String {
        self.url.shown()
    }

    /// Connects, with TLS as the URL's `sslmode` says. Blocking (the synchronous client).
    pub fn connect(&self) -> Result<postgres::Client, postgres::Error> {
        self.url.config.connect(self.tls.clone())
    }

    /// Sends the server a cancel request for `token`'s statement, over the same kind of
    /// connection as the session's (it carries the session's secret key).
    pub fn cancel(&self, token: &postgres::CancelToken) -> Result<(), postgres::Error> {
        token.cancel_query(self.tls.clone())
    }

    /// What went wrong with a connection, said so that an operator knows what to fix when it is
    /// TLS: the certificate not trusted or not for this host, or TLS not offered. Never the
    /// password (the driver's messages do not hold it).
    pub fn explain(&self, e: &postgres::Error) -> String {
        if let Some(tls) = rustls_error(e) {
            let trusted = match &self.url.roots {
                Roots::System => {
                    "the system's trust store (name the CA with sslrootcert=FILE)".to_string()
                }
                Roots::File(file) => format!("sslrootcert={}", file.display()),
            };
            return match tls {
                rustls::Error::InvalidCertificate(why) => {
                    let why = match why {
                        rustls::CertificateError::UnknownIssuer => {
                            "it is not signed by a trusted CA (UnknownIssuer)".to_string()
                        }
                        rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. } => {
                            format!("sslmode=verify-full: {why}")
                        }
                        other => other.to_string(),
                    };
                    format!(
                        "the database's TLS certificate is not accepted: {why}; trusted: {trusted}"
                    )
                }
                other => format!("TLS with the database failed: {other}"),
            };
        }
        if no_tls_offered(e) {
            return format!(
                "the database does not offer TLS, and sslmode={} needs it (turn `ssl` on in its \
                 postgresql.conf, or choose another sslmode)",
                self.url.mode.word()
            );
        }
        error_text(e)
    }
}

impl PgTarget {
    /// When TLS is why a connection failed, what went wrong in a few words that name no host and
    /// no file (for users who may not see the server's address).
    pub fn tls_refusal(e: &postgres::Error) -> Option<&'static str> {
        if let Some(tls) = rustls_error(e) {
            return Some(match tls {
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                    "the database's certificate is not signed by a trusted CA"
                }
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
                ) => "the database's certificate is not for its host name (sslmode=verify-full)",
                rustls::Error::InvalidCertificate(_) => {
                    "the database's certificate is not accepted"
                }
                _ => "the TLS handshake failed",
            });
        }
        no_tls_offered(e).then_some("the database does not offer TLS")
    }
}

/// Whether the server answered the request for TLS with no.
fn no_tls_offered(e: &postgres::Error) -> bool {
    // The driver has no kind for it, only this text (in the error's source).
    error_text(e).contains("server does not support TLS")
}

/// The whole of a driver's error: the server's message with its detail and hint, or the error
/// with its causes ("error connecting to server: Connection refused (os error 111)"), since
/// the driver's own `Display` says only "db error" or "error performing TLS handshake".
pub fn error_text(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = db.message().to_string();
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
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

/// The rustls error under a connection's error, if TLS is what failed.
fn rustls_error(e: &postgres::Error) -> Option<&rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(error) = cause {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        cause = error.source();
    }
    None
}

/// A PostgreSQL URL as messages may show it, never the password (`postgres://…` when it does not
/// parse).
pub fn shown_url(url: &str) -> String {
    PgUrl::parse(url)
        .map(|u| u.shown())
        .unwrap_or_else(|_| "postgres://…".into())
}

/// The driver's settings as messages may show them: `postgres://user@host:port/db`.
pub fn shown_config(config: &postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config
        .get_ports()
        .first()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    format!(
        "postgres://{}@{host}{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

/// The URL without `sslmode` and `sslrootcert` (for the driver), and what they say.
fn split_tls_words(url: &str) -> Result<(String, SslMode, Roots), String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut mode = None;
    let mut root_file = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(raw_key).ok_or("the URL's parameters are not valid UTF-8")?;
        let once = |seen: bool| {
            if seen {
                Err(format!("`{key}` is given twice in the URL"))
            } else {
                Ok(())
            }
        };
        match key.as_str() {
            "sslmode" => {
                once(mode.is_some())?;
                let value = percent_decode(raw_value).ok_or("sslmode is not valid UTF-8")?;
                mode = Some(SslMode::parse(&value)?);
            }
            "sslrootcert" => {
                once(root_file.is_some())?;
                let value = percent_decode(raw_value).ok_or("sslrootcert is not valid UTF-8")?;
                if value.is_empty() {
                    return Err("sslrootcert is empty (name a CA file, or `system`)".into());
                }
                root_file = Some(value);
            }
            word if UNSUPPORTED.contains(&word) => {
                return Err(format!(
                    "`{word}` is not supported (labcron's TLS words are sslmode and sslrootcert; \
                     client certificates are not supported)"
                ));
            }
            _ => kept.push(pair),
        }
    }
    let mode = mode.unwrap_or(SslMode::Prefer);
    let roots = match root_file {
        None => Roots::System,
        Some(_) if !mode.checks_certificate() => {
            return Err(format!(
                "sslrootcert is used only with sslmode=require, verify-ca or verify-full, and \
                 this URL's sslmode is {} (which checks no certificate)",
                mode.word()
            ));
        }
        Some(word) if word == "system" => Roots::System,
        Some(file) => Roots::File(PathBuf::from(file)),
    };
    let driver_url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((driver_url, mode, roots))
}

/// The rustls connector for `mode`: under `disable` the driver never starts TLS, so its
/// configuration is never used.
fn connector(mode: SslMode, roots: &Roots) -> Result<MakeRustlsConnect, String> {
    // ring named here, as the rest of the binary uses it, rather than rustls' process default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let config = match mode {
        SslMode::Disable | SslMode::Prefer => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        SslMode::Require | SslMode::VerifyCa => {
            let roots = Arc::new(root_store(roots)?);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly {
                    roots,
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth()
        }
        SslMode::VerifyFull => builder
            .with_root_certificates(root_store(roots)?)
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The trust store of `roots`; an unreadable file, or one without a certificate, is an error
/// naming it.
fn root_store(roots: &Roots) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(file) => {
            let shown = file.display();
            // Read first, so a missing file says "cannot read" rather than a PEM error.
            let text = std::fs::read(file)
                .map_err(|e| format!("sslrootcert: cannot read {shown}: {e}"))?;
            for (n, cert) in CertificateDer::pem_slice_iter(&text).enumerate() {
                let cert =
                    cert.map_err(|e| format!("sslrootcert: {shown} is not valid PEM: {e}"))?;
                store.add(cert).map_err(|e| {
                    format!(
                        "sslrootcert: certificate {} in {shown} is not usable as a CA: {e}",
                        n + 1
                    )
                })?;
            }
            if store.is_empty() {
                return Err(format!(
                    "sslrootcert: {shown} holds no certificate (expected PEM blocks \
                     `-----BEGIN CERTIFICATE-----`)"
                ));
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "the system's trust store holds no CA certificate{why}: name the database's \
                     CA with sslrootcert=FILE"
                ));
            }
        }
    }
    Ok(store)
}

/// `verify-ca` (and labcron's `require`): the certificate must chain to a trusted CA and be
/// valid now; its names are not looked at.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `prefer`: whatever certificate the server shows (libpq's `prefer` checks none either); the
/// handshake's signatures are still checked, so the session's keys are the certificate's.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
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
    fn urls_are_checked_without_repeating_the_password() {
        PgUrl::parse("postgres://reader:s3cret@db.lab:5433/lims").unwrap();
        for (url, says) in [
            ("postgres://reader@db.lab", "no database"),
            ("postgres://db.lab/lims", "no user"),
            ("postgres://reader:s3cret@db.lab:notaport/lims", "invalid"),
            (
                "postgres://reader:s3cret@db.lab/lims?sslmode=verify",
                "sslmode=`verify`",
            ),
            (
                "postgres://reader:s3cret@db.lab/lims?sslmode=allow",
                "sslmode=allow",
            ),
            (
                "postgres://reader:s3cret@db.lab/lims?sslcert=c.pem",
                "`sslcert`",
            ),
            ("postgres://reader:s3cret@db.lab/lims?nosuch=1", "nosuch"),
            (
                "postgres://reader:s3cret@db.lab/lims?sslmode=require&sslmode=disable",
                "twice",
            ),
            (
                "postgres://reader:s3cret@db.lab/lims?sslrootcert=ca.pem",
                "sslrootcert",
            ),
            (
                "postgres://reader:s3cret@db.lab/lims?sslmode=disable&sslrootcert=ca.pem",
                "sslmode is disable",
            ),
        ] {
            let err = PgUrl::parse(url).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("s3cret"), "{url}: {err}");
        }
    }

    #[test]
    fn the_tls_words_are_taken_out_for_the_driver_and_the_rest_kept() {
        let url = PgUrl::parse(
            "postgres://u:pw@db.lab/lims?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=7",
        )
        .unwrap();
        assert_eq!(url.mode, SslMode::VerifyFull);
        assert_eq!(url.roots, Roots::File("/etc/ca.pem".into()));
        assert_eq!(url.config.get_application_name(), Some("x"));
        assert_eq!(
            url.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(7))
        );
        assert_eq!(
            url.config.get_ssl_mode(),
            postgres::config::SslMode::Require
        );
        assert_eq!(
            url.shown(),
            "postgres://u@db.lab:5432/lims?sslmode=verify-full"
        );
        let plain = PgUrl::parse("postgres://u@db.lab/lims").unwrap();
        assert_eq!(plain.mode, SslMode::Prefer, "the default is libpq's");
        assert_eq!(plain.roots, Roots::System);
        assert_eq!(
            plain.config.get_ssl_mode(),
            postgres::config::SslMode::Prefer
        );
        let system =
            PgUrl::parse("postgres://u@db.lab/lims?sslmode=require&sslrootcert=system").unwrap();
        assert_eq!(system.roots, Roots::System);
        let off = PgUrl::parse("postgres://u@db.lab/lims?sslmode=disable").unwrap();
        assert_eq!(
            off.config.get_ssl_mode(),
            postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn a_ca_file_that_cannot_be_used_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        for (file, says) in [(&missing, "cannot read"), (&empty, "holds no certificate")] {
            let url = format!(
                "postgres://u:s3cret@db.lab/lims?sslmode=verify-full&sslrootcert={}",
                file.display()
            );
            let err = PgTarget::open(&url).unwrap_err();
            assert!(err.contains("sslrootcert") && err.contains(says), "{err}");
            assert!(err.contains(&file.display().to_string()), "{err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
        // Modes that check no certificate read no file.
        PgTarget::open("postgres://u@db.lab/lims?sslmode=prefer").unwrap();
        PgTarget::open("postgres://u@db.lab/lims?sslmode=disable").unwrap();
    }
}
