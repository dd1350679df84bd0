//! Saved queries, the audit trail and what the maintenance tasks read, on PostgreSQL — the SQLite
//! implementation's meaning. Audit events are append-only (a trigger refuses updates; only the
//! retention pass deletes). The runs report is read through a portal, a batch of rows at a time,
//! so a ledger of a million runs is never in memory at once.

use postgres::Row;
use serde_json::{Map, Value};

use super::{Pg, like_pattern};
use crate::domain::ids::{JobId, RunId, RunOfJob};
use crate::domain::saved_query::{SavedQuery, SavedQueryDraft};
use crate::store::Error;
use crate::store::audit::{Event, EventFilter, StoredEvent};
use crate::store::ledger::{
    AuditLedger, Cell, Interrupt, MaintenanceLedger, ReportSink, SavedQueryLedger,
};

const QUERY_COLUMNS: &str = "id, title, sql, data_source, created_by, last_modified_on";

fn map_query(row: &Row) -> Result<SavedQuery, Error> {
    Ok(SavedQuery {
        id: row.try_get(0)?,
        title: row.try_get(1)?,
        sql: row.try_get(2)?,
        data_source: row.try_get(3)?,
        created_by: row.try_get(4)?,
        last_modified_on: row.try_get(5)?,
    })
}

fn map_queries(rows: Vec<Row>) -> Result<Vec<SavedQuery>, Error> {
    rows.iter().map(map_query).collect()
}

fn map_event(row: &Row) -> Result<StoredEvent, Error> {
    let detail: String = row.try_get(6)?;
    Ok(StoredEvent {
        id: row.try_get(0)?,
        at: row.try_get(1)?,
        actor: row.try_get(2)?,
        action: row.try_get(3)?,
        object_type: row.try_get(4)?,
        object_id: row.try_get(5)?,
        detail: serde_json::from_str(&detail).unwrap_or(Value::Object(Map::new())),
        remote_addr: row.try_get(7)?,
    })
}

impl SavedQueryLedger for Pg<'_> {
    fn live_saved_query(&self, id: i64) -> Result<Option<SavedQuery>, Error> {
        self.row(
            &format!("SELECT {QUERY_COLUMNS} FROM saved_queries WHERE id = $1 AND NOT deleted"),
            &[&id],
        )?
        .as_ref()
        .map(map_query)
        .transpose()
    }

    fn list_saved_queries(
        &self,
        query: Option<&str>,
        start_at: i64,
        max_results: i64,
    ) -> Result<Vec<SavedQuery>, Error> {
        let pattern = like_pattern(query);
        map_queries(self.rows(
            &format!(
                "SELECT {QUERY_COLUMNS} FROM saved_queries
                 WHERE NOT deleted AND ($1::TEXT IS NULL OR lower(title) LIKE '%' || $1 || '%')
                 ORDER BY id DESC LIMIT $3 OFFSET $2"
            ),
            &[&pattern, &start_at, &max_results],
        )?)
    }

    fn insert_saved_query(
        &self,
        draft: &SavedQueryDraft,
        created_by: i64,
        now: i64,
    ) -> Result<i64, Error> {
        Ok(self
            .one(
                "INSERT INTO saved_queries (title, sql, data_source, created_by, last_modified_on)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[
                    &draft.title,
                    &draft.sql,
                    &draft.data_source,
                    &created_by,
                    &now,
                ],
            )?
            .try_get(0)?)
    }

    fn replace_saved_query(&self, id: i64, draft: &SavedQueryDraft, now: i64) -> Result<(), Error> {
        self.exec(
            "UPDATE saved_queries SET title = $2, sql = $3, data_source = $4, last_modified_on = $5
             WHERE id = $1 AND NOT deleted",
            &[&id, &draft.title, &draft.sql, &draft.data_source, &now],
        )?;
        Ok(())
    }

    fn soft_delete_saved_query(&self, id: i64, now: i64) -> Result<(), Error> {
        self.exec(
            "UPDATE saved_queries SET deleted = TRUE, last_modified_on = $2 WHERE id = $1",
            &[&id, &now],
        )?;
        Ok(())
    }

    fn saved_query_even_deleted(&self, id: i64) -> Result<Option<SavedQuery>, Error> {
        self.row(
            &format!("SELECT {QUERY_COLUMNS} FROM saved_queries WHERE id = $1"),
            &[&id],
        )?
        .as_ref()
        .map(map_query)
        .transpose()
    }

    fn live_saved_queries_titled(&self, title: &str) -> Result<Vec<SavedQuery>, Error> {
        map_queries(self.rows(
            &format!(
                "SELECT {QUERY_COLUMNS} FROM saved_queries WHERE title = $1 AND NOT deleted
                 ORDER BY id"
            ),
            &[&title],
        )?)
    }
}

