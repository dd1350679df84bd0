//! Jobs as the server understands them: the enums of API.md §2, the stored `Job`, and the
//! validation that turns a client's JSON into a `JobDraft` ready to store. Validation reports every
//! problem at once with OpenSpecimen's codes; checks that need the ledger (unique name, users,
//! saved queries) or the disk (the program) are added by the caller.

use std::str::FromStr;

use chrono::Weekday;
use chrono_tz::Tz;
use serde_json::{Map, Value};

use super::args::{ArgsError, split_args};
use super::errors::ErrorItem;
use super::input::{Field, Fields};

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($text => Ok($name::$variant),)+ _ => Err(()) }
            }
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        // The OpenAPI schema (`api::openapi`): a string with exactly these names.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}
    };
}

string_enum!(
    /// What a run of the job does.
    JobType { Internal => "INTERNAL", External => "EXTERNAL", Query => "QUERY" }
);
string_enum!(
    /// The `repeatSchedule` names.
    RepeatKind {
        OnDemand => "ONDEMAND", Minutely => "MINUTELY", Hourly => "HOURLY", Daily => "DAILY",
        Weekly => "WEEKLY", Monthly => "MONTHLY", Cron => "CRON",
    }
);
string_enum!(
    /// `Active` jobs fire and run; `Closed` ones are paused; `Disabled` means deleted.
    ActivityStatus { Active => "Active", Closed => "Closed", Disabled => "Disabled" }
);
string_enum!(
    /// What to do about fires missed while the server was down.
    MisfirePolicy { Skip => "SKIP", RunOnce => "RUN_ONCE" }
);

string_enum!(
    /// (ext) When a finished series' e-mail and webhook go out.
    NotifyOn { Always => "ALWAYS", Failure => "FAILURE", Change => "CHANGE", Never => "NEVER" }
);

/// The built-in tasks an INTERNAL job runs (`taskImplFqn`). The name is stored as the client
/// gave it, so OpenSpecimen's class name for the cleaner reads back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalTask {
    /// Removes old runs' files (`filesRetentionDays`).
    FilesCleaner,
    /// A consistent copy of the ledger as the run's result: admins' only.
    DatabaseBackup,
    /// A CSV of recent runs.
    RunsReport,
}

impl InternalTask {
    /// The names a client may give, for messages.
    pub const NAMES: &'static str = "files-cleaner, database-backup, runs-report";

    /// The task a `taskImplFqn` names (`FilesBacklogCleaner` is OpenSpecimen's cleaner).
    pub fn parse(name: &str) -> Option<InternalTask> {
        match name {
            "files-cleaner" | "FilesBacklogCleaner" => Some(InternalTask::FilesCleaner),
            "database-backup" => Some(InternalTask::DatabaseBackup),
            "runs-report" => Some(InternalTask::RunsReport),
            _ => None,
        }
    }
}

/// A repeat schedule with exactly the fields it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repeat {
    OnDemand,
    Minutely {
        interval: u32,
    },
    Hourly {
        interval: u32,
        minute: u32,
    },
    Daily {
        hour: u32,
        minute: u32,
    },
    Weekly {
        day: Weekday,
        hour: u32,
        minute: u32,
    },
    Monthly {
        day: u32,
        hour: u32,
        minute: u32,
    },
    Cron {
        expression: String,
    },
}

impl Repeat {
    pub fn kind(&self) -> RepeatKind {
        match self {
            Repeat::OnDemand => RepeatKind::OnDemand,
            Repeat::Minutely { .. } => RepeatKind::Minutely,
            Repeat::Hourly { .. } => RepeatKind::Hourly,
            Repeat::Daily { .. } => RepeatKind::Daily,
            Repeat::Weekly { .. } => RepeatKind::Weekly,
            Repeat::Monthly { .. } => RepeatKind::Monthly,
            Repeat::Cron { .. } => RepeatKind::Cron,
        }
    }
    pub fn minute(&self) -> Option<u32> {
        match self {
            Repeat::Hourly { minute, .. }
            | Repeat::Daily { minute, .. }
            | Repeat::Weekly { minute, .. }
            | Repeat::Monthly { minute, .. } => Some(*minute),
            _ => None,
        }
    }
    pub fn hour(&self) -> Option<u32> {
        match self {
            Repeat::Daily { hour, .. }
            | Repeat::Weekly { hour, .. }
            | Repeat::Monthly { hour, .. } => Some(*hour),
            _ => None,
        }
    }
    pub fn day_of_week(&self) -> Option<Weekday> {
        match self {
            Repeat::Weekly { day, .. } => Some(*day),
            _ => None,
        }
    }
    pub fn day_of_month(&self) -> Option<u32> {
        match self {
            Repeat::Monthly { day, .. } => Some(*day),
            _ => None,
        }
    }
    pub fn minutely_interval(&self) -> Option<u32> {
        match self {
            Repeat::Minutely { interval } => Some(*interval),
            _ => None,
        }
    }
    pub fn hourly_interval(&self) -> Option<u32> {
        match self {
            Repeat::Hourly { interval, .. } => Some(*interval),
            _ => None,
        }
    }
    pub fn cron_expression(&self) -> Option<&str> {
        match self {
            Repeat::Cron { expression } => Some(expression),
            _ => None,
        }
    }
}

