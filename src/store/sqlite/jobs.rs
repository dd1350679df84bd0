//! SQL for jobs and their user lists (recipients, shared users). Deleted jobs stay in the table
//! with `activity_status = 'Disabled'` and a mangled name; the "live" queries never return them.

use std::str::FromStr;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::Error;
use crate::domain::ids::{JobId, UserId};
use crate::domain::job::{
    ActivityStatus, Job, JobDraft, JobType, MisfirePolicy, NotifyOn, RepeatColumns, RepeatKind,
    parse_weekday, weekday_name,
};

const COLUMNS: &str = "id, name, type, repeat_schedule, scheduled_minute, scheduled_hour, scheduled_day_of_week,
    scheduled_day_of_month, minutely_interval, hourly_interval, cron_expression, timezone, start_date, end_date,
    activity_status, created_by, run_as, task_impl_fqn, command, fixed_args, rt_args_provided, rt_args_help_text,
    saved_query_id, timeout_seconds, misfire_policy, max_queued_runs, result_from_stdout, created_at, updated_at,
    last_fired_for, webhook_url, max_retries, retry_delay_seconds, notify_on";

fn corrupt(column: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        format!("bad {what}").into(),
    )
}

fn map_job(row: &Row) -> rusqlite::Result<Job> {
    let repeat = RepeatColumns {
        kind: RepeatKind::from_str(&row.get::<_, String>(3)?)
            .map_err(|()| corrupt(3, "repeat_schedule"))?,
        minute: row.get(4)?,
        hour: row.get(5)?,
        day_of_week: row
            .get::<_, Option<String>>(6)?
            .as_deref()
            .and_then(parse_weekday),
        day_of_month: row.get(7)?,
        minutely_interval: row.get(8)?,
        hourly_interval: row.get(9)?,
        cron_expression: row.get(10)?,
    }
    .into_repeat();
    Ok(Job {
        id: row.get(0)?,
        name: row.get(1)?,
        job_type: JobType::from_str(&row.get::<_, String>(2)?).map_err(|()| corrupt(2, "type"))?,
        repeat,
        timezone: chrono_tz::Tz::from_str(&row.get::<_, String>(11)?)
            .map_err(|_| corrupt(11, "timezone"))?,
        start_date: row.get(12)?,
        end_date: row.get(13)?,
        activity_status: ActivityStatus::from_str(&row.get::<_, String>(14)?)
            .map_err(|()| corrupt(14, "activity_status"))?,
        created_by: row.get(15)?,
        run_as: row.get(16)?,
        task_impl_fqn: row.get(17)?,
        command: row.get(18)?,
        fixed_args: row.get(19)?,
        rt_args_provided: row.get::<_, i64>(20)? != 0,
        rt_args_help_text: row.get(21)?,
        saved_query_id: row.get(22)?,
        timeout_seconds: row.get(23)?,
        misfire_policy: MisfirePolicy::from_str(&row.get::<_, String>(24)?)
            .unwrap_or(MisfirePolicy::Skip),
        max_queued_runs: row.get(25)?,
        result_from_stdout: row.get::<_, i64>(26)? != 0,
        created_at: row.get(27)?,
        updated_at: row.get(28)?,
        last_fired_for: row.get(29)?,
        webhook_url: row.get(30)?,
        max_retries: row.get(31)?,
        retry_delay_seconds: row.get(32)?,
        notify_on: NotifyOn::from_str(&row.get::<_, String>(33)?).unwrap_or(NotifyOn::Always),
    })
}

/// A job that is not deleted.
pub fn get_live(conn: &Connection, id: i64) -> Result<Option<Job>, Error> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE id = ?1 AND activity_status <> 'Disabled'"
        ))?
        .query_row([id], map_job)
        .optional()?)
}

/// A job whatever its status (runs of deleted jobs still need their job).
pub fn get_any(conn: &Connection, id: i64) -> Result<Option<Job>, Error> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], map_job)
        .optional()?)
}

/// All live jobs (for the scheduler).
pub fn list_all_live(conn: &Connection) -> Result<Vec<Job>, Error> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE activity_status <> 'Disabled'"
    ))?;
    let jobs = stmt
        .query_map([], map_job)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(jobs)
}

