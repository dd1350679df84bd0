//! The job page (`/ui/jobs/{id}`, issue 13) and the facts the Run dialog and the QUERY job form
//! need: the page itself (checked against the access policy before anything is shown: a job the
//! user may not see is the same "Page not found" as one that does not exist), and three
//! read-only JSON endpoints under `/ui/api/`:
//! - `GET /ui/api/jobs/{id}/overview` — the job, what the user may do with it, its next five
//!   fires in its own zone (computed by the scheduler's own `next_fires`, never in the browser),
//!   the jobs whose end queues it, its last runs and the Run dialog's facts;
//! - `GET /ui/api/jobs/{id}/run-form` — the Run dialog's facts alone: the arguments last used
//!   (the user's own newest manual run with arguments, else anyone's), and for a QUERY job its
//!   saved query's parameters and the values `fixedArgs` gives them;
//! - `GET /ui/api/saved-queries/{id}/facts` — a saved query's SQL and parameters (the form).
//!
//! Nothing here changes a job or a run; the page's buttons go through the REST API.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::TimeZone;
use serde::Serialize;

use super::assets::templates;
use super::pages::{Page, html_response, not_found_page, page_visitor, render_page, to_sign_in};
use crate::clock::{from_ms, now_ms};
use crate::domain::access;
use crate::domain::args::split_args;
use crate::domain::job::{Job, JobType, RepeatKind, Schedule};
use crate::domain::next_fire::next_fires;
use crate::domain::user::User;
use crate::error::ServiceError;
use crate::present::{JobView, RunView, UserCache, job_view, run_views};
use crate::query::params::parse_args;
use crate::service::access::visible_job;
use crate::store::runs::RunFilter;
use crate::web::AppState;
use crate::web::api::auth::CurrentUser;
use crate::web::api::params::path_id;
use crate::web::api::saved_queries::parameters_of;

/// Runs the page lists and charts.
const PAGE_RUNS: i64 = 30;
/// Fire times the page shows.
const NEXT_FIRES: usize = 5;

/// `GET /ui/jobs/{jobId}`: the page shell, once the job is known to be one the user may see.
pub async fn page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(job_id) = req
        .match_info()
        .get("jobId")
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|id| *id > 0)
    else {
        return not_found_page();
    };
    let me = match page_visitor(&req).await {
        Ok(Some(me)) => me,
        Ok(None) => return to_sign_in(&req),
        Err(unavailable) => return unavailable,
    };
    let user = me.user.clone();
    let job = match state.db.read(move |c| visible_job(c, job_id, &user)).await {
        Ok(job) => job,
        // Not found and not allowed look the same: the page does not say which jobs exist.
        Err(ServiceError::User(_)) => return not_found_page(),
        Err(e) => {
            tracing::warn!(job_id, error = %e, "the job page could not read its job");
            return not_found_page();
        }
    };
    let title = format!("#{} {}", job.id, job.name);
    let page = Page {
        title: &title,
        name: "job-page",
        script: "job.js",
        shell: templates::JOB,
        data: vec![("job-id", job.id.to_string())],
    };
    html_response(render_page(&page, Some(&me)))
}

/// What the signed-in user may do with the job (the pages hide what they may not).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rights {
    run: bool,
    /// Edit, and Close / Reopen (a full replace of the job).
    edit: bool,
    delete: bool,
}

/// What the page offers `user` on `job`: the access policy's answers, so the page never shows a
/// button the API would refuse.
fn rights(job: &Job, user: &User) -> Rights {
    Rights {
        run: true,
        edit: access::can_edit(job, user),
        delete: access::can_delete(job, user),
    }
}

/// One upcoming fire, as the job's zone shows it.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Fire {
    /// Epoch milliseconds.
    pub at: i64,
    /// RFC 3339 in the job's zone.
    pub local: String,
    /// "Wed 2026-12-02 23:00" in the job's zone.
    pub text: String,
    /// The zone's abbreviation at that instant ("CET", "CEST"; an offset where it has none).
    pub abbreviation: String,
    /// "+01:00".
    pub offset: String,
}

