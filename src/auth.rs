//! Credentials: argon2 password hashes, random session tokens (stored only as SHA-256), the
//! throttle that slows down guessing by login name and client address, and the gate that bounds
//! how many passwords are hashed at once. No HTTP here; the extractor in `api::auth` uses these.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::domain::user::login_key;

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

/// How long a password check waits for a free hashing slot before the request is turned away.
const HASHING_WAIT: Duration = Duration::from_secs(2);

/// The server is hashing as many passwords as it has cores: try again in this many seconds.
#[derive(Debug, Clone, Copy)]
pub struct HashingBusy {
    pub retry_after_secs: u64,
}

/// Bounds the argon2 work in flight: each hash takes a core and about 19 MiB for as long as it
/// runs, so without a bound a crowd of sign-ins (wrong ones included: an unknown name is hashed
/// too) would take as much memory as it likes. One slot per core; a caller that finds none free
/// within `HASHING_WAIT` gets `HashingBusy` instead of waiting in an unbounded queue.
#[derive(Clone)]
pub struct HashingGate {
    slots: Arc<tokio::sync::Semaphore>,
}

impl HashingGate {
    /// One slot per core the process may use.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        HashingGate::new(cores)
    }

    pub fn new(slots: usize) -> Self {
        HashingGate {
            slots: Arc::new(tokio::sync::Semaphore::new(slots.max(1))),
        }
    }

    /// Runs `work` (a hash or a check) on a blocking thread once a slot is free.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<anyhow::Result<T>, HashingBusy> {
        let permit = tokio::time::timeout(HASHING_WAIT, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| HashingBusy {
                retry_after_secs: HASHING_WAIT.as_secs().max(1),
            })?
            .map_err(|_| HashingBusy {
                retry_after_secs: HASHING_WAIT.as_secs().max(1),
            })?;
        let done = tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await;
        Ok(done.map_err(|e| anyhow::anyhow!("password hashing task: {e}")))
    }

    /// `hash_password` within the bound.
    pub async fn hash(&self, password: String) -> Result<anyhow::Result<String>, HashingBusy> {
        Ok(self
            .run(move || hash_password(&password))
            .await?
            .and_then(|r| r))
    }

    /// `verify_password` within the bound.
    pub async fn verify(
        &self,
        password: String,
        stored_hash: String,
    ) -> Result<anyhow::Result<bool>, HashingBusy> {
        self.run(move || verify_password(&password, &stored_hash))
            .await
    }
}

/// Most (login name, client address) pairs the throttle remembers. A spray of distinct names
/// evicts the pairs whose last failure is oldest, so memory stays bounded whatever comes in.
const MAX_THROTTLED_PAIRS: usize = 10_000;

/// Counts failed sign-ins per (login name, client address) in a sliding window. The name is the
/// login key (`domain::user::login_key`), so every spelling that reaches one account shares one
/// counter; each pair keeps at most `max_failures` instants.
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
        (login_key(login), client.to_string())
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
        let now = Instant::now();
        let key = Self::key(login, client);
        if !map.contains_key(&key) && map.len() >= MAX_THROTTLED_PAIRS {
            // Forget everything stale first; if the map is still full, the pair whose last
            // failure is oldest.
            map.retain(|_, v| {
                v.last()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
            if map.len() >= MAX_THROTTLED_PAIRS {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, v)| v.last().copied())
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    map.remove(&oldest);
                }
            }
        }
        let entry = map.entry(key).or_default();
        entry.retain(|t| now.duration_since(*t) < self.window);
        entry.push(now);
        // Only the last `max_failures` instants decide a lockout.
        let keep = self.max_failures.max(1) as usize;
        if entry.len() > keep {
            entry.drain(..entry.len() - keep);
        }
    }

    pub fn record_success(&self, login: &str, client: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&Self::key(login, client));
    }

    /// How many pairs are remembered.
    pub fn len(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    }

    #[test]
    fn full_width_and_folded_spellings_share_one_counter() {
        let t = LoginThrottle::new(3, Duration::from_secs(60));
        t.record_failure("ＤＯＲＡ", "1.2.3.4");
        t.record_failure("Ｄｏｒａ", "1.2.3.4");
        t.record_failure("dｏra", "1.2.3.4");
        assert!(t.retry_after("dora", "1.2.3.4").is_some());
    }

    #[test]
    fn the_throttle_remembers_a_bounded_number_of_pairs() {
        let t = LoginThrottle::new(3, Duration::from_secs(600));
        for i in 0..MAX_THROTTLED_PAIRS + 500 {
            t.record_failure(&format!("user{i}"), "1.2.3.4");
        }
        assert_eq!(t.len(), MAX_THROTTLED_PAIRS);
        // The newest pairs are the ones kept.
        for _ in 0..2 {
            t.record_failure("user10499", "1.2.3.4");
        }
        assert!(t.retry_after("user10499", "1.2.3.4").is_some());
        for _ in 0..10 {
            t.record_failure("bob", "1.2.3.4");
        }
        assert!(t.retry_after("bob", "1.2.3.4").is_some());
    }

    #[tokio::test]
    async fn the_hashing_gate_turns_callers_away_when_every_slot_is_busy() {
        let gate = HashingGate::new(1);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let busy = gate.clone();
        let holder = tokio::spawn(async move { busy.run(move || wait.recv().is_ok()).await });
        // Until the holder has its slot, a second caller may still get one: wait for it.
        while gate.slots.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        assert!(gate.run(|| ()).await.is_err(), "no slot free: refused");
        release.send(()).unwrap();
        assert!(holder.await.unwrap().unwrap().unwrap());
        assert!(gate.verify("x".into(), "not a hash".into()).await.is_ok());
    }
}
