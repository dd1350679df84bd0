//! Starting a run's program without copying the server. The standard library starts a program
//! with `posix_spawn` (the child borrows the parent's memory until it executes the program), but
//! it forks instead as soon as the child must do something `posix_spawn` cannot, and entering the
//! run's cgroup is such a thing. A fork copies the server's page tables, interrupts every core
//! that runs one of its threads, and makes both sides copy each page they write afterwards: that
//! was half the server's CPU per run. So the run's program is started the way `posix_spawn` does
//! it, with `CLONE_VM | CLONE_VFORK`, and made in its cgroup (`Via`): by clone3 with
//! `CLONE_INTO_CGROUP` on x86-64, or by `clone` with the child moving itself in before it
//! executes anything.
//!
//! The child runs on a small stack of its own in the server's memory while the thread that
//! started it waits (`CLONE_VFORK`: until the child has executed the program or exited). It makes
//! only system calls, and none that allocates: signal handlers back to the default and every
//! signal unblocked, the cgroup (if it is not made in it), a process group of its own, the
//! working directory, stdin from /dev/null and stdout and stderr onto pipes and no other
//! descriptor, then `execve` with exactly the environment given. Its end is watched through a
//! pidfd (`CLONE_PIDFD`), which needs Linux 5.3; where the kernel (or a seccomp filter) has none,
//! `available` says so and the caller starts programs with tokio.

use std::ffi::{CStr, CString, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// The child's stack. What it runs before `execve` is a few system calls in one frame.
const STACK_SIZE: usize = 64 * 1024;

/// Cleared when the kernel refuses pidfds or the clone (then every program is started by tokio).
static USABLE: AtomicBool = AtomicBool::new(true);

/// What to start.
pub struct Start<'a> {
    pub program: &'a Path,
    pub args: &'a [String],
    /// The whole environment, in this order.
    pub env: &'a [(String, String)],
    pub work_dir: &'a Path,
    /// The cgroup the program starts in (a failure to enter it leaves the program where the
    /// server is: the caller's other lines end its processes).
    pub cgroup: Option<Cgroup<'a>>,
}

/// A cgroup to start a program in.
#[derive(Clone, Copy)]
pub struct Cgroup<'a> {
    /// Its directory, open (for clone3).
    pub dir: BorrowedFd<'a>,
    /// Its `cgroup.procs` (for a child that moves itself).
    pub procs: &'a CStr,
}

/// A started program: this server's child until `wait` has reaped it. Dropped before that, it is
/// killed and reaped on a thread of its own.
pub struct Child {
    pid: libc::pid_t,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

/// Whether programs can be started here: the kernel has pidfds (Linux 5.3) and nothing refused a
/// clone so far.
pub fn available() -> bool {
    static PIDFDS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let pidfds = *PIDFDS.get_or_init(|| {
        // SAFETY: pidfd_open takes a pid and flags, no pointers.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        if fd < 0 {
            tracing::info!(
                error = %io::Error::last_os_error(),
                "no pidfds here: runs' programs are started by tokio (by forking the server where a run gets a cgroup)"
            );
            return false;
        }
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        true
    });
    pidfds && USABLE.load(Ordering::Relaxed)
}

/// What the child reads (and writes `error` to): everything is ready before the clone, so the
/// child allocates nothing.
#[repr(C)]
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    work_dir: *const libc::c_char,
    cgroup_procs: *const libc::c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    /// The errno of the step that failed, 0 if the program was executed.
    error: c_int,
}

/// How the child is made. `Clone3` (x86-64 only: it needs a few instructions of assembly) puts
/// it in the run's cgroup as it is made (`CLONE_INTO_CGROUP`, Linux 5.7): moving a process
/// between cgroups afterwards takes a lock that every fork and exit on the machine waits for,
/// and made the cgroup per run cost a third of the runs per second. `Clone` is the C library's
/// `clone`, and the child moves itself (`cgroup.procs`) before it executes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Clone3,
    Clone,
}

/// Cleared when the kernel (or a seccomp filter) refuses clone3: `Clone` from then on.
static CLONE3: AtomicBool = AtomicBool::new(cfg!(target_arch = "x86_64"));

/// Starts the program. An error of kind `Unsupported` means the kernel refused the clone itself:
/// start it another way (and every later one: `available` is false from then on).
pub fn spawn(start: &Start<'_>) -> io::Result<Child> {
    if CLONE3.load(Ordering::Relaxed) {
        match spawn_via(start, Via::Clone3) {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
            started => return started,
        }
    }
    spawn_via(start, Via::Clone)
}

