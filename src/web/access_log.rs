//! Request logging: a short root span per request carrying only its `request_id` (so a JSON line
//! stays short), and one compact access line per request — method, route, status, duration, the
//! signed-in user and, for a refused request, the contract's error code — at INFO. A client's
//! mistake (4xx) is not a server problem, so it is never a WARN; server errors are logged as ERROR
//! with their cause where they happen (`error.rs`).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};

use crate::error::ServiceError;

/// Who a request was authenticated as, left in the request's extensions by the `CurrentUser`
/// extractor for the access line.
#[derive(Clone)]
pub struct SignedInAs(pub String);

/// The root span of a request: its id, nothing else (the access line says the rest once).
pub struct CompactRootSpan;

impl RootSpanBuilder for CompactRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.to_string())
            .unwrap_or_default();
        tracing::info_span!("request", request_id = %request_id)
    }

    fn on_request_end<B: MessageBody>(_: Span, _: &Result<ServiceResponse<B>, Error>) {}
}

/// Writes the access line of every request after its response is ready.
pub async fn access_line(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let result = next.call(req).await;
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    match &result {
        Ok(res) => {
            let route = res.request().match_pattern().unwrap_or_default();
            let user = res
                .request()
                .extensions()
                .get::<SignedInAs>()
                .map(|u| u.0.clone())
                .unwrap_or_default();
            let code = res
                .response()
                .error()
                .and_then(|e| e.as_error::<ServiceError>())
                .and_then(ServiceError::first_code)
                .unwrap_or_default();
            tracing::info!(
                %method,
                route,
                status = res.status().as_u16(),
                duration_ms = format_args!("{duration_ms:.1}"),
                user,
                code,
                "request"
            );
        }
        Err(e) => tracing::info!(
            %method,
            status = e.as_response_error().status_code().as_u16(),
            duration_ms = format_args!("{duration_ms:.1}"),
            "request"
        ),
    }
    result
}

/// Bounds the time a client may take to send its request body: a signed-in client trickling a
/// body a byte at a time would otherwise hold a connection and a handler for ever. The body stream
/// ends with an error (the request is refused) once `limit` has passed since the request arrived.
pub async fn body_deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    use futures_util::StreamExt;
    let limit = req
        .app_data::<actix_web::web::Data<crate::web::AppState>>()
        .map(|s| std::time::Duration::from_secs(s.settings.http.body_timeout_seconds));
    if let Some(limit) = limit {
        let deadline = tokio::time::Instant::now() + limit;
        let payload = req.take_payload();
        let bounded = futures_util::stream::unfold(Some(payload), move |payload| async move {
            let mut payload = payload?;
            match tokio::time::timeout_at(deadline, payload.next()).await {
                Ok(Some(item)) => Some((item, Some(payload))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(actix_web::error::PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the request body was not received in time",
                    ))),
                    None,
                )),
            }
        });
        let boxed: std::pin::Pin<
            Box<
                dyn futures_util::Stream<
                        Item = Result<bytes::Bytes, actix_web::error::PayloadError>,
                    >,
            >,
        > = Box::pin(bounded);
        req.set_payload(actix_web::dev::Payload::from(boxed));
    }
    next.call(req).await
}
