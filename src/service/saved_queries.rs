//! Saved queries as the job rules need them: which named parameters a stored query takes (by
//! compiling it against its data source, as a run would), and the one refusal of runtime
//! arguments for a query that has none to fill. Blocking: a PostgreSQL source is a network call,
//! so callers run these on a read connection, never in the write transaction.

use crate::domain::errors::ErrorItem;
use crate::domain::saved_query::SavedQuery;
use crate::error::ServiceError;
use crate::query::sources::{CheckError, DataSources};
use crate::store::Ledger;

/// The named parameters of a stored query (without `:`, `@` or `$`), read by compiling its SQL
/// against its data source as a run would. `Err` says why they cannot be known (the source is
/// missing, the SQL no longer compiles); callers then make no claim about them. Blocking.
pub fn parameter_names(sources: &DataSources, query: &SavedQuery) -> Result<Vec<String>, String> {
    // PostgreSQL sources are checked too (`check` compiles on either engine).
    sources
        .check(&query.data_source, &query.sql)
        .map_err(|e| match e {
            CheckError::Source(m) | CheckError::Sql(m) => m,
        })
}

/// The one rule for runtime arguments on a QUERY job whose saved query takes no parameters
/// (`SCHEDULED_JOB_RT_ARGS_NOT_ALLOWED`): there is nothing they could fill, so a run with them
/// could only fail. `None` when the query takes parameters, is gone, or cannot be checked. Used
/// by the API (saves and runs) and `labcron jobs import`. Blocking.
pub fn no_parameters_refusal_in(
    conn: &dyn Ledger,
    sources: &DataSources,
    query_id: i64,
    what: &str,
) -> Result<Option<ErrorItem>, ServiceError> {
    let Some(query) = conn.live_saved_query(query_id)? else {
        return Ok(None);
    };
    Ok(match parameter_names(sources, &query) {
        Ok(names) if names.is_empty() => Some(ErrorItem::new(
            "SCHEDULED_JOB_RT_ARGS_NOT_ALLOWED",
            format!(
                "{what}: saved query #{} {} takes no parameters, so there are no runtime \
                 parameters to give; add a named parameter such as :site to its SQL first.",
                query.id, query.title
            ),
        )),
        _ => None,
    })
}
