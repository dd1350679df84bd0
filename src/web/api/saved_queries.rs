//! `/saved-queries` (API.md §4): list, get, create, replace and soft-delete saved queries. Any
//! signed-in user may list and read every saved query (a QUERY job names one by id, and the SQL
//! is what a reviewer needs to see); only its creator or an admin may change or delete it. A body
//! is validated in full, its SQL compiled read-only against its data source, before anything is
//! stored; every problem comes back at once.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::audit_trail::event;
use super::auth::CurrentUser;
use super::params::{Paging, PathOf, Query, QueryPath, json_object};
use super::routes::Routes;
use crate::clock::now_ms;
use crate::domain::audit::{actions, changes};
use crate::domain::errors::ErrorItem;
use crate::domain::saved_query::{
    MAX_SQL_CHARS, SavedQuery, SavedQueryDraft, invalid_data_source, invalid_sql, not_found,
    parse_saved_query,
};
use crate::domain::user::{User, UserSummary};
use crate::error::ServiceError;
use crate::present::UserCache;
use crate::query::sources::{CheckError, DataSources};
use crate::service;
use crate::store::Ledger;
use crate::web::AppState;

pub fn routes(r: &mut Routes) {
    r.add(__path_list, list);
    r.add(__path_create, create);
    r.add(__path_get, get);
    r.add(__path_update, update);
    r.add(__path_delete, delete);
}

/// A saved query as every endpoint returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavedQueryView {
    pub id: i64,
    pub title: String,
    pub sql: String,
    pub data_source: String,
    pub created_by: Option<UserSummary>,
    pub last_modified_on: i64,
}

fn view(
    conn: &dyn Ledger,
    query: SavedQuery,
    users: &mut UserCache,
) -> Result<SavedQueryView, ServiceError> {
    Ok(SavedQueryView {
        created_by: users.summary(conn, query.created_by)?,
        id: query.id,
        title: query.title,
        sql: query.sql,
        data_source: query.data_source,
        last_modified_on: query.last_modified_on,
    })
}

fn not_found_error() -> ServiceError {
    ServiceError::User(vec![not_found()])
}

#[utoipa::path(get, path = "/saved-queries", tag = "Saved queries",
    operation_id = "listSavedQueries", summary = "List saved queries",
    params(
        ("query" = Option<String>, Query, description = "A case-insensitive part of the title."),
        Paging,
    ),
    responses((status = 200, description = "The saved queries.", body = Vec<SavedQueryView>)))]
async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    _me: CurrentUser,
) -> Result<HttpResponse, ServiceError> {
    let query = Query::from_request(&req)?;
    let (start_at, max_results) = query.paging()?;
    let text = query.text("query").map(str::to_string);
    let views = state
        .db
        .read(move |c| {
            let queries = c.list_saved_queries(text.as_deref(), start_at, max_results)?;
            let mut users = UserCache::default();
            queries
                .into_iter()
                .map(|q| view(c, q, &mut users))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    Ok(HttpResponse::Ok().json(views))
}

#[utoipa::path(get, path = "/saved-queries/{queryId}", tag = "Saved queries",
    operation_id = "getSavedQuery", summary = "One saved query",
    params(QueryPath),
    responses((status = 200, description = "The saved query.", body = SavedQueryView)))]
async fn get(
    state: web::Data<AppState>,
    _me: CurrentUser,
    path: PathOf<QueryPath>,
) -> Result<HttpResponse, ServiceError> {
    let id = path?.query_id;
    let found = state
        .db
        .read(move |c| {
            let query = c.live_saved_query(id)?.ok_or_else(not_found_error)?;
            view(c, query, &mut UserCache::default())
        })
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

/// Parses a body and compiles its SQL against its data source (on the blocking pool).
async fn validated_draft(state: &AppState, body: &[u8]) -> Result<SavedQueryDraft, ServiceError> {
    let body = json_object(body, false)?;
    let (draft, mut errors) = parse_saved_query(&body);
    let sources = DataSources::from_settings(&state.settings, &state.data_dir);
    if !sources.contains(&draft.data_source) {
        errors.push(invalid_data_source(&format!(
            "`{}` is not configured; configured data sources: {}",
            draft.data_source,
            sources.names().join(", ")
        )));
    } else if !draft.sql.is_empty() && draft.sql.chars().count() <= MAX_SQL_CHARS {
        let (name, sql) = (draft.data_source.clone(), draft.sql.clone());
        let checked: Result<(), ErrorItem> = tokio::task::spawn_blocking(move || {
            sources.check(&name, &sql).map(|_| ()).map_err(|e| match e {
                CheckError::Source(e) => invalid_data_source(&e),
                CheckError::Sql(e) => invalid_sql(&e),
            })
        })
        .await?;
        if let Err(item) = checked {
            errors.push(item);
        }
    }
    if errors.is_empty() {
        Ok(draft)
    } else {
        Err(ServiceError::User(errors))
    }
}

#[utoipa::path(post, path = "/saved-queries", tag = "Saved queries",
    operation_id = "createSavedQuery", summary = "Create a saved query",
    description = "The SQL must compile as one read-only statement against its data source, \
        else `SAVED_QUERY_INVALID_SQL` with SQLite's message.",
    request_body = SavedQueryRequest,
    responses((status = 200, description = "The saved query.", body = SavedQueryView)))]
