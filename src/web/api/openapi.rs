//! The OpenAPI 3.1 description of the whole HTTP API, served by `docs.rs` at `GET /openapi.json`.
//! Each operation is declared by `#[utoipa::path]` on its handler, and the route builder
//! (`routes.rs`) that serves the handlers also collects their operations, so the document holds
//! exactly what is served. This module keeps what is document-wide: the title and tags, the ways to
//! sign in (every operation needs one unless its handler says `security(())`), the error responses
//! every API operation shares (the contract's error array for 400, 401, 413, 429 and 500), and the
//! mirror of each `/rest/ng` operation under the other base paths. It only describes behaviour.

use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, RefOr, Required};

use super::routes::Routes;
use super::{BASE_PATHS, api_routes, root_routes};
use crate::domain::errors::ErrorItem;
use crate::domain::job::{ActivityStatus, JobType, MisfirePolicy, NotifyOn, RepeatKind};
use crate::domain::run::{RunStatus, Trigger};
use crate::domain::user::UserSummary;
use crate::present::{JobRef, JobView, RunView, SavedQueryRef};
use crate::web::error::ErrorList;

/// The base path the API's operations are documented under; `document()` adds the others.
const DECLARED_BASE: &str = "/rest/ng";

/// The OpenAPI document: the operations of every served route, under every base path, with the
/// ways to sign in and the shared error responses.
pub fn document() -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let components = doc.components.get_or_insert_with(Default::default);
    for (group, prefix) in [
        (api_routes as fn(&mut Routes), DECLARED_BASE),
        (root_routes, ""),
    ] {
        let (paths, schemas) = Routes::documenting(group).document(prefix);
        doc.paths.merge(paths);
        components.schemas.extend(schemas);
    }
    components.add_security_scheme(
        API_TOKEN,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-OS-API-TOKEN",
            "The `token` from `POST /rest/ng/sessions` (OpenSpecimen's header). Tokens expire \
             after a period without use.",
        ))),
    );
    let mut basic = Http::new(HttpAuthScheme::Basic);
    basic.description =
        Some("Login name and password on every request (throttled like sign-in).".to_string());
    components.add_security_scheme(BASIC, SecurityScheme::Http(basic));
    let mut bearer = Http::new(HttpAuthScheme::Bearer);
    bearer.description = Some(
        "An API token from `POST /rest/ng/api-tokens` (or a session token) as \
         `Authorization: Bearer <token>`; API tokens are also accepted in `X-OS-API-TOKEN`."
            .to_string(),
    );
    components.add_security_scheme(BEARER, SecurityScheme::Http(bearer));
    for (name, response) in shared_responses() {
        components
            .responses
            .insert(name.to_string(), RefOr::T(response));
    }

    let mut mirrored = Vec::new();
    for (path, item) in doc.paths.paths.iter_mut() {
        let in_api = path.starts_with(DECLARED_BASE) || path == "/metrics";
        for operation in operations_mut(item) {
            optional_parts_without_null(operation);
            shared_security(operation);
            if in_api {
                add_shared_responses(operation);
            }
        }
        if let Some(rest) = path.strip_prefix(DECLARED_BASE) {
            for base in BASE_PATHS.iter().filter(|b| **b != DECLARED_BASE) {
                let mut alias = item.clone();
                let prefix = base.trim_matches('/').replace('/', "_");
                for operation in operations_mut(&mut alias) {
                    operation.operation_id = operation
                        .operation_id
                        .as_ref()
                        .map(|id| format!("{prefix}_{id}"));
                    operation.description = Some(format!(
                        "{}\n\nThe same operation as `{path}`: `{base}` is OpenSpecimen's base path.",
                        operation.description.as_deref().unwrap_or_default()
                    ));
                }
                mirrored.push((format!("{base}{rest}"), alias));
            }
        }
    }
    for (path, item) in mirrored {
        doc.paths.paths.insert(path, item);
    }
    doc
}

/// Every operation takes an API token, Basic authorization or a Bearer token, unless its handler
/// declares it public with `security(())` (an empty requirement), which leaves it without any.
fn shared_security(operation: &mut Operation) {
    operation.security = match operation.security.take() {
        None => Some(
            [API_TOKEN, BASIC, BEARER]
                .into_iter()
                .map(|scheme| SecurityRequirement::new(scheme, Vec::<String>::new()))
                .collect(),
        ),
        Some(requirements)
            if requirements
                .iter()
                .all(|r| *r == SecurityRequirement::default()) =>
        {
            None
        }
        declared => declared,
    };
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// `Option<T>` means "may be left out" in a parameter or body, never "may be `null`": a header
/// or query value cannot be null, and an optional body that is `null` is rejected.
fn optional_parts_without_null(operation: &mut Operation) {
    for parameter in operation.parameters.iter_mut().flatten() {
        let RefOr::T(parameter) = parameter else {
            continue;
        };
        if let Some(RefOr::T(Schema::Object(object))) = &mut parameter.schema
            && let SchemaType::Array(types) = &object.schema_type
        {
            let types: Vec<Type> = types
                .iter()
                .filter(|t| **t != Type::Null)
                .cloned()
                .collect();
            if let [only] = types.as_slice() {
                object.schema_type = SchemaType::Type(only.clone());
            }
        }
    }
    if let Some(RefOr::T(body)) = &mut operation.request_body {
        for content in body.content.values_mut() {
            let RefOr::T(content) = content else { continue };
            let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
                continue;
            };
            let is_null = |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
            let not_null: Vec<RefOr<Schema>> = one_of
                .items
                .iter()
                .filter(|s| !is_null(s))
                .cloned()
                .collect();
            if let [only] = not_null.as_slice() {
                content.schema = Some(only.clone());
                body.required = Some(Required::False);
            }
        }
    }
}

