//! `labcron jobs export|import`: jobs as a TOML file, so job definitions can live in git. Each job
//! is a `[[jobs]]` table whose keys are the API's JSON field names (camelCase), with users written
//! as login names and the saved query as its id; computed fields (id, createdBy, nextRunOn,
//! lastRunOn, isActiveJob) are left out. Import matches jobs by name, validates them exactly as the
//! API does (same code), and shows what would be created or changed field by field; only with
//! `--apply` is the ledger changed, in one transaction. Jobs missing from the file are left alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use rusqlite::{Connection, TransactionBehavior};
use serde_json::{Map, Value};

use crate::api::jobs::{check_references, draft_from_body};
use crate::api::views::{UserCache, job_view};
use crate::clock::now_ms;
use crate::config::Settings;
use crate::domain::job::Job;
use crate::error::ApiError;
use crate::store;

/// Fields the server computes; never written to or read from a jobs file.
const COMPUTED: &[&str] = &["id", "createdBy", "nextRunOn", "lastRunOn", "isActiveJob"];

fn ledger(settings: &Settings) -> anyhow::Result<Connection> {
    let path = settings.data_dir.join("labcron.db");
    if !path.exists() {
        bail!(
            "no ledger at {} (start the server once, or set data_dir)",
            path.display()
        );
    }
    // Bring the schema up to date first (a ledger last opened by an older labcron).
    drop(crate::store::Db::open(&path)?);
    let conn = Connection::open(&path)?;
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")?;
    Ok(conn)
}

fn api_error(e: ApiError) -> anyhow::Error {
    match e {
        ApiError::User(items) => {
            let text: Vec<String> = items
                .iter()
                .map(|i| format!("{}: {}", i.code, i.message))
                .collect();
            anyhow::anyhow!("{}", text.join("; "))
        }
        other => anyhow::anyhow!("{other}"),
    }
}

/// A job as the API shows it, turned into its file form (a JSON object with file conventions).
fn portable(conn: &Connection, job: &Job) -> Result<Map<String, Value>, ApiError> {
    let view = job_view(conn, job, &mut UserCache::default())?;
    let Value::Object(mut fields) =
        serde_json::to_value(view).map_err(|e| ApiError::Internal(e.into()))?
    else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "a job is not a JSON object"
        )));
    };
    for key in COMPUTED {
        fields.remove(*key);
    }
    let login = |user: &Value| user.get("loginName").cloned().unwrap_or(Value::Null);
    for key in ["recipients", "sharedWith"] {
        if let Some(Value::Array(users)) = fields.get(key) {
            let logins: Vec<Value> = users.iter().map(login).collect();
            fields.insert(key.to_string(), Value::Array(logins));
        }
    }
    if let Some(user) = fields.get("runAs").filter(|v| !v.is_null()) {
        let value = login(user);
        fields.insert("runAs".into(), value);
    }
    if let Some(query) = fields.get("savedQuery").filter(|v| !v.is_null()) {
        let id = query.get("id").cloned().unwrap_or(Value::Null);
        fields.insert("savedQuery".into(), id);
    }
    // TOML has no null, and an empty list says nothing a missing one does not.
    fields.retain(|_, v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()));
    Ok(fields)
}

/// The file form of a job turned back into an API request body.
fn api_body(conn: &Connection, fields: &Map<String, Value>) -> anyhow::Result<Map<String, Value>> {
    let mut body = fields.clone();
    let user_ref = |login: &Value| -> anyhow::Result<Value> {
        let name = login.as_str().context("users are written as login names")?;
        let user = store::users::get_with_hash(conn, name)
            .map_err(api_error)?
            .filter(|(u, _)| u.active && !u.is_system)
            .with_context(|| format!("no user `{name}`"))?;
        Ok(serde_json::json!({"id": user.0.id}))
    };
    for key in ["recipients", "sharedWith"] {
        if let Some(list) = fields.get(key) {
            let logins = list
                .as_array()
                .with_context(|| format!("{key} must be a list of login names"))?;
            let refs = logins
                .iter()
                .map(user_ref)
                .collect::<anyhow::Result<Vec<_>>>()?;
            body.insert(key.to_string(), Value::Array(refs));
        }
    }
    if let Some(login) = fields.get("runAs") {
        body.insert("runAs".into(), user_ref(login)?);
    }
    if let Some(id) = fields.get("savedQuery") {
        body.insert("savedQuery".into(), serde_json::json!({"id": id}));
    }
    Ok(body)
}

/// Writes every live job to `file`; returns how many.
pub fn export(settings: &Settings, file: &Path) -> anyhow::Result<usize> {
    let conn = ledger(settings)?;
    let mut jobs = store::jobs::list_all_live(&conn).map_err(api_error)?;
    jobs.sort_by_key(|j| j.id);
    let mut tables = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let fields = portable(&conn, job).map_err(api_error)?;
        tables.push(
            toml::Value::try_from(Value::Object(fields))
                .context("a job cannot be written as TOML")?,
        );
    }
    let mut document = toml::Table::new();
    document.insert("jobs".into(), toml::Value::Array(tables));
    let text = format!(
        "# labcron jobs: one [[jobs]] table per job, keys as in the API (users by login name).\n\
         # Apply with: labcron jobs import {} --apply\n\n{}",
        file.display(),
        toml::to_string_pretty(&document)?
    );
    std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(jobs.len())
}

/// One job's fate in an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create {
        name: String,
    },
    Update {
        name: String,
        fields: Vec<FieldChange>,
    },
    Unchanged {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    pub field: String,
    pub before: String,
    pub after: String,
}