/// OpenSpecimen's day names.
pub fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Sun => "SUNDAY",
        Weekday::Mon => "MONDAY",
        Weekday::Tue => "TUESDAY",
        Weekday::Wed => "WEDNESDAY",
        Weekday::Thu => "THURSDAY",
        Weekday::Fri => "FRIDAY",
        Weekday::Sat => "SATURDAY",
    }
}

pub fn parse_weekday(name: &str) -> Option<Weekday> {
    Some(match name {
        "SUNDAY" => Weekday::Sun,
        "MONDAY" => Weekday::Mon,
        "TUESDAY" => Weekday::Tue,
        "WEDNESDAY" => Weekday::Wed,
        "THURSDAY" => Weekday::Thu,
        "FRIDAY" => Weekday::Fri,
        "SATURDAY" => Weekday::Sat,
        _ => return None,
    })
}

/// The schedule part of a job, everything `scheduler::next_fire` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub repeat: Repeat,
    pub timezone: chrono_tz::Tz,
    /// Epoch ms; no fire before it. MINUTELY and HOURLY count their intervals from it.
    pub start_date: i64,
    /// Epoch ms; no fire after it.
    pub end_date: Option<i64>,
}

/// A job as stored in the ledger.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub name: String,
    pub job_type: JobType,
    pub repeat: Repeat,
    /// Parsed when read (a row with a zone this build does not know is an error, not UTC).
    pub timezone: Tz,
    pub start_date: i64,
    pub end_date: Option<i64>,
    pub activity_status: ActivityStatus,
    pub created_by: i64,
    pub run_as: Option<i64>,
    pub task_impl_fqn: Option<String>,
    pub command: Option<String>,
    pub fixed_args: Option<String>,
    pub rt_args_provided: bool,
    pub rt_args_help_text: Option<String>,
    pub saved_query_id: Option<i64>,
    pub timeout_seconds: i64,
    pub misfire_policy: MisfirePolicy,
    pub max_queued_runs: i64,
    pub result_from_stdout: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_fired_for: Option<i64>,
    /// (ext) Receives each finished run as a signed POST (`notify::webhook`).
    pub webhook_url: Option<String>,
    /// (ext) How many times a failed run is tried again.
    pub max_retries: i64,
    pub retry_delay_seconds: i64,
    pub notify_on: NotifyOn,
}

impl Job {
    pub fn schedule(&self) -> Schedule {
        Schedule {
            repeat: self.repeat.clone(),
            timezone: self.timezone,
            start_date: self.start_date,
            end_date: self.end_date,
        }
    }
    pub fn is_active(&self) -> bool {
        self.activity_status == ActivityStatus::Active
    }
}

/// A validated job, ready to insert or to replace a stored one.
#[derive(Debug, Clone)]
pub struct JobDraft {
    pub name: String,
    pub job_type: JobType,
    pub repeat: Repeat,
    pub timezone: Tz,
    pub start_date: i64,
    pub end_date: Option<i64>,
    pub activity_status: ActivityStatus,
    pub run_as: Option<i64>,
    pub recipients: Vec<i64>,
    pub shared_with: Vec<i64>,
    pub task_impl_fqn: Option<String>,
    pub command: Option<String>,
    /// The program word of `command` (EXTERNAL), for the caller's scripts-directory check.
    pub program: Option<String>,
    pub fixed_args: Option<String>,
    pub rt_args_provided: bool,
    pub rt_args_help_text: Option<String>,
    pub saved_query_id: Option<i64>,
    pub timeout_seconds: i64,
    pub misfire_policy: MisfirePolicy,
    pub max_queued_runs: i64,
    pub result_from_stdout: bool,
    pub webhook_url: Option<String>,
    pub max_retries: i64,
    pub retry_delay_seconds: i64,
    pub notify_on: NotifyOn,
    /// Jobs queued when a series ends SUCCEEDED / FAILED (ids, in the order given, no repeats).
    pub on_success: Vec<i64>,
    pub on_failure: Vec<i64>,
}

/// What validation needs from outside the request body.
pub struct JobDefaults {
    pub now_ms: i64,
    /// The server's zone (`timezone`), for a body that names none.
    pub timezone: Tz,
    pub timeout_seconds: i64,
    pub max_queued_runs: i64,
    /// On update: the stored start date, kept when the body has none.
    pub existing_start_date: Option<i64>,
}

