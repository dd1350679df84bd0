//! EXTERNAL runs: the job's command split into words without a shell, the program taken from
//! the scripts directory only, the arguments (fixed, then the run's own), the environment of
//! API.md §5 (and a chained run's upstream result, read-only), the process run with its limits,
//! and what it left turned into the run's outcome and result file.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Executor;
use super::process::{ProcessEnd, ProcessSpec, run_process};
use super::recovery;
use crate::domain::args::split_args;
use crate::domain::job::Job;
use crate::domain::run::Run;
use crate::run_files::{RunPaths, file_stem, list_files, resolve_program, zip_files};
use crate::store::runs::Outcome;

impl Executor {
    pub(super) async fn perform_external(
        &self,
        run: &Run,
        job: &Job,
        paths: &RunPaths,
        cancel: CancellationToken,
        reason: Arc<Mutex<Option<String>>>,
    ) -> Outcome {
        let fail = |message: String| Outcome {
            message: Some(message),
            ..Outcome::default()
        };
        let command_words = match split_args(job.command.as_deref().unwrap_or_default()) {
            Ok(words) if !words.is_empty() => words,
            _ => return fail("the job's command is empty or cannot be split".into()),
        };
        let program = match resolve_program(&self.inner.settings.scripts_dir(), &command_words[0]) {
            Ok(p) => p,
            Err(e) => return fail(format!("refused: {e}")),
        };
        let mut args: Vec<String> = command_words[1..].to_vec();
        for extra in [job.fixed_args.as_deref(), run.rt_args.as_deref()]
            .into_iter()
            .flatten()
        {
            match split_args(extra) {
                Ok(words) => args.extend(words),
                Err(e) => return fail(format!("arguments cannot be split: {e}")),
            }
        }
        let stdout_rel = job
            .result_from_stdout
            .then(|| format!("{}_{}.csv", file_stem(&job.name), run.id));
        let stdout_tmp = stdout_rel
            .as_ref()
            .map(|_| paths.run_dir.join("stdout.tmp"));
        let mut env = run_env(job, run, paths);
        if let Some(upstream_id) = run.chained_from {
            env.extend(self.upstream_env(upstream_id, paths).await);
        }
        let spec = ProcessSpec {
            program,
            args,
            env,
            work_dir: paths.work_dir.clone(),
            log_path: paths.log.clone(),
            stdout_path: stdout_tmp.clone(),
            timeout: Duration::from_secs(job.timeout_seconds.max(1) as u64),
            kill_grace: Duration::from_secs(self.inner.settings.runs.kill_grace_seconds),
            log_cap: self.inner.settings.runs.log_cap_bytes,
            marker: Some(recovery::run_marker(paths)),
            timeline_run: run.id,
            cgroup: self.inner.settings.runs.cgroups,
        };
        let zip_name = format!("{}_{}.zip", file_stem(&job.name), run.id);
        let run_paths = paths.clone();
        let (report, collected) = run_process(spec, cancel, move |end| {
            // Results are kept for programs that ended by themselves; a stopped run's output is
            // partial.
            let ended_by_itself = matches!(end, ProcessEnd::Exited(_) | ProcessEnd::Signalled(_));
            after_process(
                &run_paths,
                ended_by_itself,
                stdout_tmp.as_deref(),
                stdout_rel.as_deref(),
                &zip_name,
            )
        })
        .await;
        let collected = collected.unwrap_or_else(|| {
            Err(std::io::Error::other(
                "the work on the run's files after its end failed",
            ))
        });

        let mut outcome = Outcome {
            log_size: report.log_size as i64,
            log_truncated: report.log_truncated,
            ..Outcome::default()
        };
        let stderr_tail = report
            .last_stderr_line
            .map(|l| format!(": {l}"))
            .unwrap_or_default();
        match &report.end {
            ProcessEnd::Exited(code) => {
                outcome.exit_code = Some(*code as i64);
                outcome.succeeded = *code == 0;
                if *code != 0 {
                    outcome.message = Some(format!("exit code {code}{stderr_tail}"));
                }
            }
            ProcessEnd::Signalled(signal) => {
                outcome.message = Some(format!("killed by signal {signal}{stderr_tail}"));
            }
            ProcessEnd::TimedOut => {
                outcome.message = Some(format!("timed out after {} s", job.timeout_seconds));
            }
            ProcessEnd::Cancelled => {
                let why = reason.lock().unwrap_or_else(|p| p.into_inner()).clone();
                outcome.message = Some(why.unwrap_or_else(|| "cancelled".into()));
            }
            ProcessEnd::SpawnFailed(message) => outcome.message = Some(message.clone()),
        }
        // stdout is the result: a result that could not be written fails the run, saying why.
        if let Some(e) = &report.stdout_error {
            outcome.succeeded = false;
            let end = outcome
                .message
                .take()
                .unwrap_or_else(|| "exit code 0".into());
            outcome.message = Some(format!("cannot write the result file (stdout): {e}; {end}"));
        }
        match collected {
            Ok(Some((file, size))) => {
                outcome.result_file = Some(file);
                outcome.result_file_size = Some(size as i64);
            }
            Ok(None) => {}
            Err(e) => {
                outcome.succeeded = false;
                outcome.message = Some(format!("cannot keep the result file: {e}"));
            }
        }
        outcome
    }

