//! Jobs on PostgreSQL: the jobs table with its user lists (recipients, shared users) and chains,
//! soft deletion, the scheduler's fingerprint and the jobs file's lookups — the SQLite
//! implementation's meaning. Deleted jobs stay, `Disabled` and renamed; "live" means not deleted.
//! Schedule fields the domain keeps as `u32` are BIGINT here (the client maps `u32` to OID).

use postgres::Row;

use super::{Pg, like_pattern, parse};
use crate::domain::ids::{JobId, UserId};
use crate::domain::job::{Job, JobDraft, RepeatColumns, parse_weekday, weekday_name};
use crate::store::Error;
use crate::store::jobs::{CHAIN_FAILURE, CHAIN_SUCCESS, JobFilter};
use crate::store::ledger::JobLedger;

const COLUMNS: &str = "id, name, type, repeat_schedule, scheduled_minute, scheduled_hour, scheduled_day_of_week,
    scheduled_day_of_month, minutely_interval, hourly_interval, cron_expression, timezone, start_date, end_date,
    activity_status, created_by, run_as, task_impl_fqn, command, fixed_args, rt_args_provided, rt_args_help_text,
    saved_query_id, timeout_seconds, misfire_policy, max_queued_runs, result_from_stdout, created_at, updated_at,
    last_fired_for, webhook_url, max_retries, retry_delay_seconds, notify_on";

/// The advisory lock key chain edits hold (`pg_advisory_xact_lock`), so cycle checks run one at
/// a time across nodes: "chains" in ASCII.
const CHAINS_LOCK: i64 = 0x0000_6368_6169_6e73;

/// A schedule field stored as BIGINT, as the domain's `u32`.
fn small(row: &Row, column: usize) -> Result<Option<u32>, Error> {
    row.try_get::<_, Option<i64>>(column)?
        .map(|v| u32::try_from(v).map_err(|_| Error::Corrupt(format!("bad schedule field: {v}"))))
        .transpose()
}

fn map_job(row: &Row) -> Result<Job, Error> {
    let repeat = RepeatColumns {
        kind: parse(row, 3, "repeat_schedule")?,
        minute: small(row, 4)?,
        hour: small(row, 5)?,
        day_of_week: row
            .try_get::<_, Option<String>>(6)?
            .as_deref()
            .and_then(parse_weekday),
        day_of_month: small(row, 7)?,
        minutely_interval: small(row, 8)?,
        hourly_interval: small(row, 9)?,
        cron_expression: row.try_get(10)?,
    }
    .into_repeat();
    let zone: String = row.try_get(11)?;
    Ok(Job {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        job_type: parse(row, 2, "type")?,
        repeat,
        timezone: zone
            .parse()
            .map_err(|_| Error::Corrupt(format!("bad timezone: {zone:?}")))?,
        start_date: row.try_get(12)?,
        end_date: row.try_get(13)?,
        activity_status: parse(row, 14, "activity_status")?,
        created_by: row.try_get(15)?,
        run_as: row.try_get(16)?,
        task_impl_fqn: row.try_get(17)?,
        command: row.try_get(18)?,
        fixed_args: row.try_get(19)?,
        rt_args_provided: row.try_get(20)?,
        rt_args_help_text: row.try_get(21)?,
        saved_query_id: row.try_get(22)?,
        timeout_seconds: row.try_get(23)?,
        // As in SQLite: an unknown policy or notification rule reads as the default.
        misfire_policy: row
            .try_get::<_, String>(24)?
            .parse()
            .unwrap_or(crate::domain::job::MisfirePolicy::Skip),
        max_queued_runs: row.try_get(25)?,
        result_from_stdout: row.try_get(26)?,
        created_at: row.try_get(27)?,
        updated_at: row.try_get(28)?,
        last_fired_for: row.try_get(29)?,
        webhook_url: row.try_get(30)?,
        max_retries: row.try_get(31)?,
        retry_delay_seconds: row.try_get(32)?,
        notify_on: row
            .try_get::<_, String>(33)?
            .parse()
            .unwrap_or(crate::domain::job::NotifyOn::Always),
    })
}

fn map_jobs(rows: Vec<Row>) -> Result<Vec<Job>, Error> {
    rows.iter().map(map_job).collect()
}

/// The jobs list's filter (`$1` the user who must see them, `$2` the lowered name pattern, `$3`
/// the type).
const FILTER_SQL: &str = "FROM jobs j WHERE j.activity_status <> 'Disabled'
      AND ($1::BIGINT IS NULL OR j.created_by = $1
           OR EXISTS (SELECT 1 FROM job_shared_users s WHERE s.job_id = j.id AND s.user_id = $1))
      AND ($2::TEXT IS NULL OR lower(j.name) LIKE '%' || $2 || '%')
      AND ($3::TEXT IS NULL OR j.type = $3)";