fn spawn_via(start: &Start<'_>, via: Via) -> io::Result<Child> {
    let program = c_string(start.program.as_os_str().as_bytes().to_vec())?;
    let mut argv_owned = Vec::with_capacity(start.args.len() + 1);
    argv_owned.push(program.clone());
    for arg in start.args {
        argv_owned.push(c_string(arg.as_bytes().to_vec())?);
    }
    let env_owned = start
        .env
        .iter()
        .map(|(name, value)| c_string(format!("{name}={value}").into_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let argv = null_terminated(&argv_owned);
    let envp = null_terminated(&env_owned);
    let work_dir = c_string(start.work_dir.as_os_str().as_bytes().to_vec())?;

    let (stdout_read, stdout_write) = pipe_above_stdio()?;
    let (stderr_read, stderr_write) = pipe_above_stdio()?;
    let stdin = open_null()?;
    let mut args = ChildArgs {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        work_dir: work_dir.as_ptr(),
        // Made in the cgroup by clone3, the child has nothing to move.
        cgroup_procs: match (via, start.cgroup) {
            (Via::Clone, Some(cgroup)) => cgroup.procs.as_ptr(),
            _ => ptr::null(),
        },
        stdin: stdin.as_raw_fd(),
        stdout: stdout_write.as_raw_fd(),
        stderr: stderr_write.as_raw_fd(),
        error: 0,
    };
    let mut stack: Vec<u8> = Vec::with_capacity(STACK_SIZE);
    let mut pidfd: c_int = -1;
    // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask get valid pointers.
    let mut blocked: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut before: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the child runs `child_main` on `stack`, which nothing else uses, and reads `args`
    // and what it points to, all alive and unchanged until the clone returns: with CLONE_VFORK
    // this thread is suspended until the child has executed the program or exited. Signals are
    // blocked across the clone so that no handler of the server's runs in the child before it
    // has put them back to the default.
    let pid = unsafe {
        libc::sigfillset(&mut blocked);
        libc::pthread_sigmask(libc::SIG_SETMASK, &blocked, &mut before);
        let pid = make_child(
            via,
            &mut args,
            &mut stack,
            start.cgroup.map(|c| c.dir),
            &mut pidfd,
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, &before, ptr::null_mut());
        pid
    };
    drop(stack);
    drop((stdin, stdout_write, stderr_write));
    let pid = match pid {
        Ok(pid) => pid,
        Err(e) => {
            let refused = |codes: &[c_int]| e.raw_os_error().is_some_and(|c| codes.contains(&c));
            match via {
                // Whatever clone3 refused (an old kernel, a filter, this cgroup), `Clone` may do;
                // it is tried for this run, and for every later one if the call itself is refused.
                Via::Clone3 => {
                    if refused(&[libc::ENOSYS, libc::EPERM, libc::E2BIG]) {
                        CLONE3.store(false, Ordering::Relaxed);
                        tracing::info!(error = %e, "the kernel refused clone3: runs' programs enter their cgroups after they are made");
                    }
                    return Err(io::Error::new(io::ErrorKind::Unsupported, e));
                }
                Via::Clone if refused(&[libc::EINVAL, libc::ENOSYS, libc::EPERM]) => {
                    USABLE.store(false, Ordering::Relaxed);
                    tracing::info!(error = %e, "the kernel refused a clone: runs' programs are started by tokio (by forking the server where a run gets a cgroup)");
                    return Err(io::Error::new(io::ErrorKind::Unsupported, e));
                }
                Via::Clone => return Err(e),
            }
        }
    };
    // From here on the child is reaped whatever happens (Drop).
    let mut child = Child {
        pid,
        pidfd: None,
        status: None,
        stdout: None,
        stderr: None,
    };
    // SAFETY: the child wrote `error` (if at all) before it exited; it is gone or executing
    // another program now, so nothing writes it any more.
    let error = unsafe { ptr::read_volatile(&raw const args.error) };
    if error != 0 {
        child.status = reap(pid, 0)?;
        return Err(io::Error::from_raw_os_error(error));
    }
    if pidfd < 0 {
        // A kernel that ignored CLONE_PIDFD: the child is killed and reaped by Drop.
        USABLE.store(false, Ordering::Relaxed);
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel gave no pidfd",
        ));
    }
    // SAFETY: the kernel wrote this new descriptor for the child; nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: the AsyncFd owns the descriptor, so it stays open and the same until dropped.
    child.pidfd = Some(unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }?);
    child.stdout = Some(pipe::Receiver::from_owned_fd(stdout_read)?);
    child.stderr = Some(pipe::Receiver::from_owned_fd(stderr_read)?);
    Ok(child)
}