/// Filters of the jobs list. `visible_to = None` means every job (admins).
pub struct JobFilter<'a> {
    pub visible_to: Option<i64>,
    pub query: Option<&'a str>,
    pub job_type: Option<JobType>,
}

const FILTER_SQL: &str = "FROM jobs j WHERE j.activity_status <> 'Disabled'
      AND (?1 IS NULL OR j.created_by = ?1
           OR EXISTS (SELECT 1 FROM job_shared_users s WHERE s.job_id = j.id AND s.user_id = ?1))
      AND (?2 IS NULL OR lower(j.name) LIKE '%' || ?2 || '%' ESCAPE '\\')
      AND (?3 IS NULL OR j.type = ?3)";

/// `query` lowered with LIKE's wildcards escaped, so `%` and `_` match themselves.
fn like_pattern(query: Option<&str>) -> Option<String> {
    query.map(|q| {
        q.to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    })
}

fn list_query(max_results: i64) -> String {
    format!("SELECT {COLUMNS} {FILTER_SQL} ORDER BY j.id DESC LIMIT {max_results} OFFSET ?4")
}

pub fn list(
    conn: &Connection,
    filter: &JobFilter,
    start_at: i64,
    max_results: i64,
) -> Result<Vec<Job>, Error> {
    // The page size is written into the statement, not bound: a bound LIMIT makes SQLite (with
    // STAT4) parse and plan the statement again at every execution (see `runs::list`).
    let mut stmt = conn.prepare_cached(&list_query(max_results))?;
    let jobs = stmt
        .query_map(
            params![
                filter.visible_to,
                like_pattern(filter.query),
                filter.job_type.map(|t| t.as_str()),
                start_at
            ],
            map_job,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(jobs)
}

pub fn count(conn: &Connection, filter: &JobFilter) -> Result<i64, Error> {
    Ok(conn
        .prepare_cached(&format!("SELECT count(*) {FILTER_SQL}"))?
        .query_row(
            params![
                filter.visible_to,
                like_pattern(filter.query),
                filter.job_type.map(|t| t.as_str())
            ],
            |r| r.get(0),
        )?)
}

/// Whether a live job other than `except_id` has this exact name.
pub fn name_taken(conn: &Connection, name: &str, except_id: Option<i64>) -> Result<bool, Error> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM jobs WHERE name = ?1 AND activity_status <> 'Disabled' AND id IS NOT ?2",
        )?
        .exists(params![name, except_id])?)
}

pub fn is_shared_with(conn: &Connection, job_id: JobId, user_id: UserId) -> Result<bool, Error> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM job_shared_users WHERE job_id = ?1 AND user_id = ?2")?
        .exists(params![job_id, user_id])?)
}

pub fn is_recipient(conn: &Connection, job_id: JobId, user_id: UserId) -> Result<bool, Error> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM job_recipients WHERE job_id = ?1 AND user_id = ?2")?
        .exists(params![job_id, user_id])?)
}

/// Inserts a validated job and its user lists; returns the new id.
pub fn insert(
    conn: &Connection,
    draft: &JobDraft,
    created_by: i64,
    now: i64,
) -> Result<i64, Error> {
    conn.execute(
        "INSERT INTO jobs (name, type, repeat_schedule, timezone, start_date, activity_status, created_by,
                           timeout_seconds, max_queued_runs, created_at, updated_at)
         VALUES (?1, ?2, 'ONDEMAND', 'UTC', ?3, 'Active', ?4, 1, 0, ?5, ?5)",
        params![draft.name, draft.job_type.as_str(), draft.start_date, created_by, now],
    )?;
    let id = conn.last_insert_rowid();
    write_fields(conn, id, draft, now)?;
    Ok(id)
}

/// Replaces every user-settable field of job `id` (PUT is a full replace).
pub fn replace(conn: &Connection, id: i64, draft: &JobDraft, now: i64) -> Result<(), Error> {
    write_fields(conn, id, draft, now)
}

