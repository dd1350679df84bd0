//! `ServiceError`: what a use case (and every worker below the web layer) fails with, in the
//! contract's terms: user errors with every problem listed, not signed in, too many sign-ins, a body
//! too large, a service that is down, or something unexpected (whose cause is logged, never sent).
//! It knows no HTTP: `crate::web::error` is the one place that gives each kind its status and
//! writes the JSON array of `{"code","message"}`.

use crate::domain::errors::ErrorItem;
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// User errors (validation, not found, access denied): 400 with every problem listed.
    #[error("user error: {0:?}")]
    User(Vec<ErrorItem>),
    /// Not signed in, or bad credentials: 401.
    #[error("unauthorized: {0:?}")]
    Unauthorized(ErrorItem),
    /// Too many failed sign-ins: 429 with Retry-After.
    #[error("too many failed sign-ins")]
    TooManyAttempts { retry_after_secs: u64 },
    /// The server is already hashing as many passwords as it has cores: 503 with Retry-After.
    #[error("busy hashing passwords")]
    Busy { retry_after_secs: u64 },
    /// Body over the limit: 413.
    #[error("payload too large")]
    PayloadTooLarge,
    /// A service the request needs is down (the sign-in directory): 503.
    #[error("unavailable: {0:?}")]
    Unavailable(ErrorItem),
    /// No such route: 404 (only for paths outside the API).
    #[error("no such endpoint")]
    NoRoute,
    /// The ledger failed (a full disk among the causes): 500, logged with an id; 503 when its
    /// database cannot be reached.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Anything else unexpected: 500, logged with an id.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ServiceError {
    pub fn user(code: &str, message: impl Into<String>) -> Self {
        ServiceError::User(vec![ErrorItem::new(code, message)])
    }
    pub fn invalid_request(message: impl Into<String>) -> Self {
        ServiceError::user("INVALID_REQUEST", message)
    }
    pub fn job_not_found() -> Self {
        ServiceError::user("SCHEDULED_JOB_NOT_FOUND", "Job does not exist.")
    }
    pub fn run_not_found() -> Self {
        ServiceError::user("SCHEDULED_JOB_JOB_RUN_NOT_FOUND", "Job run does not exist.")
    }
    pub fn op_not_allowed() -> Self {
        ServiceError::user(
            "SCHEDULED_JOB_OP_NOT_ALLOWED",
            "You do not have sufficient rights to perform this action.",
        )
    }
    pub fn user_not_found() -> Self {
        ServiceError::user("USER_NOT_FOUND", "User does not exist.")
    }
    pub fn access_denied() -> Self {
        ServiceError::user("ACCESS_DENIED", "User does not have sufficient rights.")
    }
    pub fn auth_required() -> Self {
        ServiceError::Unauthorized(ErrorItem::new(
            "AUTH_REQUIRED",
            "Sign in first: send X-OS-API-TOKEN or Basic authorization.",
        ))
    }
    pub fn invalid_credentials() -> Self {
        ServiceError::Unauthorized(ErrorItem::new(
            "AUTH_INVALID_CREDENTIALS",
            "Invalid login name or password.",
        ))
    }
    pub fn items(&self) -> Vec<ErrorItem> {
        match self {
            ServiceError::User(items) => items.clone(),
            ServiceError::Unauthorized(item) | ServiceError::Unavailable(item) => {
                vec![item.clone()]
            }
            ServiceError::TooManyAttempts { retry_after_secs } => vec![ErrorItem::new(
                "AUTH_TOO_MANY_ATTEMPTS",
                format!("Too many failed sign-ins. Try again in {retry_after_secs} seconds."),
            )],
            ServiceError::Busy { retry_after_secs } => vec![ErrorItem::new(
                "AUTH_BUSY",
                format!(
                    "The server is checking as many passwords as it can at once. Try again in {retry_after_secs} seconds."
                ),
            )],
            ServiceError::PayloadTooLarge => vec![ErrorItem::payload_too_large()],
            ServiceError::NoRoute => vec![ErrorItem::no_such_endpoint()],
            ServiceError::Store(e) if e.is_unreachable() => vec![ErrorItem::ledger_unavailable()],
            // No error id here: only the response (`web::error`) mints one, and logs it.
            ServiceError::Store(_) | ServiceError::Internal(_) => vec![ErrorItem::internal()],
        }
    }

    /// The contract's code of the first problem, for logs (never mints an error id).
    pub fn first_code(&self) -> Option<&str> {
        match self {
            ServiceError::User(items) => items.first().map(|i| i.code.as_str()),
            ServiceError::Unauthorized(item) | ServiceError::Unavailable(item) => {
                Some(item.code.as_str())
            }
            ServiceError::TooManyAttempts { .. } => Some("AUTH_TOO_MANY_ATTEMPTS"),
            ServiceError::Busy { .. } => Some("AUTH_BUSY"),
            ServiceError::PayloadTooLarge => Some("PAYLOAD_TOO_LARGE"),
            ServiceError::NoRoute => Some("NOT_FOUND"),
            ServiceError::Store(e) if e.is_unreachable() => Some("LEDGER_UNAVAILABLE"),
            ServiceError::Store(_) | ServiceError::Internal(_) => Some("INTERNAL_ERROR"),
        }
    }
}

impl ServiceError {
    /// Whether the ledger's disk is full (worth waiting for space and trying again).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, ServiceError::Store(e) if e.is_disk_full())
    }

    /// Whether the ledger rolled the write back for another write at the same time (a deadlock,
    /// a serialization failure): running it again will work.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ServiceError::Store(e) if e.is_retryable())
    }

    /// Whether the ledger's database could not be reached (down, restarting): nothing was
    /// written, and the same call may work once it is back.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ServiceError::Store(e) if e.is_unreachable())
    }
}

impl From<std::io::Error> for ServiceError {
    fn from(e: std::io::Error) -> Self {
        ServiceError::Internal(e.into())
    }
}

impl From<tokio::task::JoinError> for ServiceError {
    fn from(e: tokio::task::JoinError) -> Self {
        ServiceError::Internal(e.into())
    }
}
