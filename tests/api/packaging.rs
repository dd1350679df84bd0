//! The Dockerfile and the systemd unit agree with the binary: their settings load, the commands
//! they run exist, the files they copy exist, and they run as a non-root user. (No Docker engine
//! runs here; this is what can be checked without one.)

use std::path::Path;

use labcron::config::Settings;
use labcron::config::overrides::env_name;

fn repo_file(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// `LABCRON_*` assignments turned into setting overrides.
fn overrides(assignments: &[(String, String)]) -> Vec<(String, String)> {
    assignments
        .iter()
        .filter(|(name, _)| name != "LABCRON_CONFIG")
        .map(|(name, value)| {
            let spec = labcron::config::specs::SETTING_SPECS
                .iter()
                .find(|s| env_name(s.key) == *name)
                .unwrap_or_else(|| panic!("{name} is not a labcron setting"));
            (spec.key.to_string(), value.clone())
        })
        .collect()
}

fn binary_accepts(args: &[&str]) -> bool {
    crate::common::command(args)
        .arg("--help")
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn the_dockerfile_matches_the_binary() {
    let dockerfile = repo_file("Dockerfile");
    let mut env = Vec::new();
    let mut in_env = false;
    for line in dockerfile.lines() {
        let line = line.trim();
        let body = if let Some(rest) = line.strip_prefix("ENV ") {
            rest
        } else if in_env {
            line
        } else {
            continue;
        };
        in_env = body.ends_with('\\');
        for pair in body.trim_end_matches('\\').split_whitespace() {
            let (name, value) = pair.split_once('=').unwrap();
            // PATH and the like are the runtime's, not labcron settings.
            if name.starts_with("LABCRON_") {
                env.push((name.to_string(), value.to_string()));
            }
        }
    }
    assert!(
        env.iter()
            .any(|(n, v)| n == "LABCRON_BIND" && v == "0.0.0.0:8080"),
        "{env:?}"
    );
    assert!(
        env.iter()
            .any(|(n, v)| n == "LABCRON_DATA_DIR" && v == "/data")
    );
    Settings::load_from(None, &overrides(&env)).expect("the image's settings are valid");

    assert!(
        dockerfile.contains("HEALTHCHECK")
            && dockerfile.contains(r#"CMD ["labcron", "healthcheck"]"#)
    );
    assert!(binary_accepts(&["healthcheck"]));
    assert!(
        dockerfile.contains(r#"ENTRYPOINT ["labcron"]"#) && dockerfile.contains(r#"CMD ["serve"]"#)
    );
    assert!(binary_accepts(&["serve"]));
    assert!(dockerfile.contains(r#"VOLUME ["/data"]"#));
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "runs as {user}"
    );
    assert!(
        dockerfile.contains("--locked"),
        "the image builds with the locked dependencies"
    );
    assert!(dockerfile.matches("FROM ").count() >= 2, "multi-stage");
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            assert!(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(source).exists(),
                "COPY source {source} is missing"
            );
        }
    }
}

#[test]
fn the_systemd_unit_matches_the_binary() {
    let unit = repo_file("contrib/labcron.service");
    let env: Vec<(String, String)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .map(|pair| {
            let (n, v) = pair.split_once('=').unwrap();
            (n.to_string(), v.to_string())
        })
        .collect();
    let settings =
        Settings::load_from(None, &overrides(&env)).expect("the unit's settings are valid");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    assert!(
        binary_accepts(&args),
        "labcron {exec} is not a valid command"
    );
    assert!(
        unit.contains("KillMode=mixed"),
        "labcron stops its own runs; systemd must not kill them first"
    );
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(stop > settings.runs.shutdown_grace_seconds + settings.runs.kill_grace_seconds);
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "User=labcron",
    ] {
        assert!(unit.contains(hardening), "the unit lacks {hardening}");
    }
}