fn ids(rows: Vec<Row>) -> Result<Vec<i64>, Error> {
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

impl Pg<'_> {
    /// Every user-settable field of a job, its user lists and its chains.
    fn write_job_fields(&self, id: i64, d: &JobDraft, now: i64) -> Result<(), Error> {
        let r = &d.repeat;
        let wide = |v: Option<u32>| v.map(i64::from);
        self.exec(
            "UPDATE jobs SET name = $2, type = $3, repeat_schedule = $4, scheduled_minute = $5,
                scheduled_hour = $6, scheduled_day_of_week = $7, scheduled_day_of_month = $8,
                minutely_interval = $9, hourly_interval = $10, cron_expression = $11, timezone = $12,
                start_date = $13, end_date = $14, activity_status = $15, run_as = $16,
                task_impl_fqn = $17, command = $18, fixed_args = $19, rt_args_provided = $20,
                rt_args_help_text = $21, saved_query_id = $22, timeout_seconds = $23,
                misfire_policy = $24, max_queued_runs = $25, result_from_stdout = $26,
                updated_at = $27, webhook_url = $28, max_retries = $29, retry_delay_seconds = $30,
                notify_on = $31
             WHERE id = $1",
            &[
                &id,
                &d.name,
                &d.job_type.as_str(),
                &r.kind().as_str(),
                &wide(r.minute()),
                &wide(r.hour()),
                &r.day_of_week().map(weekday_name),
                &wide(r.day_of_month()),
                &wide(r.minutely_interval()),
                &wide(r.hourly_interval()),
                &r.cron_expression(),
                &d.timezone.name(),
                &d.start_date,
                &d.end_date,
                &d.activity_status.as_str(),
                &d.run_as,
                &d.task_impl_fqn,
                &d.command,
                &d.fixed_args,
                &d.rt_args_provided,
                &d.rt_args_help_text,
                &d.saved_query_id,
                &d.timeout_seconds,
                &d.misfire_policy.as_str(),
                &d.max_queued_runs,
                &d.result_from_stdout,
                &now,
                &d.webhook_url,
                &d.max_retries,
                &d.retry_delay_seconds,
                &d.notify_on.as_str(),
            ],
        )?;
        self.replace_user_list("job_recipients", id, &d.recipients)?;
        self.replace_user_list("job_shared_users", id, &d.shared_with)?;
        self.exec("DELETE FROM job_chains WHERE job_id = $1", &[&id])?;
        for (on_result, targets) in [
            (CHAIN_SUCCESS, &d.on_success),
            (CHAIN_FAILURE, &d.on_failure),
        ] {
            for (position, target) in targets.iter().enumerate() {
                // A target named twice keeps its first place (SQLite: INSERT OR IGNORE).
                self.exec(
                    "INSERT INTO job_chains (job_id, on_result, target_id, position)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[&id, &on_result, target, &(position as i64)],
                )?;
            }
        }
        Ok(())
    }

    /// `table` is one of the two user lists' tables (never a caller's text).
    fn replace_user_list(&self, table: &str, job_id: i64, user_ids: &[i64]) -> Result<(), Error> {
        self.exec(
            &format!("DELETE FROM {table} WHERE job_id = $1"),
            &[&job_id],
        )?;
        self.exec(
            &format!(
                "INSERT INTO {table} (job_id, user_id) SELECT $1, u FROM unnest($2::BIGINT[]) u
                 ON CONFLICT DO NOTHING"
            ),
            &[&job_id, &user_ids],
        )?;
        Ok(())
    }
}

