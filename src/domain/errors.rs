//! `ErrorItem`: one problem as the contract reports it, `{"code", "message"}` with OpenSpecimen's
//! code. The rules produce them; `crate::web::error` decides the HTTP status they go out with. The
//! problems that are not any rule's (no such endpoint, a body too large, an internal error) have
//! their texts here, once.

use serde::Serialize;

/// One element of an error response.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorItem {
    pub code: String,
    pub message: String,
}

impl ErrorItem {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorItem {
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// A body over the server's limit.
    pub fn payload_too_large() -> Self {
        ErrorItem::new(
            "PAYLOAD_TOO_LARGE",
            "The request body is larger than the server accepts.",
        )
    }

    /// A path that names no endpoint.
    pub fn no_such_endpoint() -> Self {
        ErrorItem::new("NOT_FOUND", "No such endpoint.")
    }

    /// An endpoint asked with a method it does not take.
    pub fn method_not_allowed() -> Self {
        ErrorItem::new(
            "METHOD_NOT_ALLOWED",
            "This endpoint does not accept that method.",
        )
    }

    /// A request the server cannot read (no rule of ours named the problem).
    pub fn malformed_request() -> Self {
        ErrorItem::new("INVALID_REQUEST", "The request is malformed.")
    }

    /// Something unexpected, without the id a response adds (only the response that logs the
    /// cause mints one: see `with_error_id`).
    pub fn internal() -> Self {
        ErrorItem::new("INTERNAL_ERROR", "Sorry, something went wrong.")
    }

    /// The ledger's database (PostgreSQL) cannot be reached: nothing was done, and the same
    /// call later may work (503).
    pub fn ledger_unavailable() -> Self {
        ErrorItem::new(
            "LEDGER_UNAVAILABLE",
            "The ledger's database cannot be reached; nothing was changed. Try again shortly.",
        )
    }

    /// Something unexpected, told with the id its log line carries.
    pub fn internal_with_id(error_id: &str) -> Self {
        ErrorItem::new(
            "INTERNAL_ERROR",
            format!(
                "Sorry, something went wrong. Please report this error to the system administrator. Error: {error_id}."
            ),
        )
    }
}