/// What an import found (and, with `--apply`, did).
#[derive(Debug, Default)]
pub struct ImportPlan {
    pub changes: Vec<Change>,
    /// Live jobs in the ledger that the file does not mention (left alone).
    pub not_in_file: Vec<String>,
    pub applied: bool,
}

impl ImportPlan {
    pub fn has_changes(&self) -> bool {
        self.changes
            .iter()
            .any(|c| !matches!(c, Change::Unchanged { .. }))
    }

    /// A readable diff.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for change in &self.changes {
            match change {
                Change::Create { name } => {
                    let _ = writeln!(out, "+ create  {name}");
                }
                Change::Unchanged { name } => {
                    let _ = writeln!(out, "  same    {name}");
                }
                Change::Update { name, fields } => {
                    let _ = writeln!(out, "~ update  {name}");
                    for f in fields {
                        let _ = writeln!(out, "      {}: {} -> {}", f.field, f.before, f.after);
                    }
                }
            }
        }
        for name in &self.not_in_file {
            let _ = writeln!(out, "  kept    {name} (not in the file)");
        }
        if self.applied {
            let _ = writeln!(out, "applied");
        }
        out
    }
}

fn shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "(none)".to_string(), |v| v.to_string())
}

fn diff(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<FieldChange> {
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| FieldChange {
            field: k.clone(),
            before: shown(before.get(k)),
            after: shown(after.get(k)),
        })
        .collect()
}

/// Reads `file`, validates every job as the API would, and computes (and with `apply`, makes) the
/// changes. All or nothing: one invalid job stops the import before anything changes.
pub fn import(
    settings: &Settings,
    file: &Path,
    apply: bool,
    as_login: &str,
) -> anyhow::Result<ImportPlan> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let document: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", file.display()))?;
    let tables = match document.get("jobs") {
        Some(toml::Value::Array(items)) => items.clone(),
        None => Vec::new(),
        Some(_) => bail!("`jobs` must be an array of tables ([[jobs]])"),
    };
    let mut conn = ledger(settings)?;
    let creator = store::users::get_with_hash(&conn, as_login)
        .map_err(api_error)?
        .filter(|(u, _)| u.active && !u.is_system)
        .with_context(|| format!("no user `{as_login}` to record as the creator"))?
        .0;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut plan = ImportPlan::default();
    let mut seen = BTreeMap::new();
    for (index, table) in tables.iter().enumerate() {
        let fields: Map<String, Value> = match serde_json::to_value(table)? {
            Value::Object(map) => map,
            _ => bail!("job {} is not a table", index + 1),
        };
        let name = fields
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_string();
        let context = || format!("job {} ({name})", index + 1);
        if seen.insert(name.clone(), index).is_some() {
            bail!("{}: the file names this job twice", context());
        }
        for key in COMPUTED {
            if fields.contains_key(*key) {
                bail!(
                    "{}: `{key}` is computed by the server and cannot be imported",
                    context()
                );
            }
        }
        let body = api_body(&tx, &fields).with_context(context)?;
        let existing = find_live_by_name(&tx, &name).map_err(api_error)?;
        let draft = draft_from_body(&body, settings, &creator, existing.as_ref())
            .map_err(api_error)
            .with_context(context)?;
        check_references(&tx, &draft, existing.as_ref().map(|j| j.id))
            .map_err(api_error)
            .with_context(context)?;
        crate::executor::followup::check_chains(
            &tx,
            &draft,
            existing.as_ref().map(|j| j.id),
            &creator,
        )
        .map_err(api_error)
        .with_context(context)?;
        let now = now_ms();
        match existing {
            None => {
                store::jobs::insert(&tx, &draft, creator.id, now).map_err(api_error)?;
                plan.changes.push(Change::Create { name });
            }
            Some(job) => {
                let before = portable(&tx, &job).map_err(api_error)?;
                store::jobs::replace(&tx, job.id, &draft, job.updated_at).map_err(api_error)?;
                let replaced = store::jobs::get_live(&tx, job.id)
                    .map_err(api_error)?
                    .context("job vanished")?;
                let after = portable(&tx, &replaced).map_err(api_error)?;
                let fields = diff(&before, &after);
                if fields.is_empty() {
                    plan.changes.push(Change::Unchanged { name });
                } else {
                    // A real change gets a new version, so a running server's scheduler picks it up.
                    tx.execute(
                        "UPDATE jobs SET updated_at = ?2 WHERE id = ?1",
                        [job.id, now],
                    )?;
                    plan.changes.push(Change::Update { name, fields });
                }
            }
        }
    }
    for job in store::jobs::list_all_live(&tx).map_err(api_error)? {
        if !seen.contains_key(&job.name) {
            plan.not_in_file.push(job.name);
        }
    }
    if apply {
        tx.commit()?;
        plan.applied = true;
    }
    // Without --apply the transaction is dropped: rolled back, nothing changed.
    Ok(plan)
}

fn find_live_by_name(conn: &Connection, name: &str) -> Result<Option<Job>, ApiError> {
    let id: Option<i64> = rusqlite::OptionalExtension::optional(conn.query_row(
        "SELECT id FROM jobs WHERE name = ?1 AND activity_status <> 'Disabled'",
        [name],
        |r| r.get(0),
    ))?;
    match id {
        Some(id) => store::jobs::get_live(conn, id),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_lists_changed_added_and_removed_fields() {
        let before: Map<String, Value> =
            serde_json::from_str(r#"{"a":1,"b":"x","c":true}"#).unwrap();
        let after: Map<String, Value> = serde_json::from_str(r#"{"a":1,"b":"y","d":[1]}"#).unwrap();
        let fields: Vec<String> = diff(&before, &after).into_iter().map(|f| f.field).collect();
        assert_eq!(fields, vec!["b", "c", "d"]);
    }
}
