//! The one mapping from a failure to HTTP: each kind of `ServiceError` gets the contract's status
//! (400 user errors, 401, 413, 429, 503, 500) and goes out as OpenSpecimen's JSON array of
//! `{"code","message"}`. An internal cause is logged here with an error id, and only the id is
//! sent. The middleware reuses `status_item` and `error_response` for the errors actix answers by
//! itself, so no text exists twice.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::errors::ErrorItem;
use crate::error::ServiceError;

/// The problem a bare HTTP status stands for, for the errors actix answers by itself (an
/// oversized body, an unknown route or method, a body it cannot read).
pub fn status_item(status: StatusCode) -> ErrorItem {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorItem::payload_too_large(),
        StatusCode::NOT_FOUND => ErrorItem::no_such_endpoint(),
        StatusCode::METHOD_NOT_ALLOWED => ErrorItem::method_not_allowed(),
        s if s.is_server_error() => ErrorItem::internal(),
        _ => ErrorItem::malformed_request(),
    }
}

fn new_error_id() -> String {
    hex::encode(rand::random::<[u8; 6]>())
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

/// Seconds a client is told to wait before asking again while the ledger is unreachable.
const LEDGER_RETRY_AFTER: &str = "5";

impl ResponseError for ServiceError {
    fn status_code(&self) -> StatusCode {
        match self {
            ServiceError::User(_) => StatusCode::BAD_REQUEST,
            ServiceError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ServiceError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            ServiceError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ServiceError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ServiceError::NoRoute => StatusCode::NOT_FOUND,
            ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServiceError::Store(e) if e.is_unreachable() => StatusCode::SERVICE_UNAVAILABLE,
            ServiceError::Store(_) | ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            // Not a bug: the database is down or restarting, and comes back by itself.
            ServiceError::Store(e) if e.is_unreachable() => {
                tracing::warn!(error = %e, "the ledger is unreachable: answering 503");
                let mut response = error_response(self.status_code(), &self.items());
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(LEDGER_RETRY_AFTER),
                );
                response
            }
            ServiceError::Store(_) | ServiceError::Internal(_) => {
                let error_id = new_error_id();
                tracing::error!(error_id = %error_id, error = ?self, "internal error");
                error_response(
                    self.status_code(),
                    &[ErrorItem::internal_with_id(&error_id)],
                )
            }
            ServiceError::TooManyAttempts { retry_after_secs }
            | ServiceError::Busy { retry_after_secs } => {
                let mut response = error_response(self.status_code(), &self.items());
                if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                response
            }
            ServiceError::Unauthorized(_) => {
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

/// Back from actix's error to ours, for an extractor taken as `Result<_, ServiceError>`
/// (`params::PathOf`): the problems our error handlers put in are kept as they are.
impl From<actix_web::Error> for ServiceError {
    fn from(error: actix_web::Error) -> Self {
        match error.as_error::<ServiceError>() {
            Some(ServiceError::User(items)) => ServiceError::User(items.clone()),
            _ => ServiceError::User(vec![status_item(error.as_response_error().status_code())]),
        }
    }
}

/// One element of every error response.
impl PartialSchema for ErrorItem {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .property(
                "code",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("A stable code, e.g. `SCHEDULED_JOB_NOT_FOUND`."))
                    .examples(["SCHEDULED_JOB_NOT_FOUND"]),
            )
            .required("code")
            .property(
                "message",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("An English message for people."))
                    .examples(["Job does not exist."]),
            )
            .required("message")
            .into()
    }
}
impl ToSchema for ErrorItem {}

/// Every error response: a JSON array with one element per problem.
pub struct ErrorList;
impl PartialSchema for ErrorList {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(Ref::from_schema_name("ErrorItem"))
            .min_items(Some(1))
            .into()
    }
}
impl ToSchema for ErrorList {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((ErrorItem::name().into(), ErrorItem::schema()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_gets_its_id_only_in_the_response_that_logs_it() {
        let error = ServiceError::Internal(anyhow::anyhow!("disk on fire"));
        let items = error.items();
        assert_eq!(items, vec![status_item(StatusCode::INTERNAL_SERVER_ERROR)]);
        assert!(
            !items[0].message.contains("Error:"),
            "no id that nobody logged"
        );
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[actix_web::test]
    async fn an_unreachable_ledger_answers_503_in_the_contracts_shape_and_other_store_errors_500() {
        let down = ServiceError::Store(crate::store::Error::Unreachable(
            "connection refused".into(),
        ));
        let response = down.error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER).unwrap(),
            LEDGER_RETRY_AFTER
        );
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        let body = actix_web::body::to_bytes(response.into_body())
            .await
            .unwrap();
        let items: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(items[0]["code"], "LEDGER_UNAVAILABLE");
        assert_eq!(items.as_array().map(Vec::len), Some(1));
        assert_eq!(down.first_code(), Some("LEDGER_UNAVAILABLE"));
        // The cause is not sent.
        assert!(!String::from_utf8_lossy(&body).contains("refused"));
        let broken = ServiceError::Store(crate::store::Error::Corrupt("bad status".into()));
        assert_eq!(
            broken.error_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(broken.first_code(), Some("INTERNAL_ERROR"));
    }

    #[test]
    fn the_variants_without_items_say_what_actixs_own_errors_say() {
        assert_eq!(
            ServiceError::PayloadTooLarge.items(),
            vec![status_item(ServiceError::PayloadTooLarge.status_code())]
        );
        assert_eq!(
            ServiceError::NoRoute.items(),
            vec![status_item(ServiceError::NoRoute.status_code())]
        );
        assert_eq!(
            status_item(StatusCode::METHOD_NOT_ALLOWED).code,
            "METHOD_NOT_ALLOWED"
        );
        assert_eq!(status_item(StatusCode::BAD_REQUEST).code, "INVALID_REQUEST");
    }
}
