//! The no-follow file primitives every reader and writer of a run's files goes through. A run's
//! program can replace anything in its run directory — the result directory, `run.log`,
//! `stdout.tmp` — by a symlink, a hard link, a FIFO or a device, so nothing there is ever reached
//! by a path the kernel resolves for us: a [`Dir`] is a directory descriptor opened with
//! `O_DIRECTORY | O_NOFOLLOW` and walked with `openat`/`fstatat(AT_SYMLINK_NOFOLLOW)`, files are
//! opened `O_NOFOLLOW` and accepted only when `fstat` of the descriptor says regular file with one
//! link, files the server writes are created `O_EXCL` and written through the descriptor it keeps,
//! and modes are changed by the descriptor. Only the data directory itself (the operator's) may be
//! reached through links.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// What a directory entry is, seen without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File {
        size: u64,
        links: u64,
    },
    Dir,
    Link,
    /// A FIFO, socket or device.
    Other,
}

/// An open directory, reached without following links.
#[derive(Debug)]
pub struct Dir(OwnedFd);

/// A refusal, in words a run's message can carry.
fn refused(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why.into())
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| refused("a NUL byte in a file name"))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Says why `open` of something that is not what was wanted failed, in words: `ELOOP` under
/// `O_NOFOLLOW` is a symbolic link.
fn explained(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) => refused("is a symbolic link"),
        Some(libc::ENOTDIR) => refused("is not a directory"),
        _ => e,
    }
}

/// The one rule for a file the server reads, serves or copies: a regular file with one link.
/// A second hard link means the same bytes have another name, perhaps outside the run's
/// directory (a script can `ln` the ledger's database into its result directory: same file
/// system, same owner), so the file is not the run's own and is refused.
fn accepted(file: File) -> io::Result<File> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refused(
            "is not a regular file (a directory, FIFO, socket or device)",
        ));
    }
    if meta.nlink() > 1 {
        return Err(refused(
            "has another hard link (its bytes have a name elsewhere)",
        ));
    }
    Ok(file)
}

impl Dir {
    /// The data directory (or another directory of the operator's), following links.
    pub fn open(path: &Path) -> io::Result<Dir> {
        Ok(Dir(File::open(path)?.into()))
    }