/// The next `count` fires of a schedule after `now_ms`, from the scheduler's own function
/// (paused jobs included: the page says they are paused). ONDEMAND schedules have none.
pub fn upcoming_fires(schedule: &Schedule, now_ms: i64, count: usize) -> Vec<Fire> {
    if schedule.repeat.kind() == RepeatKind::OnDemand {
        return Vec::new();
    }
    let zone = schedule.timezone;
    next_fires(schedule, from_ms(now_ms), count)
        .into_iter()
        .map(|t| {
            let local = zone.from_utc_datetime(&t.naive_utc());
            Fire {
                at: t.timestamp_millis(),
                local: local.to_rfc3339(),
                text: local.format("%a %Y-%m-%d %H:%M").to_string(),
                abbreviation: local.format("%Z").to_string(),
                offset: local.format("%:z").to_string(),
            }
        })
        .collect()
}

/// A job whose series end queues this one.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Upstream {
    id: i64,
    name: String,
    /// `SUCCESS` or `FAILURE`: the list of the upstream job that names this one.
    on: String,
}

/// A saved query's text and parameters.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryFacts {
    id: i64,
    title: String,
    sql: String,
    data_source: String,
    /// Without their `:`, `@` or `$`; null when they cannot be known (see `parameters_error`).
    parameters: Option<Vec<String>>,
    parameters_error: Option<String>,
}

async fn query_facts(state: &AppState, query_id: i64) -> Result<Option<QueryFacts>, ServiceError> {
    let Some(query) = state.db.read(move |c| c.live_saved_query(query_id)).await? else {
        return Ok(None);
    };
    let (parameters, parameters_error) = match parameters_of(state, &query).await {
        Ok(names) => (Some(names), None),
        Err(why) => (None, Some(why)),
    };
    Ok(Some(QueryFacts {
        id: query.id,
        title: query.title,
        sql: query.sql,
        data_source: query.data_source,
        parameters,
        parameters_error,
    }))
}

/// The arguments the Run dialog prefills.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LastArgs {
    run_id: i64,
    args: String,
    /// Whether they are the user's own (else the newest anyone used).
    by_me: bool,
}

/// What the Run dialog needs beyond the job object.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunForm {
    job_id: i64,
    rt_args_provided: bool,
    fixed_args: Option<String>,
    /// QUERY jobs: `name → value` of the `fixedArgs` words (the parameters' defaults).
    fixed_values: BTreeMap<String, String>,
    last_args: Option<LastArgs>,
    /// QUERY jobs: the saved query, with its parameters.
    query: Option<QueryFacts>,
}