impl Child {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the program to end and reaps it; cancel-safe, and again after it has ended.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            let Some(pidfd) = self.pidfd.as_ref() else {
                return Err(io::Error::other("the program is not watched"));
            };
            let mut ready = pidfd.readable().await?;
            match reap(self.pid, libc::WNOHANG)? {
                Some(status) => self.status = Some(status),
                None => ready.clear_ready(),
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // SAFETY: kill has no memory-safety preconditions; the pid is this server's unreaped
        // child, so it is still this program's.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
        }
        if matches!(reap(self.pid, libc::WNOHANG), Ok(Some(_)) | Err(_)) {
            return;
        }
        let pid = self.pid;
        // Killed, it ends at once unless the kernel holds it (a stuck file system): not here.
        let _ = std::thread::Builder::new()
            .name("labcron-reap".into())
            .spawn(move || reap(pid, 0));
    }
}

/// clone3's arguments, as far as `CLONE_INTO_CGROUP` (`CLONE_ARGS_SIZE_VER2`, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Makes the child, which runs `child_main(args)` on `stack`; its pid, or why there is none.
///
/// # Safety
/// Signals are blocked, and `args` (with all it points to) and `stack` stay untouched until
/// this returns (CLONE_VFORK: by then the child has executed the program or exited).
unsafe fn make_child(
    via: Via,
    args: &mut ChildArgs,
    stack: &mut Vec<u8>,
    cgroup: Option<BorrowedFd<'_>>,
    pidfd: &mut c_int,
) -> io::Result<libc::pid_t> {
    let base = stack.as_mut_ptr() as usize;
    // The stack grows down from its end, which must be 16-byte aligned.
    let top = (base + STACK_SIZE) & !15;
    let arg = (args as *mut ChildArgs).cast::<c_void>();
    let pid = match via {
        Via::Clone3 => {
            let mut flags = (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD) as u64;
            if cgroup.is_some() {
                flags |= CLONE_INTO_CGROUP;
            }
            let clone_args = CloneArgs {
                flags,
                pidfd: (pidfd as *mut c_int) as u64,
                exit_signal: libc::SIGCHLD as u64,
                stack: base as u64,
                stack_size: (top - base) as u64,
                cgroup: cgroup.map_or(0, |dir| dir.as_raw_fd() as u64),
                ..CloneArgs::default()
            };
            // SAFETY: as the caller promises; clone_args lives across the call.
            unsafe { clone3(&clone_args, arg) }
        }
        Via::Clone => {
            let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
            // SAFETY: as the caller promises; CLONE_PIDFD writes the pidfd to `pidfd`.
            unsafe {
                libc::clone(
                    child_main,
                    top as *mut c_void,
                    flags,
                    arg,
                    pidfd as *mut c_int,
                )
            }
        }
    };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    }
}

/// The clone3 system call, the child calling `child_main(arg)` on the stack `args` names (the C
/// library has no clone3 to call, and a child on a stack of its own cannot return from a
/// function it did not enter). Returns the child's pid, or -1 with errno set.
///
/// # Safety
/// As `make_child`; `args.stack` is the child's own.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3(args: &CloneArgs, arg: *mut c_void) -> libc::pid_t {
    let entry: extern "C" fn(*mut c_void) -> c_int = child_main;
    let ret: isize;
    // SAFETY: the parent gets the result in rax, with rcx and r11 clobbered as by any system
    // call. The child (rax 0) starts on its own stack with the parent's other registers, calls
    // `entry(arg)` from there (rsp 16-byte aligned before the call) and never comes back:
    // `child_main` ends in _exit.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "and rsp, -16",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 as isize => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    if ret < 0 {
        // SAFETY: errno is this thread's.
        unsafe { *libc::__errno_location() = -ret as c_int };
        -1
    } else {
        ret as libc::pid_t
    }
}

/// Elsewhere clone3 is not used (`CLONE3` starts false there).
#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3(_args: &CloneArgs, _arg: *mut c_void) -> libc::pid_t {
    // SAFETY: errno is this thread's.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
    -1
}

