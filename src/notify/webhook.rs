//! Webhook delivery (ext): a finished run's API object POSTed as JSON to the job's `webhookUrl`.
//!
//! Headers: `X-Labcron-Event` (`run.succeeded` or `run.failed`), `X-Labcron-Delivery` (one id per
//! delivery, the same on every attempt, for de-duplication), `X-Labcron-Timestamp` (Unix seconds of
//! the attempt) and, when `notifications.webhook_secret` is set, `X-Labcron-Signature:
//! sha256=<hex>`, the HMAC-SHA256 of the raw body under that secret. A network error, a 5xx or a 429
//! answer is retried after 1, 2, 4, 8 … seconds, up to `notifications.webhook_max_attempts`
//! attempts; any other non-2xx answer ends the delivery. Redirects are not followed.

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock::now_ms;
use crate::config::NotificationSettings;
use crate::domain::run::RunStatus;

pub const EVENT_HEADER: &str = "X-Labcron-Event";
pub const DELIVERY_HEADER: &str = "X-Labcron-Delivery";
pub const TIMESTAMP_HEADER: &str = "X-Labcron-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Labcron-Signature";

/// The wait before the second attempt; each further wait doubles.
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
/// The longest one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// The event name of a finished run.
pub fn event_name(status: RunStatus) -> &'static str {
    if status == RunStatus::Succeeded {
        "run.succeeded"
    } else {
        "run.failed"
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The host of a URL, for logs (the rest of a webhook URL may hold a token).
pub fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Posts webhook requests; one per server.
pub struct WebhookSender {
    client: reqwest::Client,
    secret: Option<Vec<u8>>,
    max_attempts: u32,
}

impl WebhookSender {
    pub fn new(settings: &NotificationSettings) -> reqwest::Result<WebhookSender> {
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("labcron/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(WebhookSender {
            client,
            secret: (!settings.webhook_secret.is_empty())
                .then(|| settings.webhook_secret.as_bytes().to_vec()),
            max_attempts: settings.webhook_max_attempts.max(1),
        })
    }

    /// Delivers `body` (the run's JSON) to `url`, retrying as the module says. Returns the number
    /// of attempts it took, or why it gave up.
    pub async fn deliver(
        &self,
        url: &str,
        event: &str,
        run_id: i64,
        body: Bytes,
    ) -> Result<u32, String> {
        let delivery = format!("{run_id}-{:016x}", rand::random::<u64>());
        let signed = self.secret.as_ref().map(|key| signature(key, &body));
        let mut delay = FIRST_RETRY_DELAY;
        let mut last_error = String::new();
        for attempt in 1..=self.max_attempts {
            if attempt > 1 {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            let mut request = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(EVENT_HEADER, event)
                .header(DELIVERY_HEADER, &delivery)
                .header(TIMESTAMP_HEADER, (now_ms() / 1000).to_string())
                .body(body.clone());
            if let Some(signed) = &signed {
                request = request.header(SIGNATURE_HEADER, signed);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(attempt),
                Ok(response) => {
                    let status = response.status();
                    last_error = format!("HTTP {status} after {attempt} attempt(s)");
                    let retry = status.is_server_error()
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
                    if !retry {
                        return Err(format!("{last_error}; not retried"));
                    }
                }
                Err(e) => {
                    last_error = format!("{} after {attempt} attempt(s)", describe(&e));
                }
            }
        }
        Err(last_error)
    }
}

/// A short reason for a failed request.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        format!("request failed: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn events_and_hosts() {
        assert_eq!(event_name(RunStatus::Succeeded), "run.succeeded");
        assert_eq!(event_name(RunStatus::Failed), "run.failed");
        assert_eq!(host_of("https://hooks.example/T0k3n?x=1"), "hooks.example");
    }
}