    /// A directory by path, refusing a link at its last component (the retention pass's walk of
    /// run directories).
    pub fn open_nofollow(path: &Path) -> io::Result<Dir> {
        let name = c_name(path.as_os_str())?;
        // SAFETY: `name` is NUL-terminated; the descriptor is owned by the OwnedFd below.
        let fd = check(unsafe {
            libc::open(
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })
        .map_err(|e| match std::fs::symlink_metadata(path) {
            // Linux answers ENOTDIR for a link under O_DIRECTORY | O_NOFOLLOW.
            Ok(meta) if meta.file_type().is_symlink() => refused("is a symbolic link"),
            _ => explained(e),
        })?;
        // SAFETY: `fd` was just returned by open and is owned by nobody else.
        Ok(Dir(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The directory of a run, `runs/<job>/<run>` under the data directory, each step no-follow.
    pub fn of_run(data_dir: &Path, job_id: i64, run_id: i64) -> io::Result<Dir> {
        let (job, run) = (job_id.to_string(), run_id.to_string());
        Dir::open(data_dir)?
            .sub("runs".as_ref())?
            .sub(job.as_ref())?
            .sub(run.as_ref())
    }

    fn open_at(&self, name: &OsStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
        let name = c_name(name)?;
        // SAFETY: `name` is NUL-terminated and `self.0` an open directory descriptor; the
        // returned descriptor is owned by the OwnedFd below.
        let fd = check(unsafe {
            libc::openat(
                self.0.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                libc::c_uint::from(mode),
            )
        })?;
        // SAFETY: `fd` was just returned by openat and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The directory `name` in this one (not through a link).
    pub fn sub(&self, name: &OsStr) -> io::Result<Dir> {
        match self.open_at(name, libc::O_RDONLY | libc::O_DIRECTORY, 0) {
            Ok(fd) => Ok(Dir(fd)),
            // Linux answers ENOTDIR for a link under O_DIRECTORY | O_NOFOLLOW: say which it is.
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => match self.stat(name) {
                Ok((Kind::Link, _)) => Err(refused("is a symbolic link")),
                _ => Err(explained(e)),
            },
            Err(e) => Err(explained(e)),
        }
    }

    /// The directory at `relative` below this one, each component no-follow.
    pub fn walk(&self, relative: &Path) -> io::Result<Dir> {
        let mut names = normal_components(relative)?.into_iter();
        let Some(first) = names.next() else {
            return Err(refused("an empty path"));
        };
        let mut dir = self.sub(first)?;
        for name in names {
            dir = dir.sub(name)?;
        }
        Ok(dir)
    }

    /// The regular file `name` in this directory, for reading (see `accepted`).
    pub fn open_file(&self, name: &OsStr) -> io::Result<File> {
        // O_NONBLOCK: opening a FIFO must not hang the server; `accepted` refuses it.
        let fd = self
            .open_at(name, libc::O_RDONLY | libc::O_NONBLOCK, 0)
            .map_err(explained)?;
        accepted(File::from(fd))
    }

    /// The regular file at `relative` below this directory, no link anywhere on the way.
    pub fn open_path(&self, relative: &Path) -> io::Result<File> {
        let names = normal_components(relative)?;
        let (last, parents) = names.split_last().ok_or_else(|| refused("an empty path"))?;
        match parents {
            [] => self.open_file(last),
            _ => self
                .walk(&parents.iter().collect::<PathBuf>())?
                .open_file(last),
        }
    }

    /// A new file `name` (mode 0600) the server writes (and may read back, seek in) through the
    /// descriptor it gets: created here, never an existing file or a link's target.
    pub fn create_new(&self, name: &OsStr) -> io::Result<File> {
        self.create_with(name, 0)
    }

    fn create_with(&self, name: &OsStr, flags: libc::c_int) -> io::Result<File> {
        let flags = flags | libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
        Ok(File::from(self.open_at(name, flags, 0o600)?))
    }

    /// The log of a run: created (see `create_new`), or, when an earlier attempt of the run (a
    /// restart) left one, appended to if it is a regular file with one link — its writes then
    /// reach that file only.
    pub fn create_or_append(&self, name: &OsStr) -> io::Result<File> {
        match self.create_with(name, libc::O_APPEND) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let fd = self
                    .open_at(name, libc::O_RDWR | libc::O_APPEND | libc::O_NONBLOCK, 0)
                    .map_err(explained)?;
                accepted(File::from(fd))
            }
            other => other,
        }
    }

    /// A new directory `name` (mode 0700), or the one there (not a link).
    pub fn make_dir(&self, name: &OsStr) -> io::Result<Dir> {
        let c = c_name(name)?;
        // SAFETY: `c` is NUL-terminated and `self.0` an open directory descriptor.
        match check(unsafe { libc::mkdirat(self.0.as_raw_fd(), c.as_ptr(), 0o700) }) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        self.sub(name)
    }

    /// Removes the entry `name` (a file or a link itself, never what a link points to); absent
    /// is fine.
    pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: `c` is NUL-terminated and `self.0` an open directory descriptor.
        match check(unsafe { libc::unlinkat(self.0.as_raw_fd(), c.as_ptr(), 0) }) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Renames `from` to `to` within this directory (the entries themselves, links included).
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let (from, to) = (c_name(from)?, c_name(to)?);
        let fd = self.0.as_raw_fd();
        // SAFETY: both names are NUL-terminated and `fd` an open directory descriptor.
        check(unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) }).map(|_| ())
    }