/// Longest accepted job name (OpenSpecimen's column size).
pub const MAX_NAME_CHARS: usize = 255;
/// Longest accepted run time limit: one week.
pub const MAX_TIMEOUT_SECONDS: i64 = 7 * 24 * 3600;
/// Most retries of a failed run.
pub const MAX_RETRIES: i64 = 10;
/// Longest wait before a retry: one day.
pub const MAX_RETRY_DELAY_SECONDS: i64 = 86_400;
/// Longest `onSuccess` / `onFailure` list.
pub const MAX_CHAIN_TARGETS: usize = 50;
/// Longest accepted `webhookUrl`.
pub const MAX_WEBHOOK_URL_CHARS: usize = 2000;

/// Whether `text` is an absolute http(s) URL with a host, fit to receive webhook requests.
pub fn valid_webhook_url(text: &str) -> bool {
    text.chars().count() <= MAX_WEBHOOK_URL_CHARS
        && url::Url::parse(text).is_ok_and(|url| {
            matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some_and(|h| !h.is_empty())
        })
}

fn invalid_time(field: &str, rule: &str) -> ErrorItem {
    ErrorItem::new(
        "SCHEDULED_JOB_INVALID_SCHEDULED_TIME",
        format!("Scheduled time is invalid: {field} {rule}."),
    )
}

/// Validates a job body. Always returns a draft (with fallbacks where a field was bad) together
/// with every problem found; the draft may be stored only when the list is empty.
pub fn validate_job(
    body: &Map<String, Value>,
    defaults: &JobDefaults,
) -> (JobDraft, Vec<ErrorItem>) {
    let fields = Fields::new(body);
    let mut errors = Vec::new();
    // One concern after another, in the order their errors are reported.
    let name = name_field(&fields, &mut errors);
    let schedule = schedule_fields(&fields, defaults, &mut errors);
    let activity_status = activity_status_field(&fields, &mut errors);
    let task = task_fields(&fields, &mut errors);
    let (run_as, recipients, shared_with) = people_fields(&fields, &mut errors);
    let rt_args_provided = bool_field(&fields, "rtArgsProvided", false, &mut errors);
    let result_from_stdout = bool_field(&fields, "resultFromStdout", false, &mut errors);
    if result_from_stdout && task.job_type.is_some() && task.job_type != Some(JobType::External) {
        errors.push(ErrorItem::new(
            "INVALID_REQUEST",
            "resultFromStdout applies only to EXTERNAL jobs.",
        ));
    }
    let (timeout_seconds, max_queued_runs, misfire_policy) =
        limit_fields(&fields, defaults, &mut errors);
    let webhook_url = webhook_field(&fields, &mut errors);
    let (max_retries, retry_delay_seconds) = retry_fields(&fields, &mut errors);
    let notify_on = notify_on_field(&fields, &mut errors);
    let on_success = chain_list(&fields, "onSuccess", &mut errors);
    let on_failure = chain_list(&fields, "onFailure", &mut errors);

    let draft = JobDraft {
        name,
        job_type: task.job_type.unwrap_or(JobType::External),
        repeat: schedule.repeat,
        timezone: schedule.timezone,
        start_date: schedule.start_date,
        end_date: schedule.end_date,
        activity_status,
        run_as,
        recipients,
        shared_with,
        task_impl_fqn: task.task_impl_fqn,
        command: task.command,
        program: task.program,
        fixed_args: task.fixed_args,
        rt_args_provided,
        rt_args_help_text: fields.string("rtArgsHelpText"),
        saved_query_id: task.saved_query_id,
        timeout_seconds,
        misfire_policy,
        max_queued_runs,
        result_from_stdout,
        webhook_url,
        max_retries,
        retry_delay_seconds,
        notify_on,
        on_success,
        on_failure,
    };
    (draft, errors)
}

/// The schedule part of a body: when the job fires, in which zone, from when until when.
#[derive(Debug, Clone)]
pub struct ScheduleDraft {
    pub repeat: Repeat,
    pub timezone: Tz,
    pub start_date: i64,
    pub end_date: Option<i64>,
}

/// Only the schedule fields of a job body and their problems, with its activity status (a
/// `Closed` job keeps its schedule but does not fire): what the job form's preview shows.
pub fn validate_schedule(
    body: &Map<String, Value>,
    defaults: &JobDefaults,
) -> (ScheduleDraft, ActivityStatus, Vec<ErrorItem>) {
    let fields = Fields::new(body);
    let mut errors = Vec::new();
    let schedule = schedule_fields(&fields, defaults, &mut errors);
    let activity_status = activity_status_field(&fields, &mut Vec::new());
    (schedule, activity_status, errors)
}

fn name_field(fields: &Fields, errors: &mut Vec<ErrorItem>) -> String {
    let name = fields.string("name").unwrap_or_default();
    if name.is_empty() {
        errors.push(ErrorItem::new(
            "SCHEDULED_JOB_NAME_REQUIRED",
            "Job name is required.",
        ));
    } else if name.chars().count() > MAX_NAME_CHARS {
        errors.push(ErrorItem::new(
            "SCHEDULED_JOB_NAME_TOO_LONG",
            format!("Job name must be at most {MAX_NAME_CHARS} characters."),
        ));
    }
    name
}