fn write_fields(conn: &Connection, id: i64, d: &JobDraft, now: i64) -> Result<(), Error> {
    let r = &d.repeat;
    conn.execute(
        "UPDATE jobs SET name = ?2, type = ?3, repeat_schedule = ?4, scheduled_minute = ?5, scheduled_hour = ?6,
            scheduled_day_of_week = ?7, scheduled_day_of_month = ?8, minutely_interval = ?9, hourly_interval = ?10,
            cron_expression = ?11, timezone = ?12, start_date = ?13, end_date = ?14, activity_status = ?15,
            run_as = ?16, task_impl_fqn = ?17, command = ?18, fixed_args = ?19, rt_args_provided = ?20,
            rt_args_help_text = ?21, saved_query_id = ?22, timeout_seconds = ?23, misfire_policy = ?24,
            max_queued_runs = ?25, result_from_stdout = ?26, updated_at = ?27, webhook_url = ?28,
            max_retries = ?29, retry_delay_seconds = ?30, notify_on = ?31
         WHERE id = ?1",
        params![
            id,
            d.name,
            d.job_type.as_str(),
            r.kind().as_str(),
            r.minute(),
            r.hour(),
            r.day_of_week().map(weekday_name),
            r.day_of_month(),
            r.minutely_interval(),
            r.hourly_interval(),
            r.cron_expression(),
            d.timezone.name(),
            d.start_date,
            d.end_date,
            d.activity_status.as_str(),
            d.run_as,
            d.task_impl_fqn,
            d.command,
            d.fixed_args,
            d.rt_args_provided,
            d.rt_args_help_text,
            d.saved_query_id,
            d.timeout_seconds,
            d.misfire_policy.as_str(),
            d.max_queued_runs,
            d.result_from_stdout,
            now,
            d.webhook_url,
            d.max_retries,
            d.retry_delay_seconds,
            d.notify_on.as_str()
        ],
    )?;
    replace_user_list(conn, "job_recipients", id, &d.recipients)?;
    replace_user_list(conn, "job_shared_users", id, &d.shared_with)?;
    replace_chains(conn, id, &d.on_success, &d.on_failure)?;
    Ok(())
}

/// The `on_result` names of `job_chains`.
pub const CHAIN_SUCCESS: &str = "SUCCESS";
pub const CHAIN_FAILURE: &str = "FAILURE";

fn replace_chains(
    conn: &Connection,
    job_id: i64,
    on_success: &[i64],
    on_failure: &[i64],
) -> Result<(), Error> {
    conn.execute("DELETE FROM job_chains WHERE job_id = ?1", [job_id])?;
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO job_chains (job_id, on_result, target_id, position) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (on_result, ids) in [(CHAIN_SUCCESS, on_success), (CHAIN_FAILURE, on_failure)] {
        for (position, target) in ids.iter().enumerate() {
            stmt.execute(params![job_id, on_result, target, position as i64])?;
        }
    }
    Ok(())
}

