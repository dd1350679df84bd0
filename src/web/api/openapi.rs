//! `GET /openapi.json`, the OpenAPI 3.1 description of the whole HTTP API, and `GET /docs`, a
//! browsable page (Swagger UI, compiled into the binary: no CDN, works offline). Both are public,
//! like `/health`: they are static files of the binary and reveal nothing about the ledger.
//!
//! The operations are declared here, on doc-only functions, rather than on the handlers; the
//! schemas come from the Rust types the handlers serialise (`JobView`, `RunView`, …). Each
//! operation is declared once under `/rest/ng`; `document()` mirrors it under every other base
//! path, and adds the error responses every API operation shares (the contract's error array for
//! 400, 401, 413, 429 and 500). `tests/api/openapi.rs` checks that every served route is here.
//! This module must not change behaviour: it only describes it.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, RefOr, Required};
use utoipa::{OpenApi, PartialSchema, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::BASE_PATHS;
use super::api_tokens::{ApiTokenView, NewApiTokenView};
use super::audit::AuditEventView;
use super::jobs::FireTime;
use super::saved_queries::SavedQueryView;
use super::sessions::SessionView;
use super::users::UserView;
use crate::domain::errors::ErrorItem;
use crate::domain::job::{ActivityStatus, JobType, MisfirePolicy, NotifyOn, RepeatKind};
use crate::domain::run::{RunStatus, Trigger};
use crate::domain::user::UserSummary;
use crate::error::ServiceError;
use crate::present::{JobRef, JobView, RunView, SavedQueryRef};

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/openapi.json";

/// The base path every API operation is declared under; `document()` adds the others.
const DECLARED_BASE: &str = "/rest/ng";

/// `/docs` redirects to `/docs/`, where Swagger UI's files live. (Route paths stay literals:
/// `tests/api/openapi.rs` reads them from the source.)
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/openapi.json").route(web::get().to(openapi_json)))
        .service(web::resource("/docs").route(web::get().to(docs_redirect)))
        .service(SwaggerUi::new("/docs/{_:.*}").config(
            // The token typed into "Authorize" stays in the page's memory only (no
            // `persistAuthorization`: it would keep it in the browser's local storage).
            Config::new([DOCUMENT_PATH]).try_it_out_enabled(true),
        ));
}

/// The document as served, serialised once.
static DOCUMENT_JSON: LazyLock<Result<String, String>> =
    LazyLock::new(|| serde_json::to_string(&document()).map_err(|e| e.to_string()));