impl AuditLedger for Pg<'_> {
    fn record_audit(&self, event: &Event, at: i64) -> Result<i64, Error> {
        let detail = Value::Object(event.detail.clone()).to_string();
        Ok(self
            .one(
                "INSERT INTO audit_events (at, actor, action, object_type, object_id, detail,
                                           remote_addr)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &at,
                    &event.actor,
                    &event.action,
                    &event.object_type,
                    &event.object_id,
                    &detail,
                    &event.remote_addr,
                ],
            )?
            .try_get(0)?)
    }

    fn list_audit_events(
        &self,
        filter: &EventFilter,
        start_at: i64,
        max_results: i64,
    ) -> Result<Vec<StoredEvent>, Error> {
        // Texts compare without regard to case, as SQLite's COLLATE NOCASE does.
        self.rows(
            "SELECT id, at, actor, action, object_type, object_id, detail, remote_addr
             FROM audit_events
             WHERE ($1::BIGINT IS NULL OR at >= $1) AND ($2::BIGINT IS NULL OR at <= $2)
               AND ($3::TEXT IS NULL OR lower(actor) = lower($3))
               AND ($4::TEXT IS NULL OR lower(action) = lower($4))
               AND ($5::TEXT IS NULL OR lower(object_type) = lower($5))
               AND ($6::TEXT IS NULL OR object_id = $6)
             ORDER BY at DESC, id DESC LIMIT $8 OFFSET $7",
            &[
                &filter.from,
                &filter.to,
                &filter.actor,
                &filter.action,
                &filter.object_type,
                &filter.object_id,
                &start_at,
                &max_results,
            ],
        )?
        .iter()
        .map(map_event)
        .collect()
    }

    fn delete_audit_events_before(&self, cutoff: i64, limit: i64) -> Result<usize, Error> {
        Ok(self.exec(
            "DELETE FROM audit_events WHERE id IN
               (SELECT id FROM audit_events WHERE at < $1 ORDER BY at LIMIT $2)",
            &[&cutoff, &limit],
        )? as usize)
    }
}

impl MaintenanceLedger for Pg<'_> {
    fn run_finished_at(&self, ids: RunOfJob) -> Result<Option<i64>, Error> {
        Ok(self
            .row(
                "SELECT finished_at FROM runs
                 WHERE id = $1 AND job_id = $2 AND status IN ('SUCCEEDED', 'FAILED')",
                &[&ids.run.0, &ids.job.0],
            )?
            .map(|r| r.try_get::<_, Option<i64>>(0))
            .transpose()?
            .flatten())
    }

    fn runs_finished_before(
        &self,
        cutoff: i64,
        after: RunId,
        limit: i64,
    ) -> Result<Vec<RunOfJob>, Error> {
        self.rows(
            "SELECT job_id, id FROM runs
             WHERE id > $2 AND status IN ('SUCCEEDED', 'FAILED') AND finished_at < $1
             ORDER BY id LIMIT $3",
            &[&cutoff, &after.0, &limit],
        )?
        .iter()
        .map(|r| Ok(RunOfJob::new(JobId(r.try_get(0)?), RunId(r.try_get(1)?))))
        .collect()
    }

    fn delete_finished_runs(&self, run_ids: &[i64], cutoff: i64) -> Result<u64, Error> {
        self.exec(
            "DELETE FROM runs WHERE id = ANY($1) AND status IN ('SUCCEEDED', 'FAILED')
               AND finished_at < $2",
            &[&run_ids, &cutoff],
        )
    }

    fn ledger_totals(&self) -> Result<(i64, i64), Error> {
        let row = self.one(
            "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM runs)",
            &[],
        )?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    fn runs_report(
        &self,
        since: i64,
        interrupt: Interrupt,
        sink: &mut dyn ReportSink,
    ) -> Result<(), Error> {
        let statement = self.statement(RUNS_REPORT_SQL)?;
        let names: Vec<&str> = statement.columns().iter().map(|c| c.name()).collect();
        if !sink.columns(&names) {
            return Ok(());
        }
        let mut tx = self.tx.borrow_mut();
        let portal = tx.bind(&statement, &[&since])?;
        loop {
            if interrupt() {
                return Err(Error::Interrupted);
            }
            let rows = tx.query_portal(&portal, REPORT_BATCH)?;
            for row in &rows {
                let cells = (0..row.len())
                    .map(|i| report_cell(row, i))
                    .collect::<Result<Vec<_>, _>>()?;
                if !sink.row(&cells) {
                    return Ok(());
                }
            }
            if rows.len() < REPORT_BATCH as usize {
                return Ok(());
            }
        }
    }
}

/// Rows of the runs report read at a time.
const REPORT_BATCH: i32 = 500;

/// Every run queued at or after `$1` (epoch ms), oldest first, one row each: times in UTC ISO
/// 8601 with milliseconds, the result file by name only — the SQLite report's columns and values.
const RUNS_REPORT_SQL: &str = "
SELECT r.id AS \"runId\", r.job_id AS \"jobId\", j.name AS \"jobName\", j.type AS \"jobType\",
       r.status, r.run_trigger AS \"trigger\", u.login_name AS \"runBy\", r.rt_args AS \"rtArgs\",
       to_char(TIMESTAMP 'epoch' + r.queued_at * INTERVAL '1 millisecond',
               'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS \"queuedAt\",
       to_char(TIMESTAMP 'epoch' + r.started_at * INTERVAL '1 millisecond',
               'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS \"startedAt\",
       to_char(TIMESTAMP 'epoch' + r.finished_at * INTERVAL '1 millisecond',
               'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS \"finishedAt\",
       r.finished_at - r.started_at AS \"durationMs\", r.exit_code AS \"exitCode\",
       regexp_replace(r.result_file, '^.*/', '') AS \"resultFile\",
       r.result_file_size AS \"resultFileSize\", r.log_size AS \"logSize\", r.message
FROM runs r
JOIN jobs j ON j.id = r.job_id
LEFT JOIN users u ON u.id = r.run_by
WHERE r.queued_at >= $1
ORDER BY r.id";

/// One value of a report row: the report's columns are BIGINT or TEXT.
fn report_cell(row: &Row, index: usize) -> Result<Cell<'_>, Error> {
    let column = &row.columns()[index];
    Ok(match *column.type_() {
        postgres::types::Type::INT8 => row
            .try_get::<_, Option<i64>>(index)?
            .map_or(Cell::Null, Cell::Integer),
        postgres::types::Type::TEXT => row
            .try_get::<_, Option<&str>>(index)?
            .map_or(Cell::Null, |t| Cell::Text(t.as_bytes())),
        ref other => {
            return Err(Error::Corrupt(format!(
                "report column {} is {other}",
                column.name()
            )));
        }
    })
}
