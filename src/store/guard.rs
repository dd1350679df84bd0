//! What keeps the ledger file the one the server works on: one server per data directory (an
//! exclusive lock on `<data dir>/labcron.lock`, held for the server's life and asked for by
//! `labcron restore`), and the identity (device, inode) of `labcron.db`, so a ledger file
//! replaced or removed under a running server is noticed. SQLite keeps using the file it opened,
//! so without this check a server would go on scheduling from the old file while every other
//! tool saw the new one, and each write would land in a file nobody reads again.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "labcron.lock";

/// Holds the data directory for one process; released when dropped (or when the process ends,
/// however it ends: the kernel drops the lock with the last open descriptor).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Why the data directory could not be locked.
#[derive(Debug)]
pub enum LockRefused {
    /// Another process holds it; the pid it wrote, when readable.
    Held { path: PathBuf, pid: Option<u32> },
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl std::fmt::Display for LockRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockRefused::Held { path, pid } => {
                let by = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                write!(
                    f,
                    "another labcron server{by} is using this data directory ({} is locked); \
                     stop it first",
                    path.display()
                )
            }
            LockRefused::Io { path, error } => {
                write!(f, "cannot lock {}: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for LockRefused {}

impl DataDirLock {
    /// Takes the data directory's lock without waiting, and writes this process's pid into the
    /// lock file (for the message another process shows).
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockRefused> {
        let path = data_dir.join(LOCK_FILE);
        let io = |error| LockRefused::Io {
            path: path.clone(),
            error,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockRefused::Held {
                    pid: text.trim().parse().ok(),
                    path,
                });
            }
            Err(TryLockError::Error(error)) => return Err(io(error)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

/// Which file a path named when it was looked at: (device, inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    device: u64,
    inode: u64,
}

impl FileIdentity {
    pub fn of(path: &Path) -> std::io::Result<FileIdentity> {
        let meta = std::fs::metadata(path)?;
        Ok(FileIdentity {
            device: meta.dev(),
            inode: meta.ino(),
        })
    }
}

/// Whether `path` still names the file it named when `opened` was taken; `Err` says what
/// happened to it, in words for the log.
pub fn still_the_opened_file(path: &Path, opened: FileIdentity) -> Result<(), String> {
    match FileIdentity::of(path) {
        Ok(now) if now == opened => Ok(()),
        Ok(_) => Err(format!(
            "the ledger file {} was replaced by another file while the server ran",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "the ledger file {} was removed while the server ran",
            path.display()
        )),
        // Any other error (a permission change, an I/O error) is not a replacement.
        Err(_) => Ok(()),
    }
}

/// After the ledger was replaced: removes its `-wal` and `-shm` files when they are the ones
/// this process has open (they belong to the old, replaced file). Left in place, SQLite would
/// apply the old file's write-ahead log to the new file at the next open and corrupt it. A
/// journal this process does not hold (one that came with the new file) is left alone.
pub fn set_aside_replaced_journal(ledger: &Path) -> Vec<PathBuf> {
    let held: Vec<FileIdentity> = std::fs::read_dir("/proc/self/fd")
        .map(|fds| {
            fds.filter_map(Result::ok)
                .filter_map(|fd| FileIdentity::of(&fd.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    let mut removed = Vec::new();
    for suffix in ["-wal", "-shm"] {
        let mut name = ledger.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        let ours = FileIdentity::of(&path).is_ok_and(|identity| held.contains(&identity));
        if ours && std::fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_data_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        match DataDirLock::acquire(dir.path()) {
            Err(LockRefused::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again after the holder is gone");
    }

    #[test]
    fn a_replaced_or_removed_file_is_told_apart_from_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labcron.db");
        std::fs::write(&path, b"one").unwrap();
        let opened = FileIdentity::of(&path).unwrap();
        std::fs::write(&path, b"rewritten in place").unwrap();
        assert_eq!(still_the_opened_file(&path, opened), Ok(()));

        let other = dir.path().join("other.db");
        std::fs::write(&other, b"two").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let replaced = still_the_opened_file(&path, opened).unwrap_err();
        assert!(replaced.contains("replaced"), "{replaced}");

        std::fs::remove_file(&path).unwrap();
        let removed = still_the_opened_file(&path, opened).unwrap_err();
        assert!(removed.contains("removed"), "{removed}");
    }

    #[test]
    fn only_a_journal_this_process_holds_open_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("labcron.db");
        let wal = dir.path().join("labcron.db-wal");
        let shm = dir.path().join("labcron.db-shm");
        std::fs::write(&wal, b"old log").unwrap();
        std::fs::write(&shm, b"not held").unwrap();
        let held = File::open(&wal).unwrap();
        assert_eq!(set_aside_replaced_journal(&ledger), vec![wal.clone()]);
        assert!(!wal.exists());
        assert!(shm.exists(), "a file this process does not hold stays");
        drop(held);
    }
}
