//! The Docker image, built from the project's Dockerfile and run for real with rootful podman: the
//! base images are made locally when missing (no registry is needed), the image is built once per
//! test binary (layers cached between runs), and each test starts containers of it on 127.0.0.1
//! published ports and named volumes, which it removes by name afterwards. Also checks the size of
//! the image, the migration of an older ledger on the volume, and `contrib/compose.yaml`.
//! Needs root, podman, runc and debootstrap (`scripts/test` installs them). State lives in
//! `target/tmp/container`.

mod api;
mod engine;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::Value;

use api::{Api, sign_in_status, wait_for_health};
use engine::{Container, REPO, Volume, image, podman, podman_ok, state_dir};

const FIRST_PASSWORD: &str = "first-admin-password";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Writes an executable script under the state directory, to be copied into a container.
fn script(name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        // One directory per test binary run; those of earlier runs go.
        let ours = format!("scripts-{}", std::process::id());
        for entry in std::fs::read_dir(state_dir()).expect("state dir").flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let this_run = name == ours || name == format!("settings-{}.toml", std::process::id());
            if (name.starts_with("scripts-") || name.starts_with("settings-")) && !this_run {
                let _ = std::fs::remove_dir_all(entry.path());
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let dir = state_dir().join(ours);
        std::fs::create_dir_all(&dir).expect("scripts dir");
        dir
    });
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Reports the zone, its abbreviation as `date` sees it (which needs the image's zoneinfo), and
/// the user the run ran as.
const COUNT_SH: &str = "#!/bin/sh\necho \"counting in $TZ\"\n\
    printf 'zone,abbreviation,uid\\n%s,%s,%s\\n' \"$TZ\" \"$(date +%Z)\" \"$(id -u)\" \
    > \"$LABCRON_RESULT_DIR/counts.csv\"\n";
/// Sleeps for its argument, then leaves a result.
const SLOW_SH: &str =
    "#!/bin/sh\nsleep \"$1\"\necho \"slept $1\" > \"$LABCRON_RESULT_DIR/slow.txt\"\n";

/// `podman healthcheck run` (the image's HEALTHCHECK) passes, and podman records it healthy.
fn assert_healthy(container: &Container) {
    let check = podman(&["healthcheck", "run", &container.name]);
    assert!(
        check.status.success(),
        "healthcheck: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(container.inspect("{{.State.Health.Status}}"), "healthy");
}

fn assert_stopped_gracefully(container: &Container) {
    let (out, took) = container.stop();
    assert!(
        out.status.success(),
        "podman stop failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 137 would mean podman had to SIGKILL it after the 60 s.
    assert_eq!(
        container.exit_code(),
        0,
        "labcron did not exit 0 on SIGTERM (stop took {took:.1?}):\n{}",
        container.logs()
    );
    eprintln!("tests/container: {} stopped in {took:.1?}", container.name);
}

#[test]
fn the_base_images_are_made_locally_from_debian() {
    let bases = engine::dockerfile_bases();
    let builder = bases
        .iter()
        .find(|b| b.starts_with("rust:"))
        .unwrap_or_else(|| panic!("no Rust builder among {bases:?}"));
    assert!(bases.iter().any(|b| b.starts_with("debian:")), "{bases:?}");
    for base in &bases {
        engine::ensure_base(base);
    }
    // Debian's rustc-web must be at least the crate's rust-version.
    let rustc = podman_ok(&[
        "run",
        "--rm",
        &format!("localhost/{builder}"),
        "rustc",
        "--version",
    ]);
    let version = |text: &str| -> Vec<u32> {
        text.split(['.', ' ', '"'])
            .filter_map(|w| w.parse().ok())
            .take(2)
            .collect()
    };
    let manifest = std::fs::read_to_string(Path::new(REPO).join("Cargo.toml")).expect("Cargo.toml");
    let wanted = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version");
    assert!(
        version(&rustc) >= version(wanted),
        "{rustc} is older than {wanted}"
    );
}

#[tokio::test]
async fn the_image_serves_runs_scripts_from_its_volume_and_keeps_them_across_containers() {
    let volume = Volume::new("data");
    let first = Container::run(
        "first",
        &[
            "-p",
            "127.0.0.1::8080",
            "-v",
            &volume.mount(),
            "-e",
            &format!("LABCRON_ADMIN_PASSWORD={FIRST_PASSWORD}"),
        ],
    );
    let port = first.port(8080);
    let health = wait_for_health(&first, port).await;
    assert_eq!(health["status"], "ok", "{health}");

    // The server is PID 1 of the container and runs as labcron (uid 10001), not root.
    let status = podman_ok(&["exec", &first.name, "cat", "/proc/1/status"]);
    let uids = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("a Uid line");
    assert_eq!(
        uids.split_whitespace().collect::<Vec<_>>(),
        ["10001"; 4],
        "{status}"
    );
    let cmdline = podman_ok(&["exec", &first.name, "cat", "/proc/1/cmdline"]);
    assert_eq!(cmdline.split('\0').next(), Some("labcron"));

    // The image's HEALTHCHECK, run on demand (without systemd podman never runs it by itself).
    assert_healthy(&first);

    // Scripts go on the volume; an EXTERNAL job runs one and its result downloads.
    first.copy_in(&script("count.sh", COUNT_SH), "/data/scripts/count.sh");
    first.copy_in(&script("slow.sh", SLOW_SH), "/data/scripts/slow.sh");
    let api = Api::sign_in(port, FIRST_PASSWORD).await;
    let count_job = api.external_job("Specimen counts", "count.sh").await["id"]
        .as_i64()
        .expect("job id");
    let count_run = api.queue_run(count_job).await;
    let finished = api.finished_run(count_job, count_run).await;
    assert_eq!(finished["status"], "SUCCEEDED", "{finished}");
    let csv = api.result_file(count_job, count_run).await;
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("zone,abbreviation,uid"));
    let row: Vec<&str> = lines.next().expect("a row").split(',').collect();
    assert_eq!(row[0], "Europe/Berlin");
    assert!(
        row[1] == "CET" || row[1] == "CEST",
        "date found no zone data for Europe/Berlin: {csv}"
    );
    assert_eq!(row[2], "10001", "the run ran as another user: {csv}");

    // `podman stop -t 60` while a run is running: labcron lets it finish (it needs 8 s of the 30 s
    // grace), records it, and exits 0.
    let slow_job = api.external_job("Slow export", "slow.sh 8").await["id"]
        .as_i64()
        .expect("job id");
    let slow_run = api.queue_run(slow_job).await;
    api.wait_in_progress(slow_job, slow_run).await;
    let stop_requested = now_ms();
    assert_stopped_gracefully(&first);
    assert!(
        first.logs().contains("running runs get 30 s"),
        "{}",
        first.logs()
    );

    // A second container on the same volume: same jobs, runs and files; the first admin keeps
    // their password (LABCRON_ADMIN_PASSWORD only sets it on the very first start).
    let second = Container::run(
        "second",
        &[
            "-p",
            "127.0.0.1::8080",
            "-v",
            &volume.mount(),
            "-e",
            "LABCRON_ADMIN_PASSWORD=another-password",
        ],
    );
    let port = second.port(8080);
    wait_for_health(&second, port).await;
    let (status, _) = sign_in_status(port, "another-password").await;
    assert_ne!(
        status,
        StatusCode::OK,
        "the second start reset the password"
    );
    let api = Api::sign_in(port, FIRST_PASSWORD).await;
    let jobs = api.get_json("/scheduled-jobs?maxResults=1000").await;
    let names: Vec<(i64, &str)> = jobs
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| {
            (
                j["id"].as_i64().unwrap_or(-1),
                j["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(names.contains(&(count_job, "Specimen counts")), "{names:?}");
    assert!(names.contains(&(slow_job, "Slow export")), "{names:?}");
    let slow = api.run(slow_job, slow_run).await;
    assert_eq!(slow["status"], "SUCCEEDED", "{slow}");
    assert!(
        slow["finishedAt"].as_i64().expect("finishedAt") >= stop_requested,
        "the run ended before the stop, so the stop was not tested: {slow}"
    );
    assert_eq!(api.result_file(slow_job, slow_run).await, "slept 8\n");
    assert_eq!(api.result_file(count_job, count_run).await, csv);
    let runs = api
        .get_json(&format!("/scheduled-jobs/{count_job}/runs"))
        .await;
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    // The script is still on the volume and runs again.
    let again = api.queue_run(count_job).await;
    assert_eq!(
        api.finished_run(count_job, again).await["status"],
        "SUCCEEDED"
    );
    assert_stopped_gracefully(&second);
}

#[tokio::test]
async fn labcron_settings_from_the_environment_and_a_mounted_config_file_take_effect() {
    let config = state_dir().join(format!("settings-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "# Mounted at /etc/labcron/labcron.toml by tests/container.\n\
         bind = \"0.0.0.0:7070\"\ntimezone = \"Asia/Kolkata\"\n\n[http]\nmax_body_bytes = 4096\n",
    )
    .expect("config file");
    let volume = Volume::new("settings");
    let mount = format!("{}:/etc/labcron/labcron.toml:ro", config.display());
    let args = [
        "-p",
        "127.0.0.1::9090",
        "-p",
        "127.0.0.1::7070",
        "-v",
        &volume.mount(),
        "-v",
        &mount,
        "-e",
        "LABCRON_CONFIG=/etc/labcron/labcron.toml",
        // The environment wins over the file.
        "-e",
        "LABCRON_BIND=0.0.0.0:9090",
        "-e",
        "LABCRON_RUNS_SHUTDOWN_GRACE_SECONDS=1",
        "-e",
        &format!("LABCRON_ADMIN_PASSWORD={FIRST_PASSWORD}"),
    ];
    let server = Container::run("settings", &args);
    let port = server.port(9090);
    wait_for_health(&server, port).await;
    let file_port = server.port(7070);
    let on_file_port = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client")
        .get(format!("http://127.0.0.1:{file_port}/health"))
        .send()
        .await;
    assert!(
        on_file_port.is_err() || on_file_port.is_ok_and(|r| r.status() != StatusCode::OK),
        "the file's bind won over LABCRON_BIND"
    );
    // The health check reads the same settings, so it asks port 9090.
    assert_healthy(&server);

    let api = Api::sign_in(port, FIRST_PASSWORD).await;
    server.copy_in(&script("slow.sh", SLOW_SH), "/data/scripts/slow.sh");
    // From the file: the default zone of jobs, and the body limit.
    let job = api
        .post_json(
            "/scheduled-jobs",
            &serde_json::json!({"name": "Zoned by the file", "type": "EXTERNAL",
                                "command": "slow.sh 300", "repeatSchedule": "ONDEMAND"}),
        )
        .await;
    assert_eq!(job["timezone"], "Asia/Kolkata", "{job}");
    let big = format!(
        "{{\"loginName\":\"admin\",\"password\":\"{}\"}}",
        "x".repeat(5000)
    );
    let response = reqwest::Client::new()
        .post(format!("{}/sessions", api.base))
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // From the environment: a 1 s shutdown grace. A run still going after it is stopped and
    // recorded FAILED "interrupted by shutdown"; labcron still exits 0.
    let job_id = job["id"].as_i64().expect("job id");
    let run = api.queue_run(job_id).await;
    api.wait_in_progress(job_id, run).await;
    assert_stopped_gracefully(&server);
    let logs = server.logs();
    assert!(logs.contains("running runs get 1 s"), "{logs}");
    drop(server);

    let next = Container::run("settings-next", &args);
    let port = next.port(9090);
    wait_for_health(&next, port).await;
    let api = Api::sign_in(port, FIRST_PASSWORD).await;
    let body = api.run(job_id, run).await;
    assert_eq!(body["status"], "FAILED", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("interrupted by shutdown")),
        "{body}"
    );
    assert_stopped_gracefully(&next);
    let _ = std::fs::remove_file(config);
}

/// The number of ledger migrations this version applies (schema.sql, then migrations/*.sql).
fn schema_version() -> i64 {
    let migrations = std::fs::read_dir(Path::new(REPO).join("migrations"))
        .expect("migrations")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".sql"))
        })
        .count();
    1 + migrations as i64
}

#[tokio::test]
async fn a_ledger_of_the_previous_schema_on_the_volume_is_migrated_at_start() {
    let fixture = Path::new(REPO).join("tests/fixtures/ledger-v1");
    let work = state_dir().join(format!("migrate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let db = work.join("labcron.db");
    {
        let conn = rusqlite::Connection::open(&db).expect("fixture ledger");
        let sql = std::fs::read_to_string(fixture.join("labcron.sql")).expect("fixture SQL");
        conn.execute_batch(&sql).expect("load the fixture");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("user_version");
        assert_eq!(version, 1, "the fixture is a version-1 ledger");
    }

    let volume = Volume::new("upgrade");
    // A first start with a no-op program gives the volume the image's /data (and its owner).
    podman_ok(&[
        "run",
        "--rm",
        "-v",
        &volume.mount(),
        "--entrypoint",
        "true",
        image(),
    ]);
    let server = Container::create(
        "upgrade",
        &[
            "-p",
            "127.0.0.1::8080",
            "-v",
            &volume.mount(),
            "-e",
            "LABCRON_ADMIN_PASSWORD=not-used-an-admin-exists",
        ],
        &[],
    );
    server.copy_in(&db, "/data/labcron.db");
    server.copy_in(&fixture.join("runs"), "/data/");
    server.copy_in(&fixture.join("scripts/v1.sh"), "/data/scripts/v1.sh");
    server.start();
    let port = server.port(8080);
    wait_for_health(&server, port).await;

    let api = Api::sign_in(port, "fixture-password-1").await;
    let job = api.get_json("/scheduled-jobs/1").await;
    assert_eq!(job["name"], "Made by version 1", "{job}");
    assert_eq!(job["timezone"], "Europe/Berlin");
    // A field of schema version 2, read from the column the migration added.
    assert_eq!(job["webhookUrl"], Value::Null, "{job}");
    let old = api.run(1, 1).await;
    assert_eq!(old["status"], "SUCCEEDED", "{old}");
    assert_eq!(api.result_file(1, 1).await, "a,b\n1,2\n");
    // The migrated ledger takes new runs.
    let run = api.queue_run(1).await;
    assert!(run > 1);
    assert_eq!(api.finished_run(1, run).await["status"], "SUCCEEDED");
    assert_eq!(api.result_file(1, run).await, "a,b\n1,2\n");
    assert_stopped_gracefully(&server);

    let out = work.join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    podman_ok(&[
        "cp",
        &format!("{}:/data/labcron.db", server.name),
        &out.display().to_string(),
    ]);
    // The WAL, if the last connection left one, holds the newest pages.
    let _ = podman(&[
        "cp",
        &format!("{}:/data/labcron.db-wal", server.name),
        &out.display().to_string(),
    ]);
    let conn = rusqlite::Connection::open(out.join("labcron.db")).expect("migrated ledger");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version");
    assert_eq!(version, schema_version());
    drop(conn);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn the_image_is_small_and_has_certificates_and_zone_data() {
    let size: u64 = podman_ok(&["image", "inspect", "--format", "{{.Size}}", image()])
        .parse()
        .expect("a size");
    eprintln!(
        "tests/container: {} is {:.1} MB",
        image(),
        size as f64 / 1e6
    );
    assert!(size < 40_000_000, "the image grew to {size} bytes");
    let checks = "test \"$(grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt)\" -gt 100 \
        && test -s /usr/share/zoneinfo/Europe/Berlin && ! test -e /usr/bin/apt-get \
        && test \"$(id -u)\" = 10001";
    podman_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        image(),
        "-c",
        checks,
    ]);
}

/// `contrib/compose.yaml`, parsed with Debian's python3-yaml.
fn compose_file() -> Value {
    let path = Path::new(REPO).join("contrib/compose.yaml");
    let out = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(&path)
        .output()
        .expect("/usr/bin/python3 (scripts/test installs python3-yaml)");
    assert!(
        out.status.success(),
        "contrib/compose.yaml does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}

fn dockerfile() -> String {
    std::fs::read_to_string(Path::new(REPO).join("Dockerfile")).expect("Dockerfile")
}

#[test]
fn the_compose_file_agrees_with_the_dockerfile() {
    let compose = compose_file();
    let dockerfile = dockerfile();
    let service = &compose["services"]["labcron"];
    assert!(service.is_object(), "no labcron service: {compose}");

    let build = &service["build"];
    let context = Path::new(REPO)
        .join("contrib")
        .join(build["context"].as_str().expect("build.context"));
    let named = build["dockerfile"].as_str().unwrap_or("Dockerfile");
    assert_eq!(
        context.join(named).canonicalize().expect("the Dockerfile"),
        Path::new(REPO)
            .join("Dockerfile")
            .canonicalize()
            .expect("Dockerfile")
    );
    assert!(service["image"].is_string(), "{service}");

    // The published port is the one the image listens on.
    let expose = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("EXPOSE")
        .trim()
        .to_string();
    assert!(dockerfile.contains(&format!("LABCRON_BIND=0.0.0.0:{expose}")));
    let ports: Vec<&str> = service["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        ports.iter().any(|p| p.ends_with(&format!(":{expose}"))),
        "{ports:?}"
    );

    // Its named volume is declared and mounted where the image keeps its data.
    let volume = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("VOLUME [\""))
        .and_then(|l| l.split('"').next())
        .expect("VOLUME")
        .to_string();
    let mounts: Vec<&str> = service["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mount = mounts
        .iter()
        .find(|m| m.split(':').nth(1) == Some(volume.as_str()))
        .unwrap_or_else(|| panic!("nothing mounted at {volume}: {mounts:?}"));
    let volume_name = mount.split(':').next().expect("a volume name");
    assert!(
        compose["volumes"].get(volume_name).is_some(),
        "volume {volume_name} is not declared: {compose}"
    );

    // Its health check is the image's.
    assert!(
        dockerfile.contains(r#"HEALTHCHECK"#)
            && dockerfile.contains(r#"CMD ["labcron", "healthcheck"]"#)
    );
    assert_eq!(
        service["healthcheck"]["test"],
        serde_json::json!(["CMD", "labcron", "healthcheck"])
    );

    // Every variable is a labcron setting, and the admin password is required.
    let env = service["environment"].as_object().expect("environment map");
    for name in env.keys() {
        assert!(
            name == "LABCRON_CONFIG"
                || labcron::config::specs::SETTING_SPECS
                    .iter()
                    .any(|s| labcron::config::overrides::env_name(s.key) == *name),
            "{name} is not a labcron setting"
        );
    }
    assert!(
        env["LABCRON_ADMIN_PASSWORD"]
            .as_str()
            .is_some_and(|v| v.starts_with("${LABCRON_ADMIN_PASSWORD:?")),
        "{env:?}"
    );

    // `docker compose down` must give labcron longer than its own grace to end its runs.
    let defaults = labcron::config::Settings::load_from(None, &[]).expect("defaults");
    let grace: u64 = service["stop_grace_period"]
        .as_str()
        .and_then(|s| s.strip_suffix('s'))
        .and_then(|s| s.parse().ok())
        .expect("stop_grace_period in seconds");
    assert!(grace > defaults.runs.shutdown_grace_seconds + defaults.runs.kill_grace_seconds);
}

#[tokio::test]
async fn the_compose_service_starts_as_written() {
    // The service's settings, applied the way compose applies them, to the image the tests built.
    let compose = compose_file();
    let service = &compose["services"]["labcron"];
    let volume = Volume::new("compose");
    let mut args = vec![
        "-p".to_string(),
        "127.0.0.1::8080".to_string(),
        "-v".to_string(),
        volume.mount(),
    ];
    for (name, value) in service["environment"].as_object().expect("environment") {
        let value = match value {
            Value::String(s) if s.starts_with("${LABCRON_ADMIN_PASSWORD") => {
                FIRST_PASSWORD.to_string()
            }
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        args.extend(["-e".to_string(), format!("{name}={value}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Container::run("compose", &args);
    let port = server.port(8080);
    wait_for_health(&server, port).await;
    Api::sign_in(port, FIRST_PASSWORD).await;
    assert_stopped_gracefully(&server);
}
