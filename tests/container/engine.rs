//! The container engine side of the image tests: rootful podman with a `containers.conf` of our own
//! (under the target directory, never /etc), the base images the Dockerfile's `FROM` lines name,
//! made locally when missing (debootstrap for Debian, Debian's rustc-web for the Rust builder), the
//! labcron image built once per test binary, and containers and volumes removed by name on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The tag the tests build the project's Dockerfile as.
pub const IMAGE: &str = "localhost/labcron:test";

/// Everything the tests keep between runs (the engine settings, build logs, scratch files).
pub fn state_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("container");
    std::fs::create_dir_all(&dir).expect("state dir");
    dir
}

/// A `containers.conf` for machines where root lacks CAP_SYS_RESOURCE and cgroups are a v1/v2
/// hybrid: ulimits no higher than ours (crun's and podman's defaults are higher and fail there),
/// and runc, which copes with the hybrid cgroups that crun refuses.
fn containers_conf() -> &'static Path {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        let nofile = hard_limit(libc::RLIMIT_NOFILE).min(1 << 20);
        let nproc = hard_limit(libc::RLIMIT_NPROC).min(32768);
        let path = state_dir().join("containers.conf");
        let text = format!(
            "# Written by tests/container.\n[containers]\n\
             default_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n\
             [engine]\nruntime = \"runc\"\n"
        );
        std::fs::write(&path, text).expect("write containers.conf");
        path
    })
}

fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let rc = unsafe { libc::getrlimit(resource, &mut limit) };
    assert_eq!(rc, 0, "getrlimit");
    limit.rlim_max
}

pub fn podman_command(args: &[&str]) -> Command {
    let mut command = Command::new("podman");
    command.env("CONTAINERS_CONF", containers_conf()).args(args);
    command
}

pub fn podman(args: &[&str]) -> Output {
    podman_command(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run podman ({e}); scripts/test installs it (apt-get install podman runc debootstrap)"
        )
    })
}

/// Runs podman and returns its trimmed stdout; panics with its stderr when it fails.
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {} failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn image_exists(name: &str) -> bool {
    podman(&["image", "exists", name]).status.success()
}

fn run_ok(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The images of the Dockerfile's `FROM` lines, other than `scratch` and earlier stages.
pub fn dockerfile_bases() -> Vec<String> {
    let dockerfile =
        std::fs::read_to_string(Path::new(REPO).join("Dockerfile")).expect("Dockerfile");
    let mut stages = Vec::new();
    let mut bases = Vec::new();
    for line in dockerfile.lines() {
        let Some(rest) = line.strip_prefix("FROM ") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let image = words[0].to_string();
        if image != "scratch" && !stages.contains(&image) && !bases.contains(&image) {
            bases.push(image);
        }
        if let Some(i) = words.iter().position(|w| w.eq_ignore_ascii_case("AS")) {
            stages.push(words[i + 1].to_string());
        }
    }
    bases
}

/// Makes the base image `name` (as the Dockerfile spells it) under `localhost/` unless it exists.
pub fn ensure_base(name: &str) {
    let local = format!("localhost/{name}");
    if image_exists(&local) {
        return;
    }
    let (repo, tag) = name.split_once(':').expect("a tagged base image");
    // Debian's tags end with the suite (`bookworm-slim`, `1.95-slim-bookworm`).
    let suite = tag
        .split('-')
        .find(|w| !w.is_empty() && !w.starts_with(|c: char| c.is_ascii_digit()) && *w != "slim")
        .unwrap_or_else(|| panic!("no Debian suite in {name}"));
    match repo {
        "debian" => make_debian(&local, suite),
        "rust" => make_rust_builder(&local, suite),
        _ => panic!("tests/container does not know how to make the base image {name}"),
    }
}

/// `(main mirror, security mirror)` from the host's apt sources.
fn host_mirrors() -> (String, String) {
    let mut main = None;
    let mut security = None;
    if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources") {
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            if let (Some(uri), Some(suites)) = (field("URIs:"), field("Suites:")) {
                let uri = uri
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if suites.contains("-security") {
                    security.get_or_insert(uri);
                } else {
                    main.get_or_insert(uri);
                }
            }
        }
    }
    (
        main.unwrap_or_else(|| "http://deb.debian.org/debian".into()),
        security.unwrap_or_else(|| "http://deb.debian.org/debian-security".into()),
    )
}

