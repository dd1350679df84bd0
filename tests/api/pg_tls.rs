//! TLS to PostgreSQL (issue #16): a PostgreSQL of this binary's own (one per test process, started
//! by the first test that needs it) with `ssl = on`, a certificate for 127.0.0.1 and localhost
//! signed by a throw-away CA (`common::pki`), and a `pg_hba.conf` that lets every role but the
//! harness's admin in over TLS only (`hostssl`), so any connection labcron makes that succeeds was
//! encrypted; `pg_stat_ssl` is checked as well. The cases: a server on a `verify-full` URL runs a
//! job and serves its log; each `sslmode` against it (a wrong CA, a host name the certificate is
//! not for, `disable` refused by the server); start-up refusals that say what to fix and never the
//! password (a wrong CA, a wrong name, `require` against the plain test server, a bad `sslmode`, a
//! missing CA file); `migrate-ledger` and a QUERY data source over TLS.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use labcron::pg_connect::PgTarget;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Launch, command, spawn_app_configured, write_script};
use crate::postgres::{self, ADMIN_USER, PgServer};
use crate::queries::{create_query_job, result_text, run_to_end};

/// The TLS server and the certificates around it.
struct TlsPg {
    server: PgServer,
    /// `ca.pem` (signed the server's certificate) and `other-ca.pem` (signed nothing here).
    pki: PathBuf,
    _pki_dir: tempfile::TempDir,
}

static TLS_PG: OnceLock<TlsPg> = OnceLock::new();

extern "C" fn stop_tls_pg() {
    if let Some(pg) = TLS_PG.get() {
        pg.server.stop();
    }
}

fn tls_pg() -> &'static TlsPg {
    TLS_PG.get_or_init(|| {
        let pki_dir = tempfile::tempdir().expect("temp dir");
        let pki = pki_dir.path().to_path_buf();
        crate::common::pki::make_certificates(&pki);
        let (cert, key) = (pki.join("server.pem"), pki.join("server.key"));
        let server = postgres::start_own_with(move |data: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::copy(&cert, data.join("server.pem")).unwrap();
            std::fs::copy(&key, data.join("server.key")).unwrap();
            // PostgreSQL refuses a key others may read.
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            let conf = data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).unwrap();
            text.push_str(
                "\nssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n",
            );
            std::fs::write(&conf, text).unwrap();
            // The harness's admin connects in plain text; everyone else over TLS or not at all.
            std::fs::write(
                data.join("pg_hba.conf"),
                format!(
                    "local all all trust\n\
                     hostnossl all {ADMIN_USER} 127.0.0.1/32 scram-sha-256\n\
                     hostssl all all 127.0.0.1/32 scram-sha-256\n"
                ),
            )
            .unwrap();
        });
        // SAFETY: registering a plain `extern "C" fn` that touches only the static above.
        unsafe {
            libc::atexit(stop_tls_pg);
        }
        TlsPg {
            server,
            pki,
            _pki_dir: pki_dir,
        }
    })
}

/// A database of the TLS server and the login role that owns it.
struct TlsDb {
    name: String,
    role: String,
    password: String,
    port: u16,
    pki: PathBuf,
}

static NAMES: AtomicU32 = AtomicU32::new(0);

impl TlsPg {
    /// A new database owned by a new role, with `setup` run in it as the admin (its tables
    /// readable by the role).
    fn database(&self, setup: &str) -> TlsDb {
        let n = NAMES.fetch_add(1, Ordering::Relaxed);
        let name = format!("tls{}_{n}", std::process::id());
        let role = format!("{name}_owner");
        let password = format!("{role}-secret-pw");
        let (db, r, pw) = (name.clone(), role.clone(), password.clone());
        self.server.as_admin("postgres", move |c| {
            c.batch_execute(&format!("CREATE ROLE {r} LOGIN PASSWORD '{pw}'"))
                .unwrap();
            c.batch_execute(&format!("CREATE DATABASE {db} OWNER {r}"))
                .unwrap();
        });
        if !setup.is_empty() {
            let sql = format!("{setup}; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}");
            self.server
                .as_admin(&name, move |c| c.batch_execute(&sql).unwrap());
        }
        TlsDb {
            name,
            role,
            password,
            port: self.server.port,
            pki: self.pki.clone(),
        }
    }

    /// The sessions the server has for `role` now: (application_name, over TLS).
    fn sessions_of(&self, role: &str) -> Vec<(String, bool)> {
        let role = role.to_string();
        self.server.as_admin("postgres", move |c| {
            c.query(
                "SELECT a.application_name, s.ssl
                   FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                  WHERE a.usename = $1",
                &[&role],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
        })
    }
}

impl TlsDb {
    /// `postgres://role:password@HOST:port/db?QUERY`.
    fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://{}:{}@{host}:{}/{}?{query}",
            self.role, self.password, self.port, self.name
        )
    }

    fn ca(&self, file: &str) -> String {
        self.pki.join(file).display().to_string()
    }

    /// A `verify-full` URL the server's certificate satisfies.
    fn verified_url(&self) -> String {
        self.url(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={}", self.ca("ca.pem")),
        )
    }

    /// A URL whose host name (`db.lab`) the certificate is not for; the connection goes to
    /// 127.0.0.1 (`hostaddr`), and TLS checks the name.
    fn misnamed_url(&self, sslmode: &str) -> String {
        self.url(
            "db.lab",
            &format!(
                "hostaddr=127.0.0.1&sslmode={sslmode}&sslrootcert={}",
                self.ca("ca.pem")
            ),
        )
    }
}