/// `waitpid` for `pid`: its status once it has ended, `None` while it runs (with `WNOHANG`).
fn reap(pid: libc::pid_t, flags: c_int) -> io::Result<Option<ExitStatus>> {
    let mut raw = 0;
    loop {
        // SAFETY: `raw` is a valid place for the status.
        let reaped = unsafe { libc::waitpid(pid, &mut raw, flags) };
        if reaped == pid {
            return Ok(Some(ExitStatus::from_raw(raw)));
        }
        if reaped == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The child, between clone and exec. It shares the server's memory, so it only makes system
/// calls on what `ChildArgs` points to; it returns only by exiting.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    let args = arg.cast::<ChildArgs>();
    // SAFETY: `args` points to the parent's ChildArgs, alive while the parent is suspended.
    let error = unsafe { prepare_and_exec(&*args) };
    // SAFETY: as above; the parent reads it after this child has exited.
    unsafe {
        ptr::write_volatile(&raw mut (*args).error, error);
        libc::_exit(127)
    }
}

/// Puts the child in the run's place and executes the program; returns only on a failure, with
/// its errno.
///
/// # Safety
/// Only in the child of `spawn`'s clone, with `args` as `spawn` filled it.
unsafe fn prepare_and_exec(args: &ChildArgs) -> c_int {
    // SAFETY: system calls on valid pointers (locals, and what `args` points to); errno is the
    // suspended parent thread's, which reads it only when the clone itself failed.
    unsafe {
        // Every signal back to its default: the server's handlers (tokio's) must not run here,
        // and a program expects the defaults, not what the server ignores (Rust ignores
        // SIGPIPE; whatever started the server may ignore more). The system call itself, as
        // the C library refuses the signals it keeps for itself. The kernel's sigaction starts
        // with the handler on every architecture; zeros elsewhere are no flags and no mask.
        let default = [0u64; 4];
        for signal in 1..=64 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    default.as_ptr(),
                    ptr::null_mut::<c_void>(),
                    8usize,
                );
            }
        }
        if !args.cgroup_procs.is_null() {
            let fd = libc::open(args.cgroup_procs, libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
        let failed = libc::setpgid(0, 0) != 0
            || libc::chdir(args.work_dir) != 0
            || libc::dup2(args.stdin, 0) < 0
            || libc::dup2(args.stdout, 1) < 0
            || libc::dup2(args.stderr, 2) < 0;
        if !failed {
            // Only stdin, stdout and stderr go to the program: not what the server inherited
            // open from whatever started it (Linux 5.9; before, what the server opened itself
            // is still closed on exec).
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, ptr::null_mut());
            libc::execve(args.program, args.argv, args.envp);
        }
        *libc::__errno_location()
    }
}

fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in the program's name, an argument or the environment",
        )
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

/// A close-on-exec pipe whose ends are not 0, 1 or 2 (a server started with those closed would
/// otherwise get them, and the child's dup2 onto them would clobber one with another).
fn pipe_above_stdio() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just made both; nothing else owns them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(read)?, above_stdio(write)?))
}

