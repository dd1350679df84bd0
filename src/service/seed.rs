//! What the very first start (a new ledger) creates so a new user has something to try: the demo
//! lab database, example saved queries on it, and example jobs of each type. Jobs that would act
//! by themselves are `Closed` (paused); the others are ONDEMAND. Example jobs are built from JSON
//! bodies through the same validation as the API, created by the built-in system user. Called
//! once, at first start only: deleting an example keeps it deleted.

use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

use crate::clock::now_ms;
use crate::config::Settings;
use crate::config::sources::DEMO_FILE;
use crate::domain::saved_query::DEFAULT_SOURCE;
use crate::domain::saved_query::SavedQueryDraft;
use crate::error::ServiceError;
use crate::query::demo::{DemoSummary, create_demo_database};
use crate::query::sources;
use crate::service::jobs;
use crate::store::{self, Db};

/// What a first start created.
#[derive(Debug, Default)]
pub struct FirstStart {
    pub demo: Option<DemoSummary>,
    pub saved_queries: usize,
    pub jobs: usize,
}

/// Title and SQL of the example saved queries (all on the `lab` demo source).
pub const EXAMPLE_QUERIES: &[(&str, &str)] = &[
    (
        "Specimens collected this week",
        "SELECT label, specimen_type, specimen_class, site, ppid, visit_name, collected_on,
       available_quantity, unit, status, freezer, rack, box, position
FROM specimen_details
WHERE collected_on >= date('now', 'weekday 0', '-6 days')
ORDER BY collected_on",
    ),
    (
        "Available specimens at a site",
        "SELECT label, specimen_type, available_quantity, unit, collected_on, freezer, rack, box, position
FROM specimen_details
WHERE site = :site AND status = 'Available'
  AND collected_on >= date('now', '-' || :days || ' days')
ORDER BY freezer, rack, box, position",
    ),
    (
        "Specimen inventory by site and type",
        "SELECT site, specimen_type, count(*) AS specimens,
       round(sum(available_quantity), 2) AS available, unit
FROM specimen_details
WHERE status = 'Available'
GROUP BY site, specimen_type, unit
ORDER BY site, specimen_type",
    ),
];

/// File name of the example EXTERNAL script in the default scripts directory.
pub const EXAMPLE_SCRIPT: &str = "example-hello.sh";

const EXAMPLE_SCRIPT_BODY: &str = r#"#!/bin/sh
# Example EXTERNAL job script, created by labcron on its first start. Edit or delete it freely.
# A run gets a fresh working directory; what it writes to $LABCRON_RESULT_DIR is its result file,
# and its stdout and stderr are its log.
set -eu
echo "Hello from job '$LABCRON_JOB_NAME', run $LABCRON_RUN_ID"
printf 'run_id,generated_at\n%s,%s\n' "$LABCRON_RUN_ID" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    > "$LABCRON_RESULT_DIR/hello.csv"
"#;

/// Creates the demo database and the examples the settings ask for. Blocking; call it once,
/// when the ledger was just created.
pub fn prepare_first_start(
    db: &Db,
    settings: &Settings,
    data_dir: &Path,
) -> anyhow::Result<FirstStart> {
    let mut done = FirstStart::default();
    let demo_path = data_dir.join(DEMO_FILE);
    let lab_configured = settings.query_sources.contains_key(DEFAULT_SOURCE);
    if settings.queries.demo_database && !lab_configured && !demo_path.exists() {
        let summary = create_demo_database(&demo_path, now_ms())?;
        tracing::info!(
            path = %demo_path.display(),
            specimens = summary.specimens,
            "created the demo lab database for saved queries"
        );
        done.demo = Some(summary);
    }
    if !settings.example_jobs {
        return Ok(done);
    }
    let mut bodies: Vec<Value> = Vec::new();
    if done.demo.is_some() {
        let ids = create_example_queries(db, settings, data_dir)?;
        done.saved_queries = ids.len();
        bodies.push(json!({
            "name": "Specimens collected this week", "type": "QUERY", "repeatSchedule": "ONDEMAND",
            "savedQuery": {"id": ids[0]},
        }));
        bodies.push(json!({
            "name": "Available specimens at a site", "type": "QUERY", "repeatSchedule": "ONDEMAND",
            "savedQuery": {"id": ids[1]}, "fixedArgs": "site=BOS days=30", "rtArgsProvided": true,
            "rtArgsHelpText": "site=BOS|LYO|MUC|OSA|TOR|MEL days=<how many days back> (default site=BOS days=30)",
        }));
    }
    bodies.extend([
        json!({
            "name": "Remove run files older than 30 days", "type": "INTERNAL",
            "taskImplFqn": "files-cleaner", "fixedArgs": "filesRetentionDays=30",
            "repeatSchedule": "DAILY", "scheduledHour": 2, "scheduledMinute": 30, "activityStatus": "Closed",
        }),
        json!({
            "name": "Back up the ledger", "type": "INTERNAL", "taskImplFqn": "database-backup",
            "repeatSchedule": "DAILY", "scheduledHour": 3, "scheduledMinute": 0, "activityStatus": "Closed",
        }),
        json!({
            "name": "Runs of the last 7 days", "type": "INTERNAL", "taskImplFqn": "runs-report",
            "fixedArgs": "days=7", "repeatSchedule": "WEEKLY", "scheduledDayOfWeek": "MONDAY",
            "scheduledHour": 6, "scheduledMinute": 0, "activityStatus": "Closed",
        }),
    ]);
    // The example script goes only into the default scripts directory, never into one an
    // administrator configured.
    if settings.scripts_dir.is_none() {
        let script = settings.scripts_dir().join(EXAMPLE_SCRIPT);
        if !script.exists() {
            write_script(&script)?;
        }
        bodies.push(json!({
            "name": "Example script", "type": "EXTERNAL", "command": EXAMPLE_SCRIPT,
            "repeatSchedule": "ONDEMAND",
        }));
    }
    done.jobs = create_example_jobs(db, settings, &bodies)?;
    Ok(done)
}

