//! The one source of "now" for the whole server. Everything stores epoch milliseconds (UTC) and
//! converts at the edges; routing every read of the wall clock through here keeps that true.

use chrono::{DateTime, TimeZone, Utc};

/// Current time as epoch milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Epoch milliseconds to a UTC date-time (out-of-range values clamp to the epoch).
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}
