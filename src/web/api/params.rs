//! Reading request inputs with messages that name the parameter: query-string values, the typed
//! path ids (with the path error handler that names a bad one), JSON object bodies, the client's
//! time zone header and address. Everything here answers `INVALID_REQUEST` on bad input.

use std::collections::HashMap;
use std::str::FromStr;

use actix_web::{HttpRequest, web};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::IntoParams;

use crate::error::ServiceError;

/// The header naming the zone of dates without an offset (OpenSpecimen's).
pub const CLIENT_TZ_HEADER: &str = "X-OS-CLIENT-TZ";

/// The zone of dates without an offset: `X-OS-CLIENT-TZ`, else `default` (the server's).
pub fn client_tz(req: &HttpRequest, default: chrono_tz::Tz) -> Result<chrono_tz::Tz, ServiceError> {
    match req
        .headers()
        .get(CLIENT_TZ_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        Some(name) if !name.is_empty() => name.parse::<chrono_tz::Tz>().map_err(|_| {
            ServiceError::invalid_request(format!(
                "{CLIENT_TZ_HEADER} `{name}` is not an IANA time zone name."
            ))
        }),
        _ => Ok(default),
    }
}

/// The client address used for throttling and the audit trail: the TCP peer (forwarding headers
/// are not trusted).
pub fn client_addr(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// The decoded query string of a request.
pub struct Query {
    values: HashMap<String, String>,
}

impl Query {
    pub fn from_request(req: &HttpRequest) -> Result<Query, ServiceError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
            .map_err(|_| ServiceError::invalid_request("The query string is malformed."))?;
        Ok(Query {
            values: pairs.into_iter().collect(),
        })
    }

    /// A trimmed, non-blank value.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// A whole number, or `default` when absent.
    pub fn int(&self, name: &str, default: i64) -> Result<i64, ServiceError> {
        match self.text(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                ServiceError::invalid_request(format!("{name} must be a whole number, not `{v}`."))
            }),
        }
    }

    /// A boolean (`true`/`false`), or `default`.
    pub fn bool(&self, name: &str, default: bool) -> Result<bool, ServiceError> {
        match self.text(name) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(ServiceError::invalid_request(format!(
                "{name} must be true or false, not `{v}`."
            ))),
        }
    }

    /// One of an enum's names, listing the accepted ones when it is not.
    pub fn choice<T: FromStr>(
        &self,
        name: &str,
        accepted: &[&str],
    ) -> Result<Option<T>, ServiceError> {
        match self.text(name) {
            None => Ok(None),
            Some(v) => T::from_str(v).map(Some).map_err(|_| {
                ServiceError::invalid_request(format!(
                    "{name} must be one of {}, not `{v}`.",
                    accepted.join(", ")
                ))
            }),
        }
    }

    /// OpenSpecimen's paging, the same for every list (`Paging` documents it): a negative
    /// `startAt` is 0; a `maxResults` of 0 or less is `PAGE_DEFAULT`; more than `PAGE_MAX` is
    /// `PAGE_MAX`.
    pub fn paging(&self) -> Result<(i64, i64), ServiceError> {
        let start_at = self.int("startAt", 0)?.max(0);
        let mut max_results = self.int("maxResults", PAGE_DEFAULT)?;
        if max_results <= 0 {
            max_results = PAGE_DEFAULT;
        }
        Ok((start_at, max_results.min(PAGE_MAX)))
    }
}

/// A list's page size when `maxResults` is absent (or 0 or less).
pub const PAGE_DEFAULT: i64 = 100;
/// The most items a list returns at once.
pub const PAGE_MAX: i64 = 1000;

// The query parameters several lists share, described once for the OpenAPI document (the
// handlers read them with `Query`, which names a bad one in the contract's error).

/// `startAt` and `maxResults`, read by `Query::paging`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[allow(dead_code)] // describes the parameters; never built
pub struct Paging {
    /// Skip this many (negative means 0).
    start_at: Option<i64>,
    /// At most this many; default 100, at most 1000 (0 or less means 100).
    max_results: Option<i64>,
}

/// `fromDate` and `toDate` of the runs lists: the run's creation time.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[allow(dead_code)] // describes the parameters; never built
pub struct CreatedBetween {
    /// Created at or after.
    from_date: Option<String>,
    /// Created at or before; default now.
    to_date: Option<String>,
}

/// The `X-OS-CLIENT-TZ` header, read by `client_tz`.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // describes the parameter; never built
pub struct ClientZone {
    /// The IANA zone of dates without an offset; default the server's zone.
    #[param(rename = "X-OS-CLIENT-TZ")]
    client_tz: Option<String>,
}

/// What a handler takes for its path: the typed ids, or the problem with them. A `Result`, so the
/// problem is reported after the caller is known, as before: actix returns the first extractor
/// error that is ready, and the signed-in user often is not (a session is looked up).
pub type PathOf<T> = Result<web::Path<T>, ServiceError>;

/// The path error handler of the API: a bad id answers `INVALID_REQUEST` naming the parameter.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|_, req| ServiceError::invalid_request(bad_path_message(req)).into())
}

/// "jobId must be a number, not `abc`.": the first segment (in path order) that is not a number.
fn bad_path_message(req: &HttpRequest) -> String {
    req.match_info()
        .iter()
        .find(|(_, raw)| raw.parse::<i64>().is_err())
        .map(|(name, raw)| format!("{name} must be a number, not `{raw}`."))
        .unwrap_or_else(|| "The path is malformed.".to_string())
}

/// `{jobId}`.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path)]
pub struct JobPath {
    /// The job's id.
    pub job_id: i64,
}

/// `{jobId}` and `{runId}`.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path)]
pub struct RunPath {
    /// The job's id.
    pub job_id: i64,
    /// The run's id (of this job).
    pub run_id: i64,
}

/// `{userId}`.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// The user's id.
    pub user_id: i64,
}

/// `{queryId}`.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path)]
pub struct QueryPath {
    /// The saved query's id.
    pub query_id: i64,
}

/// `{tokenId}`.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    /// The token's id.
    pub token_id: i64,
}

/// A numeric path segment such as `{jobId}`, for the web pages' data routes (the API's handlers
/// take typed paths).
pub fn path_id(req: &HttpRequest, name: &str) -> Result<i64, ServiceError> {
    let raw = req.match_info().get(name).unwrap_or_default();
    raw.parse::<i64>().map_err(|_| {
        ServiceError::invalid_request(format!("{name} must be a number, not `{raw}`."))
    })
}

/// A JSON object body. An empty body is an empty object when `optional`.
pub fn json_object(body: &[u8], optional: bool) -> Result<Map<String, Value>, ServiceError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return if optional {
            Ok(Map::new())
        } else {
            Err(ServiceError::invalid_request(
                "A JSON object body is required.",
            ))
        };
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ServiceError::invalid_request(
            "The body must be a JSON object.",
        )),
        Err(e) => Err(ServiceError::invalid_request(format!(
            "Malformed JSON: {e}."
        ))),
    }
}