/// Connects to `url` the way labcron does, and asks whether the session is encrypted; or the
/// error, as labcron explains it. On a thread of its own (the synchronous client).
fn try_session(url: &str) -> Result<bool, String> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let target = PgTarget::open(&url)?;
        let mut client = target.connect().map_err(|e| target.explain(&e))?;
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .map_err(|e| e.to_string())?;
        Ok(row.get(0))
    })
    .join()
    .unwrap()
}

#[test]
fn each_sslmode_against_a_server_that_speaks_tls() {
    let pg = tls_pg();
    let db = pg.database("");
    let ca = db.ca("ca.pem");
    let other = db.ca("other-ca.pem");

    // Checked and encrypted: the chain, and the name too under verify-full.
    for query in [
        format!("sslmode=verify-full&sslrootcert={ca}"),
        format!("sslmode=verify-ca&sslrootcert={ca}"),
        format!("sslmode=require&sslrootcert={ca}"),
    ] {
        assert_eq!(
            try_session(&db.url("127.0.0.1", &query)),
            Ok(true),
            "{query}"
        );
    }
    // No sslmode is libpq's prefer: encrypted when the server offers it, certificate unchecked.
    assert_eq!(try_session(&db.url("127.0.0.1", "")), Ok(true));

    // verify-ca does not look at the name; verify-full refuses a certificate not for it.
    assert_eq!(try_session(&db.misnamed_url("verify-ca")), Ok(true));
    let refused = try_session(&db.misnamed_url("verify-full")).unwrap_err();
    assert!(
        refused.contains("TLS certificate is not accepted")
            && refused.contains("verify-full")
            && refused.contains("db.lab"),
        "{refused}"
    );

    // A certificate signed by a CA that sslrootcert does not hold is refused, whichever mode
    // checks certificates (labcron's require too, unlike libpq's).
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = db.url("127.0.0.1", &format!("sslmode={mode}&sslrootcert={other}"));
        let refused = try_session(&url).unwrap_err();
        assert!(
            refused.contains("not signed by a trusted CA")
                && refused.contains(&format!("sslrootcert={other}")),
            "{mode}: {refused}"
        );
        assert!(!refused.contains(&db.password), "{refused}");
    }

    // The server lets this role in over TLS only: plain text is refused by it, not by labcron.
    let plain = try_session(&db.url("127.0.0.1", "sslmode=disable")).unwrap_err();
    assert!(
        plain.contains("pg_hba.conf") && plain.contains("no encryption"),
        "{plain}"
    );
}

#[test]
fn require_against_a_server_without_tls_is_refused() {
    // The process's shared test server has no TLS at all.
    let plain = postgres::server().create_database("");
    let pki = tls_pg().pki.join("ca.pem");
    let url = format!(
        "{}?sslmode=require&sslrootcert={}",
        plain.url(),
        pki.display()
    );
    let refused = try_session(&url).unwrap_err();
    assert!(
        refused.contains("does not offer TLS") && refused.contains("sslmode=require"),
        "{refused}"
    );
    // Without sslmode it is plain text, as before TLS was supported.
    assert_eq!(try_session(&plain.url()), Ok(false));
}

