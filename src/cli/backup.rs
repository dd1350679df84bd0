//! `labcron backup FILE [--with-runs]` and `labcron restore FILE [--force]`: a backup is one zip
//! file (created 0600) that a new installation can be filled from. It holds a consistent copy of
//! the ledger (`labcron.db`, taken with `VACUUM INTO` while the server may run), the scripts
//! directory (`scripts/`, file modes kept), the SQLite data sources that lie inside the data
//! directory (consistent copies, under their paths relative to it) and, with `--with-runs`, the
//! runs' logs and results (`runs/`). Restore writes only inside the configured data directory:
//! entries with absolute paths, `..`, or that are links are refused before anything is written.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::Settings;
use crate::store::{self, Db};

/// The ledger's name in the data directory and in the archive.
const LEDGER: &str = "labcron.db";

/// What a backup wrote.
#[derive(Debug, Default)]
pub struct BackupSummary {
    pub files: usize,
    pub bytes: u64,
    /// Data sources left out because they lie outside the data directory.
    pub sources_outside: Vec<String>,
}

/// What a restore wrote.
#[derive(Debug, Default)]
pub struct RestoreSummary {
    pub files: usize,
    pub jobs: i64,
    pub runs: i64,
}

/// Every regular file under `dir` (links are not followed), relative to `dir`, sorted.
fn files_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = rel.join(entry.file_name());
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn archive_name(prefix: &str, rel: &Path) -> String {
    let rest = rel.to_string_lossy().replace('\\', "/");
    if prefix.is_empty() {
        rest
    } else {
        format!("{prefix}/{rest}")
    }
}

/// `labcron backup FILE [--with-runs]`.
pub fn backup(
    settings: &Settings,
    target: &Path,
    with_runs: bool,
) -> anyhow::Result<BackupSummary> {
    if settings.uses_postgres() {
        bail!("{}", crate::store::PG_BACKUP_REFUSAL);
    }
    let ledger = settings.data_dir.join(LEDGER);
    if !ledger.exists() {
        bail!(
            "no ledger at {} (start the server once, or set data_dir)",
            ledger.display()
        );
    }
    // Opened through the store, so an older ledger's schema is brought up to date first.
    let db = Db::open(&ledger)?;
    let data_dir = settings
        .data_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", settings.data_dir.display()))?;
    // create_new: an existing file is never overwritten; 0600: the ledger holds password hashes.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(target)
        .with_context(|| format!("cannot create {} (it must not exist yet)", target.display()))?;
    let result = write_archive(settings, &db, &data_dir, file, target, with_runs);
    if result.is_err() {
        let _ = std::fs::remove_file(target);
    }
    let summary = result?;
    let event = crate::store::audit::Event::new(&cli_actor(), "BACKUP_TAKEN", None)
        .object("LEDGER", "labcron.db")
        .detail("archive", target.display().to_string())
        .detail("withRuns", with_runs)
        .detail("via", "cli");
    record_in(&db, &event)?;
    Ok(summary)
}

/// Who ran a command-line backup, restore or user command: the operating-system user.
pub(crate) fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", process_uid()));
    format!("cli:{user}")
}

fn process_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// Appends an audit event to the ledger at `path` (bringing its schema up to date first).
fn record_in(db: &Db, event: &crate::store::audit::Event) -> anyhow::Result<()> {
    db.write_sync(|tx| tx.record_audit(event, crate::clock::now_ms()))
        .map_err(|e| anyhow::anyhow!("cannot write the audit event: {e:?}"))?;
    Ok(())
}

fn write_archive(
    settings: &Settings,
    db: &Db,
    data_dir: &Path,
    file: File,
    target: &Path,
    with_runs: bool,
) -> anyhow::Result<BackupSummary> {
    let mut summary = BackupSummary::default();
    let staging = tempfile_dir(target)?;
    let mut zip = zip::ZipWriter::new(io::BufWriter::new(file));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    let mut add = |zip: &mut zip::ZipWriter<io::BufWriter<File>>,
                   name: String,
                   path: &Path,
                   mode: u32|
     -> anyhow::Result<()> {
        zip.start_file(name, options.unix_permissions(mode & 0o777))?;
        let mut source =
            File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        summary.bytes += io::copy(&mut source, zip)?;
        summary.files += 1;
        Ok(())
    };

    let ledger_copy = staging.path.join(LEDGER);
    db.backup_to(&ledger_copy).context("the ledger")?;
    add(&mut zip, LEDGER.to_string(), &ledger_copy, 0o600)?;

    let scripts = settings.scripts_dir();
    for rel in files_under(&scripts)? {
        let path = scripts.join(&rel);
        let mode = std::fs::metadata(&path)?.permissions().mode();
        add(&mut zip, archive_name("scripts", &rel), &path, mode)?;
    }

    let mut seen = BTreeSet::new();
    for (name, path) in settings.query_source_paths(data_dir) {
        let Ok(path) = path.canonicalize() else {
            continue; // a source that does not exist (yet) has nothing to save
        };
        let Ok(rel) = path.strip_prefix(data_dir).map(Path::to_path_buf) else {
            summary
                .sources_outside
                .push(format!("{name} ({})", path.display()));
            continue;
        };
        if rel == Path::new(LEDGER) || !seen.insert(rel.clone()) {
            continue;
        }
        let copy = staging.path.join(format!("source-{}", seen.len()));
        store::copy_sqlite_file(&path, &copy).with_context(|| format!("data source `{name}`"))?;
        add(&mut zip, archive_name("", &rel), &copy, 0o600)?;
    }

    if with_runs {
        let runs = data_dir.join("runs");
        for rel in files_under(&runs)? {
            add(
                &mut zip,
                archive_name("runs", &rel),
                &runs.join(&rel),
                0o600,
            )?;
        }
    }
    let mut inner = zip.finish()?;
    inner.flush()?;
    inner.get_ref().sync_all()?;
    Ok(summary)
}

