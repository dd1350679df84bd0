//! The middleware every request passes: request metrics, the API's trailing-slash rule, the
//! contract-shaped answer for unknown routes, and the rewrite of actix's own plain-text errors into
//! the contract's error array.

use std::time::Instant;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers, Next};
use actix_web::web;

use super::error::{error_response, status_item};
use crate::error::ServiceError;
use crate::metrics::UNKNOWN_ROUTE;
use crate::web::AppState;

/// Middleware: counts every request by route pattern, method and status, and times it. Wrap it
/// outermost so it sees the final status.
pub async fn track_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let method = method_label(req.method());
    let started = Instant::now();
    let result = next.call(req).await;
    if let Some(state) = state {
        let elapsed = started.elapsed();
        match &result {
            Ok(res) => {
                let route = res.request().match_pattern();
                state.metrics.observe_request(
                    route.as_deref().unwrap_or(UNKNOWN_ROUTE),
                    method,
                    res.status().as_u16(),
                    elapsed,
                );
            }
            Err(e) => state.metrics.observe_request(
                UNKNOWN_ROUTE,
                method,
                e.as_response_error().status_code().as_u16(),
                elapsed,
            ),
        }
    }
    result
}

/// OpenSpecimen (Spring) answers `/rest/ng/users/7/` like `/rest/ng/users/7`, and its clients rely on
/// it (OpenSpecimenAPIconnector's `delete_user` sends `/users/{id}/?close=true`): API paths lose a
/// trailing slash before routing. Only API paths: the docs page lives at `/docs/`.
pub async fn trim_api_trailing_slash(
    mut req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let path = req.path();
    let is_api = path.starts_with("/rest/ng/") || path.starts_with("/openspecimen/rest/ng/");
    if is_api && path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let uri = match req.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_string(),
        };
        if let Ok(uri) = uri.parse::<actix_web::http::Uri>() {
            req.match_info_mut().get_mut().update(&uri);
            req.head_mut().uri = uri;
        }
    }
    next.call(req).await
}

/// Unknown routes answer in the contract's shape.
pub async fn no_route() -> Result<actix_web::HttpResponse, ServiceError> {
    Err(ServiceError::NoRoute)
}

/// Replaces any error response that is not already JSON or an HTML page of the web UI (actix's own
/// plain-text errors for oversized payloads, wrong methods and the like) with the contract's error
/// array.
pub fn json_errors<B: 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|res: ServiceResponse<B>| {
        let is_json = res
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
        if is_json {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let item = status_item(status);
        let (req, old) = res.into_parts();
        let mut new = error_response(status, &[item]);
        for (name, value) in old.headers() {
            if name != CONTENT_TYPE && name != actix_web::http::header::CONTENT_LENGTH {
                new.headers_mut().insert(name.clone(), value.clone());
            }
        }
        new.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let res: ServiceResponse<EitherBody<B, BoxBody>> =
            ServiceResponse::new(req, new).map_into_right_body();
        Ok(ErrorHandlerResponse::Response(res))
    })
}

/// The method label: the standard methods by name, anything else as `OTHER`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_ones_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        let odd = Method::from_bytes(b"BREW").expect("a valid token");
        assert_eq!(method_label(&odd), "OTHER");
    }
}