async fn run_form(state: &AppState, job: &Job, user: &User) -> Result<RunForm, ServiceError> {
    let (job_id, user_id) = (job.id, user.id);
    let last_args = state
        .db
        .read(move |c| c.last_manual_args(job_id, user_id))
        .await?
        .map(|(run_id, args, by_me)| LastArgs {
            run_id,
            args,
            by_me,
        });
    let mut fixed_values = BTreeMap::new();
    let mut query = None;
    if job.job_type == JobType::Query {
        if let Some(words) = job.fixed_args.as_deref().and_then(|t| split_args(t).ok())
            && let Ok(values) = parse_args(&words)
        {
            fixed_values = values;
        }
        if let Some(query_id) = job.saved_query_id {
            query = query_facts(state, query_id).await?;
        }
    }
    Ok(RunForm {
        job_id: job.id,
        rt_args_provided: job.rt_args_provided,
        fixed_args: job.fixed_args.clone(),
        fixed_values,
        last_args,
        query,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Overview {
    job: JobView,
    may: Rights,
    /// The job's own zone, in which the schedule's hours are read.
    timezone: String,
    paused: bool,
    next_runs: Vec<Fire>,
    triggered_by: Vec<Upstream>,
    /// Upstream jobs the user may not see (counted, not named).
    hidden_upstream: usize,
    /// The newest runs, newest first.
    runs: Vec<RunView>,
    run_form: RunForm,
}

/// `GET /ui/api/jobs/{jobId}/overview`.
pub async fn overview(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ServiceError> {
    let job_id = path_id(&req, "jobId")?;
    let me = me.0;
    let viewer = me.clone();
    let files = state.files.clone();
    let (job, view, triggered_by, hidden_upstream, runs) = state
        .db
        .read(move |c| -> Result<_, ServiceError> {
            let job = visible_job(c, job_id, &viewer)?;
            let mut users = UserCache::default();
            let view = job_view(c, &job, &mut users)?;
            let mut triggered_by = Vec::new();
            let mut hidden = 0;
            for (id, on) in c.chain_sources(job_id)? {
                match visible_job(c, id, &viewer) {
                    Ok(upstream) => triggered_by.push(Upstream {
                        id,
                        name: upstream.name,
                        on,
                    }),
                    Err(_) => hidden += 1,
                }
            }
            let filter = RunFilter {
                job_id,
                from: None,
                to: None,
                status: None,
            };
            let runs = run_views(c, &c.list_runs(&filter, 0, PAGE_RUNS)?, &files)?;
            Ok((job, view, triggered_by, hidden, runs))
        })
        .await?;
    let run_form = run_form(&state, &job, &me).await?;
    Ok(HttpResponse::Ok().json(Overview {
        may: rights(&job, &me),
        timezone: job.schedule().timezone.name().to_string(),
        paused: !job.is_active(),
        next_runs: upcoming_fires(&job.schedule(), now_ms(), NEXT_FIRES),
        job: view,
        triggered_by,
        hidden_upstream,
        runs,
        run_form,
    }))
}

/// `GET /ui/api/jobs/{jobId}/run-form`.
pub async fn run_form_facts(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: CurrentUser,
) -> Result<HttpResponse, ServiceError> {
    let job_id = path_id(&req, "jobId")?;
    let me = me.0;
    let viewer = me.clone();
    let job = state
        .db
        .read(move |c| visible_job(c, job_id, &viewer))
        .await?;
    Ok(HttpResponse::Ok().json(run_form(&state, &job, &me).await?))
}

/// `GET /ui/api/saved-queries/{queryId}/facts`: any signed-in user may read saved queries.
pub async fn saved_query_facts(
    state: web::Data<AppState>,
    req: HttpRequest,
    _me: CurrentUser,
) -> Result<HttpResponse, ServiceError> {
    let query_id = path_id(&req, "queryId")?;
    match query_facts(&state, query_id).await? {
        Some(facts) => Ok(HttpResponse::Ok().json(facts)),
        None => Err(ServiceError::User(vec![
            crate::domain::saved_query::not_found(),
        ])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::Repeat;

    fn daily(timezone: chrono_tz::Tz) -> Schedule {
        Schedule {
            repeat: Repeat::Daily {
                hour: 23,
                minute: 0,
            },
            timezone,
            start_date: 0,
            end_date: None,
        }
    }

    #[test]
    fn fires_are_the_schedulers_own_and_read_in_the_jobs_zone_across_a_dst_change() {
        let schedule = daily(chrono_tz::Europe::Berlin);
        // 2026-10-23 12:00 UTC: Berlin leaves summer time on Sunday the 25th.
        let now = 1_792_756_800_000;
        let fires = upcoming_fires(&schedule, now, 5);
        let expected: Vec<i64> = next_fires(&schedule, from_ms(now), 5)
            .iter()
            .map(|t| t.timestamp_millis())
            .collect();
        assert_eq!(fires.iter().map(|f| f.at).collect::<Vec<_>>(), expected);
        let texts: Vec<&str> = fires.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Fri 2026-10-23 23:00",
                "Sat 2026-10-24 23:00",
                "Sun 2026-10-25 23:00",
                "Mon 2026-10-26 23:00",
                "Tue 2026-10-27 23:00"
            ]
        );
        let zones: Vec<(&str, &str)> = fires
            .iter()
            .map(|f| (f.abbreviation.as_str(), f.offset.as_str()))
            .collect();
        assert_eq!(
            zones,
            [
                ("CEST", "+02:00"),
                ("CEST", "+02:00"),
                ("CET", "+01:00"),
                ("CET", "+01:00"),
                ("CET", "+01:00")
            ]
        );
        assert!(fires[0].local.ends_with("23:00:00+02:00"), "{fires:?}");
        // 23:00 in Berlin is 21:00 UTC in summer and 22:00 UTC in winter.
        assert_eq!(fires[0].at % 86_400_000, 21 * 3_600_000);
        assert_eq!(fires[4].at % 86_400_000, 22 * 3_600_000);
    }

    #[test]
    fn on_demand_schedules_have_no_fires() {
        let mut schedule = daily(chrono_tz::UTC);
        schedule.repeat = Repeat::OnDemand;
        assert!(upcoming_fires(&schedule, 0, 5).is_empty());
    }
}
