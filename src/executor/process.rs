//! Running one program for a run: no shell, a cleared environment, its own process group, stdout
//! and stderr drained concurrently into a capped log (or stdout into the result file), and the
//! whole group killed on timeout, cancel, or once the program itself has exited (so nothing it
//! started in the background outlives the run).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Everything needed to start the program.
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub work_dir: PathBuf,
    pub log_path: PathBuf,
    /// When set, stdout is written here (uncapped) instead of to the log.
    pub stdout_path: Option<PathBuf>,
    pub timeout: Duration,
    pub kill_grace: Duration,
    pub log_cap: u64,
}

/// How the program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEnd {
    Exited(i32),
    Signalled(i32),
    TimedOut,
    Cancelled,
    SpawnFailed(String),
}

#[derive(Debug, Clone)]
pub struct ProcessReport {
    pub end: ProcessEnd,
    pub log_size: u64,
    pub log_truncated: bool,
    /// The last non-empty line the program wrote to stderr (for the failure message).
    pub last_stderr_line: Option<String>,
    /// Why stdout could not be written to its result file (a full disk, say), if it could not.
    pub stdout_error: Option<String>,
}

/// The run log: keeps at most `cap` bytes, then notes the truncation once and counts the rest.
struct LogSink {
    file: tokio::fs::File,
    written: u64,
    cap: u64,
    truncated: bool,
}

impl LogSink {
    async fn write(&mut self, chunk: &[u8]) {
        if self.truncated {
            return;
        }
        let room = self.cap.saturating_sub(self.written) as usize;
        let take = chunk.len().min(room);
        // A failing log write must not stop the draining, or the program would block on a full pipe.
        if take > 0 && self.file.write_all(&chunk[..take]).await.is_ok() {
            self.written += take as u64;
        }
        if take < chunk.len() {
            self.truncated = true;
            let marker = format!("\n[labcron: log truncated at {} bytes]\n", self.cap);
            if self.file.write_all(marker.as_bytes()).await.is_ok() {
                self.written += marker.len() as u64;
            }
        }
    }
}

/// Reads a pipe to its end, passing chunks to `sink`. Keeps reading after the log is full.
async fn drain<R: AsyncRead + Unpin>(
    mut pipe: R,
    sink: Arc<Mutex<LogSink>>,
    mut last_line: Option<&mut String>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut line = Vec::<u8>::new();
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        sink.lock().await.write(&buf[..n]).await;
        if let Some(last) = last_line.as_deref_mut() {
            track_last_line(&buf[..n], &mut line, last);
        }
    }
    if let Some(last) = last_line {
        let tail = String::from_utf8_lossy(&line).trim().to_string();
        if !tail.is_empty() {
            *last = tail;
        }
    }
}

/// Keeps the last complete non-empty line seen (bounded to 500 bytes).
fn track_last_line(chunk: &[u8], partial: &mut Vec<u8>, last: &mut String) {
    for &b in chunk {
        if b == b'\n' {
            let text = String::from_utf8_lossy(partial).trim().to_string();
            if !text.is_empty() {
                *last = text;
            }
            partial.clear();
        } else if partial.len() < 500 {
            partial.push(b);
        }
    }
}

/// Writes a pipe to a file, uncapped (the result of a `resultFromStdout` job).
async fn copy_to_file<R: AsyncRead + Unpin>(
    mut pipe: R,
    mut file: tokio::fs::File,
) -> std::io::Result<()> {
    tokio::io::copy(&mut pipe, &mut file).await?;
    file.flush().await?;
    file.sync_all().await
}

fn signal_group(pgid: u32, signal: i32) {
    // SAFETY: killpg has no memory-safety preconditions; a stale or absent group gives ESRCH.
    unsafe {
        libc::killpg(pgid as libc::pid_t, signal);
    }
}