/// The live jobs a job's series end queues, for `on_result` (`CHAIN_SUCCESS` / `CHAIN_FAILURE`),
/// in the order they were given. Deleted targets drop out.
pub fn chain_targets(conn: &Connection, job_id: i64, on_result: &str) -> Result<Vec<i64>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.target_id FROM job_chains c JOIN jobs t ON t.id = c.target_id
         WHERE c.job_id = ?1 AND c.on_result = ?2 AND t.activity_status <> 'Disabled'
         ORDER BY c.position",
    )?;
    let ids = stmt
        .query_map(params![job_id, on_result], |r| r.get(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(ids)
}

/// The live jobs whose series end queues `job_id`, with the list they name it in.
pub fn chain_sources(conn: &Connection, job_id: i64) -> Result<Vec<(i64, String)>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.job_id, c.on_result FROM job_chains c JOIN jobs s ON s.id = c.job_id
         WHERE c.target_id = ?1 AND s.activity_status <> 'Disabled' ORDER BY c.job_id, c.on_result",
    )?;
    let rows = stmt
        .query_map([job_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Every chain edge between live jobs, except those leaving `except_job` (being replaced).
pub fn chain_edges(conn: &Connection, except_job: Option<i64>) -> Result<Vec<(i64, i64)>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT c.job_id, c.target_id FROM job_chains c
         JOIN jobs s ON s.id = c.job_id JOIN jobs t ON t.id = c.target_id
         WHERE s.activity_status <> 'Disabled' AND t.activity_status <> 'Disabled'
           AND c.job_id IS NOT ?1",
    )?;
    let rows = stmt
        .query_map([except_job], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A job's name whatever its status.
pub fn name_of(conn: &Connection, id: i64) -> Result<Option<String>, Error> {
    Ok(conn
        .prepare_cached("SELECT name FROM jobs WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

fn replace_user_list(
    conn: &Connection,
    table: &str,
    job_id: i64,
    user_ids: &[i64],
) -> Result<(), Error> {
    conn.execute(&format!("DELETE FROM {table} WHERE job_id = ?1"), [job_id])?;
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT OR IGNORE INTO {table} (job_id, user_id) VALUES (?1, ?2)"
    ))?;
    for user_id in user_ids {
        stmt.execute([job_id, *user_id])?;
    }
    Ok(())
}

/// User ids of a job's recipients and shared users.
pub fn user_lists(conn: &Connection, job_id: i64) -> Result<(Vec<i64>, Vec<i64>), Error> {
    let ids = |table: &str| -> Result<Vec<i64>, Error> {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT user_id FROM {table} WHERE job_id = ?1 ORDER BY user_id"
        ))?;
        let ids = stmt
            .query_map([job_id], |r| r.get(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        Ok(ids)
    };
    Ok((ids("job_recipients")?, ids("job_shared_users")?))
}

/// Soft delete: status `Disabled`, name `<name>_<epochMillis>` (cut to fit 255 characters).
pub fn soft_delete(conn: &Connection, id: i64, now: i64) -> Result<(), Error> {
    let name: String = conn.query_row("SELECT name FROM jobs WHERE id = ?1", [id], |r| r.get(0))?;
    let suffix = format!("_{now}");
    let keep = 255usize.saturating_sub(suffix.chars().count());
    let mangled: String = name.chars().take(keep).chain(suffix.chars()).collect();
    conn.execute(
        "UPDATE jobs SET activity_status = 'Disabled', name = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, mangled, now],
    )?;
    // A deleted job drops out of every chain, in both directions.
    conn.execute(
        "DELETE FROM job_chains WHERE job_id = ?1 OR target_id = ?1",
        [id],
    )?;
    Ok(())
}

/// Records the schedule instant the scheduler last fired.
pub fn set_last_fired_for(conn: &Connection, id: i64, instant: i64) -> Result<(), Error> {
    conn.execute(
        "UPDATE jobs SET last_fired_for = ?2 WHERE id = ?1",
        params![id, instant],
    )?;
    Ok(())
}

/// Creation time of the newest run of each of `job_ids`.
pub fn last_run_on(conn: &Connection, job_id: i64) -> Result<Option<i64>, Error> {
    Ok(conn
        .prepare_cached("SELECT max(queued_at) FROM runs WHERE job_id = ?1")?
        .query_row([job_id], |r| r.get(0))?)
}

/// Title of a saved query, if it exists and is not deleted.
pub fn saved_query_title(conn: &Connection, id: i64) -> Result<Option<String>, Error> {
    Ok(conn
        .prepare_cached("SELECT title FROM saved_queries WHERE id = ?1 AND deleted = 0")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// A summary of the jobs table that changes with every job added, changed or deleted: (count,
/// newest `updated_at`, sum of `updated_at`). Moved here from the scheduler's ledger watch.
pub fn fingerprint(conn: &Connection) -> Result<(i64, i64, f64), Error> {
    Ok(conn.query_row(
        "SELECT count(*), coalesce(max(updated_at), 0), total(updated_at) FROM jobs",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?)
}

/// The live job a jobs file's entry means: the one with its key; else (no key in the file, or a
/// key no job has yet) the one with its name that has no other key. Moved from `cli::jobs_file`.
pub fn for_import(conn: &Connection, key: Option<&str>, name: &str) -> Result<Option<i64>, Error> {
    let by_key: Option<i64> = match key {
        Some(k) => conn
            .query_row(
                "SELECT id FROM jobs WHERE key = ?1 AND activity_status <> 'Disabled'",
                [k],
                |r| r.get(0),
            )
            .optional()?,
        None => None,
    };
    match by_key {
        Some(id) => Ok(Some(id)),
        None => Ok(conn
            .query_row(
                "SELECT id FROM jobs WHERE name = ?1 AND activity_status <> 'Disabled'
               AND (?2 IS NULL OR key IS NULL OR key = ?2) ORDER BY id LIMIT 1",
                params![name, key],
                |r| r.get(0),
            )
            .optional()?),
    }
}

/// A job's key, if it has one.
pub fn key(conn: &Connection, job_id: i64) -> Result<Option<String>, Error> {
    Ok(conn.query_row("SELECT key FROM jobs WHERE id = ?1", [job_id], |r| r.get(0))?)
}

/// Gives a job `key` unless it has one.
pub fn set_key_if_none(conn: &Connection, job_id: i64, key: &str) -> Result<(), Error> {
    conn.execute(
        "UPDATE jobs SET key = ?2 WHERE id = ?1 AND key IS NULL",
        params![job_id, key],
    )?;
    Ok(())
}

/// Gives a job `key`; a deleted job that kept it loses it (a job coming back takes it over).
pub fn take_key(conn: &Connection, job_id: i64, key: &str) -> Result<(), Error> {
    conn.execute(
        "UPDATE jobs SET key = NULL WHERE key = ?1 AND id <> ?2",
        params![key, job_id],
    )?;
    conn.execute(
        "UPDATE jobs SET key = ?2 WHERE id = ?1",
        params![job_id, key],
    )?;
    Ok(())
}

/// Marks a job as changed at `now`, so a running server's scheduler picks it up.
pub fn touch(conn: &Connection, job_id: i64, now: i64) -> Result<(), Error> {
    conn.execute(
        "UPDATE jobs SET updated_at = ?2 WHERE id = ?1",
        [job_id, now],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_zone_is_read_parsed_and_an_unknown_one_is_an_error_not_utc() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labcron.db");
        drop(crate::store::Db::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO jobs (id, name, type, repeat_schedule, timezone, start_date,
                 activity_status, created_by, command, timeout_seconds, max_queued_runs,
                 created_at, updated_at)
             VALUES (1, 'j', 'EXTERNAL', 'ONDEMAND', 'Europe/Berlin', 0, 'Active',
                 (SELECT id FROM users LIMIT 1), 'x.sh', 60, 100, 0, 0)",
            [],
        )
        .unwrap();
        let job = get_live(&conn, 1).unwrap().unwrap();
        assert_eq!(job.timezone, chrono_tz::Europe::Berlin);
        conn.execute("UPDATE jobs SET timezone = 'Mars/Olympus' WHERE id = 1", [])
            .unwrap();
        assert!(
            get_live(&conn, 1).is_err(),
            "a zone nobody knows is not silently UTC"
        );
    }

    #[test]
    fn the_jobs_list_is_not_prepared_again_from_page_to_page() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labcron.db");
        drop(crate::store::Db::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        for id in 1..=12 {
            conn.execute(
                "INSERT INTO jobs (id, name, type, repeat_schedule, timezone, start_date,
                     activity_status, created_by, command, timeout_seconds, max_queued_runs,
                     created_at, updated_at)
                 VALUES (?1, 'job ' || ?1, 'EXTERNAL', 'ONDEMAND', 'UTC', 0, 'Active',
                     (SELECT id FROM users LIMIT 1), 'x.sh', 60, 100, 0, 0)",
                [id],
            )
            .unwrap();
        }
        let filter = JobFilter {
            visible_to: None,
            query: None,
            job_type: None,
        };
        for start in [0, 5, 10, 0] {
            let ids: Vec<i64> = list(&conn, &filter, start, 5)
                .unwrap()
                .iter()
                .map(|j| j.id)
                .collect();
            let expected: Vec<i64> = (1..=12 - start).rev().take(5).collect();
            assert_eq!(ids, expected, "page at {start}");
        }
        let stmt = conn.prepare_cached(&list_query(5)).unwrap();
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::Run), 4);
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "the jobs list was prepared again"
        );
    }
}