async fn openapi_json() -> Result<HttpResponse, ServiceError> {
    let body = DOCUMENT_JSON
        .as_ref()
        .map_err(|e| ServiceError::Internal(anyhow::anyhow!("OpenAPI document: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body.clone()))
}

async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

/// The OpenAPI document: every operation under every base path, the shared error responses and
/// the two ways to sign in.
pub fn document() -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let components = doc.components.get_or_insert_with(Default::default);
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
            accept_bearer(operation);
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

/// Every operation that needs a sign-in also takes a Bearer token (issue 15).
fn accept_bearer(operation: &mut Operation) {
    if let Some(security) = operation.security.as_mut()
        && !security.is_empty()
    {
        security.push(utoipa::openapi::security::SecurityRequirement::new(
            BEARER,
            Vec::<String>::new(),
        ));
    }
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

// ---- Schemas the handlers build with `json!` or read by hand: doc-only types. ----

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
struct ErrorList;
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

/// `GET /health`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Health {
    /// `ok`, or `down` when a part is down (then the status is 503).
    #[schema(examples("ok"))]
    status: String,
    /// The server's version.
    version: String,
    /// `ok` or `down`.
    database: String,
    /// `ok`, or `stalled` when the scheduler stopped firing.
    scheduler: String,
    /// Runs executing now.
    running_runs: i64,
}

/// `GET /scheduled-jobs/count`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
struct JobCount {
    count: i64,
}

/// `DELETE /sessions`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
struct SignedOut {
    #[schema(examples("success"))]
    status: String,
}

/// `POST /sessions`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SignInRequest {
    #[schema(min_length = 1)]
    login_name: String,
    /// Not trimmed: spaces may be part of a password.
    #[schema(min_length = 1)]
    password: String,
    /// Accepted and ignored (OpenSpecimen's field).
    domain_name: Option<String>,
}

/// `POST /api-tokens`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct NewApiTokenRequest {
    /// What the token is for, 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// Epoch milliseconds in the future; null or absent: the token does not expire.
    expires_at: Option<i64>,
    /// Admins only: make the token for this user (default: the caller).
    user_id: Option<i64>,
}

/// A reference to a user or saved query by id (a bare number is accepted too).
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
struct IdRef {
    id: i64,
}

/// A job as `POST` and `PUT /scheduled-jobs` take it (`PUT` replaces the whole job). Strings are
/// trimmed (blank means absent); numbers may also be sent as numeric strings; unknown fields are
/// ignored. Only the schedule fields the `repeatSchedule` uses are stored.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct JobRequest {
    /// Unique among jobs that are not deleted; at most 255 characters.
    #[schema(min_length = 1, max_length = 255)]
    name: String,
    #[serde(rename = "type")]
    job_type: JobType,
    repeat_schedule: RepeatKind,
    /// HOURLY, DAILY, WEEKLY, MONTHLY: 0–59.
    #[schema(minimum = 0, maximum = 59)]
    scheduled_minute: Option<i64>,
    /// DAILY, WEEKLY, MONTHLY: 0–23.
    #[schema(minimum = 0, maximum = 23)]
    scheduled_hour: Option<i64>,
    /// WEEKLY: `SUNDAY` … `SATURDAY`.
    #[schema(examples("MONDAY"))]
    scheduled_day_of_week: Option<String>,
    /// MONTHLY: 1–31 (a month without the day fires on its last day).
    #[schema(minimum = 1, maximum = 31)]
    scheduled_day_of_month: Option<i64>,
    /// MINUTELY: 1–1440 (0 or absent means 1).
    #[schema(minimum = 0, maximum = 1440)]
    minutely_interval: Option<i64>,
    /// HOURLY: 1–8784 (absent means 1).
    #[schema(minimum = 1, maximum = 8784)]
    hourly_interval: Option<i64>,
    /// CRON: 5 or 6 fields (seconds optional); `L`, `#` and `W` allowed.
    cron_expression: Option<String>,
    /// An IANA zone name; default the server's zone.
    #[schema(examples("Europe/Berlin"))]
    timezone: Option<String>,
    /// Epoch milliseconds; no scheduled fire before it. Default: now (on update: unchanged).
    start_date: Option<i64>,
    /// Epoch milliseconds, not before `startDate`; no scheduled fire after it.
    end_date: Option<i64>,
    /// `Active` (default) or `Closed` (paused).
    #[schema(examples("Active", "Closed"))]
    activity_status: Option<String>,
    /// The user scheduled runs run as.
    run_as: Option<IdRef>,
    recipients: Option<Vec<IdRef>>,
    shared_with: Option<Vec<IdRef>>,
    /// INTERNAL: `files-cleaner` (alias `FilesBacklogCleaner`), `database-backup`, `runs-report`.
    task_impl_fqn: Option<String>,
    /// EXTERNAL (admins only): a program in the scripts directory and its arguments, split like
    /// a POSIX shell splits words but never run by a shell; an unquoted `#` is rejected.
    command: Option<String>,
    /// Arguments appended on every run.
    fixed_args: Option<String>,
    /// Whether runs take runtime `args`. A QUERY job whose saved query has no named parameters
    /// may not (`SCHEDULED_JOB_RT_ARGS_NOT_ALLOWED`).
    rt_args_provided: Option<bool>,
    rt_args_help_text: Option<String>,
    /// QUERY: the saved query to run.
    saved_query: Option<IdRef>,
    /// 1 to 604800; default from the configuration.
    #[schema(minimum = 1, maximum = 604800)]
    timeout_seconds: Option<i64>,
    misfire_policy: Option<MisfirePolicy>,
    /// 0 to 100000; default from the configuration.
    #[schema(minimum = 0, maximum = 100000)]
    max_queued_runs: Option<i64>,
    /// EXTERNAL only: stdout is the result file.
    result_from_stdout: Option<bool>,
    /// An http(s) URL that receives each finished run as a signed POST.
    webhook_url: Option<String>,
    /// How many times a failed run (exit code, timeout, interrupted by a restart) is tried
    /// again as a new `RETRY` run; default 0.
    #[schema(minimum = 0, maximum = 10)]
    max_retries: Option<i64>,
    /// Seconds between a failed run and its retry; default 60.
    #[schema(minimum = 1, maximum = 86400)]
    retry_delay_seconds: Option<i64>,
    /// When e-mail and webhooks go out; default `ALWAYS`.
    notify_on: Option<NotifyOn>,
    /// Jobs queued (`CHAINED`) when a run's series ends SUCCEEDED; the caller must be allowed to
    /// run them; a cycle is refused with `SCHEDULED_JOB_CHAIN_CYCLE`.
    on_success: Option<Vec<IdRef>>,
    /// Jobs queued (`CHAINED`) when a run's series ends FAILED.
    on_failure: Option<Vec<IdRef>>,
}

/// `GET /scheduled-job-runs/count`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
struct RunCount {
    count: i64,
}

/// `POST /scheduled-jobs/{jobId}/runs` (the body is optional).
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
struct RunRequest {
    /// Runtime arguments, split into words like `command`; an unquoted `#` is rejected.
    args: Option<String>,
}