#[tokio::test]
async fn a_server_on_a_verify_full_url_runs_a_job_and_serves_its_log_over_tls() {
    let pg = tls_pg();
    let db = pg.database("");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_script(
        &data.join("scripts"),
        "hello.sh",
        "#!/bin/sh\necho hello from a ledger kept over TLS\n",
    );
    let url = db.verified_url();
    let server = Launch::bare()
        .no_example_jobs()
        .args(["--data-dir", data.to_str().unwrap(), "--database-url", &url])
        .start();
    let api = server.admin().await;
    let job = api.create_external_job("hello", "hello.sh").await;
    let run = api.run_to_end(job, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let log = api
        .get(&format!("/scheduled-jobs/{job}/runs/{}/log", run["id"]))
        .await;
    assert_eq!(log.status(), StatusCode::OK);
    assert!(
        log.text()
            .await
            .unwrap()
            .contains("hello from a ledger kept over TLS")
    );

    // Every session the server holds is encrypted: its pool's, and the firing lock's (a
    // connection of its own, named `labcron fire <node>`), waited for until the node holds it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let sessions = loop {
        let sessions = pg.sessions_of(&db.role);
        if sessions
            .iter()
            .any(|(name, _)| name.starts_with("labcron fire"))
        {
            break sessions;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no firing-lock session: {sessions:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        sessions.iter().any(|(name, _)| name == "labcron"),
        "{sessions:?}"
    );
    assert!(sessions.iter().all(|(_, tls)| *tls), "{sessions:?}");
    let text = server.log_text();
    assert!(!text.contains(&db.password), "{text}");
    server.terminate(Duration::from_secs(30));
}

/// The start-up's failure for `url`: the binary must exit before listening.
fn refused_start(url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    match Launch::bare()
        .no_example_jobs()
        .args(["--data-dir", data.to_str().unwrap(), "--database-url", url])
        .try_start()
    {
        Ok(server) => {
            server.kill();
            panic!("the server started on {url}");
        }
        Err(e) => e,
    }
}

#[test]
fn start_up_refuses_a_tls_setting_it_cannot_honour_and_says_why() {
    let pg = tls_pg();
    let db = pg.database("");
    let other = db.ca("other-ca.pem");
    let plain = postgres::server().create_database("");
    let cases = [
        (
            db.url(
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={other}"),
            ),
            vec!["not signed by a trusted CA", "other-ca.pem"],
        ),
        (
            db.misnamed_url("verify-full"),
            vec!["TLS certificate is not accepted", "verify-full", "db.lab"],
        ),
        (
            format!(
                "{}?sslmode=require&sslrootcert={}",
                plain.url(),
                db.ca("ca.pem")
            ),
            vec!["does not offer TLS"],
        ),
        (
            db.url("127.0.0.1", "sslmode=verify-fulll"),
            vec!["setting `database_url`", "sslmode=`verify-fulll`"],
        ),
        (
            db.url(
                "127.0.0.1",
                "sslmode=verify-full&sslrootcert=/no/such/ca.pem",
            ),
            vec!["setting `database_url`", "cannot read /no/such/ca.pem"],
        ),
    ];
    for (url, says) in cases {
        let error = refused_start(&url);
        assert!(error.contains("exited with"), "{error}");
        for words in says {
            assert!(error.contains(words), "{url}: no `{words}` in:\n{error}");
        }
        assert!(!error.contains(&db.password), "{error}");
        assert!(!error.contains(&plain.password), "{error}");
    }
}

#[test]
fn migrate_ledger_copies_into_a_database_over_tls() {
    let pg = tls_pg();
    let db = pg.database("");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A ledger as a first start leaves it.
    std::fs::create_dir_all(&data).unwrap();
    drop(labcron::store::Db::open(&data.join("labcron.db")).unwrap());
    let output = command(&[
        "migrate-ledger",
        "--data-dir",
        data.to_str().unwrap(),
        "--to",
        &db.verified_url(),
    ])
    .output()
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert!(!text.contains(&db.password), "{text}");
    // The copy is there (and came over TLS: the server takes this role over nothing else).
    let (name, login) = (db.name.clone(), db.role.clone());
    let users: Vec<String> = pg.server.as_admin(&name, move |c| {
        c.query("SELECT login_name FROM users", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    });
    assert_eq!(users, ["$system"], "{login}");

    // Into the wrong name, it stops before copying and says why.
    let output = command(&[
        "migrate-ledger",
        "--data-dir",
        data.to_str().unwrap(),
        "--to",
        &db.misnamed_url("verify-full"),
    ])
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success());
    assert!(text.contains("TLS certificate is not accepted"), "{text}");
}

#[tokio::test]
async fn a_query_data_source_is_read_over_tls_and_a_wrong_ca_is_refused() {
    let pg = tls_pg();
    let db = pg.database(
        "CREATE TABLE specimens (id int, label text); \
         INSERT INTO specimens VALUES (1, 'S-1'), (2, 'S-2')",
    );
    let good = db.verified_url();
    let wrong_ca = db.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", db.ca("other-ca.pem")),
    );
    let app = spawn_app_configured(move |s| {
        s.query_sources.insert("lims".into(), good.into());
        s.query_sources.insert("elsewhere".into(), wrong_ca.into());
    })
    .await;
    let created = app
        .post(
            "/saved-queries",
            &json!({"title": "labels", "sql": "SELECT id, label FROM specimens ORDER BY id", "dataSource": "lims"}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::OK);
    let query = created.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let job = create_query_job(&app, "labels", query, json!({})).await;
    let run = run_to_end(&app, job, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(
        result_text(&app, &run).await,
        "id,label\r\n1,S-1\r\n2,S-2\r\n"
    );

    // A source whose certificate is not trusted: the query is refused, the message says TLS and
    // names neither host, port nor password.
    let refused = app
        .post(
            "/saved-queries",
            &json!({"title": "labels", "sql": "SELECT 1", "dataSource": "elsewhere"}),
        )
        .await;
    let status = refused.status();
    let body = refused.text().await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("SAVED_QUERY_INVALID_DATA_SOURCE"), "{body}");
    assert!(
        body.contains("TLS refused") && body.contains("not signed by a trusted CA"),
        "{body}"
    );
    for secret in [db.password.as_str(), "127.0.0.1", &db.port.to_string()] {
        assert!(!body.contains(secret), "{secret}: {body}");
    }
}