fn schedule_fields(
    fields: &Fields,
    defaults: &JobDefaults,
    errors: &mut Vec<ErrorItem>,
) -> ScheduleDraft {
    let repeat = validate_repeat(fields, errors);

    let timezone = match fields.string("timezone") {
        None => defaults.timezone,
        Some(tz) => Tz::from_str(&tz).unwrap_or_else(|_| {
            errors.push(ErrorItem::new(
                "SCHEDULED_JOB_INVALID_TIMEZONE",
                format!("Time zone `{tz}` is not an IANA time zone name such as Europe/Berlin."),
            ));
            defaults.timezone
        }),
    };

    let start_date = match fields.int("startDate") {
        Field::Missing => defaults.existing_start_date.unwrap_or(defaults.now_ms),
        Field::Value(v) => v,
        Field::Invalid => {
            errors.push(ErrorItem::new(
                "INVALID_REQUEST",
                "startDate must be a date in epoch milliseconds.",
            ));
            defaults.now_ms
        }
    };
    let end_date = match fields.int("endDate") {
        Field::Missing => None,
        Field::Value(v) => Some(v),
        Field::Invalid => {
            errors.push(ErrorItem::new(
                "INVALID_REQUEST",
                "endDate must be a date in epoch milliseconds.",
            ));
            None
        }
    };
    if matches!(end_date, Some(end) if end < start_date) {
        errors.push(ErrorItem::new(
            "SCHEDULED_JOB_END_DATE_BEFORE_START_DATE",
            "Job end-date is before start-date.",
        ));
    }
    ScheduleDraft {
        repeat,
        timezone,
        start_date,
        end_date,
    }
}

fn activity_status_field(fields: &Fields, errors: &mut Vec<ErrorItem>) -> ActivityStatus {
    match fields.string("activityStatus").as_deref() {
        None => ActivityStatus::Active,
        Some("Active") => ActivityStatus::Active,
        Some("Closed") => ActivityStatus::Closed,
        Some(other) => {
            errors.push(ErrorItem::new(
                "ACTIVITY_STATUS_INVALID",
                format!("Activity status `{other}` is invalid: use Active or Closed."),
            ));
            ActivityStatus::Active
        }
    }
}

/// What a run of the job does: its type and the task, command or saved query of that type.
struct TaskFields {
    job_type: Option<JobType>,
    task_impl_fqn: Option<String>,
    command: Option<String>,
    program: Option<String>,
    fixed_args: Option<String>,
    saved_query_id: Option<i64>,
}

fn task_fields(fields: &Fields, errors: &mut Vec<ErrorItem>) -> TaskFields {
    let job_type = match fields.string("type") {
        Some(t) => match JobType::from_str(&t) {
            Ok(t) => Some(t),
            Err(()) => {
                errors.push(ErrorItem::new(
                    "SCHEDULED_JOB_INVALID_TYPE",
                    "Job type is invalid.",
                ));
                None
            }
        },
        None => {
            errors.push(ErrorItem::new(
                "SCHEDULED_JOB_INVALID_TYPE",
                "Job type is invalid.",
            ));
            None
        }
    };

    let fixed_args = fields.string("fixedArgs");
    let mut task_impl_fqn = None;
    let mut command = None;
    let mut program = None;
    let mut saved_query_id = None;
    match job_type {
        Some(JobType::Internal) => match fields.string("taskImplFqn") {
            None => errors.push(ErrorItem::new(
                "SCHEDULED_JOB_TASK_IMPL_FQN_REQUIRED",
                "Job implementation class is required.",
            )),
            Some(name) if InternalTask::parse(&name).is_some() => task_impl_fqn = Some(name),
            Some(name) => errors.push(ErrorItem::new(
                "SCHEDULED_JOB_INVALID_TASK_IMPL_FQN",
                format!(
                    "Job implementation class `{name}` is invalid. Built-in tasks: {}.",
                    InternalTask::NAMES
                ),
            )),
        },
        Some(JobType::External) => match fields.string("command") {
            None => errors.push(ErrorItem::new(
                "SCHEDULED_JOB_EXTERNAL_COMMAND_REQUIRED",
                "External command is required.",
            )),
            Some(text) => match split_args(&text) {
                Ok(words) if !words.is_empty() => {
                    program = Some(words[0].clone());
                    command = Some(text);
                }
                Ok(_) => errors.push(ErrorItem::new(
                    "SCHEDULED_JOB_EXTERNAL_COMMAND_REQUIRED",
                    "External command is required.",
                )),
                Err(e) => errors.push(invalid_command("command", &e)),
            },
        },
        Some(JobType::Query) => match fields.id_ref("savedQuery") {
            Field::Value(id) => saved_query_id = Some(id),
            _ => errors.push(ErrorItem::new(
                "SCHEDULED_JOB_QUERY_REQ",
                "Saved query ID is required.",
            )),
        },
        None => {}
    }
    if let Some(text) = &fixed_args
        && let Err(e) = split_args(text)
    {
        errors.push(invalid_command("fixedArgs", &e));
    }
    TaskFields {
        job_type,
        task_impl_fqn,
        command,
        program,
        fixed_args,
        saved_query_id,
    }
}

