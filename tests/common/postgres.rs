//! A private PostgreSQL server for tests: one per test process, started on first use (`server()`),
//! from Debian's binaries (`/usr/lib/postgresql/<version>/bin`, or `LABCRON_PG_BIN`). `initdb`
//! makes a cluster in a temporary directory; `postgres` listens on 127.0.0.1 on a free port, with
//! its unix socket in that directory and fsync off (a test cluster need not survive a crash;
//! `start_own_durable` syncs, for the benchmarks).
//! PostgreSQL refuses to run as root, so a root test process (CI) runs both as `nobody` through
//! `setpriv`, on a directory chowned to it. The server stops when the test process ends: an
//! `atexit` handler sends it SIGINT (fast shutdown), waits for it and removes the directory, and
//! the postmaster gets a parent-death signal too, so even a killed test process leaves no server
//! (its directory is removed by the next process that starts one).
//! Part of `tests/common` (`common::postgres`; not re-exported at the top, its names are generic).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The cluster's superuser (not `postgres`, so nothing depends on that name).
pub const ADMIN_USER: &str = "labcron_test_admin";

/// A running private server.
pub struct PgServer {
    pub port: u16,
    pub admin_password: String,
    /// The cluster's directory (data, socket, log), removed when the process ends.
    pub dir: PathBuf,
    /// The user the server runs as (`nobody` when the tests run as root).
    pub run_as: Option<String>,
    durability: Durability,
    child: Mutex<Option<Child>>,
}

static SERVER: OnceLock<PgServer> = OnceLock::new();
static NAMES: AtomicU32 = AtomicU32::new(0);

/// The process's server, started on first call.
pub fn server() -> &'static PgServer {
    SERVER.get_or_init(|| {
        // On a thread of its own: the synchronous client must not run on an async runtime's.
        let server = std::thread::spawn(|| start(Durability::Off, |_| {}))
            .join()
            .expect("the thread starting the test PostgreSQL")
            .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL: {e}"));
        // SAFETY: registering a plain `extern "C" fn` that touches only the static above.
        unsafe {
            libc::atexit(stop_at_exit);
        }
        server
    })
}

/// A server of its own, apart from the process's shared one: for a test that stops it and starts
/// it again (`pause`, `resume`). Stop it (`stop`) when done; a killed test process leaves it to
/// the parent-death signal, as the shared one.
pub fn start_own() -> PgServer {
    start_on_thread(Durability::Off, |_| {})
}

/// A server of its own that syncs its commits as a production server does (`fsync`,
/// `synchronous_commit` and `full_page_writes` on): for the benchmarks, which compare its
/// throughput with SQLite's `synchronous=FULL`. Stop it (`stop`) when done.
pub fn start_own_durable() -> PgServer {
    start_on_thread(Durability::Synced, |_| {})
}

/// `start_own`, with `prepare` changing the new cluster's data directory (its
/// `postgresql.conf`, `pg_hba.conf`, files it names) before the server first starts; what it
/// writes is then given to the server's user. The harness's own connections (`as_admin`) are
/// plain-text TCP as `ADMIN_USER`: a `pg_hba.conf` must let them in.
pub fn start_own_with(prepare: impl FnOnce(&Path) + Send + 'static) -> PgServer {
    start_on_thread(Durability::Off, prepare)
}

/// Whether the server syncs its commits. The tests' servers do not (a test cluster need not
/// survive a crash, and syncing would only slow the suites down).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    Off,
    Synced,
}

fn start_on_thread(
    durability: Durability,
    prepare: impl FnOnce(&Path) + Send + 'static,
) -> PgServer {
    std::thread::spawn(move || start(durability, prepare))
        .join()
        .expect("the thread starting a test PostgreSQL")
        .unwrap_or_else(|e| panic!("cannot start a test PostgreSQL: {e}"))
}

extern "C" fn stop_at_exit() {
    if let Some(server) = SERVER.get() {
        server.stop();
    }
}

