//! Runs: their status and trigger, and the stored `Run` row. A run is `QUEUED` from the moment it
//! is accepted, `IN_PROGRESS` while it executes (at most one per job), then `SUCCEEDED` or `FAILED`.

use super::ids::{JobId, RunId, RunOfJob};
use std::str::FromStr;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Queued,
    InProgress,
    Succeeded,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "QUEUED",
            RunStatus::InProgress => "IN_PROGRESS",
            RunStatus::Succeeded => "SUCCEEDED",
            RunStatus::Failed => "FAILED",
        }
    }
    pub fn is_finished(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed)
    }
}

impl FromStr for RunStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "QUEUED" => Ok(RunStatus::Queued),
            "IN_PROGRESS" => Ok(RunStatus::InProgress),
            "SUCCEEDED" => Ok(RunStatus::Succeeded),
            "FAILED" => Ok(RunStatus::Failed),
            _ => Err(()),
        }
    }
}

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Trigger {
    Manual,
    Scheduled,
    CatchUp,
    /// A failed run tried again (`retryOf` names the series' first run).
    Retry,
    /// Queued by the end of another job's run (`chainedFrom`).
    Chained,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "MANUAL",
            Trigger::Scheduled => "SCHEDULED",
            Trigger::CatchUp => "CATCH_UP",
            Trigger::Retry => "RETRY",
            Trigger::Chained => "CHAINED",
        }
    }
}

impl FromStr for Trigger {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "MANUAL" => Ok(Trigger::Manual),
            "SCHEDULED" => Ok(Trigger::Scheduled),
            "CATCH_UP" => Ok(Trigger::CatchUp),
            "RETRY" => Ok(Trigger::Retry),
            "CHAINED" => Ok(Trigger::Chained),
            _ => Err(()),
        }
    }
}

/// A run as stored in the ledger.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: i64,
    pub job_id: i64,
    pub job_name: String,
    pub status: RunStatus,
    pub trigger: Trigger,
    pub run_by: i64,
    pub rt_args: Option<String>,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub scheduled_for: Option<i64>,
    pub exit_code: Option<i64>,
    pub message: Option<String>,
    /// Path of the result file relative to the run directory.
    pub result_file: Option<String>,
    pub result_file_size: Option<i64>,
    pub log_size: i64,
    pub log_truncated: bool,
    /// 1 for the first run of a series, 2 for its first retry…
    pub attempt: i64,
    /// The series' first run; None on the first.
    pub retry_of: Option<i64>,
    /// The run whose end queued this one.
    pub chained_from: Option<i64>,
    /// A QUEUED run does not start before this instant (epoch ms).
    pub not_before: Option<i64>,
    pub cancelled_by: Option<i64>,
    /// The built-in task this run executed (INTERNAL runs), recorded when it ended.
    pub task: Option<String>,
    /// The node (`node_name`) that claimed and executed the run; None until it starts.
    pub node: Option<String>,
}

impl Run {
    /// This run and its job, by which its files are found.
    pub fn of_job(&self) -> RunOfJob {
        RunOfJob::new(JobId(self.job_id), RunId(self.id))
    }

    pub fn duration_ms(&self) -> Option<i64> {
        Some(self.finished_at? - self.started_at?)
    }
    /// The result file's name only: never a server path.
    pub fn result_file_name(&self) -> Option<&str> {
        self.result_file
            .as_deref()
            .map(|p| p.rsplit('/').next().unwrap_or(p))
    }
}