fn write_script(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, EXAMPLE_SCRIPT_BODY)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn create_example_queries(
    db: &Db,
    settings: &Settings,
    data_dir: &Path,
) -> anyhow::Result<Vec<i64>> {
    // The examples must compile against the demo; a failure here is a bug worth stopping for.
    let conn = sources::DataSources::from_settings(settings, data_dir)
        .open(DEFAULT_SOURCE)
        .map_err(anyhow::Error::msg)?;
    for (title, sql) in EXAMPLE_QUERIES {
        sources::check_sql(&conn, sql)
            .map_err(|e| anyhow::anyhow!("example query `{title}` is invalid: {e}"))?;
    }
    drop(conn);
    let ids = db.write_sync(|tx| {
        let system = tx.system_user_id()?;
        let now = now_ms();
        EXAMPLE_QUERIES
            .iter()
            .map(|(title, sql)| {
                let draft = SavedQueryDraft {
                    title: title.to_string(),
                    sql: sql.to_string(),
                    data_source: DEFAULT_SOURCE.to_string(),
                };
                // Made once: an example a node starting at the same time made is reused.
                match tx.live_saved_queries_titled(title)?.first() {
                    Some(made) if made.created_by == system => Ok(made.id),
                    _ => tx.insert_saved_query(&draft, system, now),
                }
            })
            .collect::<Result<Vec<_>, store::Error>>()
    })?;
    Ok(ids)
}

fn create_example_jobs(db: &Db, settings: &Settings, bodies: &[Value]) -> anyhow::Result<usize> {
    let system = db.read_sync(|c| {
        let id = c.system_user_id()?;
        c.user(id)?
            .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("no system user")))
    })?;
    // The examples go through the API's own rules, as the built-in (admin) system user.
    let mut drafts = Vec::new();
    for body in bodies {
        let Some(object) = body.as_object() else {
            continue;
        };
        let draft = jobs::draft_from_body(object, settings, &system, None)
            .map_err(|e| anyhow::anyhow!("example job {} is invalid: {e:?}", body["name"]))?;
        drafts.push(draft);
    }
    let count = drafts.len();
    // A name taken meanwhile (another node starting first on the same PostgreSQL ledger makes
    // the same examples at once) fails the write as a duplicate; the next attempt sees that
    // node's examples and skips them, so the examples are made once.
    for attempt in 1.. {
        let made = db.write_sync(|tx| -> Result<_, ServiceError> {
            let now = now_ms();
            for draft in &drafts {
                // A name a user took before the examples were made is theirs; that example is
                // skipped.
                if !tx.job_name_taken(&draft.name, None)? {
                    jobs::save(tx, draft, None, &system, now)?;
                }
            }
            Ok(())
        });
        match made {
            Err(e) if attempt < 3 && e.first_code() == Some(jobs::DUP_JOB_NAME) => continue,
            other => other?,
        }
        break;
    }
    Ok(count)
}