/// Where Debian keeps PostgreSQL's server binaries: the newest version installed.
pub fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("LABCRON_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            format!(
                "PostgreSQL is not installed (/usr/lib/postgresql: {e}); scripts/test installs it"
            )
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no /usr/lib/postgresql/<version>/bin/postgres".to_string())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `program args…`, as the unprivileged user when we are root.
fn command(program: &Path, run_as: Option<&str>) -> Command {
    match run_as {
        Some(user) => {
            let (uid, gid) = user_ids(user);
            let mut cmd = Command::new("setpriv");
            cmd.args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                // Set after the change of user, which clears a parent-death signal.
                "--pdeathsig=INT",
            ]);
            cmd.arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// The uid and primary gid of `user` (`nobody`'s group is `nogroup` on Debian, so go by number).
fn user_ids(user: &str) -> (u32, u32) {
    let name = std::ffi::CString::new(user).expect("a user name");
    // SAFETY: getpwnam with a valid C string; the record is read at once, on this thread.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !entry.is_null(),
        "no user `{user}` to run the test PostgreSQL as"
    );
    // SAFETY: checked non-null above.
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}

fn chown(path: &Path, user: &str) -> Result<(), String> {
    let (uid, gid) = user_ids(user);
    let status = Command::new("chown")
        .args(["-R", &format!("{uid}:{gid}")])
        .arg(path)
        .status()
        .map_err(|e| format!("chown: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("chown {user} {} failed", path.display()))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start(durability: Durability, prepare: impl FnOnce(&Path)) -> Result<PgServer, String> {
    let bin = bin_dir()?;
    let run_as = is_root().then(|| "nobody".to_string());
    // Under /tmp, which every user can reach, even when TMPDIR is root's own.
    let base = if run_as.is_some() {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    remove_stale_dirs(&base);
    let dir = tempfile::Builder::new()
        .prefix(DIR_PREFIX)
        .tempdir_in(&base)
        .map_err(|e| format!("temp dir: {e}"))?
        .keep();
    std::fs::write(dir.join(OWNER_FILE), std::process::id().to_string())
        .map_err(|e| e.to_string())?;
    let admin_password = format!("pw-{}-{}", std::process::id(), rand_suffix());
    let pwfile = dir.join("pwfile");
    std::fs::write(&pwfile, &admin_password).map_err(|e| e.to_string())?;
    std::fs::create_dir(dir.join("socket")).map_err(|e| e.to_string())?;
    if let Some(user) = &run_as {
        chown(&dir, user)?;
    }
    let data = dir.join("data");
    let output = command(&bin.join("initdb"), run_as.as_deref())
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            ADMIN_USER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["--encoding=UTF8", "--locale=C", "--no-sync"])
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    prepare(&data);
    if let Some(user) = &run_as {
        chown(&data, user)?;
    }
    // A port found free can be taken before postgres binds it: try a few.
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = free_port();
        let child = spawn_postgres(&bin, &dir, port, run_as.as_deref(), durability)?;
        let server = PgServer {
            port,
            admin_password: admin_password.clone(),
            dir: dir.clone(),
            run_as: run_as.clone(),
            durability,
            child: Mutex::new(Some(child)),
        };
        match server.wait_ready() {
            Ok(()) => return Ok(server),
            Err(e) => {
                last_error = e;
                server.stop_child();
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Err(last_error)
}

const DIR_PREFIX: &str = "labcron-pg-";
/// The test process that made a cluster's directory.
const OWNER_FILE: &str = "owner.pid";

/// Removes the directories of test processes that were killed (their server died with them,
/// through the parent-death signal, but nothing removed the directory).
fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        let Some(owner) = ours
            .then(|| std::fs::read_to_string(path.join(OWNER_FILE)).ok())
            .flatten()
            .and_then(|t| t.trim().parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(owner, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}

/// Starts the postmaster from a thread that lives as long as the process, so that its
/// parent-death signal (which follows the thread that forked it) fires only when the process ends.
fn spawn_postgres(
    bin: &Path,
    dir: &Path,
    port: u16,
    run_as: Option<&str>,
    durability: Durability,
) -> Result<Child, String> {
    let log = std::fs::File::create(dir.join("postgres.log")).map_err(|e| e.to_string())?;
    let mut cmd = command(&bin.join("postgres"), run_as);
    cmd.arg("-D")
        .arg(dir.join("data"))
        .arg("-k")
        .arg(dir.join("socket"))
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "max_connections=100"]);
    if durability == Durability::Off {
        cmd.args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"]);
    }
    cmd.env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    if run_as.is_none() {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
                Ok(())
            });
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("test-postgres".into())
        .spawn(move || {
            let spawned = cmd.spawn().map_err(|e| format!("postgres: {e}"));
            let ok = spawned.is_ok();
            let _ = tx.send(spawned);
            if ok {
                loop {
                    std::thread::park();
                }
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())?
}

impl PgServer {
    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(child) = self.child.lock().unwrap().as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "postgres exited ({status}): {}",
                    std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
                ));
            }
            match self.try_admin() {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("postgres did not accept connections: {e}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
    }

    fn stop_child(&self) {
        let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        // setpriv execs postgres, so the child's pid is the postmaster's.
        // SAFETY: a signal to our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the server (a fast shutdown), keeping its cluster: `resume` starts it again.
    pub fn pause(&self) {
        self.stop_child();
    }

    /// Starts a paused server again, on the same port, and waits until it accepts connections.
    pub fn resume(&self) {
        let bin = bin_dir().expect("PostgreSQL's binaries");
        let child = spawn_postgres(
            &bin,
            &self.dir,
            self.port,
            self.run_as.as_deref(),
            self.durability,
        )
        .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL again: {e}"));
        *self.child.lock().unwrap() = Some(child);
        self.wait_ready()
            .unwrap_or_else(|e| panic!("the test PostgreSQL did not come back: {e}"));
    }

    /// Stops the server and removes its directory.
    pub fn stop(&self) {
        self.stop_child();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// `postgres://user:password@127.0.0.1:port/db`.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// The same without the password.
    pub fn url_without_password(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }

    fn try_admin(&self) -> Result<postgres::Client, postgres::Error> {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(ADMIN_USER)
            .password(&self.admin_password)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5))
            .connect(postgres::NoTls)
    }

    /// Runs `work` with a superuser connection to database `db`, on a thread of its own (the
    /// synchronous client must not run on an async runtime's thread).
    pub fn as_admin<T: Send + 'static>(
        &self,
        db: &str,
        work: impl FnOnce(&mut postgres::Client) -> T + Send + 'static,
    ) -> T {
        let (port, password, db) = (self.port, self.admin_password.clone(), db.to_string());
        std::thread::spawn(move || {
            let mut client = postgres::Config::new()
                .host("127.0.0.1")
                .port(port)
                .user(ADMIN_USER)
                .password(&password)
                .dbname(&db)
                .connect(postgres::NoTls)
                .expect("admin connection to the test PostgreSQL");
            work(&mut client)
        })
        .join()
        .expect("admin work on the test PostgreSQL")
    }

    /// A new database owned by a new login role, with `setup` (SQL) run in it as that role.
    pub fn create_database(&self, setup: &str) -> TestDb {
        let n = NAMES.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        let owner = format!("{name}_owner");
        let password = format!("{owner}-pw-{}", rand_suffix());
        let (db, role, pw) = (name.clone(), owner.clone(), password.clone());
        self.as_admin("postgres", move |c| {
            c.batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{pw}'"))
                .expect("create the test role");
            // Alone: CREATE DATABASE cannot share a (multi-statement) transaction.
            c.batch_execute(&format!("CREATE DATABASE {db} OWNER {role}"))
                .expect("create the test database");
        });
        let setup = setup.to_string();
        let (port, db, role, pw) = (self.port, name.clone(), owner.clone(), password.clone());
        std::thread::spawn(move || {
            let mut client = postgres::Config::new()
                .host("127.0.0.1")
                .port(port)
                .user(&role)
                .password(&pw)
                .dbname(&db)
                .connect(postgres::NoTls)
                .expect("owner connection to the test database");
            client
                .batch_execute(&setup)
                .expect("the test database's setup SQL");
        })
        .join()
        .expect("setup of the test database");
        TestDb {
            name,
            owner,
            password,
            port: self.port,
        }
    }
}

/// A database of the private server and the role that owns it.
pub struct TestDb {
    pub name: String,
    pub owner: String,
    pub password: String,
    pub port: u16,
}

impl TestDb {
    /// `postgres://owner:password@127.0.0.1:port/name`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            self.owner, self.password, self.port, self.name
        )
    }

    /// Runs `sql` as the owner and returns the first column of the first row as text.
    pub fn query_text(&self, sql: &str) -> String {
        let (port, db, role, pw, sql) = (
            self.port,
            self.name.clone(),
            self.owner.clone(),
            self.password.clone(),
            sql.to_string(),
        );
        std::thread::spawn(move || {
            let mut client = postgres::Config::new()
                .host("127.0.0.1")
                .port(port)
                .user(&role)
                .password(&pw)
                .dbname(&db)
                .connect(postgres::NoTls)
                .expect("owner connection");
            let row = client.query_one(&sql, &[]).expect("query");
            row.get::<_, String>(0)
        })
        .join()
        .expect("query thread")
    }
}