    /// `LABCRON_UPSTREAM_RUN_ID` and, when the upstream run kept a result file,
    /// `LABCRON_UPSTREAM_RESULT`: its path (or a copy's in this run's directory `into`, when run
    /// files are kept in the database), made read-only so the chained program cannot change
    /// what the upstream run produced.
    async fn upstream_env(&self, upstream_id: i64, into: &RunPaths) -> Vec<(String, String)> {
        let mut env = vec![("LABCRON_UPSTREAM_RUN_ID".into(), upstream_id.to_string())];
        let upstream = self.inner.db.read(move |c| c.run(upstream_id)).await;
        let Ok(Some(upstream)) = upstream else {
            return env;
        };
        if let Some(file) = self.inner.files.upstream_result(&upstream, into).await {
            env.push(("LABCRON_UPSTREAM_RESULT".into(), file.display().to_string()));
        }
        env
    }
}

/// Removes a run's working directory when the program left something in it. An empty one stays
/// (the retention pass removes it with the run's other files): deleting it costs more than keeping
/// it, because on ext4 without a journal every recently deleted inode slows down the next mkdir —
/// at hundreds of runs a second, creating run directories became the executor's biggest cost.
fn clear_work_dir(work_dir: &std::path::Path) {
    let empty = std::fs::read_dir(work_dir).is_ok_and(|mut entries| entries.next().is_none());
    if !empty {
        let _ = std::fs::remove_dir_all(work_dir);
    }
}

/// What follows a program's end on disk (blocking; `run_process` runs it once the run's processes
/// are gone): the working directory is cleared, the result picked (`collect_result`, when
/// `keep_result`: the program ended by itself) and stdout's temporary file removed.
fn after_process(
    paths: &RunPaths,
    keep_result: bool,
    stdout_tmp: Option<&std::path::Path>,
    stdout_rel: Option<&str>,
    zip_name: &str,
) -> std::io::Result<Option<(String, u64)>> {
    clear_work_dir(&paths.work_dir);
    let result = if keep_result {
        collect_result(paths, stdout_tmp, stdout_rel, zip_name)
    } else {
        Ok(None)
    };
    if let Some(tmp) = stdout_tmp {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

/// The environment of API.md §5, and nothing else.
fn run_env(job: &Job, run: &Run, paths: &RunPaths) -> Vec<(String, String)> {
    vec![
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("HOME".into(), paths.work_dir.display().to_string()),
        ("LANG".into(), "C.UTF-8".into()),
        ("TZ".into(), job.timezone.name().to_string()),
        ("OS_JOB_RUN_ID".into(), run.id.to_string()),
        ("LABCRON_JOB_ID".into(), job.id.to_string()),
        ("LABCRON_JOB_NAME".into(), job.name.clone()),
        ("LABCRON_RUN_ID".into(), run.id.to_string()),
        (
            "LABCRON_RESULT_DIR".into(),
            paths.result_dir.display().to_string(),
        ),
    ]
}

/// Picks the run's result file (relative to the run directory) and its size: stdout when the job
/// says so, else the one file in `result/`, else a zip of all of them (`zip_name`). Blocking.
fn collect_result(
    paths: &RunPaths,
    stdout_tmp: Option<&std::path::Path>,
    stdout_rel: Option<&str>,
    zip_name: &str,
) -> std::io::Result<Option<(String, u64)>> {
    if let (Some(tmp), Some(rel)) = (stdout_tmp, stdout_rel) {
        let target = paths.run_dir.join(rel);
        std::fs::rename(tmp, &target)?;
        let size = std::fs::metadata(&target)?.len();
        return Ok(Some((rel.to_string(), size)));
    }
    let found = list_files(&paths.result_dir)?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => {
            let rel = PathBuf::from("result").join(one);
            // The ledger keeps the name as text; a name that is not UTF-8 could never be found
            // again, so the run fails saying why rather than succeed with an undownloadable file.
            let Some(rel_text) = rel.to_str() else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "its name `{}` is not valid UTF-8; write result files with UTF-8 names",
                        one.to_string_lossy()
                    ),
                ));
            };
            let size = std::fs::metadata(paths.run_dir.join(&rel))?.len();
            Ok(Some((rel_text.to_string(), size)))
        }
        many => {
            let size = zip_files(&paths.result_dir, many, &paths.run_dir.join(zip_name))?;
            Ok(Some((zip_name.to_string(), size)))
        }
    }
}