/// Runs the program to its end (or until timeout/cancel) and reports how it went.
pub async fn run_process(spec: ProcessSpec, cancel: CancellationToken) -> ProcessReport {
    let log_file = match tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log_path)
        .await
    {
        Ok(f) => f,
        Err(e) => return spawn_failed(format!("cannot open the run log: {e}")),
    };
    let sink = Arc::new(Mutex::new(LogSink {
        file: log_file,
        written: 0,
        cap: spec.log_cap,
        truncated: false,
    }));

    let stdout_file = match &spec.stdout_path {
        Some(path) => match tokio::fs::File::create(path).await {
            Ok(f) => Some(f),
            Err(e) => return spawn_failed(format!("cannot create the result file: {e}")),
        },
        None => None,
    };

    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&spec.work_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        // The program's name only: run messages are read by every user the job is shared with.
        Err(e) => {
            let name = spec
                .program
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            return spawn_failed(format!("cannot start {name}: {e}"));
        }
    };
    let Some(pgid) = child.id() else {
        return spawn_failed("the program exited before it could be supervised".into());
    };

    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out_task = {
        let sink = sink.clone();
        tokio::spawn(async move {
            match (stdout, stdout_file) {
                // A failed write ends the copy: the program then gets SIGPIPE and stops.
                (Some(pipe), Some(file)) => {
                    copy_to_file(pipe, file).await.err().map(|e| e.to_string())
                }
                (Some(pipe), None) => {
                    drain(pipe, sink, None).await;
                    None
                }
                _ => None,
            }
        })
    };
    let err_task = {
        let sink = sink.clone();
        tokio::spawn(async move {
            let mut last = String::new();
            if let Some(pipe) = stderr {
                drain(pipe, sink, Some(&mut last)).await;
            }
            last
        })
    };

    let end = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => exit_of(status),
            Err(e) => ProcessEnd::SpawnFailed(format!("lost the program: {e}")),
        },
        _ = tokio::time::sleep(spec.timeout) => {
            stop_group(&mut child, pgid, spec.kill_grace).await;
            ProcessEnd::TimedOut
        }
        _ = cancel.cancelled() => {
            stop_group(&mut child, pgid, spec.kill_grace).await;
            ProcessEnd::Cancelled
        }
    };
    // Whatever the program left running in its group goes too; then its pipes close.
    signal_group(pgid, libc::SIGKILL);

    // A process that left the group (setsid) could hold a pipe open forever: stop waiting then.
    let drain_limit = Duration::from_secs(5);
    let stdout_error = tokio::time::timeout(drain_limit, out_task)
        .await
        .ok()
        .and_then(|r| r.ok())
        .flatten();
    let last_stderr_line = tokio::time::timeout(drain_limit, err_task)
        .await
        .ok()
        .and_then(|r| r.ok())
        .filter(|s| !s.is_empty());

    let mut sink = sink.lock().await;
    let _ = sink.file.flush().await;
    ProcessReport {
        end,
        log_size: sink.written,
        log_truncated: sink.truncated,
        last_stderr_line,
        stdout_error,
    }
}

/// SIGTERM to the group, then SIGKILL after the grace period; always reaps the child.
async fn stop_group(child: &mut tokio::process::Child, pgid: u32, grace: Duration) {
    signal_group(pgid, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(pgid, libc::SIGKILL);
        let _ = child.wait().await;
    }
}

fn exit_of(status: std::process::ExitStatus) -> ProcessEnd {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ProcessEnd::Exited(code),
        (None, Some(signal)) => ProcessEnd::Signalled(signal),
        (None, None) => ProcessEnd::Exited(-1),
    }
}

fn spawn_failed(message: String) -> ProcessReport {
    ProcessReport {
        end: ProcessEnd::SpawnFailed(message),
        log_size: 0,
        log_truncated: false,
        last_stderr_line: None,
        stdout_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_ignores_blank_lines_and_spans_chunks() {
        let mut partial = Vec::new();
        let mut last = String::new();
        track_last_line(b"first\nsec", &mut partial, &mut last);
        assert_eq!(last, "first");
        track_last_line(b"ond\n\n  \n", &mut partial, &mut last);
        assert_eq!(last, "second");
    }
}
