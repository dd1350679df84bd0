//! `labcron jobs export|import`: jobs as a TOML file, so job definitions can live in git. Each job
//! is a `[[jobs]]` table whose keys are the API's JSON field names (camelCase), with users written
//! as login names, dates (`startDate`, `endDate`) in RFC 3339 in the job's zone, the saved query
//! embedded (`title`, `sql`, `dataSource`: the same file works on another instance), and a stable
//! `key` that identifies the job across renames; computed fields (id, createdBy, nextRunOn,
//! lastRunOn, isActiveJob) are left out. Import matches jobs by `key` (else by name), validates them
//! exactly as the API does (same code), and shows what would be created or changed field by field;
//! only with `--apply` is the ledger changed, in one transaction. Jobs missing from the file are
//! left alone. Unknown keys anywhere in the file are errors naming the key and the expected ones.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Map, Value};

use super::service_error;
use crate::clock::now_ms;
use crate::config::Settings;
use crate::domain::job::Job;
use crate::error::ServiceError;
use crate::present::{JobView, UserCache, job_view};
use crate::service::jobs::{args_without_parameters_refusal, draft_from_body, save};
use crate::store::{Db, Ledger};

/// Fields the server computes; never written to or read from a jobs file.
const COMPUTED: &[&str] = &["id", "createdBy", "nextRunOn", "lastRunOn", "isActiveJob"];
/// Dates, written as RFC 3339 in the job's zone (the API's epoch milliseconds are also read).
const DATE_FIELDS: &[&str] = &["startDate", "endDate"];
/// The keys of an embedded saved query.
const QUERY_KEYS: &[&str] = &["title", "sql", "dataSource"];
/// The file's own key: the job's stable identity (API.md has no such field).
const KEY: &str = "key";

/// The keys a `[[jobs]]` table may have: the API's job fields (read from the job's schema, so a
/// new field is accepted without a change here) without the computed ones, plus `key`.
fn job_keys() -> BTreeSet<String> {
    use utoipa::PartialSchema;
    use utoipa::openapi::{RefOr, schema::Schema};
    let mut keys = BTreeSet::new();
    if let RefOr::T(Schema::Object(object)) = <JobView as PartialSchema>::schema() {
        keys.extend(object.properties.keys().cloned());
    }
    for key in COMPUTED {
        keys.remove(*key);
    }
    keys.insert(KEY.to_string());
    keys
}