/// What `POST /scheduled-jobs/{jobId}/runs` answers: the job (OpenSpecimen's shape), or the new
/// run with `?response=run`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum RunQueued {
    Job(Box<JobView>),
    Run(Box<RunView>),
}

/// `POST /users` (admins).
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct NewUserRequest {
    /// 1–100 characters, not starting with `$`; unique.
    #[schema(min_length = 1, max_length = 100)]
    login_name: String,
    /// At least the configured minimum length. Without it the user cannot sign in until a
    /// password is set (`PUT /users/password`), as in OpenSpecimen.
    #[schema(min_length = 1)]
    password: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    email_address: Option<String>,
    admin: Option<bool>,
    /// OpenSpecimen's user type: `SUPER` makes an admin when `admin` is absent; others are ignored.
    #[serde(rename = "type")]
    user_type: Option<String>,
}

/// `PUT /users/password`, OpenSpecimen's password change.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PasswordChangeRequest {
    /// The user whose password changes; default the caller.
    user_id: Option<i64>,
    /// Required unless an admin changes another user's password.
    old_password: Option<String>,
    #[schema(min_length = 1)]
    new_password: String,
}

/// `PUT /users/{userId}`: the fields to change. Admins may change anyone's; a user may change
/// their own names, e-mail address and password, but not `loginName` or `admin`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct UserChangeRequest {
    login_name: Option<String>,
    password: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    email_address: Option<String>,
    admin: Option<bool>,
}

/// `POST` and `PUT /saved-queries`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SavedQueryRequest {
    #[schema(min_length = 1)]
    title: String,
    /// One read-only statement; `:name` parameters are filled from a run's `name=value` args.
    #[schema(min_length = 1, examples("SELECT 1 AS one"))]
    sql: String,
    /// A configured data source; default `lab`.
    data_source: Option<String>,
}

/// A file's bytes (a result file or a log).
struct FileBytes;
impl PartialSchema for FileBytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::String).into()
    }
}
impl ToSchema for FileBytes {}