impl JobLedger for Pg<'_> {
    fn live_job(&self, id: i64) -> Result<Option<Job>, Error> {
        self.row(
            &format!("SELECT {COLUMNS} FROM jobs WHERE id = $1 AND activity_status <> 'Disabled'"),
            &[&id],
        )?
        .as_ref()
        .map(map_job)
        .transpose()
    }

    fn job_for_update(&self, id: i64) -> Result<Option<Job>, Error> {
        // READ COMMITTED re-reads a row it waited for: a job deleted meanwhile is not returned,
        // and a changed one comes back as changed. NO KEY UPDATE, as an UPDATE takes: it excludes
        // every other writer of the job but not the key-share locks of rows that refer to it (a
        // chain to it saved under `lock_chains`), which would deadlock a save holding that lock.
        self.row(
            &format!(
                "SELECT {COLUMNS} FROM jobs WHERE id = $1 AND activity_status <> 'Disabled'
                 FOR NO KEY UPDATE"
            ),
            &[&id],
        )?
        .as_ref()
        .map(map_job)
        .transpose()
    }

    fn job_even_deleted(&self, id: i64) -> Result<Option<Job>, Error> {
        self.row(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"), &[&id])?
            .as_ref()
            .map(map_job)
            .transpose()
    }

    fn live_jobs(&self) -> Result<Vec<Job>, Error> {
        map_jobs(self.rows(
            &format!("SELECT {COLUMNS} FROM jobs WHERE activity_status <> 'Disabled' ORDER BY id"),
            &[],
        )?)
    }

    fn list_jobs(
        &self,
        filter: &JobFilter,
        start_at: i64,
        max_results: i64,
    ) -> Result<Vec<Job>, Error> {
        let pattern = like_pattern(filter.query);
        let job_type = filter.job_type.map(|t| t.as_str());
        map_jobs(self.rows(
            &format!("SELECT {COLUMNS} {FILTER_SQL} ORDER BY j.id DESC LIMIT $5 OFFSET $4"),
            &[
                &filter.visible_to,
                &pattern,
                &job_type,
                &start_at,
                &max_results,
            ],
        )?)
    }

    fn count_jobs(&self, filter: &JobFilter) -> Result<i64, Error> {
        let pattern = like_pattern(filter.query);
        let job_type = filter.job_type.map(|t| t.as_str());
        Ok(self
            .one(
                &format!("SELECT count(*) {FILTER_SQL}"),
                &[&filter.visible_to, &pattern, &job_type],
            )?
            .try_get(0)?)
    }

    fn job_name_taken(&self, name: &str, except_id: Option<i64>) -> Result<bool, Error> {
        self.exists(
            "SELECT 1 FROM jobs WHERE name = $1 AND activity_status <> 'Disabled'
               AND id IS DISTINCT FROM $2",
            &[&name, &except_id],
        )
    }

    fn job_shared_with(&self, job_id: JobId, user_id: UserId) -> Result<bool, Error> {
        self.exists(
            "SELECT 1 FROM job_shared_users WHERE job_id = $1 AND user_id = $2",
            &[&job_id.0, &user_id.0],
        )
    }

    fn job_recipient(&self, job_id: JobId, user_id: UserId) -> Result<bool, Error> {
        self.exists(
            "SELECT 1 FROM job_recipients WHERE job_id = $1 AND user_id = $2",
            &[&job_id.0, &user_id.0],
        )
    }

    fn insert_job(&self, draft: &JobDraft, created_by: i64, now: i64) -> Result<i64, Error> {
        let id: i64 = self
            .one(
                "INSERT INTO jobs (name, type, repeat_schedule, timezone, start_date, activity_status,
                                   created_by, timeout_seconds, max_queued_runs, created_at, updated_at)
                 VALUES ($1, $2, 'ONDEMAND', 'UTC', $3, 'Active', $4, 1, 0, $5, $5) RETURNING id",
                &[
                    &draft.name,
                    &draft.job_type.as_str(),
                    &draft.start_date,
                    &created_by,
                    &now,
                ],
            )?
            .try_get(0)?;
        self.write_job_fields(id, draft, now)?;
        Ok(id)
    }

    fn replace_job(&self, id: i64, draft: &JobDraft, now: i64) -> Result<(), Error> {
        self.write_job_fields(id, draft, now)
    }

    fn chain_targets(&self, job_id: i64, on_result: &str) -> Result<Vec<i64>, Error> {
        ids(self.rows(
            "SELECT c.target_id FROM job_chains c JOIN jobs t ON t.id = c.target_id
             WHERE c.job_id = $1 AND c.on_result = $2 AND t.activity_status <> 'Disabled'
             ORDER BY c.position",
            &[&job_id, &on_result],
        )?)
    }

    fn chain_sources(&self, job_id: i64) -> Result<Vec<(i64, String)>, Error> {
        self.rows(
            "SELECT c.job_id, c.on_result FROM job_chains c JOIN jobs s ON s.id = c.job_id
             WHERE c.target_id = $1 AND s.activity_status <> 'Disabled'
             ORDER BY c.job_id, c.on_result",
            &[&job_id],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
    }

    fn chain_edges(&self, except_job: Option<i64>) -> Result<Vec<(i64, i64)>, Error> {
        self.rows(
            "SELECT DISTINCT c.job_id, c.target_id FROM job_chains c
             JOIN jobs s ON s.id = c.job_id JOIN jobs t ON t.id = c.target_id
             WHERE s.activity_status <> 'Disabled' AND t.activity_status <> 'Disabled'
               AND c.job_id IS DISTINCT FROM $1",
            &[&except_job],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
    }

    fn lock_chains(&self) -> Result<(), Error> {
        self.exec("SELECT pg_advisory_xact_lock($1)", &[&CHAINS_LOCK])?;
        Ok(())
    }

    fn job_name(&self, id: i64) -> Result<Option<String>, Error> {
        Ok(self
            .row("SELECT name FROM jobs WHERE id = $1", &[&id])?
            .map(|r| r.try_get(0))
            .transpose()?)
    }

    fn job_user_lists(&self, job_id: i64) -> Result<(Vec<i64>, Vec<i64>), Error> {
        let list = |table: &str| {
            ids(self.rows(
                &format!("SELECT user_id FROM {table} WHERE job_id = $1 ORDER BY user_id"),
                &[&job_id],
            )?)
        };
        Ok((list("job_recipients")?, list("job_shared_users")?))
    }

    fn soft_delete_job(&self, id: i64, now: i64) -> Result<(), Error> {
        // Locked: the mangled name is made from the name read here.
        let name: String = self
            .row("SELECT name FROM jobs WHERE id = $1 FOR UPDATE", &[&id])?
            .ok_or_else(|| Error::Corrupt(format!("no job {id} to delete")))?
            .try_get(0)?;
        let suffix = format!("_{now}");
        let keep = 255usize.saturating_sub(suffix.chars().count());
        let mangled: String = name.chars().take(keep).chain(suffix.chars()).collect();
        self.exec(
            "UPDATE jobs SET activity_status = 'Disabled', name = $2, updated_at = $3 WHERE id = $1",
            &[&id, &mangled, &now],
        )?;
        self.exec(
            "DELETE FROM job_chains WHERE job_id = $1 OR target_id = $1",
            &[&id],
        )?;
        Ok(())
    }

    fn set_last_fired_for(&self, id: i64, instant: i64) -> Result<(), Error> {
        self.exec(
            "UPDATE jobs SET last_fired_for = $2 WHERE id = $1",
            &[&id, &instant],
        )?;
        Ok(())
    }

    fn last_run_on(&self, job_id: i64) -> Result<Option<i64>, Error> {
        Ok(self
            .one(
                "SELECT max(queued_at) FROM runs WHERE job_id = $1",
                &[&job_id],
            )?
            .try_get(0)?)
    }

    fn saved_query_title(&self, id: i64) -> Result<Option<String>, Error> {
        Ok(self
            .row(
                "SELECT title FROM saved_queries WHERE id = $1 AND NOT deleted",
                &[&id],
            )?
            .map(|r| r.try_get(0))
            .transpose()?)
    }

    fn jobs_fingerprint(&self) -> Result<(i64, i64, f64), Error> {
        // SUM of BIGINT is NUMERIC: as a double, like SQLite's total().
        let row = self.one(
            "SELECT count(*), coalesce(max(updated_at), 0), coalesce(sum(updated_at), 0)::FLOAT8
             FROM jobs",
            &[],
        )?;
        Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
    }

    fn job_for_import(&self, key: Option<&str>, name: &str) -> Result<Option<i64>, Error> {
        if let Some(k) = key
            && let Some(row) = self.row(
                "SELECT id FROM jobs WHERE key = $1 AND activity_status <> 'Disabled'",
                &[&k],
            )?
        {
            return Ok(Some(row.try_get(0)?));
        }
        Ok(self
            .row(
                "SELECT id FROM jobs WHERE name = $1 AND activity_status <> 'Disabled'
                   AND ($2::TEXT IS NULL OR key IS NULL OR key = $2) ORDER BY id LIMIT 1",
                &[&name, &key],
            )?
            .map(|r| r.try_get(0))
            .transpose()?)
    }

    fn job_key(&self, job_id: i64) -> Result<Option<String>, Error> {
        // As in SQLite, a job that does not exist is an error, not "no key".
        Ok(self
            .one("SELECT key FROM jobs WHERE id = $1", &[&job_id])?
            .try_get(0)?)
    }

    fn set_job_key_if_none(&self, job_id: i64, key: &str) -> Result<(), Error> {
        self.exec(
            "UPDATE jobs SET key = $2 WHERE id = $1 AND key IS NULL",
            &[&job_id, &key],
        )?;
        Ok(())
    }

    fn take_job_key(&self, job_id: i64, key: &str) -> Result<(), Error> {
        self.exec(
            "UPDATE jobs SET key = NULL WHERE key = $1 AND id <> $2",
            &[&key, &job_id],
        )?;
        self.exec("UPDATE jobs SET key = $2 WHERE id = $1", &[&job_id, &key])?;
        Ok(())
    }

    fn touch_job(&self, job_id: i64, now: i64) -> Result<(), Error> {
        self.exec(
            "UPDATE jobs SET updated_at = $2 WHERE id = $1",
            &[&job_id, &now],
        )?;
        Ok(())
    }
}