const API_TOKEN: &str = "apiToken";
const BASIC: &str = "basic";
const BEARER: &str = "bearer";

/// The error responses of API operations: `(component name, status, response)`.
fn shared_responses() -> Vec<(&'static str, Response)> {
    let errors = |description: &str| {
        ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorList")))
                .build(),
        )
    };
    let integer_header = |description: &str| {
        HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
            .description(Some(description))
            .build()
    };
    let string_header = |description: &str| {
        HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .description(Some(description))
            .build()
    };
    vec![
        (
            "BadRequest",
            errors(
                "A user error, every problem listed: invalid input (`INVALID_REQUEST` names the \
                 parameter), not found (`SCHEDULED_JOB_NOT_FOUND`, …) or not allowed \
                 (`SCHEDULED_JOB_OP_NOT_ALLOWED`, `ACCESS_DENIED`), as OpenSpecimen answers.",
            )
            .build(),
        ),
        (
            "Unauthorized",
            errors("Not signed in, or a bad or expired token (`AUTH_REQUIRED`, `AUTH_INVALID_CREDENTIALS`).")
                .header(
                    "WWW-Authenticate",
                    string_header("`Basic realm=\"labcron\"`."),
                )
                .build(),
        ),
        (
            "PayloadTooLarge",
            errors("The body is over the configured limit (`PAYLOAD_TOO_LARGE`).").build(),
        ),
        (
            "TooManyRequests",
            errors("Too many failed sign-ins for this login name and address (`AUTH_TOO_MANY_ATTEMPTS`).")
                .header("Retry-After", integer_header("Seconds until sign-in is allowed again."))
                .build(),
        ),
        (
            "InternalError",
            errors(
                "`INTERNAL_ERROR`: a generic message with an error id; the cause is only logged.",
            )
            .build(),
        ),
    ]
}

/// Adds the shared error responses an operation can give: 400 and 500 always, 401 and 429 when
/// it needs a signed-in caller (and for sign-in itself), 413 when it takes a body.
fn add_shared_responses(operation: &mut Operation) {
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let signs_in = operation.operation_id.as_deref() == Some("signIn");
    let mut add = |status: &str, name: &str| {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    };
    add("400", "BadRequest");
    if secured || signs_in {
        add("401", "Unauthorized");
        add("429", "TooManyRequests");
    }
    add("500", "InternalError");
    if operation.request_body.is_some() {
        operation
            .responses
            .responses
            .entry("413".to_string())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name("PayloadTooLarge")));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "labcron",
        description = "OpenSpecimen's scheduled-jobs REST API, served by labcron, plus labcron's \
            extensions. Every path under `/rest/ng` is also served under `/openspecimen/rest/ng`. \
            Sign in with `POST /rest/ng/sessions` and send the token as `X-OS-API-TOKEN`, or use \
            HTTP Basic authentication. Dates are epoch milliseconds. Success is always HTTP 200; \
            errors are a JSON array of `{\"code\", \"message\"}`.",
        license(name = "MIT")
    ),
    components(schemas(
        ErrorItem, ErrorList, JobView, RunView, UserSummary, SavedQueryRef, JobType, RepeatKind,
        ActivityStatus, MisfirePolicy, RunStatus, Trigger, NotifyOn, JobRef,
    )),
    tags(
        (name = "Sessions", description = "Sign in and out."),
        (name = "Users", description = "Users: anyone signed in lists them; admins manage them."),
        (name = "Jobs", description = "Scheduled jobs (`/scheduled-jobs`)."),
        (name = "Runs", description = "A job's runs: queue, list, wait for, download, follow, cancel."),
        (name = "Saved queries", description = "The SQL that QUERY jobs run."),
        (name = "API tokens", description = "Long-lived tokens for services (shown once, stored hashed)."),
        (name = "Audit", description = "Who did what: the audit trail (admins)."),
        (name = "Operations", description = "Health, metrics and this documentation."),
    )
)]
struct ApiDoc;