fn expected(keys: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    keys.into_iter()
        .map(|k| format!("`{}`", k.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A TOML value as JSON; TOML dates become their RFC 3339 text.
fn toml_to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

/// The zone a job's dates are written in: its own, else the server's.
fn job_zone(fields: &Map<String, Value>, settings: &Settings) -> chrono_tz::Tz {
    fields
        .get("timezone")
        .and_then(Value::as_str)
        .and_then(|z| z.parse().ok())
        .unwrap_or(settings.timezone)
}

fn rfc3339(ms: i64, zone: chrono_tz::Tz) -> Option<String> {
    let utc = chrono::DateTime::from_timestamp_millis(ms)?;
    Some(
        utc.with_timezone(&zone)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
    )
}

fn ledger(settings: &Settings) -> anyhow::Result<Db> {
    // Opening brings the schema up to date (a ledger last opened by an older labcron); its
    // writer has the server's settings, durability included.
    super::open_ledger(settings)
}

/// A job as the API shows it, turned into its file form (a JSON object with file conventions).
fn portable(
    conn: &dyn Ledger,
    job: &Job,
    settings: &Settings,
) -> Result<Map<String, Value>, ServiceError> {
    let view = job_view(conn, job, &mut UserCache::default())?;
    let Value::Object(mut fields) =
        serde_json::to_value(view).map_err(|e| ServiceError::Internal(e.into()))?
    else {
        return Err(ServiceError::Internal(anyhow::anyhow!(
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
    if let Some(id) = fields
        .get("savedQuery")
        .and_then(|q| q.get("id"))
        .and_then(Value::as_i64)
    {
        // Embedded, so the file does not depend on this instance's ids (deleted ones included:
        // the job still names it).
        if let Some(query) = conn.saved_query_even_deleted(id)? {
            fields.insert(
                "savedQuery".into(),
                serde_json::json!({
                    "title": query.title, "sql": query.sql, "dataSource": query.data_source
                }),
            );
        }
    }
    let zone = job_zone(&fields, settings);
    for key in DATE_FIELDS {
        if let Some(text) = fields
            .get(*key)
            .and_then(Value::as_i64)
            .and_then(|ms| rfc3339(ms, zone))
        {
            fields.insert((*key).to_string(), Value::String(text));
        }
    }
    if let Some(key) = conn.job_key(job.id)? {
        fields.insert(KEY.into(), Value::String(key));
    }
    // TOML has no null, and an empty list says nothing a missing one does not.
    fields.retain(|_, v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()));
    Ok(fields)
}

/// A saved query as a jobs file embeds it, resolved to a live query's id: one with the same
/// title (its SQL and source must match), else a new one (created in the import's transaction).
fn saved_query_ref(
    conn: &dyn Ledger,
    settings: &Settings,
    value: &Value,
    creator: i64,
    created: &mut Vec<String>,
) -> anyhow::Result<i64> {
    if let Some(id) = value.as_i64() {
        // An instance-specific id, as older exports wrote it.
        return Ok(id);
    }
    let table = value
        .as_object()
        .context("savedQuery must be a table with `title`, `sql` and `dataSource`")?;
    if let Some(unknown) = table.keys().find(|k| !QUERY_KEYS.contains(&k.as_str())) {
        bail!(
            "savedQuery: unknown key `{unknown}`; expected {}",
            expected(QUERY_KEYS)
        );
    }
    let (draft, errors) = crate::domain::saved_query::parse_saved_query(table);
    if let Some(error) = errors.first() {
        bail!("savedQuery: {}: {}", error.code, error.message);
    }
    let same_title = conn
        .live_saved_queries_titled(&draft.title)
        .map_err(service_error)?;
    if let Some(same) = same_title
        .iter()
        .find(|q| q.sql == draft.sql && q.data_source == draft.data_source)
    {
        return Ok(same.id);
    }
    if !same_title.is_empty() {
        bail!(
            "savedQuery: the saved query \"{}\" exists with other SQL or data source; make them \
             equal or give this one another title",
            draft.title
        );
    }
    let sources = crate::query::sources::DataSources::from_settings(settings, &settings.data_dir);
    sources
        .check(&draft.data_source, &draft.sql)
        .map_err(|e| match e {
            crate::query::sources::CheckError::Source(e) => anyhow::anyhow!(
                "savedQuery.dataSource: {e} (configured: {})",
                sources.names().join(", ")
            ),
            crate::query::sources::CheckError::Sql(e) => anyhow::anyhow!("savedQuery.sql: {e}"),
        })?;
    let id = conn
        .insert_saved_query(&draft, creator, now_ms())
        .map_err(service_error)?;
    created.push(draft.title);
    Ok(id)
}

/// The file form of a job turned back into an API request body.
fn api_body(
    conn: &dyn Ledger,
    settings: &Settings,
    fields: &Map<String, Value>,
    creator: i64,
    created_queries: &mut Vec<String>,
) -> anyhow::Result<Map<String, Value>> {
    let mut body = fields.clone();
    body.remove(KEY);
    let user_ref = |field: &str, login: &Value| -> anyhow::Result<Value> {
        let name = login
            .as_str()
            .with_context(|| format!("{field}: users are written as login names"))?;
        let user = conn
            .user_with_hash(name)
            .map_err(service_error)?
            .filter(|(u, _)| u.active && !u.is_system)
            .with_context(|| format!("{field}: no user `{name}`"))?;
        Ok(serde_json::json!({"id": user.0.id}))
    };
    for key in ["recipients", "sharedWith"] {
        if let Some(list) = fields.get(key) {
            let logins = list
                .as_array()
                .with_context(|| format!("{key} must be a list of login names"))?;
            let refs = logins
                .iter()
                .map(|login| user_ref(key, login))
                .collect::<anyhow::Result<Vec<_>>>()?;
            body.insert(key.to_string(), Value::Array(refs));
        }
    }
    if let Some(login) = fields.get("runAs") {
        body.insert("runAs".into(), user_ref("runAs", login)?);
    }
    if let Some(query) = fields.get("savedQuery") {
        let id = saved_query_ref(conn, settings, query, creator, created_queries)?;
        body.insert("savedQuery".into(), serde_json::json!({"id": id}));
    }
    for key in DATE_FIELDS {
        if let Some(Value::String(text)) = fields.get(*key) {
            let date = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| {
                anyhow::anyhow!(
                    "{key}: `{text}` is not an RFC 3339 date (such as 2026-12-01T09:00:00+01:00)"
                )
            })?;
            body.insert((*key).to_string(), Value::from(date.timestamp_millis()));
        }
    }
    Ok(body)
}

/// A new stable key for a job: its name as a slug and a random suffix.
fn new_key(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let suffix: u32 = rand::random();
    if slug.is_empty() {
        format!("job-{suffix:08x}")
    } else {
        format!("{slug}-{suffix:08x}")
    }
}

/// Writes every live job to `file`; returns how many. Jobs without a key get one now (stored, so
/// every later export writes the same).
pub fn export(settings: &Settings, file: &Path) -> anyhow::Result<usize> {
    let db = ledger(settings)?;
    // One write: the keys given now and the jobs read with them.
    let tables = db.write_sync(|conn| -> anyhow::Result<Vec<toml::Value>> {
        let mut jobs = conn.live_jobs().map_err(service_error)?;
        jobs.sort_by_key(|j| j.id);
        for job in &jobs {
            conn.set_job_key_if_none(job.id, &new_key(&job.name))
                .map_err(service_error)?;
        }
        let mut tables = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let fields = portable(conn, job, settings).map_err(service_error)?;
            tables.push(
                toml::Value::try_from(Value::Object(fields))
                    .context("a job cannot be written as TOML")?,
            );
        }
        Ok(tables)
    })?;
    let count = tables.len();
    let mut document = toml::Table::new();
    document.insert("jobs".into(), toml::Value::Array(tables));
    let text = format!(
        "# labcron jobs: one [[jobs]] table per job, keys as in the API (users by login name, dates\n\
         # in RFC 3339, the saved query embedded); `key` identifies a job across renames.\n\
         # Apply with: labcron jobs import FILE --apply\n\n{}",
        toml::to_string_pretty(&document)?
    );
    std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(count)
}

/// One job's fate in an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create {
        name: String,
    },
    /// A saved query an embedded `savedQuery` needed.
    CreateQuery {
        title: String,
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
                Change::CreateQuery { title } => {
                    let _ = writeln!(out, "+ create  saved query \"{title}\"");
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
    let document: toml::Table = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not valid TOML: {}",
            file.display(),
            e.message().trim_end()
        )
    })?;
    if let Some(unknown) = document.keys().find(|k| k.as_str() != "jobs") {
        bail!(
            "{}: unknown key `{unknown}` at the top level; expected `jobs` (one [[jobs]] table per job)",
            file.display()
        );
    }
    let tables = match document.get("jobs") {
        Some(toml::Value::Array(items)) => items.clone(),
        None => Vec::new(),
        Some(_) => bail!("`jobs` must be an array of tables ([[jobs]])"),
    };
    let db = ledger(settings)?;
    // One write transaction: committed with --apply, rolled back otherwise (a dry run) or at the
    // first invalid job (nothing changes).
    let planned = db.write_sync(|tx| {
        let plan = plan_import(tx, settings, &tables, as_login).map_err(Rollback::Failed)?;
        if apply {
            Ok(plan)
        } else {
            Err(Rollback::DryRun(plan))
        }
    });
    match planned {
        Ok(mut plan) => {
            plan.applied = true;
            Ok(plan)
        }
        Err(Rollback::DryRun(plan)) => Ok(plan),
        Err(Rollback::Failed(e)) => Err(e),
    }
}

/// Why an import's transaction is rolled back: it failed, or it was a dry run (its plan).
enum Rollback {
    Failed(anyhow::Error),
    DryRun(ImportPlan),
}

impl From<crate::store::Error> for Rollback {
    fn from(e: crate::store::Error) -> Self {
        Rollback::Failed(e.into())
    }
}

/// The import's work inside its transaction: every job validated, matched and saved.
fn plan_import(
    tx: &dyn Ledger,
    settings: &Settings,
    tables: &[toml::Value],
    as_login: &str,
) -> anyhow::Result<ImportPlan> {
    let allowed = job_keys();
    let creator = tx
        .user_with_hash(as_login)
        .map_err(service_error)?
        .filter(|(u, _)| u.active && !u.is_system)
        .with_context(|| format!("no user `{as_login}` to record as the creator"))?
        .0;
    let mut plan = ImportPlan::default();
    let mut seen_names = BTreeSet::new();
    let mut seen_keys = BTreeSet::new();
    let mut touched = BTreeSet::new();
    for (index, table) in tables.iter().enumerate() {
        let fields: Map<String, Value> = match toml_to_json(table) {
            Value::Object(map) => map,
            _ => bail!(
                "the jobs file's entry {} is not a [[jobs]] table",
                index + 1
            ),
        };
        let name = fields
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_string();
        let key = match fields.get(KEY) {
            None => None,
            Some(Value::String(k)) if !k.trim().is_empty() => Some(k.trim().to_string()),
            Some(_) => bail!("job \"{name}\": key: must be a non-empty string"),
        };
        let context = || match &key {
            Some(k) => format!("job \"{name}\" (key {k})"),
            None if name.is_empty() => format!("the {}. job (no name)", index + 1),
            None => format!("job \"{name}\""),
        };
        for field in fields.keys() {
            if COMPUTED.contains(&field.as_str()) {
                bail!(
                    "{}: `{field}` is computed by the server and cannot be imported",
                    context()
                );
            }
            if !allowed.contains(field) {
                bail!(
                    "{}: unknown key `{field}`; expected one of {}",
                    context(),
                    expected(&allowed)
                );
            }
        }
        if !seen_names.insert(name.clone()) {
            bail!("{}: the file names this job twice", context());
        }
        if let Some(k) = &key
            && !seen_keys.insert(k.clone())
        {
            bail!("{}: the file has this key twice", context());
        }
        let mut created_queries = Vec::new();
        let body = api_body(tx, settings, &fields, creator.id, &mut created_queries)
            .with_context(context)?;
        for title in created_queries {
            plan.changes.push(Change::CreateQuery { title });
        }
        let existing = find_existing(tx, key.as_deref(), &name).map_err(service_error)?;
        let draft = draft_from_body(&body, settings, &creator, existing.as_ref())
            .map_err(service_error)
            .with_context(context)?;
        let sources =
            crate::query::sources::DataSources::from_settings(settings, &settings.data_dir);
        if let Some(refusal) =
            args_without_parameters_refusal(tx, &sources, &draft, existing.as_ref())
                .map_err(service_error)?
        {
            return Err(service_error(ServiceError::User(vec![refusal]))).with_context(context);
        }
        let now = now_ms();
        let set_key = |id: i64| -> anyhow::Result<()> {
            if let Some(k) = &key {
                // A deleted job keeps its key; a job coming back takes it over.
                tx.take_job_key(id, k).map_err(service_error)?;
            }
            Ok(())
        };
        match existing {
            None => {
                let id = save(tx, &draft, None, &creator, now)
                    .map_err(service_error)
                    .with_context(context)?;
                set_key(id)?;
                touched.insert(id);
                plan.changes.push(Change::Create { name });
            }
            Some(job) => {
                touched.insert(job.id);
                let before = portable(tx, &job, settings).map_err(service_error)?;
                // The change time stays until `push_update` finds a real change.
                save(tx, &draft, Some(&job), &creator, job.updated_at)
                    .map_err(service_error)
                    .with_context(context)?;
                set_key(job.id)?;
                let replaced = tx
                    .live_job(job.id)
                    .map_err(service_error)?
                    .context("job vanished")?;
                let mut after = portable(tx, &replaced, settings).map_err(service_error)?;
                if key.is_none() {
                    // A file without keys says nothing about them.
                    after.remove(KEY);
                    let mut before = before.clone();
                    before.remove(KEY);
                    push_update(tx, &mut plan, job.id, name, &before, &after, now)?;
                } else {
                    push_update(tx, &mut plan, job.id, name, &before, &after, now)?;
                }
            }
        }
    }
    for job in tx.live_jobs().map_err(service_error)? {
        if !touched.contains(&job.id) {
            plan.not_in_file.push(job.name);
        }
    }
    Ok(plan)
}

fn push_update(
    tx: &dyn Ledger,
    plan: &mut ImportPlan,
    id: i64,
    name: String,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    now: i64,
) -> anyhow::Result<()> {
    let fields = diff(before, after);
    if fields.is_empty() {
        plan.changes.push(Change::Unchanged { name });
    } else {
        // A real change gets a new version, so a running server's scheduler picks it up.
        tx.touch_job(id, now).map_err(service_error)?;
        plan.changes.push(Change::Update { name, fields });
    }
    Ok(())
}

/// The live job a file's table means: the one with its key; else (no key in the file, or a key
/// no job has yet) the one with its name that has no other key.
fn find_existing(
    conn: &dyn Ledger,
    key: Option<&str>,
    name: &str,
) -> Result<Option<Job>, ServiceError> {
    match conn.job_for_import(key, name)? {
        Some(id) => Ok(conn.live_job(id)?),
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
