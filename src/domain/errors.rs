//! `ErrorItem`: one problem as the contract reports it, `{"code", "message"}` with OpenSpecimen's
//! code. The rules produce them; `crate::error` decides the HTTP status they go out with.

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
}