/// Who the job runs as, who hears of its runs, who else may see it.
fn people_fields(
    fields: &Fields,
    errors: &mut Vec<ErrorItem>,
) -> (Option<i64>, Vec<i64>, Vec<i64>) {
    let run_as = match fields.id_ref("runAs") {
        Field::Value(id) => Some(id),
        Field::Missing => None,
        Field::Invalid => {
            errors.push(ErrorItem::new(
                "INVALID_REQUEST",
                "runAs must be an object like {\"id\": 2}.",
            ));
            None
        }
    };
    let recipients = id_list(fields, "recipients", errors);
    let shared_with = id_list(fields, "sharedWith", errors);
    (run_as, recipients, shared_with)
}

fn limit_fields(
    fields: &Fields,
    defaults: &JobDefaults,
    errors: &mut Vec<ErrorItem>,
) -> (i64, i64, MisfirePolicy) {
    let timeout_seconds = match fields.int("timeoutSeconds") {
        Field::Missing => defaults.timeout_seconds,
        Field::Value(v) if (1..=MAX_TIMEOUT_SECONDS).contains(&v) => v,
        _ => {
            errors.push(ErrorItem::new(
                "SCHEDULED_JOB_INVALID_TIMEOUT",
                format!("timeoutSeconds must be a whole number from 1 to {MAX_TIMEOUT_SECONDS}."),
            ));
            defaults.timeout_seconds
        }
    };
    let max_queued_runs = match fields.int("maxQueuedRuns") {
        Field::Missing => defaults.max_queued_runs,
        Field::Value(v) if (0..=100_000).contains(&v) => v,
        _ => {
            errors.push(ErrorItem::new(
                "SCHEDULED_JOB_INVALID_MAX_QUEUED_RUNS",
                "maxQueuedRuns must be a whole number from 0 to 100000.",
            ));
            defaults.max_queued_runs
        }
    };
    let misfire_policy = match fields.string("misfirePolicy") {
        None => MisfirePolicy::Skip,
        Some(p) => MisfirePolicy::from_str(&p).unwrap_or_else(|()| {
            errors.push(ErrorItem::new(
                "SCHEDULED_JOB_INVALID_MISFIRE_POLICY",
                format!("misfirePolicy `{p}` is invalid: use SKIP or RUN_ONCE."),
            ));
            MisfirePolicy::Skip
        }),
    };
    (timeout_seconds, max_queued_runs, misfire_policy)
}

fn webhook_field(fields: &Fields, errors: &mut Vec<ErrorItem>) -> Option<String> {
    match fields.string("webhookUrl") {
        None => None,
        Some(text) if valid_webhook_url(&text) => Some(text),
        Some(text) => {
            errors.push(ErrorItem::new(
                "SCHEDULED_JOB_INVALID_WEBHOOK_URL",
                format!(
                    "webhookUrl `{text}` is not an http(s) URL like https://hooks.lab.example/labcron \
                     (at most {MAX_WEBHOOK_URL_CHARS} characters)."
                ),
            ));
            None
        }
    }
}

fn retry_fields(fields: &Fields, errors: &mut Vec<ErrorItem>) -> (i64, i64) {
    let max_retries = match fields.int("maxRetries") {
        Field::Missing => 0,
        Field::Value(v) if (0..=MAX_RETRIES).contains(&v) => v,
        _ => {
            errors.push(ErrorItem::new(
                "SCHEDULED_JOB_INVALID_MAX_RETRIES",
                format!("maxRetries must be a whole number from 0 to {MAX_RETRIES}."),
            ));
            0
        }
    };
    let retry_delay_seconds = match fields.int("retryDelaySeconds") {
        Field::Missing => 60,
        Field::Value(v) if (1..=MAX_RETRY_DELAY_SECONDS).contains(&v) => v,
        _ => {
            errors.push(ErrorItem::new(
                "SCHEDULED_JOB_INVALID_RETRY_DELAY",
                format!(
                    "retryDelaySeconds must be a whole number from 1 to {MAX_RETRY_DELAY_SECONDS}."
                ),
            ));
            60
        }
    };
    (max_retries, retry_delay_seconds)
}

fn notify_on_field(fields: &Fields, errors: &mut Vec<ErrorItem>) -> NotifyOn {
    match fields.string("notifyOn") {
        None => NotifyOn::Always,
        Some(text) => NotifyOn::from_str(&text).unwrap_or_else(|()| {
            errors.push(ErrorItem::new(
                "SCHEDULED_JOB_INVALID_NOTIFY_ON",
                format!("notifyOn `{text}` is invalid: use ALWAYS, FAILURE, CHANGE or NEVER."),
            ));
            NotifyOn::Always
        }),
    }
}

