//! CORS as OpenSpecimen offers it: off unless `http.cors_origins` lists origins; then those origins
//! may call the API from a browser with OpenSpecimen's headers (`X-OS-API-TOKEN`, `X-OS-CLIENT-TZ`)
//! and read the `Location` of a queued run.

use actix_cors::Cors;
use actix_web::http::{Method, header};

/// The CORS middleware for `origins` (an empty list allows no cross-origin calls at all).
pub fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allowed_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::ACCEPT,
            header::RANGE,
            header::HeaderName::from_static("x-os-api-token"),
            header::HeaderName::from_static("x-os-client-tz"),
            header::HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([header::LOCATION, header::CONTENT_DISPOSITION])
        .max_age(3600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}