/// A scratch directory beside `target` (same file system, removed when dropped).
struct Scratch {
    path: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn tempfile_dir(target: &Path) -> anyhow::Result<Scratch> {
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = format!(
        ".{}.labcron-backup-{}",
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    );
    let path = parent.join(name);
    std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
    Ok(Scratch { path })
}

/// The relative path an archive entry may be written to, or why not.
fn safe_path(name: &str) -> Result<PathBuf, String> {
    if name.is_empty() || name.contains('\0') || name.contains('\\') {
        return Err(format!("`{name}`: not a plain relative path"));
    }
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(format!("`{name}`: contains `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("`{name}`: an absolute path"));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("`{name}`: an empty path"));
    }
    Ok(out)
}

/// `labcron restore FILE [--force]`: fills the configured data directory from a backup.
pub fn restore(settings: &Settings, archive: &Path, force: bool) -> anyhow::Result<RestoreSummary> {
    if settings.uses_postgres() {
        bail!(
            "on PostgreSQL, restore the database with pg_restore (labcron restores only a SQLite \
             ledger into the data directory)"
        );
    }
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).with_context(|| {
        format!(
            "{} is not a labcron backup (not a zip file)",
            archive.display()
        )
    })?;

    // Check every entry before writing anything.
    let mut entries = Vec::with_capacity(zip.len());
    for index in 0..zip.len() {
        let entry = zip.by_index(index)?;
        let name = entry.name().to_string();
        let rel = safe_path(&name).map_err(|why| anyhow::anyhow!("refusing the backup: {why}"))?;
        let file_type = entry.unix_mode().map(|m| m & 0o170000);
        if entry.is_symlink() || file_type.is_some_and(|t| t != 0o100000 && t != 0o040000) {
            bail!("refusing the backup: `{name}` is a link or special file");
        }
        if entry.is_dir() {
            continue;
        }
        entries.push((index, rel, entry.unix_mode()));
    }
    if !entries.iter().any(|(_, rel, _)| rel == Path::new(LEDGER)) {
        bail!(
            "{} holds no ledger ({LEDGER}): not a labcron backup",
            archive.display()
        );
    }

    let data_dir = &settings.data_dir;
    let existed = data_dir.exists();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let root = data_dir.canonicalize()?;
    // Under a running server the restored ledger would not be seen (SQLite keeps the file it
    // opened) and its write-ahead log would be removed under it: refuse, and keep a server from
    // starting on a half-restored directory.
    let _lock = crate::store::guard::DataDirLock::acquire(&root)
        .map_err(|refused| anyhow::anyhow!("cannot restore: {refused}"))?;
    if existed && !force {
        let non_empty = std::fs::read_dir(&root)
            .with_context(|| format!("cannot read {}", root.display()))?
            .filter_map(Result::ok)
            .any(|entry| entry.file_name() != crate::store::guard::LOCK_FILE);
        if non_empty {
            bail!(
                "the data directory {} is not empty; restore into an empty one, or add --force to \
                 overwrite what the backup holds",
                data_dir.display()
            );
        }
    }
    // A stale write-ahead log beside the restored ledger would be applied to it.
    for stale in ["labcron.db-wal", "labcron.db-shm"] {
        let path = root.join(stale);
        if path.symlink_metadata().is_ok() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }

    let mut summary = RestoreSummary::default();
    for (index, rel, mode) in entries {
        let target = root.join(&rel);
        let parent = target.parent().unwrap_or(&root);
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        // A link already in the data directory must not carry a write outside it.
        let real_parent = parent.canonicalize()?;
        if !real_parent.starts_with(&root) {
            bail!(
                "refusing to write {}: {} leads outside the data directory",
                rel.display(),
                parent.display()
            );
        }
        if target
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            std::fs::remove_file(&target)?;
        }
        // Private to labcron's user, whatever the archive says (an archive made before its
        // entries were 0600 says 0644): only the owner's bits are kept, a script's x among them.
        let permissions = if rel == Path::new(LEDGER) {
            0o600
        } else {
            mode.map_or(0o600, |m| m & 0o700)
        };
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(permissions)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&target)
            .with_context(|| format!("cannot write {}", target.display()))?;
        let mut entry = zip.by_index(index)?;
        io::copy(&mut entry, &mut out)?;
        out.sync_all()?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(permissions))?;
        summary.files += 1;
    }

    let restored = root.join(LEDGER);
    store::check_ledger_file(&restored).context("the restored ledger")?;
    let db = Db::open(&restored)?;
    (summary.jobs, summary.runs) = db.read_sync(|l| l.ledger_totals())?;
    // The restored ledger's own trail says it was restored, from what, by whom.
    let event = crate::store::audit::Event::new(&cli_actor(), "BACKUP_RESTORED", None)
        .object("LEDGER", LEDGER)
        .detail("archive", archive.display().to_string())
        .detail("files", summary.files as i64)
        .detail("via", "cli");
    record_in(&db, &event)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_may_be_restored() {
        assert_eq!(
            safe_path("scripts/a.sh").unwrap(),
            PathBuf::from("scripts/a.sh")
        );
        assert_eq!(
            safe_path("./labcron.db").unwrap(),
            PathBuf::from("labcron.db")
        );
        for bad in ["/etc/passwd", "../x", "scripts/../../x", "a\\b", "", "."] {
            assert!(safe_path(bad).is_err(), "{bad} must be refused");
        }
    }
}