/// An `onSuccess` / `onFailure` list: job references, each kept once, in the order given.
fn chain_list(fields: &Fields, name: &str, errors: &mut Vec<ErrorItem>) -> Vec<i64> {
    let mut ids = id_list(fields, name, errors);
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
    if ids.len() > MAX_CHAIN_TARGETS {
        errors.push(ErrorItem::new(
            "SCHEDULED_JOB_INVALID_CHAIN",
            format!("{name} may name at most {MAX_CHAIN_TARGETS} jobs."),
        ));
        ids.truncate(MAX_CHAIN_TARGETS);
    }
    ids
}

fn invalid_command(field: &str, e: &ArgsError) -> ErrorItem {
    ErrorItem::new(
        "SCHEDULED_JOB_INVALID_COMMAND",
        format!("{field} cannot be split into words: {e}."),
    )
}

fn bool_field(fields: &Fields, name: &str, default: bool, errors: &mut Vec<ErrorItem>) -> bool {
    match fields.bool(name) {
        Field::Missing => default,
        Field::Value(v) => v,
        Field::Invalid => {
            errors.push(ErrorItem::new(
                "INVALID_REQUEST",
                format!("{name} must be true or false."),
            ));
            default
        }
    }
}

fn id_list(fields: &Fields, name: &str, errors: &mut Vec<ErrorItem>) -> Vec<i64> {
    match fields.id_list(name) {
        Field::Missing => Vec::new(),
        Field::Value(ids) => ids,
        Field::Invalid => {
            errors.push(ErrorItem::new(
                "INVALID_REQUEST",
                format!("{name} must be a list like [{{\"id\": 2}}]."),
            ));
            Vec::new()
        }
    }
}

/// OpenSpecimen's schedule-field rules (ScheduledJobFactoryImpl), plus CRON.
fn validate_repeat(fields: &Fields, errors: &mut Vec<ErrorItem>) -> Repeat {
    let Some(kind_text) = fields.string("repeatSchedule") else {
        errors.push(ErrorItem::new(
            "SCHEDULED_JOB_REPEAT_SCHEDULE_REQUIRED",
            "Job repeat scheduled is required.",
        ));
        return Repeat::OnDemand;
    };
    let Ok(kind) = RepeatKind::from_str(&kind_text) else {
        errors.push(ErrorItem::new(
            "SCHEDULED_JOB_INVALID_REPEAT_SCHEDULE",
            format!("Repeat schedule `{kind_text}` is invalid."),
        ));
        return Repeat::OnDemand;
    };
    let mut bounded = |name: &str, min: i64, max: i64, required: bool| -> Option<u32> {
        match fields.int(name) {
            Field::Value(v) if (min..=max).contains(&v) => Some(v as u32),
            Field::Missing if !required => None,
            _ => {
                errors.push(invalid_time(
                    name,
                    &format!("must be a whole number from {min} to {max}"),
                ));
                None
            }
        }
    };
    match kind {
        RepeatKind::OnDemand => Repeat::OnDemand,
        RepeatKind::Minutely => {
            let interval = bounded("minutelyInterval", 0, 1440, false)
                .unwrap_or(1)
                .max(1);
            Repeat::Minutely { interval }
        }
        RepeatKind::Hourly => {
            let minute = bounded("scheduledMinute", 0, 59, true).unwrap_or(0);
            let interval = bounded("hourlyInterval", 1, 8784, false).unwrap_or(1);
            Repeat::Hourly { interval, minute }
        }
        RepeatKind::Daily => {
            let minute = bounded("scheduledMinute", 0, 59, true).unwrap_or(0);
            let hour = bounded("scheduledHour", 0, 23, true).unwrap_or(0);
            Repeat::Daily { hour, minute }
        }
        RepeatKind::Weekly => {
            let minute = bounded("scheduledMinute", 0, 59, true).unwrap_or(0);
            let hour = bounded("scheduledHour", 0, 23, true).unwrap_or(0);
            let day = match fields
                .string("scheduledDayOfWeek")
                .as_deref()
                .and_then(parse_weekday)
            {
                Some(day) => day,
                None => {
                    errors.push(invalid_time(
                        "scheduledDayOfWeek",
                        "must be one of SUNDAY…SATURDAY",
                    ));
                    Weekday::Sun
                }
            };
            Repeat::Weekly { day, hour, minute }
        }
        RepeatKind::Monthly => {
            let minute = bounded("scheduledMinute", 0, 59, true).unwrap_or(0);
            let hour = bounded("scheduledHour", 0, 23, true).unwrap_or(0);
            let day = bounded("scheduledDayOfMonth", 1, 31, true).unwrap_or(1);
            Repeat::Monthly { day, hour, minute }
        }
        RepeatKind::Cron => {
            let expression = fields.string("cronExpression").unwrap_or_default();
            if let Err(reason) = crate::domain::schedule::validate_cron(&expression) {
                errors.push(ErrorItem::new(
                    "SCHEDULED_JOB_INVALID_CRON",
                    format!("Cron expression `{expression}` is invalid: {reason}."),
                ));
            }
            Repeat::Cron { expression }
        }
    }
}