async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    body: web::Bytes,
) -> Result<HttpResponse, ServiceError> {
    let draft = validated_draft(&state, &body).await?;
    let creator = me.0.id;
    let audit = event(&me.0, &req, actions::SAVED_QUERY_CREATE);
    let created = state
        .db
        .write(move |tx| {
            let id = tx.insert_saved_query(&draft, creator, now_ms())?;
            let query = tx.live_saved_query(id)?.ok_or_else(not_found_error)?;
            let audit = audit
                .object("SAVED_QUERY", id)
                .detail("title", query.title.clone())
                .detail("dataSource", query.data_source.clone())
                .detail("sql", query.sql.clone());
            tx.record_audit(&audit, now_ms())?;
            view(tx, query, &mut UserCache::default())
        })
        .await?;
    tracing::info!(saved_query_id = created.id, "saved query created");
    Ok(HttpResponse::Ok().json(created))
}

/// Checks, in the transaction that changes it, that the query is live and `me` may change it.
fn changeable(conn: &dyn Ledger, id: i64, me: &User) -> Result<SavedQuery, ServiceError> {
    let query = conn.live_saved_query(id)?.ok_or_else(not_found_error)?;
    if me.admin || query.created_by == me.id {
        Ok(query)
    } else {
        Err(ServiceError::access_denied())
    }
}

#[utoipa::path(put, path = "/saved-queries/{queryId}", tag = "Saved queries",
    operation_id = "updateSavedQuery", summary = "Replace a saved query",
    description = "Its creator or an admin only.",
    params(QueryPath),
    request_body = SavedQueryRequest,
    responses((status = 200, description = "The saved query as saved.", body = SavedQueryView)))]
async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    path: PathOf<QueryPath>,
    body: web::Bytes,
) -> Result<HttpResponse, ServiceError> {
    let id = path?.query_id;
    // Not found and not allowed come before validation, as for jobs.
    let me = me.0;
    {
        let me = me.clone();
        state.db.read(move |c| changeable(c, id, &me)).await?;
    }
    let draft = validated_draft(&state, &body).await?;
    let audit = event(&me, &req, actions::SAVED_QUERY_UPDATE).object("SAVED_QUERY", id);
    let updated = state
        .db
        .write(move |tx| {
            let old = changeable(tx, id, &me)?;
            tx.replace_saved_query(id, &draft, now_ms())?;
            let query = tx.live_saved_query(id)?.ok_or_else(not_found_error)?;
            let fields = |q: &SavedQuery| {
                serde_json::json!({"title": q.title, "sql": q.sql, "dataSource": q.data_source})
            };
            let audit = audit
                .detail("title", query.title.clone())
                .detail("changes", changes(&fields(&old), &fields(&query)));
            tx.record_audit(&audit, now_ms())?;
            view(tx, query, &mut UserCache::default())
        })
        .await?;
    tracing::info!(saved_query_id = id, "saved query updated");
    Ok(HttpResponse::Ok().json(updated))
}

#[utoipa::path(delete, path = "/saved-queries/{queryId}", tag = "Saved queries",
    operation_id = "deleteSavedQuery", summary = "Delete a saved query",
    description = "A soft delete; its creator or an admin only.",
    params(QueryPath),
    responses((status = 200, description = "The deleted saved query.", body = SavedQueryView)))]
async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
    path: PathOf<QueryPath>,
) -> Result<HttpResponse, ServiceError> {
    let id = path?.query_id;
    let me = me.0;
    let audit = event(&me, &req, actions::SAVED_QUERY_DELETE).object("SAVED_QUERY", id);
    let deleted = state
        .db
        .write(move |tx| {
            let query = changeable(tx, id, &me)?;
            tx.soft_delete_saved_query(id, now_ms())?;
            let audit = audit.detail("title", query.title.clone());
            tx.record_audit(&audit, now_ms())?;
            view(tx, query, &mut UserCache::default())
        })
        .await?;
    tracing::info!(saved_query_id = id, "saved query deleted");
    Ok(HttpResponse::Ok().json(deleted))
}

/// `parameter_names` off the async threads.
pub async fn parameters_of(state: &AppState, query: &SavedQuery) -> Result<Vec<String>, String> {
    let sources = DataSources::from_settings(&state.settings, &state.data_dir);
    let query = query.clone();
    tokio::task::spawn_blocking(move || service::saved_queries::parameter_names(&sources, &query))
        .await
        .unwrap_or_else(|e| Err(format!("the check stopped: {e}")))
}

/// `no_parameters_refusal_in` on a read connection, off the async threads.
pub async fn no_parameters_refusal(
    state: &AppState,
    query_id: i64,
    what: &str,
) -> Result<Option<ErrorItem>, ServiceError> {
    let sources = DataSources::from_settings(&state.settings, &state.data_dir);
    let what = what.to_string();
    state
        .db
        .read(move |c| {
            service::saved_queries::no_parameters_refusal_in(c, &sources, query_id, &what)
        })
        .await
}

// ---- For the document only: the bodies this module reads by hand (leniently, with messages
// naming the field) or builds with `json!`. ----

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