    /// The entry `name` as it is (`fstatat` without following): its kind and (device, inode).
    pub fn stat(&self, name: &OsStr) -> io::Result<(Kind, (u64, u64))> {
        let c = c_name(name)?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `c` is NUL-terminated, `st` has room for a stat, `self.0` is open.
        check(unsafe {
            libc::fstatat(
                self.0.as_raw_fd(),
                c.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        // SAFETY: fstatat succeeded, so it filled `st`.
        let st = unsafe { st.assume_init() };
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File {
                size: st.st_size as u64,
                links: st.st_nlink,
            },
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Link,
            _ => Kind::Other,
        };
        Ok((kind, (st.st_dev, st.st_ino)))
    }

    /// The names in this directory (without `.` and `..`), sorted.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        // fdopendir takes the descriptor over: give it a duplicate.
        // SAFETY: `self.0` is open; the duplicate is closed by closedir below.
        let fd = check(unsafe { libc::fcntl(self.0.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
        // SAFETY: `fd` is an open directory descriptor; on failure it is closed here.
        let stream = unsafe { libc::fdopendir(fd) };
        if stream.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `fd` is still ours to close.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        // A duplicate shares the offset: start at the beginning whoever read before.
        // SAFETY: `stream` is an open directory stream.
        unsafe { libc::rewinddir(stream) };
        let mut names = Vec::new();
        loop {
            // SAFETY: `stream` is open; readdir answers null at the end (or on error).
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                break;
            }
            // SAFETY: `entry` points at a dirent whose d_name is NUL-terminated.
            let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
            let bytes = name.to_bytes();
            if bytes != b"." && bytes != b".." {
                names.push(OsString::from_vec(bytes.to_vec()));
            }
        }
        // SAFETY: `stream` is open and closed once, here (with the duplicate descriptor).
        unsafe { libc::closedir(stream) };
        names.sort();
        Ok(names)
    }

    /// Everything below this directory, as paths relative to it with their kinds, sorted;
    /// directories are entered (by descriptor, never through a link) and not listed.
    pub fn tree(&self) -> io::Result<Vec<(PathBuf, Kind)>> {
        let mut out = Vec::new();
        self.tree_into(&PathBuf::new(), &mut out)?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn tree_into(&self, prefix: &Path, out: &mut Vec<(PathBuf, Kind)>) -> io::Result<()> {
        for name in self.names()? {
            let (kind, _) = match self.stat(&name) {
                Ok(found) => found,
                // Gone between the listing and the look.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let path = prefix.join(&name);
            if kind == Kind::Dir {
                match self.sub(&name) {
                    Ok(dir) => dir.tree_into(&path, out)?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    // Swapped for something else since the look: as a link would be.
                    Err(_) => out.push((path, Kind::Link)),
                }
            } else {
                out.push((path, kind));
            }
        }
        Ok(())
    }
}

/// The components of a relative path, refusing `..`, `/` and `.` (a path the ledger recorded).
fn normal_components(relative: &Path) -> io::Result<Vec<&OsStr>> {
    relative
        .components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(refused("the path leaves the run's directory")),
        })
        .collect()
}

/// The (device, inode) of an open file, to know later whether a name still refers to it.
pub fn identity(file: &File) -> io::Result<(u64, u64)> {
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_hard_links_and_fifos_are_refused_and_only_regular_files_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("sub/a.csv"), "a\n").unwrap();
        std::fs::write(root.join("sub/deeper/b.csv"), "bb\n").unwrap();
        std::fs::write(root.join("secret"), "secret").unwrap();
        std::os::unix::fs::symlink(root.join("secret"), root.join("sub/link")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/deeper"), root.join("sub/dirlink")).unwrap();
        std::fs::hard_link(root.join("secret"), root.join("sub/hard")).unwrap();
        let fifo = c_name(root.join("sub/fifo").as_os_str()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

        let sub = Dir::open(root).unwrap().sub("sub".as_ref()).unwrap();
        assert!(sub.open_file("a.csv".as_ref()).is_ok());
        assert!(sub.open_path(Path::new("deeper/b.csv")).is_ok());
        for (name, why) in [
            ("link", "symbolic link"),
            ("hard", "hard link"),
            ("fifo", "not a regular file"),
            ("deeper", "not a regular file"),
        ] {
            let e = sub.open_file(name.as_ref()).unwrap_err().to_string();
            assert!(e.contains(why), "{name}: {e}");
        }
        let e = sub.open_path(Path::new("dirlink/b.csv")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(sub.open_path(Path::new("../secret")).is_err());
        assert!(Dir::open_nofollow(&root.join("sub/dirlink")).is_err());

        let tree = sub.tree().unwrap();
        let kinds: Vec<(String, Kind)> = tree
            .iter()
            .map(|(p, k)| (p.display().to_string(), *k))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("a.csv".into(), Kind::File { size: 2, links: 1 }),
                ("deeper/b.csv".into(), Kind::File { size: 3, links: 1 }),
                ("dirlink".into(), Kind::Link),
                ("fifo".into(), Kind::Other),
                ("hard".into(), Kind::File { size: 6, links: 2 }),
                ("link".into(), Kind::Link),
            ]
        );
    }

    #[test]
    fn files_are_created_only_new_and_written_through_their_descriptor() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.txt");
        std::fs::write(&target, "untouched").unwrap();
        let run = Dir::open(dir.path())
            .unwrap()
            .make_dir("run".as_ref())
            .unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("run/planted")).unwrap();
        assert!(run.create_new("planted".as_ref()).is_err());
        assert!(run.create_or_append("planted".as_ref()).is_err());

        let mut log = run.create_or_append("run.log".as_ref()).unwrap();
        let mode = log.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let own = identity(&log).unwrap();
        // The name is replaced by a link: the server's writes still reach its own file.
        run.rename("run.log".as_ref(), "moved".as_ref()).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("run/run.log")).unwrap();
        log.write_all(b"hello\n").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("run/moved")).unwrap(),
            "hello\n"
        );
        assert_eq!(run.stat("moved".as_ref()).unwrap().1, own);
        assert_eq!(run.stat("run.log".as_ref()).unwrap().0, Kind::Link);
        run.remove_file("run.log".as_ref()).unwrap();
        assert!(target.exists(), "the link went, not its target");
        // A restart's leftover log is appended to.
        run.rename("moved".as_ref(), "run.log".as_ref()).unwrap();
        let mut again = run.create_or_append("run.log".as_ref()).unwrap();
        again.write_all(b"again\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("run/run.log")).unwrap(),
            "hello\nagain\n"
        );
    }
}
