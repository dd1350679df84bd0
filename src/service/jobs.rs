//! Jobs as every caller changes them: the API, `labcron jobs import` and the first start's
//! examples. One way from a JSON body to a `JobDraft` (`draft_from_body`, with the caller's
//! rights), one set of ledger checks (`check_references`, `check_chains`) and one way to store it
//! (`save`), so no path skips a rule.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::clock::now_ms;
use crate::config::Settings;
use crate::domain::access;
use crate::domain::errors::ErrorItem;
use crate::domain::job::{Job, JobDefaults, JobDraft, JobType, validate_job};
use crate::domain::user::User;
use crate::error::ServiceError;
use crate::query::sources::DataSources;
use crate::run_files::resolve_program;
use crate::service::access as access_ledger;
use crate::store::Ledger;

/// What a body leaves out is filled from the settings (zone, timeout, queue size) and, for a
/// replace, the job's own start date.
pub fn job_defaults(settings: &Settings, existing: Option<&Job>) -> JobDefaults {
    JobDefaults {
        now_ms: now_ms(),
        timezone: settings.timezone,
        timeout_seconds: settings.runs.default_timeout_seconds as i64,
        max_queued_runs: settings.runs.default_max_queued_runs as i64,
        existing_start_date: existing.map(|j| j.start_date),
    }
}

/// The job a JSON body describes, checked by every rule that needs no ledger: the fields, the
/// caller's right to the job's type and webhook, `runAs`, and the program's place in the scripts
/// directory.
pub fn draft_from_body(
    body: &Map<String, Value>,
    settings: &Settings,
    caller: &User,
    existing: Option<&Job>,
) -> Result<JobDraft, ServiceError> {
    let (draft, mut errors) = validate_job(body, &job_defaults(settings, existing));
    if !access::may_set_webhook(
        caller,
        draft.webhook_url.as_deref(),
        existing.and_then(|j| j.webhook_url.as_deref()),
    ) {
        return Err(ServiceError::op_not_allowed());
    }
    if !access::may_save_job_type(caller, draft.job_type, existing.map(|j| j.job_type)) {
        return Err(ServiceError::op_not_allowed());
    }
    // A job's scheduled runs are recorded as run by its runAs user, so naming another user would
    // act in their name.
    if !access::may_set_run_as(caller, draft.run_as, existing.and_then(|j| j.run_as)) {
        errors.push(ErrorItem::new(
            "SCHEDULED_JOB_OP_NOT_ALLOWED",
            "runAs: only admins may make a job run as another user; leave it empty or name yourself.",
        ));
    }
    if let Some(program) = &draft.program
        && let Err(e) = resolve_program(&settings.scripts_dir(), program)
    {
        errors.push(ErrorItem::new(
            "SCHEDULED_JOB_COMMAND_NOT_ALLOWED",
            format!("Command not allowed: {e}."),
        ));
    }
    if errors.is_empty() {
        Ok(draft)
    } else {
        Err(ServiceError::User(errors))
    }
}