// ---- The operations. ----

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
    paths(
        ops::sign_in, ops::sign_out,
        ops::list_users, ops::create_user, ops::change_password, ops::get_user, ops::update_user, ops::delete_user,
        ops::list_jobs, ops::create_job, ops::count_jobs, ops::get_job, ops::update_job,
        ops::delete_job, ops::next_runs,
        ops::list_runs, ops::queue_run, ops::get_run, ops::result_file, ops::result_file_head, ops::run_log, ops::cancel_run,
        ops::list_all_runs, ops::count_all_runs,
        ops::list_saved_queries, ops::create_saved_query, ops::get_saved_query,
        ops::update_saved_query, ops::delete_saved_query,
        ops::list_api_tokens, ops::create_api_token, ops::revoke_api_token,
        ops::list_audit_events,
        ops::health, ops::metrics, ops::openapi_document, ops::docs_page,
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

/// Doc-only functions: one per operation, carrying its `#[utoipa::path]`.
#[allow(dead_code)]
mod ops {
    use super::*;

    #[utoipa::path(post, path = "/rest/ng/sessions", tag = "Sessions", operation_id = "signIn",
        summary = "Sign in",
        description = "Checks the password (throttled per login name and client address) and \
            returns the user with a new `token` for `X-OS-API-TOKEN`.",
        request_body = SignInRequest,
        responses(
            (status = 200, description = "Signed in.", body = SessionView),
            (status = 503, description = "Directory sign-in (`[auth.ldap]`) is on and the \
                directory cannot be reached in time (`AUTH_DIRECTORY_UNAVAILABLE`); local \
                accounts still sign in.", body = ErrorList),
        ))]
    fn sign_in() {}

    #[utoipa::path(delete, path = "/rest/ng/sessions", tag = "Sessions", operation_id = "signOut",
        summary = "Sign out", description = "Ends the token the request carries.",
        responses((status = 200, description = "Signed out.", body = SignedOut)),
        security(("apiToken" = []), ("basic" = [])))]
    fn sign_out() {}

    #[utoipa::path(get, path = "/rest/ng/users", tag = "Users", operation_id = "listUsers",
        summary = "List users",
        description = "Every active user. `emailAddress`, `admin`, `activityStatus` and \
            `creationDate` only to admins and for the caller's own entry.",
        responses((status = 200, description = "The users.", body = Vec<UserView>)),
        security(("apiToken" = []), ("basic" = [])))]
    fn list_users() {}

    #[utoipa::path(post, path = "/rest/ng/users", tag = "Users", operation_id = "createUser",
        summary = "Create a user (admins)", request_body = NewUserRequest,
        responses((status = 200, description = "The new user.", body = UserView)),
        security(("apiToken" = []), ("basic" = [])))]
    fn create_user() {}

    #[utoipa::path(put, path = "/rest/ng/users/password", tag = "Users", operation_id = "changePassword",
        summary = "Change a password (OpenSpecimen's call)",
        description = "Admins set any user's password without the old one; changing one's own \
            password needs `oldPassword` (`USER_INVALID_OLD_PASSWD`). Answers `true`.",
        request_body = PasswordChangeRequest,
        responses((status = 200, description = "Changed.", body = bool)),
        security(("apiToken" = []), ("basic" = [])))]
    fn change_password() {}

    #[utoipa::path(get, path = "/rest/ng/users/{userId}", tag = "Users", operation_id = "getUser",
        summary = "One user",
        params(("userId" = i64, Path, description = "The user's id.")),
        responses((status = 200, description = "The user.", body = UserView)),
        security(("apiToken" = []), ("basic" = [])))]
    fn get_user() {}

    #[utoipa::path(put, path = "/rest/ng/users/{userId}", tag = "Users", operation_id = "updateUser",
        summary = "Change a user",
        description = "Admins change anyone; a user may change their own names, e-mail address and \
            password. The last admin cannot stop being one.",
        params(("userId" = i64, Path, description = "The user's id.")),
        request_body = UserChangeRequest,
        responses((status = 200, description = "The user as changed.", body = UserView)),
        security(("apiToken" = []), ("basic" = [])))]
    fn update_user() {}

    #[utoipa::path(delete, path = "/rest/ng/users/{userId}", tag = "Users", operation_id = "deleteUser",
        summary = "Disable a user (admins)",
        description = "A soft delete: the user can no longer sign in. The last admin cannot be deleted.",
        params(("userId" = i64, Path, description = "The user's id.")),
        responses((status = 200, description = "The user, `activityStatus` `Disabled`.", body = UserView)),
        security(("apiToken" = []), ("basic" = [])))]
    fn delete_user() {}

    #[utoipa::path(get, path = "/rest/ng/scheduled-jobs", tag = "Jobs", operation_id = "listJobs",
        summary = "List jobs",
        description = "The jobs the caller may see (admins: all; others: created by or shared with \
            them), newest id first, each with `lastRunOn`.",
        params(
            ("query" = Option<String>, Query, description = "A case-insensitive part of the name."),
            ("type" = Option<JobType>, Query, description = "Only jobs of this type."),
            ("startAt" = Option<i64>, Query, description = "Skip this many (negative means 0)."),
            ("maxResults" = Option<i64>, Query,
                description = "At most this many; default 100, at most 1000 (0 or less means 100)."),
        ),
        responses((status = 200, description = "The jobs.", body = Vec<JobView>)),
        security(("apiToken" = []), ("basic" = [])))]
    fn list_jobs() {}

    #[utoipa::path(post, path = "/rest/ng/scheduled-jobs", tag = "Jobs", operation_id = "createJob",
        summary = "Create a job",
        description = "Validates every field and reports every problem at once. Only admins create \
            EXTERNAL or INTERNAL jobs.",
        request_body = JobRequest,
        responses((status = 200, description = "The saved job with its `id` and `nextRunOn`.", body = JobView)),
        security(("apiToken" = []), ("basic" = [])))]
    fn create_job() {}

    #[utoipa::path(get, path = "/rest/ng/scheduled-jobs/count", tag = "Jobs", operation_id = "countJobs",
        summary = "Count jobs",
        params(
            ("query" = Option<String>, Query, description = "A case-insensitive part of the name."),
            ("type" = Option<JobType>, Query, description = "Only jobs of this type."),
        ),
        responses((status = 200, description = "How many jobs the list would give.", body = JobCount)),
        security(("apiToken" = []), ("basic" = [])))]
    fn count_jobs() {}

    #[utoipa::path(get, path = "/rest/ng/scheduled-jobs/{jobId}", tag = "Jobs", operation_id = "getJob",
        summary = "One job",
        params(("jobId" = i64, Path, description = "The job's id.")),
        responses((status = 200, description = "The job.", body = JobView)),
        security(("apiToken" = []), ("basic" = [])))]
    fn get_job() {}

    #[utoipa::path(put, path = "/rest/ng/scheduled-jobs/{jobId}", tag = "Jobs", operation_id = "updateJob",
        summary = "Replace a job",
        description = "A full replace, not a patch: fields left out take their defaults. Its \
            creator or an admin only.",
        params(("jobId" = i64, Path, description = "The job's id.")),
        request_body = JobRequest,
        responses((status = 200, description = "The job as saved.", body = JobView)),
        security(("apiToken" = []), ("basic" = [])))]
    fn update_job() {}

    #[utoipa::path(delete, path = "/rest/ng/scheduled-jobs/{jobId}", tag = "Jobs", operation_id = "deleteJob",
        summary = "Delete a job",
        description = "A soft delete: `activityStatus` becomes `Disabled`, the name gets \
            `_<epochMillis>` appended, queued runs are cancelled, a running run finishes, history \
            is kept. Later calls on the id answer `SCHEDULED_JOB_NOT_FOUND`.",
        params(("jobId" = i64, Path, description = "The job's id.")),
        responses((status = 200, description = "The deleted job.", body = JobView)),
        security(("apiToken" = []), ("basic" = [])))]
    fn delete_job() {}

    #[utoipa::path(get, path = "/rest/ng/scheduled-jobs/{jobId}/next-runs", tag = "Jobs",
        operation_id = "nextRuns", summary = "Next fire times (ext)",
        description = "The next scheduled fire instants, from the function that fires the job \
            (daylight-saving changes included). Empty for paused jobs and ONDEMAND.",
        params(
            ("jobId" = i64, Path, description = "The job's id."),
            ("count" = Option<i64>, Query, description = "How many: 1 to 100, default 5.",
                minimum = 1, maximum = 100),
        ),
        responses((status = 200, description = "The instants.", body = Vec<FireTime>)),
        security(("apiToken" = []), ("basic" = [])))]
    fn next_runs() {}

    #[utoipa::path(get, path = "/rest/ng/scheduled-jobs/{jobId}/runs", tag = "Runs",
        operation_id = "listRuns", summary = "List a job's runs",
        description = "Newest first. `fromDate` and `toDate` bound the run's creation time and \
            accept `20220221`, `20220221T061500`, `2022-02-21 06:15`, `2022-02-21`, RFC 3339 with \
            an offset, or epoch milliseconds; a date-only `toDate` includes that whole day.",
        params(
            ("jobId" = i64, Path, description = "The job's id."),
            ("fromDate" = Option<String>, Query, description = "Created at or after."),
            ("toDate" = Option<String>, Query, description = "Created at or before; default now."),
            ("status" = Option<RunStatus>, Query, description = "Only runs in this status."),
            ("startAt" = Option<i64>, Query, description = "Skip this many (negative means 0)."),
            ("maxResults" = Option<i64>, Query,
                description = "At most this many; default 100, at most 1000 (0 or less means 100)."),
            ("X-OS-CLIENT-TZ" = Option<String>, Header,
                description = "The IANA zone of dates without an offset; default the server's zone."),
        ),
        responses((status = 200, description = "The runs.", body = Vec<RunView>)),
        security(("apiToken" = []), ("basic" = [])))]
    fn list_runs() {}

    #[utoipa::path(get, path = "/rest/ng/scheduled-job-runs", tag = "Runs",
        operation_id = "listAllRuns", summary = "List the runs of every job",
        description = "The runs of every job the caller may see (admins: every job; others: the             jobs they created or that are shared with them), newest first, in the same JSON as a             job's runs. `fromDate` and `toDate` bound the run's creation time and accept the same             formats as a job's runs list.",
        params(
            ("fromDate" = Option<String>, Query, description = "Created at or after."),
            ("toDate" = Option<String>, Query, description = "Created at or before; default now."),
            ("status" = Option<RunStatus>, Query, description = "Only runs in this status."),
            ("jobId" = Option<i64>, Query, description = "Only runs of this job."),
            ("trigger" = Option<Trigger>, Query, description = "Only runs with this trigger."),
            ("cancelled" = Option<bool>, Query,
                description = "true: only cancelled runs; false: none of them."),
            ("startAt" = Option<i64>, Query, description = "Skip this many (negative means 0)."),
            ("maxResults" = Option<i64>, Query,
                description = "At most this many; default 100, at most 1000 (0 or less means 100)."),
            ("X-OS-CLIENT-TZ" = Option<String>, Header,
                description = "The IANA zone of dates without an offset; default the server's zone."),
        ),
        responses((status = 200, description = "The runs.", body = Vec<RunView>)),
        security(("apiToken" = []), ("basic" = [])))]
    fn list_all_runs() {}

    #[utoipa::path(get, path = "/rest/ng/scheduled-job-runs/count", tag = "Runs",
        operation_id = "countAllRuns", summary = "Count the runs of every job",
        params(
            ("fromDate" = Option<String>, Query, description = "Created at or after."),
            ("toDate" = Option<String>, Query, description = "Created at or before; default now."),
            ("status" = Option<RunStatus>, Query, description = "Only runs in this status."),
            ("jobId" = Option<i64>, Query, description = "Only runs of this job."),
            ("trigger" = Option<Trigger>, Query, description = "Only runs with this trigger."),
            ("cancelled" = Option<bool>, Query,
                description = "true: only cancelled runs; false: none of them."),
            ("X-OS-CLIENT-TZ" = Option<String>, Header,
                description = "The IANA zone of dates without an offset; default the server's zone."),
        ),
        responses((status = 200, description = "How many runs the list would give.", body = RunCount)),
        security(("apiToken" = []), ("basic" = [])))]
    fn count_all_runs() {}

    #[utoipa::path(post, path = "/rest/ng/scheduled-jobs/{jobId}/runs", tag = "Runs",
        operation_id = "queueRun", summary = "Run a job now",
        description = "Queues a run and answers at once; the run is in the ledger before the \
            answer is sent. A run requested while another runs or waits is `QUEUED` and runs \
            after it. A paused job answers `SCHEDULED_JOB_NOT_ACTIVE`; a full queue \
            `SCHEDULED_JOB_QUEUE_FULL`; `args` for a job that takes none (or for a QUERY job \
            whose saved query has no parameters) `SCHEDULED_JOB_RT_ARGS_NOT_ALLOWED`.",
        params(
            ("jobId" = i64, Path, description = "The job's id."),
            ("response" = Option<String>, Query,
                description = "`run` answers with the new run instead of the job."),
            ("Idempotency-Key" = Option<String>, Header,
                description = "1 to 200 characters. A repeat for the same job within 24 hours \
                    returns the first run and queues nothing."),
        ),
        request_body(content = Option<RunRequest>, description = "Optional."),
        responses((status = 200, description = "The job (or, with `response=run`, the run).",
            body = RunQueued,
            headers(("Location" = String, description = "The new run's URL.")))),
        security(("apiToken" = []), ("basic" = [])))]
    fn queue_run() {}

    #[utoipa::path(get, path = "/rest/ng/scheduled-jobs/{jobId}/runs/{runId}", tag = "Runs",
        operation_id = "getRun", summary = "One run",
        params(
            ("jobId" = i64, Path, description = "The job's id."),
            ("runId" = i64, Path, description = "The run's id (of this job)."),
            ("waitSeconds" = Option<i64>, Query,
                description = "Hold the answer until the run has finished or this many seconds \
                    (0 to 60) have passed.", minimum = 0, maximum = 60),
        ),
        responses((status = 200, description = "The run.", body = RunView)),
        security(("apiToken" = []), ("basic" = [])))]
    fn get_run() {}

    #[utoipa::path(get, path = "/rest/ng/scheduled-jobs/{jobId}/runs/{runId}/result-file", tag = "Runs",
        operation_id = "getResultFile", summary = "Download a run's result file",
        description = "The result as an attachment: CSV, a zip of several files, or whatever the \
            job wrote. Range requests work. No result: \
            `SCHEDULED_JOB_RESULT_DATA_FILE_NOT_AVAILABLE`; removed by retention: \
            `SCHEDULED_JOB_RESULT_DATA_FILE_NOT_FOUND`. Also allowed to the job's recipients \
            and the run's runner.",
        params(
            ("jobId" = i64, Path, description = "The job's id."),
            ("runId" = i64, Path, description = "The run's id (of this job)."),
            ("Range" = Option<String>, Header, description = "A byte range, e.g. `bytes=0-99`."),
        ),
        responses(
            (status = 200, description = "The file.",
                content((FileBytes = "text/csv"), (FileBytes = "application/zip"),
                    (FileBytes = "application/octet-stream"), (FileBytes = "*/*")),
                headers(
                    ("Content-Disposition" = String, description = "`attachment; filename=…` \
                        (ASCII), plus `filename*=UTF-8''…` (RFC 6266) for other names"),
                    ("X-Content-Type-Options" = String, description = "`nosniff`"),
                )),
            (status = 206, description = "The requested range of the file.",
                content((FileBytes = "text/csv"), (FileBytes = "application/zip"),
                    (FileBytes = "application/octet-stream"), (FileBytes = "*/*"))),
            (status = 416, description = "The range is outside the file.", body = ErrorList),
        ),
        security(("apiToken" = []), ("basic" = [])))]
    fn result_file() {}

    #[utoipa::path(head, path = "/rest/ng/scheduled-jobs/{jobId}/runs/{runId}/result-file", tag = "Runs",
        operation_id = "headResultFile", summary = "A run's result file: headers only",
        description = "What `GET` answers (status, size, type, name), without the body.",
        params(
            ("jobId" = i64, Path, description = "The job's id."),
            ("runId" = i64, Path, description = "The run's id (of this job)."),
        ),
        responses(
            (status = 200, description = "The file exists; no body.",
                headers(
                    ("Content-Length" = i64, description = "The file's size in bytes."),
                    ("Content-Disposition" = String, description = "`attachment; filename=…`"),
                    ("X-Content-Type-Options" = String, description = "`nosniff`"),
                )),
        ),
        security(("apiToken" = []), ("basic" = [])))]
    fn result_file_head() {}

    #[utoipa::path(get, path = "/rest/ng/scheduled-jobs/{jobId}/runs/{runId}/log", tag = "Runs",
        operation_id = "getRunLog", summary = "A run's output (ext)",
        description = "The combined stdout and stderr from `offset`. With `follow=true` the \
            response stays open and streams new output until the run ends; as Server-Sent Events \
            (`log` events, then an `end` event with the final status) when asked for \
            `text/event-stream`.",
        params(
            ("jobId" = i64, Path, description = "The job's id."),
            ("runId" = i64, Path, description = "The run's id (of this job)."),
            ("offset" = Option<i64>, Query, description = "Start at this byte (0 or more).",
                minimum = 0),
            ("follow" = Option<bool>, Query, description = "Stream until the run ends."),
        ),
        responses((status = 200, description = "The output.",
            content((String = "text/plain"), (String = "text/event-stream")),
            headers(
                ("X-Log-Offset" = i64, description = "The offset after the bytes sent (not when following)."),
                ("X-Run-Status" = String, description = "The run's status (not when following)."),
            ))),
        security(("apiToken" = []), ("basic" = [])))]
    fn run_log() {}

    #[utoipa::path(post, path = "/rest/ng/scheduled-jobs/{jobId}/runs/{runId}/cancel", tag = "Runs",
        operation_id = "cancelRun", summary = "Cancel a run (ext)",
        description = "A `QUEUED` run becomes `FAILED` at once; an `IN_PROGRESS` run's process group \
            gets SIGTERM, then SIGKILL after a grace period. `message` says who cancelled it. A \
            finished run: `SCHEDULED_JOB_RUN_NOT_CANCELLABLE`.",
        params(
            ("jobId" = i64, Path, description = "The job's id."),
            ("runId" = i64, Path, description = "The run's id (of this job)."),
        ),
        responses((status = 200, description = "The run (finished, or still stopping).", body = RunView)),
        security(("apiToken" = []), ("basic" = [])))]
    fn cancel_run() {}

    #[utoipa::path(get, path = "/rest/ng/saved-queries", tag = "Saved queries",
        operation_id = "listSavedQueries", summary = "List saved queries",
        params(
            ("query" = Option<String>, Query, description = "A case-insensitive part of the title."),
            ("startAt" = Option<i64>, Query, description = "Skip this many (negative means 0)."),
            ("maxResults" = Option<i64>, Query,
                description = "At most this many; default 100, at most 1000 (0 or less means 100)."),
        ),
        responses((status = 200, description = "The saved queries.", body = Vec<SavedQueryView>)),
        security(("apiToken" = []), ("basic" = [])))]
    fn list_saved_queries() {}

    #[utoipa::path(post, path = "/rest/ng/saved-queries", tag = "Saved queries",
        operation_id = "createSavedQuery", summary = "Create a saved query",
        description = "The SQL must compile as one read-only statement against its data source, \
            else `SAVED_QUERY_INVALID_SQL` with SQLite's message.",
        request_body = SavedQueryRequest,
        responses((status = 200, description = "The saved query.", body = SavedQueryView)),
        security(("apiToken" = []), ("basic" = [])))]
    fn create_saved_query() {}

    #[utoipa::path(get, path = "/rest/ng/saved-queries/{queryId}", tag = "Saved queries",
        operation_id = "getSavedQuery", summary = "One saved query",
        params(("queryId" = i64, Path, description = "The saved query's id.")),
        responses((status = 200, description = "The saved query.", body = SavedQueryView)),
        security(("apiToken" = []), ("basic" = [])))]
    fn get_saved_query() {}

    #[utoipa::path(put, path = "/rest/ng/saved-queries/{queryId}", tag = "Saved queries",
        operation_id = "updateSavedQuery", summary = "Replace a saved query",
        description = "Its creator or an admin only.",
        params(("queryId" = i64, Path, description = "The saved query's id.")),
        request_body = SavedQueryRequest,
        responses((status = 200, description = "The saved query as saved.", body = SavedQueryView)),
        security(("apiToken" = []), ("basic" = [])))]
    fn update_saved_query() {}

    #[utoipa::path(delete, path = "/rest/ng/saved-queries/{queryId}", tag = "Saved queries",
        operation_id = "deleteSavedQuery", summary = "Delete a saved query",
        description = "A soft delete; its creator or an admin only.",
        params(("queryId" = i64, Path, description = "The saved query's id.")),
        responses((status = 200, description = "The deleted saved query.", body = SavedQueryView)),
        security(("apiToken" = []), ("basic" = [])))]
    fn delete_saved_query() {}

    #[utoipa::path(get, path = "/rest/ng/api-tokens", tag = "API tokens",
        operation_id = "listApiTokens", summary = "List API tokens",
        description = "The caller's tokens that are not revoked (expired ones included), newest \
            first; never the secret. Admins: `all=true` for everyone's, `userId` for one user's.",
        params(
            ("all" = Option<bool>, Query, description = "Admins: every user's tokens."),
            ("userId" = Option<i64>, Query, description = "Admins (or the user themself): this user's tokens."),
        ),
        responses((status = 200, description = "The tokens.", body = Vec<ApiTokenView>)),
        security(("apiToken" = []), ("basic" = [])))]
    fn list_api_tokens() {}

    #[utoipa::path(post, path = "/rest/ng/api-tokens", tag = "API tokens",
        operation_id = "createApiToken", summary = "Make an API token",
        description = "Returns the token once (`token`); only its SHA-256 is kept. It \
            authenticates as its user in `X-OS-API-TOKEN` or `Authorization: Bearer` until it \
            expires or is revoked, and stops working when its user is disabled. A request \
            authenticated by an API token cannot make one (`API_TOKEN_NOT_ALLOWED`).",
        request_body = NewApiTokenRequest,
        responses((status = 200, description = "The new token, with its secret.", body = NewApiTokenView)),
        security(("apiToken" = []), ("basic" = [])))]
    fn create_api_token() {}

    #[utoipa::path(delete, path = "/rest/ng/api-tokens/{tokenId}", tag = "API tokens",
        operation_id = "revokeApiToken", summary = "Revoke an API token",
        description = "One's own, or (admins) anyone's. It stops working at once.",
        params(("tokenId" = i64, Path, description = "The token's id.")),
        responses((status = 200, description = "The revoked token.", body = ApiTokenView)),
        security(("apiToken" = []), ("basic" = [])))]
    fn revoke_api_token() {}

    #[utoipa::path(get, path = "/rest/ng/audit-events", tag = "Audit",
        operation_id = "listAuditEvents", summary = "The audit trail (admins)",
        description = "Events newest first. Dates take the runs list's formats (`20220221`, \
            `20220221T061500`, `2022-02-21 06:15`, `2022-02-21`, RFC 3339, epoch milliseconds); \
            a date-only `toDate` covers that whole day; times without an offset are in \
            `X-OS-CLIENT-TZ` or the server's zone. Events cannot be changed or deleted.",
        params(
            ("fromDate" = Option<String>, Query, description = "Events at or after this instant."),
            ("toDate" = Option<String>, Query, description = "Events at or before this instant."),
            ("actor" = Option<String>, Query, description = "Login name of whoever acted (any case)."),
            ("action" = Option<String>, Query, description = "An action name, e.g. `JOB_UPDATE`."),
            ("objectType" = Option<String>, Query, description = "`USER`, `API_TOKEN`, `JOB`, `RUN`, `SAVED_QUERY`, `LEDGER`."),
            ("objectId" = Option<String>, Query, description = "The object's id."),
            ("startAt" = Option<i64>, Query, description = "Skip this many (negative means 0)."),
            ("maxResults" = Option<i64>, Query,
                description = "At most this many; default 100, at most 1000 (0 or less means 100)."),
        ),
        responses((status = 200, description = "The events.", body = Vec<AuditEventView>)),
        security(("apiToken" = []), ("basic" = [])))]
    fn list_audit_events() {}

    #[utoipa::path(get, path = "/health", tag = "Operations", operation_id = "health",
        summary = "Health (no sign-in)",
        responses(
            (status = 200, description = "Every part is up.", body = Health),
            (status = 503, description = "A part is down; the body names it.", body = Health),
        ))]
    fn health() {}

    #[utoipa::path(get, path = "/metrics", tag = "Operations", operation_id = "metrics",
        summary = "Prometheus metrics (admins)",
        description = "Requests by route and status, runs by type and final status, run \
            durations, fire lateness, queued and running gauges, skipped and missed fires. \
            An API token (`Authorization: Bearer`, Prometheus' `authorization` setting) is the \
            cheap way to scrape; Basic authorization works too.",
        responses((status = 200, description = "Prometheus text exposition format 0.0.4.",
            content((String = "text/plain")))),
        security(("apiToken" = []), ("basic" = [])))]
    fn metrics() {}

    #[utoipa::path(get, path = "/openapi.json", tag = "Operations", operation_id = "openapiDocument",
        summary = "This document (no sign-in)",
        responses((status = 200, description = "The OpenAPI document.", body = Object)))]
    fn openapi_document() {}

    #[utoipa::path(get, path = "/docs", tag = "Operations", operation_id = "docsPage",
        summary = "The browsable API page (no sign-in)",
        description = "Redirects to `/docs/`, where Swagger UI is served from the binary.",
        responses(
            (status = 308, description = "To `/docs/`.",
                headers(("Location" = String, description = "`/docs/`"))),
            (status = 200, description = "The page (when the redirect is followed).",
                content((String = "text/html"))),
        ))]
    fn docs_page() {}
}
