//! A cgroup (v2) per run, where the machine lets the server make one: a child of the server's own
//! cgroup (systemd's `Delegate=yes` hands the service its cgroup; a container may mount its
//! cgroup writable). The run's program is placed in it before it executes anything, and every
//! process it starts stays in it whatever it does (`setsid`, double forks, a cleared
//! environment): at the run's end the whole cgroup is killed at once (`cgroup.kill`, or on
//! kernels before 5.14 frozen and killed process by process) and removed. Where no cgroup can be
//! made the run goes on without one: the process group, the subreaper and the run's marker
//! (`process`, `recovery`) are the second line either way.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Run cgroups are named `labcron-run-<server pid>-<n>`: unique among the servers sharing a
/// cgroup (tests run several in one process; `n` counts), and a dead server's are known by its pid.
const PREFIX: &str = "labcron-run-";

static NEXT: AtomicU64 = AtomicU64::new(1);

/// Said once per process: why runs get no cgroup.
static TOLD: AtomicBool = AtomicBool::new(false);

/// The directory of this process's own cgroup in the cgroup v2 hierarchy, if it has one.
fn own_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(find_own_dir).as_deref()
}

fn find_own_dir() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // mountinfo: id parent dev root mountpoint options… - fstype source superoptions
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        if *fields.get(dash + 1)? != "cgroup2" {
            return None;
        }
        let root = *fields.get(3)?;
        let below = path.strip_prefix(root)?;
        Some(Path::new(fields.get(4)?).join(below.trim_start_matches('/')))
    })
}

/// One run's cgroup. Dropped without `end` (the run's task dropped), it is killed and removed
/// as far as that can be done at once; what is left is removed at the next start.
pub struct RunCgroup {
    dir: PathBuf,
    /// `<dir>/cgroup.procs`, ready for the child between fork and exec (no allocation there).
    procs: CString,
    /// The directory, open: a child made by clone3 starts in it.
    open_dir: std::fs::File,
    ended: bool,
}

impl RunCgroup {
    /// Makes a new run cgroup, or `None` (logged once) where this server may not.
    pub fn create() -> Option<RunCgroup> {
        let Some(base) = own_dir() else {
            tell("no cgroup v2 hierarchy holds this server");
            return None;
        };
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = base.join(name);
        if let Err(e) = std::fs::create_dir(&dir) {
            tell(&format!("cannot make a cgroup in {}: {e}", base.display()));
            return None;
        }
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).ok()?;
        let open_dir = match std::fs::File::open(&dir) {
            Ok(open_dir) => open_dir,
            Err(e) => {
                tell(&format!("cannot open {}: {e}", dir.display()));
                let _ = std::fs::remove_dir(&dir);
                return None;
            }
        };
        Some(RunCgroup {
            dir,
            procs,
            open_dir,
            ended: false,
        })
    }

    /// Where it is in the cgroup hierarchy.
    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What `spawn` needs to start a program in it.
    pub fn entry(&self) -> super::spawn::Cgroup<'_> {
        super::spawn::Cgroup {
            dir: std::os::fd::AsFd::as_fd(&self.open_dir),
            procs: &self.procs,
        }
    }

    /// The path the child writes `0` to, to move itself in.
    pub fn procs(&self) -> &CString {
        &self.procs
    }

    /// Kills every process in the cgroup, waits (bounded) until it is empty and removes it.
    /// Returns whether it was emptied.
    pub fn end(&mut self) -> bool {
        self.ended = true;
        let emptied = kill_all(&self.dir);
        remove(&self.dir);
        emptied
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        if !self.ended {
            let _ = write_file(&self.dir.join("cgroup.kill"), b"1");
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

fn tell(why: &str) {
    if !TOLD.swap(true, Ordering::Relaxed) {
        tracing::info!(
            "runs get no cgroup of their own ({why}): their processes are ended by process group, \
             subreaper and marker"
        );
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(bytes)
}

fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|events| events.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// Kills everything in the cgroup at `dir`; whether it became empty (within 5 s).
fn kill_all(dir: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    // cgroup.kill (Linux 5.14): the kernel kills every process, forks in flight included.
    let by_kernel = write_file(&dir.join("cgroup.kill"), b"1").is_ok();
    if !by_kernel {
        // Frozen processes cannot fork; SIGKILL still ends them.
        let _ = write_file(&dir.join("cgroup.freeze"), b"1");
    }
    loop {
        if !populated(dir) {
            return true;
        }
        if !by_kernel {
            let listed = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in listed
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if Instant::now() >= deadline {
            tracing::warn!(cgroup = %dir.display(), "a run's cgroup is not empty after its kill");
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Removes an emptied cgroup (the kernel may take a moment after the last exit).
fn remove(dir: &Path) {
    for _ in 0..100 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    tracing::warn!(cgroup = %dir.display(), "cannot remove a run's cgroup");
}

/// At start-up: kills and removes the run cgroups a server that is gone left (a crash, a kill).
/// Those of live servers sharing the cgroup are theirs. Returns how many were removed.
pub fn end_stale() -> usize {
    let Some(base) = own_dir() else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if owner == std::process::id() || Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let dir = entry.path();
        if populated(&dir) {
            tracing::warn!(cgroup = %dir.display(), "killing processes left over from a stopped server's run");
        }
        kill_all(&dir);
        remove(&dir);
        removed += 1;
    }
    removed
}

/// In the child between fork and exec, where tokio starts the program (a kernel without pidfds;
/// `spawn` does the same itself): moves it into the cgroup whose `cgroup.procs` is `procs`.
/// Only async-signal-safe calls. A failure leaves the child where it was (the second line then
/// ends its processes).
pub fn enter(procs: &CString) {
    // SAFETY: open/write/close on a valid NUL-terminated path and a static buffer.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
}