fn clear_dir(dir: &Path, keep: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if keep(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.unwrap_or_else(|e| panic!("cannot remove {}: {e}", path.display()));
    }
}

/// A minbase Debian made slim the way the official `-slim` images are (no docs, man pages or
/// locales, and dpkg told not to install them), with apt pointed at the host's mirrors.
fn make_debian(tag: &str, suite: &str) {
    let started = Instant::now();
    let dir = state_dir().join(format!("rootfs-{suite}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("remove an old rootfs");
    }
    let (mirror, security) = host_mirrors();
    run_ok(
        Command::new("debootstrap")
            .args(["--variant=minbase", suite])
            .arg(&dir)
            .arg(&mirror),
    );
    clear_dir(&dir.join("var/cache/apt/archives"), |name| {
        !name.ends_with(".deb")
    });
    clear_dir(&dir.join("var/lib/apt/lists"), |name| name == "partial");
    for docs in ["usr/share/doc", "usr/share/man", "usr/share/info"] {
        clear_dir(&dir.join(docs), |_| false);
    }
    clear_dir(&dir.join("usr/share/locale"), |name| name == "locale.alias");
    let _ = std::fs::remove_file(dir.join("etc/apt/sources.list"));
    std::fs::write(
        dir.join("etc/dpkg/dpkg.cfg.d/slim"),
        "path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\n\
         path-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\n\
         path-include /usr/share/locale/locale.alias\n",
    )
    .expect("dpkg excludes");
    std::fs::write(
        dir.join("etc/apt/sources.list.d/debian.sources"),
        format!(
            "Types: deb\nURIs: {mirror}\nSuites: {suite} {suite}-updates\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
             Types: deb\nURIs: {security}\nSuites: {suite}-security\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ),
    )
    .expect("apt sources");
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tar");
    let stdout = tar.stdout.take().expect("tar's stdout");
    let import = podman_command(&["import", "-", tag])
        .stdin(stdout)
        .output()
        .expect("podman import");
    assert!(tar.wait().expect("tar").success(), "tar of {dir:?} failed");
    assert!(
        import.status.success(),
        "podman import failed: {}",
        String::from_utf8_lossy(&import.stderr)
    );
    std::fs::remove_dir_all(&dir).expect("remove the rootfs");
    eprintln!(
        "tests/container: made {tag} with debootstrap in {:.0?}",
        started.elapsed()
    );
}

/// Debian's own Rust: `rustc-web`/`cargo-web` (1.96 in bookworm-security; the plain `rustc` is too
/// old for edition 2024) with a C toolchain for the linker and the bundled SQLite. The host's extra
/// CA certificates go in too, for hosts whose way to the crate registry needs them.
fn make_rust_builder(tag: &str, suite: &str) {
    let started = Instant::now();
    let base = format!("localhost/debian:{suite}-slim");
    ensure_base(&format!("debian:{suite}-slim"));
    let dir = state_dir().join("builder");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("remove an old builder context");
    }
    std::fs::create_dir_all(dir.join("ca")).expect("builder context");
    if let Ok(entries) = std::fs::read_dir("/usr/local/share/ca-certificates") {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".crt") {
                std::fs::copy(entry.path(), dir.join("ca").join(entry.file_name()))
                    .expect("copy a CA certificate");
            }
        }
    }
    std::fs::write(
        dir.join("Containerfile"),
        format!(
            "FROM {base}\n\
             COPY ca/ /usr/local/share/ca-certificates/\n\
             RUN apt-get update \\\n\
             \x20   && apt-get install -y --no-install-recommends rustc-web cargo-web gcc libc6-dev ca-certificates \\\n\
             \x20   && rm -rf /var/lib/apt/lists/* \\\n\
             \x20   && update-ca-certificates \\\n\
             \x20   && cargo --version && rustc --version\n"
        ),
    )
    .expect("builder Containerfile");
    let dir_arg = dir.display().to_string();
    podman_ok(&[
        "build",
        "--pull=never",
        "--format",
        "docker",
        "-t",
        tag,
        &dir_arg,
    ]);
    eprintln!("tests/container: made {tag} in {:.0?}", started.elapsed());
}

