//! Where a run's files live and which programs may run. A run executes in
//! `<data>/runs/<job>/<run>/` with `run.log` (made by labcron before the program starts), `result/`
//! (LABCRON_RESULT_DIR) and a fresh `work/` directory; where its log and result are kept after
//! that (this directory, or the ledger's database) is `kept`'s [`RunFiles`]. Programs come only
//! from the scripts directory, with `..` and symlinks resolved before the check.

mod kept; // RunFiles: the data directory or the database, for every reader and writer
pub mod nofollow; // Dir: every open, stat, listing and chmod of a run's files, never through a link

pub use kept::{LogUpload, Removed, ResultBytes, RunFiles, StoredFile};
pub use nofollow::{Dir, Kind};

use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use crate::domain::ids::RunOfJob;

/// The directories and files of one run.
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub data_dir: PathBuf,
    pub ids: RunOfJob,
    pub run_dir: PathBuf,
    pub log: PathBuf,
    pub result_dir: PathBuf,
    pub work_dir: PathBuf,
}

impl RunPaths {
    pub fn new(data_dir: &Path, ids: RunOfJob) -> Self {
        let run_dir = data_dir
            .join("runs")
            .join(ids.job.to_string())
            .join(ids.run.to_string());
        RunPaths {
            log: run_dir.join("run.log"),
            result_dir: run_dir.join("result"),
            work_dir: run_dir.join("work"),
            run_dir,
            data_dir: data_dir.to_path_buf(),
            ids,
        }
    }

    /// The run's directory, opened without following links below the data directory.
    pub fn open_dir(&self) -> io::Result<Dir> {
        Dir::of_run(&self.data_dir, self.ids.job.0, self.ids.run.0)
    }

    /// The stored result path (relative to the run directory) as a full path, refusing anything
    /// that would leave the run directory.
    pub fn result_file(&self, relative: &str) -> Option<PathBuf> {
        let rel = Path::new(relative);
        let safe = rel.components().all(|c| matches!(c, Component::Normal(_)));
        safe.then(|| self.run_dir.join(rel))
    }
}

/// Opens a file of a run for reading: `relative` (a path the ledger recorded, relative to the run
/// directory) inside `<data>/runs/<job>/<run>/`, walking every component below the data directory
/// with `O_NOFOLLOW`, so a symlink anywhere on the way (put there by a script, say) is refused
/// rather than followed. Only a regular file with one link is returned (`nofollow`): a directory,
/// FIFO, device or hard link is `InvalidInput`. The data directory itself is the operator's and
/// may be reached through links.
pub fn open_run_file(
    data_dir: &Path,
    job_id: i64,
    run_id: i64,
    relative: &str,
) -> io::Result<std::fs::File> {
    Dir::of_run(data_dir, job_id, run_id)?.open_path(Path::new(relative))
}

/// Why a program may not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramError {
    ScriptsDirMissing(String),
    NotFound(String),
    OutsideScriptsDir(String),
    NotAFile(String),
}

impl std::fmt::Display for ProgramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The path itself is logged, not shown: messages reach users who are not admins.
            ProgramError::ScriptsDirMissing(_) => {
                write!(
                    f,
                    "the scripts directory does not exist (the server log names it)"
                )
            }
            ProgramError::NotFound(p) => {
                write!(f, "program `{p}` was not found in the scripts directory")
            }
            ProgramError::OutsideScriptsDir(p) => {
                write!(
                    f,
                    "program `{p}` is outside the scripts directory; only scripts there may run"
                )
            }
            ProgramError::NotAFile(p) => write!(f, "program `{p}` is not a regular file"),
        }
    }
}

/// Resolves a command's program word to a canonical path inside `scripts_dir`. Relative words are
/// relative to the scripts directory; absolute ones must point into it.
pub fn resolve_program(scripts_dir: &Path, word: &str) -> Result<PathBuf, ProgramError> {
    let root = scripts_dir.canonicalize().map_err(|_| {
        tracing::warn!(dir = %scripts_dir.display(), "the scripts directory does not exist");
        ProgramError::ScriptsDirMissing(scripts_dir.display().to_string())
    })?;
    let candidate = if Path::new(word).is_absolute() {
        PathBuf::from(word)
    } else {
        root.join(word)
    };
    let resolved = candidate
        .canonicalize()
        .map_err(|_| ProgramError::NotFound(word.to_string()))?;
    if !resolved.starts_with(&root) {
        return Err(ProgramError::OutsideScriptsDir(word.to_string()));
    }
    if !resolved.is_file() {
        return Err(ProgramError::NotAFile(word.to_string()));
    }
    Ok(resolved)
}

/// A job name made safe as a file-name stem: letters, digits, `-`, `_` and `.` kept, the rest `_`.
pub fn file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let stem = stem.trim_start_matches('.').to_string();
    if stem.is_empty() {
        "job".to_string()
    } else {
        stem
    }
}