fn open_null() -> io::Result<OwnedFd> {
    let null = std::fs::File::open("/dev/null")?;
    above_stdio(null.into())
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor owned here; the copy is owned by the result.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl just made it; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn start<'a>(program: &'a Path, args: &'a [String], env: &'a [(String, String)]) -> Start<'a> {
        Start {
            program,
            args,
            env,
            work_dir: Path::new("/tmp"),
            cgroup: None,
        }
    }

    /// Both ways a child is made, where this machine has them (none without pidfds).
    fn ways() -> Vec<Via> {
        if !available() {
            eprintln!("no pidfds on this kernel: nothing to test");
            return Vec::new();
        }
        let mut ways = vec![Via::Clone];
        if CLONE3.load(Ordering::Relaxed) {
            ways.push(Via::Clone3);
        }
        ways
    }

    async fn read_all(pipe: Option<pipe::Receiver>) -> String {
        let mut text = String::new();
        pipe.expect("a pipe")
            .read_to_string(&mut text)
            .await
            .expect("read");
        text
    }

    /// A field of /proc/<pid>/status, such as `SigBlk`.
    fn status_field(pid: u32, name: &str) -> String {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .expect("field")
            .trim()
            .to_string()
    }

    #[tokio::test]
    async fn runs_the_program_with_its_arguments_environment_and_directory() {
        let args = vec![
            "-c".to_string(),
            "echo \"$0 $1 $LAB\"; pwd; echo oops >&2; exit 3".to_string(),
            "zero".into(),
            "one".into(),
        ];
        let env = vec![("LAB".to_string(), "two".to_string())];
        for via in ways() {
            let mut child =
                spawn_via(&start(Path::new("/bin/sh"), &args, &env), via).expect("spawn");
            let (out, err) =
                tokio::join!(read_all(child.stdout.take()), read_all(child.stderr.take()));
            let status = child.wait().await.expect("wait");
            assert_eq!(out, "zero one two\n/tmp\n", "{via:?}");
            assert_eq!(err, "oops\n", "{via:?}");
            assert_eq!(status.code(), Some(3), "{via:?}");
            // Waiting again gives the same status (it was reaped once).
            assert_eq!(child.wait().await.expect("again").code(), Some(3));
        }
    }

    #[tokio::test]
    async fn the_child_has_its_own_group_no_blocked_or_ignored_signals_and_only_its_env() {
        let args = vec!["30".to_string()];
        let env = vec![("ONLY".to_string(), "this".to_string())];
        for via in ways() {
            let mut child =
                spawn_via(&start(Path::new("/bin/sleep"), &args, &env), via).expect("spawn");
            let pid = child.id();
            // SAFETY: getpgid has no preconditions.
            assert_eq!(unsafe { libc::getpgid(pid as i32) }, pid as i32, "{via:?}");
            assert_eq!(status_field(pid, "SigBlk"), "0000000000000000", "{via:?}");
            // This test process ignores SIGPIPE (Rust does), and maybe more; the program nothing.
            assert_eq!(status_field(pid, "SigIgn"), "0000000000000000", "{via:?}");
            // The parent goes on once the child has given up its memory, a moment before the
            // kernel has laid out the new program's arguments and environment.
            let environ = (0..500)
                .map(|_| {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    std::fs::read(format!("/proc/{pid}/environ")).expect("environ")
                })
                .find(|environ| !environ.is_empty());
            assert_eq!(environ.as_deref(), Some(&b"ONLY=this\0"[..]), "{via:?}");
            let fds: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .expect("fds")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            let targets: Vec<_> = fds
                .iter()
                .map(|fd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")))
                .collect();
            assert_eq!(
                fds.len(),
                3,
                "{via:?}: only stdin, stdout and stderr: {targets:?}"
            );
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            let status = child.wait().await.expect("wait");
            assert_eq!(status.signal(), Some(libc::SIGTERM), "{via:?}");
        }
    }

    #[tokio::test]
    async fn the_child_is_in_the_run_cgroup_before_it_runs() {
        for via in ways() {
            let Some(mut cgroup) = super::super::cgroup::RunCgroup::create() else {
                eprintln!("this process may not make a cgroup: nothing to test");
                return;
            };
            // The program reads its own cgroup as its first act.
            let args = vec!["/proc/self/cgroup".to_string()];
            let mut start = start(Path::new("/bin/cat"), &args, &[]);
            start.cgroup = Some(cgroup.entry());
            let mut child = spawn_via(&start, via).expect("spawn");
            let out = read_all(child.stdout.take()).await;
            assert!(child.wait().await.expect("wait").success());
            let name = cgroup
                .dir()
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let v2 = out.lines().find(|l| l.starts_with("0::")).expect("0::");
            assert!(v2.ends_with(&format!("/{name}")), "{via:?}: {out}");
            assert!(cgroup.end());
        }
    }

    #[tokio::test]
    async fn a_missing_program_or_directory_is_an_error() {
        for via in ways() {
            let missing = spawn_via(&start(Path::new("/nonexistent/program"), &[], &[]), via)
                .err()
                .expect("an error");
            assert_eq!(missing.kind(), io::ErrorKind::NotFound, "{via:?}");
            let mut in_missing_dir = start(Path::new("/bin/true"), &[], &[]);
            in_missing_dir.work_dir = Path::new("/nonexistent/dir");
            let error = spawn_via(&in_missing_dir, via).err().expect("an error");
            assert_eq!(error.kind(), io::ErrorKind::NotFound, "{via:?}");
        }
    }

    #[tokio::test]
    async fn a_dropped_child_is_killed() {
        let args = vec!["30".to_string()];
        for via in ways() {
            let child = spawn_via(&start(Path::new("/bin/sleep"), &args, &[]), via).expect("spawn");
            let pid = child.id();
            drop(child);
            let gone = (0..500).any(|_| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                !Path::new(&format!("/proc/{pid}")).exists()
            });
            assert!(
                gone,
                "{via:?}: the dropped program still runs (or was not reaped)"
            );
        }
    }
}