/// The project's Dockerfile built (once per test binary) from the local base images. Warm, every
/// layer comes from podman's cache; a source change rebuilds the crate, not its dependencies.
pub fn image() -> &'static str {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        std::panic::catch_unwind(build_image).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    });
    if let Err(e) = built {
        panic!("the image could not be built: {e}");
    }
    IMAGE
}

fn build_image() {
    for base in dockerfile_bases() {
        ensure_base(&base);
    }
    let log_path = state_dir().join("build.log");
    let log = std::fs::File::create(&log_path).expect("build log");
    let started = Instant::now();
    // nice: the cold build keeps both cores busy for minutes; let the machine's other work go first.
    let status = Command::new("nice")
        .args([
            "-n",
            "10",
            "podman",
            "build",
            "--pull=never",
            "--format",
            "docker",
        ])
        .args(["-t", IMAGE, REPO])
        .env("CONTAINERS_CONF", containers_conf())
        .stdout(log.try_clone().expect("build log"))
        .stderr(log)
        .status()
        .expect("podman build");
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    assert!(
        status.success(),
        "podman build failed ({status}); the end of {}:\n{}",
        log_path.display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    eprintln!(
        "tests/container: built {IMAGE} in {:.1?} ({} of its steps from the cache)",
        started.elapsed(),
        text.matches("Using cache").count()
    );
}

fn unique(what: &str) -> String {
    format!("labcron-test-{}-{what}", std::process::id())
}

/// A named volume, removed on drop.
pub struct Volume {
    pub name: String,
}

impl Volume {
    pub fn new(what: &str) -> Volume {
        let name = unique(what);
        let _ = podman(&["volume", "rm", "--force", &name]);
        podman_ok(&["volume", "create", &name]);
        Volume { name }
    }

    /// `-v NAME:/data`.
    pub fn mount(&self) -> String {
        format!("{}:/data", self.name)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = podman(&["volume", "rm", "--force", &self.name]);
    }
}

/// A container of the image, removed (with `--force`) on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `podman create` (not started) with `args` before the image and `command` after it.
    pub fn create(what: &str, args: &[&str], command: &[&str]) -> Container {
        let name = unique(what);
        let _ = podman(&["rm", "--force", "--time", "0", &name]);
        let mut all = vec!["create", "--name", &name, "--label", "labcron-test=1"];
        all.extend_from_slice(args);
        all.push(image());
        all.extend_from_slice(command);
        podman_ok(&all);
        Container { name }
    }

    /// `podman run -d`: created and started.
    pub fn run(what: &str, args: &[&str]) -> Container {
        let container = Container::create(what, args, &[]);
        container.start();
        container
    }

    pub fn start(&self) {
        podman_ok(&["start", &self.name]);
    }

    /// The loopback port podman published `container_port` on.
    pub fn port(&self, container_port: u16) -> u16 {
        let mapping = podman_ok(&["port", &self.name, &format!("{container_port}/tcp")]);
        mapping
            .lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no published port in {mapping:?}"))
    }

    pub fn inspect(&self, format: &str) -> String {
        podman_ok(&["inspect", "--format", format, &self.name])
    }

    pub fn logs(&self) -> String {
        let out = podman(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    pub fn is_running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    /// Copies a host file or directory into the container (podman gives it the container's user).
    pub fn copy_in(&self, from: &Path, to: &str) {
        podman_ok(&[
            "cp",
            &from.display().to_string(),
            &format!("{}:{to}", self.name),
        ]);
    }

    /// `podman stop -t 60`: its output and how long it took.
    pub fn stop(&self) -> (Output, Duration) {
        let started = Instant::now();
        let out = podman(&["stop", "-t", "60", &self.name]);
        (out, started.elapsed())
    }

    pub fn exit_code(&self) -> i64 {
        self.inspect("{{.State.ExitCode}}")
            .parse()
            .expect("an exit code")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--volumes", "--time", "0", &self.name]);
    }
}
