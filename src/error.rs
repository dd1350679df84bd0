//! `ApiError`: the one mapping from any failure to OpenSpecimen's error shape, a JSON array of
//! `{"code","message"}` with the contract's status (400 user errors, 401, 413, 429, 500). Internal
//! causes are logged with an error id and never sent to the client.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};

use crate::domain::errors::ErrorItem;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// User errors (validation, not found, access denied): 400 with every problem listed.
    #[error("user error: {0:?}")]
    User(Vec<ErrorItem>),
    /// Not signed in, or bad credentials: 401.
    #[error("unauthorized: {0:?}")]
    Unauthorized(ErrorItem),
    /// Too many failed sign-ins: 429 with Retry-After.
    #[error("too many failed sign-ins")]
    TooManyAttempts { retry_after_secs: u64 },
    /// Body over the limit: 413.
    #[error("payload too large")]
    PayloadTooLarge,
    /// A service the request needs is down (the sign-in directory): 503.
    #[error("unavailable: {0:?}")]
    Unavailable(ErrorItem),
    /// No such route: 404 (only for paths outside the API).
    #[error("no such endpoint")]
    NoRoute,
    /// Anything unexpected: 500, logged with an id.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn user(code: &str, message: impl Into<String>) -> Self {
        ApiError::User(vec![ErrorItem::new(code, message)])
    }
    pub fn invalid_request(message: impl Into<String>) -> Self {
        ApiError::user("INVALID_REQUEST", message)
    }
    pub fn job_not_found() -> Self {
        ApiError::user("SCHEDULED_JOB_NOT_FOUND", "Job does not exist.")
    }
    pub fn run_not_found() -> Self {
        ApiError::user("SCHEDULED_JOB_JOB_RUN_NOT_FOUND", "Job run does not exist.")
    }
    pub fn op_not_allowed() -> Self {
        ApiError::user(
            "SCHEDULED_JOB_OP_NOT_ALLOWED",
            "You do not have sufficient rights to perform this action.",
        )
    }
    pub fn user_not_found() -> Self {
        ApiError::user("USER_NOT_FOUND", "User does not exist.")
    }
    pub fn access_denied() -> Self {
        ApiError::user("ACCESS_DENIED", "User does not have sufficient rights.")
    }
    pub fn auth_required() -> Self {
        ApiError::Unauthorized(ErrorItem::new(
            "AUTH_REQUIRED",
            "Sign in first: send X-OS-API-TOKEN or Basic authorization.",
        ))
    }
    pub fn invalid_credentials() -> Self {
        ApiError::Unauthorized(ErrorItem::new(
            "AUTH_INVALID_CREDENTIALS",
            "Invalid login name or password.",
        ))
    }
    pub fn items(&self) -> Vec<ErrorItem> {
        match self {
            ApiError::User(items) => items.clone(),
            ApiError::Unauthorized(item) | ApiError::Unavailable(item) => vec![item.clone()],
            ApiError::TooManyAttempts { retry_after_secs } => vec![ErrorItem::new(
                "AUTH_TOO_MANY_ATTEMPTS",
                format!("Too many failed sign-ins. Try again in {retry_after_secs} seconds."),
            )],
            ApiError::PayloadTooLarge => vec![status_item(StatusCode::PAYLOAD_TOO_LARGE)],
            ApiError::NoRoute => vec![status_item(StatusCode::NOT_FOUND)],
            // No error id here: only the response (`error_response`) mints one, and logs it.
            ApiError::Internal(_) => vec![status_item(StatusCode::INTERNAL_SERVER_ERROR)],
        }
    }

    /// The contract's code of the first problem, for logs (never mints an error id).
    pub fn first_code(&self) -> Option<&str> {
        match self {
            ApiError::User(items) => items.first().map(|i| i.code.as_str()),
            ApiError::Unauthorized(item) | ApiError::Unavailable(item) => Some(item.code.as_str()),
            ApiError::TooManyAttempts { .. } => Some("AUTH_TOO_MANY_ATTEMPTS"),
            ApiError::PayloadTooLarge => Some("PAYLOAD_TOO_LARGE"),
            ApiError::NoRoute => Some("NOT_FOUND"),
            ApiError::Internal(_) => Some("INTERNAL_ERROR"),
        }
    }
}

/// The problem a bare HTTP status stands for, for the errors actix answers by itself (an
/// oversized body, an unknown route or method, a body it cannot read) and the variants above
/// that carry no item: each text exists only here.
pub fn status_item(status: StatusCode) -> ErrorItem {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorItem::new(
            "PAYLOAD_TOO_LARGE",
            "The request body is larger than the server accepts.",
        ),
        StatusCode::NOT_FOUND => ErrorItem::new("NOT_FOUND", "No such endpoint."),
        StatusCode::METHOD_NOT_ALLOWED => ErrorItem::new(
            "METHOD_NOT_ALLOWED",
            "This endpoint does not accept that method.",
        ),
        s if s.is_server_error() => {
            ErrorItem::new("INTERNAL_ERROR", "Sorry, something went wrong.")
        }
        _ => ErrorItem::new("INVALID_REQUEST", "The request is malformed."),
    }
}

fn new_error_id() -> String {
    hex::encode(rand::random::<[u8; 6]>())
}

fn internal_item(error_id: &str) -> ErrorItem {
    ErrorItem::new(
        "INTERNAL_ERROR",
        format!(
            "Sorry, something went wrong. Please report this error to the system administrator. Error: {error_id}."
        ),
    )
}

/// A JSON error array response with the given status.
pub fn error_response(status: StatusCode, items: &[ErrorItem]) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .json(items)
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::User(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Internal(cause) => {
                let error_id = new_error_id();
                tracing::error!(error_id = %error_id, error = ?cause, "internal error");
                error_response(self.status_code(), &[internal_item(&error_id)])
            }
            ApiError::TooManyAttempts { retry_after_secs } => {
                let mut response = error_response(self.status_code(), &self.items());
                if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                response
            }
            ApiError::Unauthorized(_) => {
                let mut response = error_response(self.status_code(), &self.items());
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"labcron\""),
                );
                response
            }
            _ => error_response(self.status_code(), &self.items()),
        }
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

impl From<r2d2::Error> for ApiError {
    fn from(e: r2d2::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_gets_its_id_only_in_the_response_that_logs_it() {
        let error = ApiError::Internal(anyhow::anyhow!("disk on fire"));
        let items = error.items();
        assert_eq!(items, vec![status_item(StatusCode::INTERNAL_SERVER_ERROR)]);
        assert!(
            !items[0].message.contains("Error:"),
            "no id that nobody logged"
        );
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn the_variants_without_items_say_what_actixs_own_errors_say() {
        assert_eq!(
            ApiError::PayloadTooLarge.items(),
            vec![status_item(ApiError::PayloadTooLarge.status_code())]
        );
        assert_eq!(
            ApiError::NoRoute.items(),
            vec![status_item(ApiError::NoRoute.status_code())]
        );
        assert_eq!(
            status_item(StatusCode::METHOD_NOT_ALLOWED).code,
            "METHOD_NOT_ALLOWED"
        );
        assert_eq!(status_item(StatusCode::BAD_REQUEST).code, "INVALID_REQUEST");
    }
}
