//! EXTERNAL runs: the job's command split into words without a shell, the program taken from
//! the scripts directory only, the arguments (fixed, then the run's own), the environment of
//! API.md §5 (and a chained run's upstream result, read-only), the process run with its limits,
//! and what it left turned into the run's outcome and result file.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Executor;
use super::process::{ProcessEnd, ProcessSpec, run_process};
use super::recovery;
use crate::domain::args::split_args;
use crate::domain::job::Job;
use crate::domain::run::Run;
use crate::run_files::nofollow::identity;
use crate::run_files::{Dir, Kind, RunPaths, file_stem, refused_file, resolve_program, zip_files};
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
        let mut env = run_env(job, run, paths);
        if let Some(upstream_id) = run.chained_from {
            env.extend(self.upstream_env(upstream_id, paths).await);
        }
        let own = {
            let (paths, to_file) = (paths.clone(), stdout_rel.is_some());
            tokio::task::spawn_blocking(move || own_files(&paths, to_file)).await
        };
        let own = match own {
            Ok(Ok(own)) => own,
            Ok(Err(e)) => return fail(format!("cannot create the run's files: {e}")),
            Err(e) => return fail(format!("cannot create the run's files: {e}")),
        };
        let stdout_tmp = own.stdout_identity;
        let log_identity = own.log.as_ref().and_then(|log| identity(log).ok());
        // A second descriptor of the log, to put it back if the program replaced its name.
        let log_copy = own.log.as_ref().and_then(|log| log.try_clone().ok());
        let spec = ProcessSpec {
            program,
            args,
            env,
            work_dir: paths.work_dir.clone(),
            log_file: own.log,
            stdout_file: own.stdout,
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
                stdout_tmp.zip(stdout_rel.as_deref()),
                log_identity,
                &zip_name,
            )
        })
        .await;
        let (collected, log_replaced) = collected.unwrap_or_else(|| {
            let failed = std::io::Error::other("the work on the run's files after its end failed");
            (Err(failed), false)
        });
        if let (true, Some(log)) = (log_replaced, log_copy) {
            let paths = paths.clone();
            let restored = tokio::task::spawn_blocking(move || restore_log(&paths, &log)).await;
            if !matches!(restored, Ok(Ok(()))) {
                tracing::warn!(
                    run_id = run.id,
                    "the run replaced its log and labcron's own could not be put back"
                );
            }
        }

        let mut outcome = Outcome {
            log_size: report.log_size as i64,
            log_truncated: report.log_truncated,
            ..Outcome::default()
        };
        // The message is labcron's summary, read by everyone who sees the run: it quotes the
        // program's last stderr line without the server's directories (a shell names the script
        // by its whole path). The log keeps the program's output as written.
        // Only when a message quotes it: most runs that write to stderr succeed.
        let stderr_tail = || {
            let server_dirs = [
                Hidden {
                    dir: self.inner.settings.scripts_dir(),
                    inside: "",
                    itself: "<scripts dir>",
                },
                Hidden {
                    dir: self.inner.data_dir.clone(),
                    inside: "<data dir>/",
                    itself: "<data dir>",
                },
            ];
            report
                .last_stderr_line
                .as_deref()
                .map(|l| format!(": {}", without_server_dirs(l, &server_dirs)))
                .unwrap_or_default()
        };
        match &report.end {
            ProcessEnd::Exited(code) => {
                outcome.exit_code = Some(*code as i64);
                outcome.succeeded = *code == 0;
                if *code != 0 {
                    outcome.message = Some(format!("exit code {code}{}", stderr_tail()));
                }
            }
            ProcessEnd::Signalled(signal) => {
                outcome.message = Some(format!("killed by signal {signal}{}", stderr_tail()));
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

/// The name stdout is written to while the program runs (`resultFromStdout`).
const STDOUT_TMP: &str = "stdout.tmp";

/// The files the server writes for a run, created in its directory (no-follow, `O_EXCL`, 0600)
/// before the program starts, so that they are the server's own and not anything the program
/// could have put at their names.
struct OwnFiles {
    /// `None` when the log cannot be made (logged): the run goes on without one.
    log: Option<std::fs::File>,
    stdout: Option<std::fs::File>,
    /// The (device, inode) of `stdout`, to know at the end that `stdout.tmp` is still it.
    stdout_identity: Option<(u64, u64)>,
}

/// Creates the run's log and, when stdout is the result, `stdout.tmp`. Blocking.
fn own_files(paths: &RunPaths, stdout_to_file: bool) -> std::io::Result<OwnFiles> {
    let dir = paths.open_dir()?;
    let log = match dir.create_or_append(OsStr::new("run.log")) {
        Ok(log) => Some(log),
        Err(e) => {
            tracing::warn!(error = %e, "cannot create the run log: the run's output is dropped");
            None
        }
    };
    let (stdout, stdout_identity) = if stdout_to_file {
        // A restart's leftover goes: the result is written afresh.
        dir.remove_file(OsStr::new(STDOUT_TMP))?;
        let file = dir
            .create_new(OsStr::new(STDOUT_TMP))
            .map_err(|e| std::io::Error::new(e.kind(), format!("the result file (stdout): {e}")))?;
        let id = identity(&file)?;
        (Some(file), Some(id))
    } else {
        (None, None)
    };
    Ok(OwnFiles {
        log,
        stdout,
        stdout_identity,
    })
}

/// What follows a program's end on disk (blocking; `run_process` runs it once the run's processes
/// are gone): the working directory is cleared, the result picked (`collect_result`, when
/// `keep_result`: the program ended by itself) and stdout's temporary file removed. `stdout` is
/// the identity of the server's own `stdout.tmp` and the result name it is kept under; `log`
/// the identity of the server's log. Answers the result, and whether `run.log` is no longer the
/// server's log (the program replaced it: `restore_log` puts it back).
fn after_process(
    paths: &RunPaths,
    keep_result: bool,
    stdout: Option<((u64, u64), &str)>,
    log: Option<(u64, u64)>,
    zip_name: &str,
) -> (std::io::Result<Option<(String, u64)>>, bool) {
    clear_work_dir(&paths.work_dir);
    let dir = match paths.open_dir() {
        Ok(dir) => dir,
        Err(e) => {
            let e = std::io::Error::new(e.kind(), format!("the run's directory {e}"));
            return (Err(e), false);
        }
    };
    let log_replaced = log.is_some_and(
        |own| !matches!(dir.stat(OsStr::new("run.log")), Ok((Kind::File { .. }, id)) if id == own),
    );
    let result = if keep_result {
        collect_result(&dir, stdout, zip_name)
    } else {
        Ok(None)
    };
    if stdout.is_some() {
        let _ = dir.remove_file(OsStr::new(STDOUT_TMP));
    }
    (result, log_replaced)
}

/// Puts the server's own log back at `run.log` when the program replaced the name (by a link,
/// say): whatever is there goes (a link itself, never its target) and a new file gets the
/// bytes the server wrote, read from its own descriptor. Blocking.
fn restore_log(paths: &RunPaths, log: &std::fs::File) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let dir = paths.open_dir()?;
    let name = OsStr::new("run.log");
    dir.remove_file(name)?;
    let mut out = dir.create_new(name)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0u64;
    loop {
        let n = log.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        at += n as u64;
    }
    out.sync_all()
}

/// A server directory a run's message must not show, and what it shows instead: `inside` for a
/// path within it (its trailing `/` included), `itself` for the directory named alone.
struct Hidden {
    dir: PathBuf,
    inside: &'static str,
    itself: &'static str,
}

/// `text` with each hidden directory (as configured and as resolved) replaced by its stand-ins:
/// `/srv/labcron/scripts/x.sh: 3: foo: not found` becomes `x.sh: 3: foo: not found`, and
/// `cd: /srv/labcron/data: denied` becomes `cd: <data dir>: denied`.
fn without_server_dirs(text: &str, hidden: &[Hidden]) -> String {
    let mut forms: Vec<(String, &Hidden)> = Vec::new();
    for dir in hidden {
        for form in [Some(dir.dir.clone()), dir.dir.canonicalize().ok()]
            .into_iter()
            .flatten()
        {
            let shown = form.display().to_string();
            let bare = shown.trim_end_matches('/');
            // The root itself would turn every absolute path into a relative one, and a relative
            // form (`data`) would hide words.
            if form.is_absolute() && !bare.is_empty() {
                forms.push((bare.to_string(), dir));
            }
        }
    }
    // Longest first, so a directory inside another is replaced as itself.
    forms.sort_by_key(|(bare, _)| std::cmp::Reverse(bare.len()));
    let mut shown = text.to_string();
    for (bare, dir) in forms {
        shown = replace_dir(&shown, &bare, dir);
    }
    shown
}

/// Replaces `bare` where it names the directory: followed by `/` (a path inside), or by nothing
/// that could go on a name (`/srv/data2` is another directory).
fn replace_dir(text: &str, bare: &str, dir: &Hidden) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(bare) {
        let after = &rest[at + bare.len()..];
        out.push_str(&rest[..at]);
        match after.chars().next() {
            Some('/') => {
                out.push_str(dir.inside);
                rest = &after[1..];
            }
            Some(c) if c.is_alphanumeric() || matches!(c, '.' | '_' | '-') => {
                out.push_str(bare);
                rest = after;
            }
            _ => {
                out.push_str(dir.itself);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
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
///
/// Only the server's own files are kept (`nofollow`): stdout's file only if `stdout.tmp` is still
/// the file the server wrote; from `result/` (itself no link) only regular files with one link,
/// in it or in its subdirectories. A link, a hard link, a FIFO, socket or device there fails the
/// run, naming it, rather than leave a result nobody can download. The size is that of what will
/// be served (its own descriptor's).
fn collect_result(
    run_dir: &Dir,
    stdout: Option<((u64, u64), &str)>,
    zip_name: &str,
) -> std::io::Result<Option<(String, u64)>> {
    if let Some((own, rel)) = stdout {
        let tmp = OsStr::new(STDOUT_TMP);
        let replaced = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "`stdout.tmp` was replaced while the run went on (by a link or another file); \
                 only the file labcron wrote stdout to is kept",
            )
        };
        match run_dir.stat(tmp) {
            Ok((Kind::File { links: 1, .. }, id)) if id == own => {}
            Ok(_) => return Err(replaced()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(replaced()),
            Err(e) => return Err(e),
        }
        run_dir.rename(tmp, OsStr::new(rel))?;
        let file = run_dir
            .open_file(OsStr::new(rel))
            .map_err(|e| refused_file(Path::new(rel), e))?;
        if identity(&file)? != own {
            return Err(replaced());
        }
        return Ok(Some((rel.to_string(), file.metadata()?.len())));
    }
    let result = match run_dir.sub(OsStr::new("result")) {
        Ok(result) => result,
        // Removed by the program: no result.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!(
                    "the result directory (LABCRON_RESULT_DIR) {e}; results are kept only from \
                     the run's own directory"
                ),
            ));
        }
    };
    let mut found = Vec::new();
    for (rel, kind) in result.tree()? {
        let shown = Path::new("result").join(&rel);
        let why = match kind {
            Kind::File { links: 1, .. } => {
                found.push(rel);
                continue;
            }
            Kind::File { .. } => "has another hard link (its bytes have a name elsewhere)",
            Kind::Link => "is a symbolic link",
            Kind::Dir | Kind::Other => "is not a regular file (a FIFO, socket or device)",
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "`{}` {why}; results must be regular files written in the result directory",
                shown.display()
            ),
        ));
    }
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
            let file = result.open_path(one).map_err(|e| refused_file(&rel, e))?;
            Ok(Some((rel_text.to_string(), file.metadata()?.len())))
        }
        many => {
            let size = zip_files(&result, many, run_dir, zip_name)?;
            Ok(Some((zip_name.to_string(), size)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_line_names_scripts_by_their_name_and_data_by_its_stand_in() {
        let dirs = [
            Hidden {
                dir: PathBuf::from("/srv/labcron/data/scripts"),
                inside: "",
                itself: "<scripts dir>",
            },
            Hidden {
                dir: PathBuf::from("/srv/labcron/data/"),
                inside: "<data dir>/",
                itself: "<data dir>",
            },
        ];
        let cases = [
            (
                "/srv/labcron/data/scripts/x.sh: 3: foo: not found",
                "x.sh: 3: foo: not found",
            ),
            (
                "cannot open /srv/labcron/data/runs/7/work/a",
                "cannot open <data dir>/runs/7/work/a",
            ),
            // The directories named alone, at the end or before punctuation or a quote.
            (
                "cd: /srv/labcron/data: Permission denied",
                "cd: <data dir>: Permission denied",
            ),
            ("ls '/srv/labcron/data/scripts'", "ls '<scripts dir>'"),
            ("in /srv/labcron/data", "in <data dir>"),
            // Other directories that merely start the same way stay as they are.
            (
                "/srv/labcron/data2/x and /srv/labcron/data-old",
                "/srv/labcron/data2/x and /srv/labcron/data-old",
            ),
            ("/etc/passwd is elsewhere", "/etc/passwd is elsewhere"),
        ];
        for (text, shown) in cases {
            assert_eq!(without_server_dirs(text, &dirs), shown, "{text}");
        }
        // The root is never a directory to hide.
        let root = [Hidden {
            dir: PathBuf::from("/"),
            inside: "",
            itself: "<root>",
        }];
        assert_eq!(without_server_dirs("/tmp/x", &root), "/tmp/x");
        // A directory configured relative is hidden as resolved only, never as a word.
        let relative = [Hidden {
            dir: PathBuf::from("no-such-relative-data"),
            inside: "<data dir>/",
            itself: "<data dir>",
        }];
        assert_eq!(
            without_server_dirs("no-such-relative-data: gone", &relative),
            "no-such-relative-data: gone"
        );
    }
}
