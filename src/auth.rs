//! Credentials: argon2 password hashes, random session tokens (stored only as SHA-256), and the
//! throttle that slows down guessing by login name and client address. No HTTP here; the extractor
//! in `api::auth` uses these.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use sha2::{Digest, Sha256};

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("password hash: {e}"))
}

/// Checks a password against a stored PHC hash.
pub fn verify_password(password: &str, stored_hash: &str) -> bool {
    PasswordHash::new(stored_hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the login name is unknown, so both cases take equally long.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("labcron-dummy-password").unwrap_or_default())
}

/// A new session token: 256 random bits, URL-safe base64.
pub fn new_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// What every API token starts with: sign-in tells it from a session token without a second
/// lookup, and secret scanners can recognise one that leaked.
pub const API_TOKEN_PREFIX: &str = "lct_";

/// A new API token: the prefix and 256 random bits (like a session token, so a fast hash suffices).
pub fn new_api_token() -> String {
    format!("{API_TOKEN_PREFIX}{}", new_token())
}

/// What the ledger stores for a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A random password for the first admin: 144 bits, readable.
pub fn generate_password() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>())
}

/// The one form of a login name that sign-in looks up and throttles by: surrounding whitespace
/// (spaces, tabs) dropped and letters lower-cased. The ledger compares login names without regard
/// to ASCII case, so every spelling that reaches the same account shares one throttle counter.
pub fn normalize_login(login: &str) -> String {
    login.trim().to_lowercase()
}

/// Counts failed sign-ins per (login name, client address) in a sliding window.
pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<(String, String), Vec<Instant>>>,
}

impl LoginThrottle {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        LoginThrottle {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn key(login: &str, client: &str) -> (String, String) {
        (normalize_login(login), client.to_string())
    }

    /// Seconds to wait when this pair is locked out, else `None`.
    pub fn retry_after(&self, login: &str, client: &str) -> Option<u64> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let entry = map.get_mut(&Self::key(login, client))?;
        entry.retain(|t| now.duration_since(*t) < self.window);
        if entry.len() as u32 >= self.max_failures {
            let oldest = entry.first().copied()?;
            let wait = self.window.saturating_sub(now.duration_since(oldest));
            Some(wait.as_secs().max(1))
        } else {
            None
        }
    }

    pub fn record_failure(&self, login: &str, client: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        // Bound memory under a spray of distinct names: forget everything stale first.
        if map.len() > 10_000 {
            let now = Instant::now();
            map.retain(|_, v| {
                v.last()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
        }
        map.entry(Self::key(login, client))
            .or_default()
            .push(Instant::now());
    }

    pub fn record_success(&self, login: &str, client: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&Self::key(login, client));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.len() >= 40);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
        let api = new_api_token();
        assert!(api.starts_with(API_TOKEN_PREFIX) && api.len() == API_TOKEN_PREFIX.len() + 43);
        assert_ne!(new_api_token(), api);
    }

    #[test]
    fn throttle_locks_after_max_failures_and_success_resets() {
        let t = LoginThrottle::new(3, Duration::from_secs(60));
        for _ in 0..2 {
            t.record_failure("Bob", "1.2.3.4");
        }
        assert_eq!(t.retry_after("bob", "1.2.3.4"), None);
        t.record_failure("bob", "1.2.3.4");
        assert!(t.retry_after("BOB", "1.2.3.4").is_some());
        assert_eq!(t.retry_after("bob", "5.6.7.8"), None);
        t.record_success("bob", "1.2.3.4");
        assert_eq!(t.retry_after("bob", "1.2.3.4"), None);
    }

    #[test]
    fn padded_spellings_of_a_name_share_one_counter() {
        let t = LoginThrottle::new(3, Duration::from_secs(60));
        t.record_failure("bob ", "1.2.3.4");
        t.record_failure("\tBob", "1.2.3.4");
        t.record_failure(" BOB\t ", "1.2.3.4");
        assert!(t.retry_after("bob", "1.2.3.4").is_some());
        assert_eq!(normalize_login("  Alice\t"), "alice");
    }
}