/// The stored columns of a repeat schedule (and back), so the store never guesses.
pub struct RepeatColumns {
    pub kind: RepeatKind,
    pub minute: Option<u32>,
    pub hour: Option<u32>,
    pub day_of_week: Option<Weekday>,
    pub day_of_month: Option<u32>,
    pub minutely_interval: Option<u32>,
    pub hourly_interval: Option<u32>,
    pub cron_expression: Option<String>,
}

impl RepeatColumns {
    pub fn into_repeat(self) -> Repeat {
        let minute = self.minute.unwrap_or(0);
        let hour = self.hour.unwrap_or(0);
        match self.kind {
            RepeatKind::OnDemand => Repeat::OnDemand,
            RepeatKind::Minutely => Repeat::Minutely {
                interval: self.minutely_interval.unwrap_or(1).max(1),
            },
            RepeatKind::Hourly => Repeat::Hourly {
                interval: self.hourly_interval.unwrap_or(1).max(1),
                minute,
            },
            RepeatKind::Daily => Repeat::Daily { hour, minute },
            RepeatKind::Weekly => Repeat::Weekly {
                day: self.day_of_week.unwrap_or(Weekday::Sun),
                hour,
                minute,
            },
            RepeatKind::Monthly => Repeat::Monthly {
                day: self.day_of_month.unwrap_or(1),
                hour,
                minute,
            },
            RepeatKind::Cron => Repeat::Cron {
                expression: self.cron_expression.unwrap_or_default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> JobDefaults {
        JobDefaults {
            now_ms: 1_000,
            timezone: chrono_tz::UTC,
            timeout_seconds: 60,
            max_queued_runs: 100,
            existing_start_date: None,
        }
    }

    fn codes(body: Value) -> Vec<String> {
        let (_, errors) = validate_job(body.as_object().unwrap(), &defaults());
        errors.into_iter().map(|e| e.code).collect()
    }

    #[test]
    fn empty_body_reports_every_required_field() {
        assert_eq!(
            codes(json!({})),
            vec![
                "SCHEDULED_JOB_NAME_REQUIRED",
                "SCHEDULED_JOB_REPEAT_SCHEDULE_REQUIRED",
                "SCHEDULED_JOB_INVALID_TYPE"
            ]
        );
    }

    #[test]
    fn the_schedule_alone_reports_only_schedule_problems_in_the_same_words() {
        let body = json!({"type": "NOPE", "timeoutSeconds": -1, "activityStatus": "Closed",
            "repeatSchedule": "DAILY", "scheduledHour": 25, "scheduledMinute": 0,
            "timezone": "Mars/Olympus", "startDate": 5_000, "endDate": 10});
        let (schedule, status, errors) = validate_schedule(body.as_object().unwrap(), &defaults());
        let schedule_codes: Vec<String> = errors.iter().map(|e| e.code.clone()).collect();
        assert_eq!(
            schedule_codes,
            vec![
                "SCHEDULED_JOB_INVALID_SCHEDULED_TIME",
                "SCHEDULED_JOB_INVALID_TIMEZONE",
                "SCHEDULED_JOB_END_DATE_BEFORE_START_DATE"
            ]
        );
        assert_eq!(status, ActivityStatus::Closed);
        assert_eq!((schedule.start_date, schedule.end_date), (5_000, Some(10)));
        let (_, all) = validate_job(body.as_object().unwrap(), &defaults());
        for item in &errors {
            assert!(
                all.contains(item),
                "the job's own validation says the same: {item:?}"
            );
        }
        assert!(
            all.len() > errors.len(),
            "the type and timeout are reported by the job's"
        );
    }

    #[test]
    fn daily_needs_hour_and_minute_in_range() {
        let c = codes(
            json!({"name":"a","type":"EXTERNAL","command":"x","repeatSchedule":"DAILY","scheduledHour":24}),
        );
        assert_eq!(
            c,
            vec![
                "SCHEDULED_JOB_INVALID_SCHEDULED_TIME",
                "SCHEDULED_JOB_INVALID_SCHEDULED_TIME"
            ]
        );
    }

    #[test]
    fn unused_schedule_fields_are_dropped_and_strings_trimmed() {
        let body = json!({"name":"  nightly ","type":"EXTERNAL","command":"run.sh","repeatSchedule":"DAILY",
            "scheduledHour":"23","scheduledMinute":5,"scheduledDayOfWeek":"MONDAY","minutelyInterval":9});
        let (draft, errors) = validate_job(body.as_object().unwrap(), &defaults());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(draft.name, "nightly");
        assert_eq!(
            draft.repeat,
            Repeat::Daily {
                hour: 23,
                minute: 5
            }
        );
        assert_eq!(draft.program.as_deref(), Some("run.sh"));
    }

    #[test]
    fn minutely_interval_zero_means_one() {
        let body = json!({"name":"m","type":"EXTERNAL","command":"x","repeatSchedule":"MINUTELY","minutelyInterval":0});
        let (draft, errors) = validate_job(body.as_object().unwrap(), &defaults());
        assert!(errors.is_empty());
        assert_eq!(draft.repeat, Repeat::Minutely { interval: 1 });
    }

    #[test]
    fn end_before_start_and_bad_enums_are_reported() {
        let c = codes(
            json!({"name":"a","type":"NOPE","repeatSchedule":"YEARLY","startDate":10,"endDate":5,
            "timezone":"Mars/Olympus"}),
        );
        assert_eq!(
            c,
            vec![
                "SCHEDULED_JOB_INVALID_REPEAT_SCHEDULE",
                "SCHEDULED_JOB_INVALID_TIMEZONE",
                "SCHEDULED_JOB_END_DATE_BEFORE_START_DATE",
                "SCHEDULED_JOB_INVALID_TYPE"
            ]
        );
    }

    #[test]
    fn unquoted_hash_in_command_is_rejected() {
        let c = codes(
            json!({"name":"a","type":"EXTERNAL","command":"run.sh --tag #x","repeatSchedule":"ONDEMAND"}),
        );
        assert_eq!(c, vec!["SCHEDULED_JOB_INVALID_COMMAND"]);
    }

    #[test]
    fn internal_task_names_are_checked() {
        assert_eq!(
            codes(json!({"name":"a","type":"INTERNAL","repeatSchedule":"ONDEMAND"})),
            vec!["SCHEDULED_JOB_TASK_IMPL_FQN_REQUIRED"]
        );
        assert_eq!(
            codes(
                json!({"name":"a","type":"INTERNAL","taskImplFqn":"com.x.Y","repeatSchedule":"ONDEMAND"})
            ),
            vec!["SCHEDULED_JOB_INVALID_TASK_IMPL_FQN"]
        );
        assert!(codes(json!({"name":"a","type":"INTERNAL","taskImplFqn":"FilesBacklogCleaner","repeatSchedule":"ONDEMAND"})).is_empty());
    }

    #[test]
    fn webhook_urls_must_be_http_or_https_with_a_host() {
        let body = |url: &str| {
            json!({"name":"a","type":"INTERNAL","taskImplFqn":"runs-report","repeatSchedule":"ONDEMAND",
                   "webhookUrl": url})
        };
        for good in [
            "https://hooks.lab.example/labcron",
            "http://127.0.0.1:9000/x?y=1",
            "  ",
        ] {
            assert!(codes(body(good)).is_empty(), "{good}");
        }
        for bad in [
            "ftp://hooks.lab.example/",
            "hooks.lab.example/x",
            "http://",
            "javascript:alert(1)",
        ] {
            assert_eq!(
                codes(body(bad)),
                vec!["SCHEDULED_JOB_INVALID_WEBHOOK_URL"],
                "{bad}"
            );
        }
        let (draft, _) = validate_job(
            body(" https://h.example/a ").as_object().unwrap(),
            &defaults(),
        );
        assert_eq!(draft.webhook_url.as_deref(), Some("https://h.example/a"));
    }

    #[test]
    fn retries_and_notify_on_have_defaults_and_bounds() {
        let base = |extra: Value| {
            let mut body = json!({"name":"a","type":"INTERNAL","taskImplFqn":"runs-report",
                                  "repeatSchedule":"ONDEMAND"});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            body
        };
        let (draft, errors) = validate_job(base(json!({})).as_object().unwrap(), &defaults());
        assert!(errors.is_empty());
        assert_eq!(
            (
                draft.max_retries,
                draft.retry_delay_seconds,
                draft.notify_on
            ),
            (0, 60, NotifyOn::Always)
        );
        let (draft, errors) = validate_job(
            base(
                json!({"maxRetries":10,"retryDelaySeconds":86400,"notifyOn":"CHANGE",
                        "onSuccess":[{"id":3},{"id":3},{"id":4}]}),
            )
            .as_object()
            .unwrap(),
            &defaults(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            (
                draft.max_retries,
                draft.retry_delay_seconds,
                draft.notify_on
            ),
            (10, 86_400, NotifyOn::Change)
        );
        assert_eq!(draft.on_success, vec![3, 4]);
        assert_eq!(
            codes(base(
                json!({"maxRetries":11,"retryDelaySeconds":0,"notifyOn":"SOMETIMES"})
            )),
            vec![
                "SCHEDULED_JOB_INVALID_MAX_RETRIES",
                "SCHEDULED_JOB_INVALID_RETRY_DELAY",
                "SCHEDULED_JOB_INVALID_NOTIFY_ON"
            ]
        );
        assert_eq!(
            codes(base(json!({"onFailure":"7"}))),
            vec!["INVALID_REQUEST"]
        );
    }

    #[test]
    fn query_job_needs_saved_query_id() {
        assert_eq!(
            codes(json!({"name":"a","type":"QUERY","repeatSchedule":"ONDEMAND","savedQuery":{}})),
            vec!["SCHEDULED_JOB_QUERY_REQ"]
        );
    }
}
