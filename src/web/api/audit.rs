//! `GET /audit-events` (issue 15): the audit trail, admins only, newest first, with the run list's
//! date formats and paging. No route changes or deletes an event. Handlers start their events
//! with `audit_trail::event`; the action names and the change diff are `domain::audit`.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::auth::CurrentUser;
use super::params::{Paging, Query, client_tz};
use super::routes::Routes;
use crate::domain::dates::{ACCEPTED_FORMATS, Bound, parse_date_param};
use crate::error::ServiceError;
use crate::store::audit::{EventFilter, StoredEvent};
use crate::web::AppState;

pub fn routes(r: &mut Routes) {
    r.add(__path_list, list);
}

/// One event as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventView {
    pub id: i64,
    /// Epoch milliseconds.
    pub at: i64,
    /// Login name of whoever acted (for a failed sign-in, the name that was tried).
    pub actor: String,
    /// `SIGN_IN`, `SIGN_IN_FAILED`, `SIGN_OUT`, `USER_CREATE`, `USER_UPDATE`, `USER_DISABLE`,
    /// `USER_PASSWORD_CHANGE`, `API_TOKEN_CREATE`, `API_TOKEN_REVOKE`, `JOB_CREATE`, `JOB_UPDATE`,
    /// `JOB_DELETE`, `RUN_REQUEST`, `RUN_CANCEL`, `RESULT_DOWNLOAD`, `LOG_DOWNLOAD`,
    /// `SAVED_QUERY_CREATE`, `SAVED_QUERY_UPDATE`, `SAVED_QUERY_DELETE`, `BACKUP_TAKEN`,
    /// `BACKUP_RESTORED`.
    pub action: String,
    /// `USER`, `API_TOKEN`, `JOB`, `RUN`, `SAVED_QUERY`, `LEDGER`, or null.
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    /// What changed (for updates `{"changes": {"field": {"before": …, "after": …}}}`); never a
    /// secret.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub remote_addr: Option<String>,
}

impl From<StoredEvent> for AuditEventView {
    fn from(e: StoredEvent) -> Self {
        AuditEventView {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            object_type: e.object_type,
            object_id: e.object_id,
            detail: e.detail,
            remote_addr: e.remote_addr,
        }
    }
}

#[utoipa::path(get, path = "/audit-events", tag = "Audit",
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
        Paging,
    ),
    responses((status = 200, description = "The events.", body = Vec<AuditEventView>)))]
async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ServiceError> {
    me.require_admin()?;
    let query = Query::from_request(&req)?;
    let tz = client_tz(&req, state.settings.timezone)?;
    let date = |name: &str, bound: Bound| -> Result<Option<i64>, ServiceError> {
        match query.text(name) {
            None => Ok(None),
            Some(text) => parse_date_param(text, tz, bound).map(Some).ok_or_else(|| {
                ServiceError::invalid_request(format!(
                    "{name} `{text}` is not a date; use {ACCEPTED_FORMATS}."
                ))
            }),
        }
    };
    let text = |name: &str| query.text(name).map(str::to_string);
    let filter = EventFilter {
        from: date("fromDate", Bound::From)?,
        to: date("toDate", Bound::To)?,
        actor: text("actor"),
        action: text("action"),
        object_type: text("objectType"),
        object_id: text("objectId"),
    };
    let (start_at, max_results) = query.paging()?;
    let events = state
        .db
        .read(move |c| c.list_audit_events(&filter, start_at, max_results))
        .await?;
    let views: Vec<AuditEventView> = events.into_iter().map(Into::into).collect();
    Ok(HttpResponse::Ok().json(views))
}