/// Every regular file under `dir`, as paths relative to it, sorted: `dir` and the directories
/// below it entered without following links; links and other non-files are left out.
pub fn list_files(dir: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let opened = match Dir::open_nofollow(dir) {
        Ok(opened) => opened,
        // A link or a file where the directory belongs holds none of the run's files.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::InvalidInput
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    Ok(opened
        .tree()?
        .into_iter()
        .filter_map(|(path, kind)| match kind {
            Kind::File { size, .. } => Some((path, size)),
            _ => None,
        })
        .collect())
}

/// Zips `files` (relative to the directory `from`) into `zip_name` in `into`, written aside and
/// renamed so the zip appears only complete; each file opened by `Dir::open_path` (no links, one
/// link each). Answers the zip's size, from its own descriptor.
pub fn zip_files(from: &Dir, files: &[PathBuf], into: &Dir, zip_name: &str) -> io::Result<u64> {
    let tmp = format!("{zip_name}.tmp");
    into.remove_file(tmp.as_ref())?;
    let file = into.create_new(tmp.as_ref())?;
    let mut zip = zip::ZipWriter::new(io::BufWriter::new(file));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    for rel in files {
        let name = rel.to_string_lossy().replace('\\', "/");
        let mut source = from
            .open_path(rel)
            .map_err(|e| refused_file(&Path::new("result").join(rel), e))?;
        zip.start_file(name, options).map_err(io::Error::other)?;
        io::copy(&mut source, &mut zip)?;
    }
    let mut inner = zip.finish().map_err(io::Error::other)?;
    inner.flush()?;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let size = file.metadata()?.len();
    into.rename(tmp.as_ref(), zip_name.as_ref())?;
    Ok(size)
}

/// `e` about the run file `relative`, naming it: "`result/a.csv` is a symbolic link".
pub fn refused_file(relative: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("`{}` {e}", relative.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{JobId, RunId};

    #[test]
    fn programs_resolve_only_inside_the_scripts_dir() {
        let dir = tempfile::tempdir().unwrap();
        let scripts = dir.path().join("scripts");
        std::fs::create_dir_all(scripts.join("sub")).unwrap();
        std::fs::write(scripts.join("ok.sh"), "#!/bin/sh\n").unwrap();
        std::fs::write(scripts.join("sub/deep.sh"), "#!/bin/sh\n").unwrap();
        std::fs::write(dir.path().join("outside.sh"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.sh"), scripts.join("link.sh")).unwrap();

        let root = scripts.canonicalize().unwrap();
        assert_eq!(
            resolve_program(&scripts, "ok.sh").unwrap(),
            root.join("ok.sh")
        );
        assert_eq!(
            resolve_program(&scripts, "sub/deep.sh").unwrap(),
            root.join("sub/deep.sh")
        );
        let absolute = root.join("ok.sh");
        assert!(resolve_program(&scripts, absolute.to_str().unwrap()).is_ok());
        assert!(matches!(
            resolve_program(&scripts, "../outside.sh"),
            Err(ProgramError::OutsideScriptsDir(_))
        ));
        assert!(matches!(
            resolve_program(&scripts, "link.sh"),
            Err(ProgramError::OutsideScriptsDir(_))
        ));
        assert!(matches!(
            resolve_program(&scripts, "/bin/sh"),
            Err(ProgramError::OutsideScriptsDir(_))
        ));
        assert!(matches!(
            resolve_program(&scripts, "sub"),
            Err(ProgramError::NotAFile(_))
        ));
        assert!(matches!(
            resolve_program(&scripts, "missing.sh"),
            Err(ProgramError::NotFound(_))
        ));
    }

    #[test]
    fn result_paths_never_leave_the_run_dir() {
        let paths = RunPaths::new(Path::new("/data"), RunOfJob::new(JobId(1), RunId(2)));
        assert_eq!(
            paths.result_file("result/a.csv"),
            Some(PathBuf::from("/data/runs/1/2/result/a.csv"))
        );
        assert_eq!(paths.result_file("../../x"), None);
        assert_eq!(paths.result_file("/etc/passwd"), None);
    }

    #[test]
    fn run_files_open_only_as_regular_files_without_links() {
        let dir = tempfile::tempdir().unwrap();
        let paths = RunPaths::new(dir.path(), RunOfJob::new(JobId(1), RunId(2)));
        std::fs::create_dir_all(&paths.result_dir).unwrap();
        std::fs::write(paths.result_dir.join("a.csv"), "x\n").unwrap();
        std::fs::write(dir.path().join("labcron.db"), "secret").unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("labcron.db"),
            paths.result_dir.join("l.csv"),
        )
        .unwrap();
        std::os::unix::fs::symlink(&paths.result_dir, paths.run_dir.join("linked")).unwrap();
        let open = |rel: &str| open_run_file(dir.path(), 1, 2, rel);
        assert!(open("result/a.csv").is_ok());
        assert!(open("result/l.csv").is_err(), "a symlinked file is refused");
        assert!(
            open("linked/a.csv").is_err(),
            "a symlinked directory is refused"
        );
        assert!(open("result").is_err(), "a directory is not a file");
        assert!(open("../../../labcron.db").is_err());
        assert!(open("result/missing.csv").is_err());
    }

    #[test]
    fn file_stems_are_safe() {
        assert_eq!(
            file_stem("Nightly export / lab #1"),
            "Nightly_export___lab__1"
        );
        assert_eq!(file_stem("../.."), "_..");
        assert_eq!(file_stem(""), "job");
    }
}