/// Checks that need the ledger: unique name, existing users and saved query (`save` runs them in
/// the write transaction that stores the draft).
pub fn check_references(
    conn: &dyn Ledger,
    draft: &JobDraft,
    job_id: Option<i64>,
) -> Result<(), ServiceError> {
    let mut errors = Vec::new();
    if conn.job_name_taken(&draft.name, job_id)? {
        errors.extend(duplicate_name().items());
    }
    if let Some(run_as) = draft.run_as
        && !conn.missing_user_ids(&[run_as])?.is_empty()
    {
        errors.push(ErrorItem::new("USER_NOT_FOUND", "User does not exist."));
    }
    let mut listed: Vec<i64> = draft
        .recipients
        .iter()
        .chain(&draft.shared_with)
        .copied()
        .collect();
    listed.sort_unstable();
    listed.dedup();
    let missing = conn.missing_user_ids(&listed)?;
    if !missing.is_empty() {
        let ids: Vec<String> = missing.iter().map(i64::to_string).collect();
        errors.push(ErrorItem::new(
            "USER_ONE_OR_MORE_NOT_FOUND",
            format!("One or more users do not exist. (IDs: {})", ids.join(", ")),
        ));
    }
    if let Some(query_id) = draft.saved_query_id
        && conn.saved_query_title(query_id)?.is_none()
    {
        errors.push(ErrorItem::new(
            "SAVED_QUERY_NOT_FOUND",
            "Saved query does not exist.",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::User(errors))
    }
}

/// A QUERY job takes runtime parameters only when its saved query has parameters for them to
/// fill (issue 13). A stored job is held to it when the save turns them on or changes the query,
/// so that pausing an older job is never refused for it (its runs still refuse the arguments).
/// It compiles the query against its data source (maybe a PostgreSQL server), so call it on a
/// read connection before the write that stores the draft. Blocking.
pub fn args_without_parameters_refusal(
    conn: &dyn Ledger,
    sources: &DataSources,
    draft: &JobDraft,
    existing: Option<&Job>,
) -> Result<Option<ErrorItem>, ServiceError> {
    let unchanged = existing
        .is_some_and(|job| job.rt_args_provided && job.saved_query_id == draft.saved_query_id);
    if draft.job_type != JobType::Query || !draft.rt_args_provided || unchanged {
        return Ok(None);
    }
    let Some(query_id) = draft.saved_query_id else {
        return Ok(None);
    };
    super::saved_queries::no_parameters_refusal_in(conn, sources, query_id, "rtArgsProvided")
}

/// Stores `draft` as a new job by `saver` (`existing` None) or as the new content of `existing`,
/// after the ledger checks: in the write transaction, so the checks see what is stored. `updated_at`
/// is the job's new change time. Returns the job's id.
pub fn save(
    tx: &dyn Ledger,
    draft: &JobDraft,
    existing: Option<&Job>,
    saver: &User,
    updated_at: i64,
) -> Result<i64, ServiceError> {
    let job_id = existing.map(|j| j.id);
    check_references(tx, draft, job_id)?;
    check_chains(tx, draft, job_id, saver)?;
    // On PostgreSQL another node may take the name between the check and the write: its unique
    // index refuses it, and the caller gets the check's answer, not a 500.
    let stored = match job_id {
        None => tx.insert_job(draft, saver.id, updated_at),
        Some(id) => tx.replace_job(id, draft, updated_at).map(|()| id),
    };
    stored.map_err(|e| {
        if e.is_unique_violation() {
            duplicate_name()
        } else {
            e.into()
        }
    })
}

/// The code of a job name another live job has.
pub const DUP_JOB_NAME: &str = "SCHEDULED_JOB_DUP_JOB_NAME";

fn duplicate_name() -> ServiceError {
    ServiceError::user(DUP_JOB_NAME, "A job with same name already exists.")
}

/// Save-time rules of `onSuccess` / `onFailure`: every target is a live job that `saver` may run,
/// and the lists close no cycle (A → B → A, any length, either list). `job_id` is None for a job
/// being created (nothing can point at it yet).
pub fn check_chains(
    conn: &dyn Ledger,
    draft: &JobDraft,
    job_id: Option<i64>,
    saver: &User,
) -> Result<(), ServiceError> {
    let mut errors = Vec::new();
    let mut targets: Vec<i64> = draft.on_success.clone();
    targets.extend(
        draft
            .on_failure
            .iter()
            .filter(|t| !draft.on_success.contains(t)),
    );
    for target in &targets {
        match conn.live_job(*target)? {
            None => errors.push(ErrorItem::new(
                "SCHEDULED_JOB_CHAIN_TARGET_NOT_FOUND",
                format!("Job {target} of onSuccess/onFailure does not exist."),
            )),
            Some(job) if !access_ledger::can_run(conn, &job, saver)? => {
                errors.push(ErrorItem::new(
                    "SCHEDULED_JOB_OP_NOT_ALLOWED",
                    format!(
                        "You may not run job {} ({target}), so it cannot follow this job.",
                        job.name
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    if !errors.is_empty() {
        return Err(ServiceError::User(errors));
    }
    let Some(job_id) = job_id else {
        return Ok(());
    };
    if targets.is_empty() {
        return Ok(()); // a job that chains nothing closes no cycle
    }
    // Two saves that close a cycle together (A → B and B → A) must not both see the old edges.
    conn.lock_chains()?;
    let mut edges: HashMap<i64, Vec<i64>> = HashMap::new();
    for (from, to) in conn.chain_edges(Some(job_id))? {
        edges.entry(from).or_default().push(to);
    }
    edges.insert(job_id, targets);
    if let Some(cycle) = find_cycle_through(&edges, job_id) {
        let mut names = Vec::with_capacity(cycle.len());
        for id in &cycle {
            let name = if *id == job_id {
                draft.name.clone()
            } else {
                conn.job_name(*id)?.unwrap_or_else(|| id.to_string())
            };
            names.push(format!("{name} ({id})"));
        }
        return Err(ServiceError::user(
            "SCHEDULED_JOB_CHAIN_CYCLE",
            format!(
                "onSuccess/onFailure would close a cycle: {}.",
                names.join(" → ")
            ),
        ));
    }
    Ok(())
}

/// A path `start → … → start` in `edges`, as the list of its jobs (start first and last).
pub fn find_cycle_through(edges: &HashMap<i64, Vec<i64>>, start: i64) -> Option<Vec<i64>> {
    // Depth-first with an explicit stack of (node, next child index); `path` is the current walk.
    let mut visited = HashSet::new();
    let mut path = vec![start];
    let mut stack: Vec<(i64, usize)> = vec![(start, 0)];
    while let Some((node, index)) = stack.last_mut() {
        let children = edges.get(node).map(Vec::as_slice).unwrap_or_default();
        if let Some(child) = children.get(*index).copied() {
            *index += 1;
            if child == start {
                path.push(start);
                return Some(path);
            }
            if visited.insert(child) {
                path.push(child);
                stack.push((child, 0));
            }
        } else {
            stack.pop();
            path.pop();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(i64, i64)]) -> HashMap<i64, Vec<i64>> {
        let mut g: HashMap<i64, Vec<i64>> = HashMap::new();
        for (a, b) in edges {
            g.entry(*a).or_default().push(*b);
        }
        g
    }

    #[test]
    fn cycles_of_any_length_are_found_with_their_path() {
        assert_eq!(find_cycle_through(&graph(&[(1, 1)]), 1), Some(vec![1, 1]));
        assert_eq!(
            find_cycle_through(&graph(&[(1, 2), (2, 1)]), 1),
            Some(vec![1, 2, 1])
        );
        assert_eq!(
            find_cycle_through(&graph(&[(1, 5), (1, 2), (2, 3), (3, 4), (4, 1)]), 1),
            Some(vec![1, 2, 3, 4, 1])
        );
    }

    #[test]
    fn diamonds_and_cycles_elsewhere_are_not_cycles_through_the_job() {
        assert_eq!(
            find_cycle_through(&graph(&[(1, 2), (1, 3), (2, 4), (3, 4)]), 1),
            None
        );
        assert_eq!(
            find_cycle_through(&graph(&[(1, 2), (2, 3), (3, 2)]), 1),
            None
        );
    }
}
