//! Directory sign-in (issue 15) against a real OpenLDAP server: the first test to need it starts
//! Debian's `slapd` on a loopback port with a small directory of its own (a temp dir, the current
//! user, `-d 0` so it never detaches), shared by the tests of this binary. It is started under a
//! small `sh` that holds a pipe from this process and kills slapd by its pid when the pipe closes,
//! that is when the test process ends however it ends, so no slapd is left behind.
//!
//! The same slapd also speaks TLS: at start the fixture makes a throw-away CA and a server
//! certificate for 127.0.0.1 and localhost in the temp dir (`common::pki`), and slapd listens on
//! `ldap://127.0.0.1:P1/` (StartTLS offered), `ldaps://127.0.0.1:P2/` and `ldaps://127.0.0.2:P2/`
//! (the same certificate, reached by an address it is not for). One person, erin, may only bind
//! over TLS, so a sign-in of hers proves the password went encrypted.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use labcron::config::{LdapSettings, Settings};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{
    ADMIN_PASSWORD, Api, Launch, Server, TestApp, error_codes, ok_json, spawn_app_configured,
};

const SUFFIX: &str = "dc=lab,dc=example";
const ROOT_DN: &str = "cn=admin,dc=lab,dc=example";
const ROOT_PASSWORD: &str = "directory-root-secret";
const ADMIN_GROUP: &str = "cn=labcron-admins,ou=groups,dc=lab,dc=example";

/// The directory's people: (uid, given name, surname, password).
const PEOPLE: &[(&str, &str, &str, &str)] = &[
    ("alice", "Alice", "Adams", "alice-directory-pw"),
    ("bob", "Bob", "Brown", "bob-directory-pw"),
    ("carol", "Carol", "Clark", "carol-directory-pw"),
    ("dave", "Dave", "Dunn", "dave-directory-pw"),
    ("erin", "Erin", "Evans", "erin-directory-pw"),
];

/// The person whose password the directory accepts over TLS only (an ACL on `tls_ssf`).
const TLS_ONLY: &str = "erin";

struct Directory {
    /// `ldap://127.0.0.1:P1/` (StartTLS is offered on it).
    url: String,
    /// P1 and P2: the `ldap://` and the `ldaps://` ports.
    port: u16,
    ldaps_port: u16,
    /// The throw-away CA that signed slapd's certificate, and another CA that signed nothing here.
    ca_file: PathBuf,
    other_ca_file: PathBuf,
    dir: PathBuf,
    /// Held for the life of the process: when its stdin pipe closes (this process ends), the
    /// keeper kills slapd by its pid.
    _keeper: Mutex<(Child, ChildStdin)>,
    _temp: tempfile::TempDir,
}

fn slapd_path() -> &'static str {
    ["/usr/sbin/slapd", "/usr/local/sbin/slapd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("slapd is not installed (Debian: apt-get install slapd ldap-utils; scripts/test does it)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn directory() -> &'static Directory {
    static DIRECTORY: OnceLock<Directory> = OnceLock::new();
    DIRECTORY.get_or_init(start_directory)
}

fn start_directory() -> Directory {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().to_path_buf();
    std::fs::create_dir(dir.join("db")).unwrap();
    crate::common::pki::make_certificates(&dir);
    let conf = dir.join("slapd.conf");
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {dir}/slapd.pid\n\
             TLSCACertificateFile {dir}/ca.pem\n\
             TLSCertificateFile {dir}/server.pem\n\
             TLSCertificateKeyFile {dir}/server.key\n\
             database mdb\n\
             maxsize 10485760\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"{ROOT_DN}\"\n\
             rootpw {ROOT_PASSWORD}\n\
             directory {dir}/db\n\
             access to dn.exact=\"uid={TLS_ONLY},ou=people,{SUFFIX}\" attrs=userPassword \
             by anonymous tls_ssf=1 auth by * none\n\
             access to attrs=userPassword by anonymous auth by * none\n\
             access to * by * read\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    let mut ldif = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Lab\ndc: lab\n\n\
         dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: {ADMIN_GROUP}\nobjectClass: groupOfNames\ncn: labcron-admins\n\
         member: uid=alice,ou=people,{SUFFIX}\n\n"
    );
    for (uid, given, sn, password) in PEOPLE {
        ldif.push_str(&format!(
            "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\n\
             cn: {given} {sn}\ngivenName: {given}\nsn: {sn}\nmail: {uid}@dir.lab.example\n\
             userPassword: {password}\n\n"
        ));
    }
    std::fs::write(dir.join("data.ldif"), ldif).unwrap();
    let loaded = Command::new(slapd_path().replace("slapd", "slapadd"))
        .arg("-f")
        .arg(&conf)
        .arg("-l")
        .arg(dir.join("data.ldif"))
        .output()
        .expect("slapadd");
    assert!(loaded.status.success(), "slapadd: {loaded:?}");

    let port = free_port();
    let ldaps_port = free_port();
    let url = format!("ldap://127.0.0.1:{port}/");
    // slapd runs as this process's user (no `-u`), so the key file openssl wrote (mode 600) is
    // readable by it, root or not.
    let listeners =
        format!("{url} ldaps://127.0.0.1:{ldaps_port}/ ldaps://127.0.0.2:{ldaps_port}/");
    let mut keeper = Command::new("sh")
        .arg("-c")
        .arg(r#""$1" -h "$2" -f "$3" -d 0 2>>"$4" & pid=$!; cat >/dev/null; kill "$pid"; wait "$pid""#)
        .arg("sh")
        .arg(slapd_path())
        .arg(&listeners)
        .arg(&conf)
        .arg(dir.join("slapd.log"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start slapd");
    let keeper_stdin = keeper.stdin.take().expect("keeper pipe");
    let deadline = Instant::now() + Duration::from_secs(60);
    for address in [
        ("127.0.0.1", port),
        ("127.0.0.1", ldaps_port),
        ("127.0.0.2", ldaps_port),
    ] {
        while std::net::TcpStream::connect(address).is_err() {
            assert!(
                Instant::now() < deadline,
                "slapd did not listen on {address:?}: {}",
                std::fs::read_to_string(dir.join("slapd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Directory {
        url,
        port,
        ldaps_port,
        ca_file: dir.join("ca.pem"),
        other_ca_file: dir.join("other-ca.pem"),
        dir,
        _keeper: Mutex::new((keeper, keeper_stdin)),
        _temp: temp,
    }
}

/// Changes the directory with `ldapmodify` as its root.
fn modify(ldif: &str) {
    let d = directory();
    let mut child = Command::new("ldapmodify")
        .args(["-x", "-H", &d.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ldapmodify (Debian: ldap-utils)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ldif.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "ldapmodify: {out:?}");
}

fn ldap_settings(url: &str, dir: &std::path::Path) -> LdapSettings {
    let password_file = dir.join("bind-password");
    std::fs::write(&password_file, format!("{ROOT_PASSWORD}\n")).unwrap();
    LdapSettings {
        url: url.to_string(),
        bind_dn: ROOT_DN.into(),
        bind_password_file: password_file.display().to_string(),
        user_search_base: format!("ou=people,{SUFFIX}"),
        user_filter: "(&(objectClass=inetOrgPerson)(uid={login}))".into(),
        admin_group: ADMIN_GROUP.into(),
        timeout_seconds: 5,
        ..LdapSettings::default()
    }
}

async fn app_with_directory(max_failed_logins: u32) -> TestApp {
    let d = directory();
    let ldap = ldap_settings(&d.url, &d.dir);
    spawn_app_configured(move |s: &mut Settings| {
        s.auth.ldap = ldap;
        s.auth.max_failed_logins = max_failed_logins;
    })
    .await
}

async fn sign_in_status(app: &Api, login: &str, password: &str) -> (StatusCode, serde_json::Value) {
    let response = app
        .client
        .post(app.url("/sessions"))
        .json(&json!({"loginName": login, "password": password}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

/// On the tests' engine (`LABCRON_TEST_LEDGER`; a flag is `1` on SQLite, `t` on PostgreSQL).
fn ledger_user(app: &TestApp, login: &str) -> (String, Option<String>, bool) {
    let rows = crate::common::ledger::sql_rows(
        &app.data_dir,
        &format!(
            "SELECT source, password_hash, admin FROM users WHERE login_name = '{}'",
            login.replace('\'', "''")
        ),
    );
    let [source, hash, admin] = <[Option<String>; 3]>::try_from(rows[0].clone()).unwrap();
    let admin = matches!(admin.as_deref(), Some("1") | Some("t"));
    (source.unwrap(), hash, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_users_sign_in_by_json_basic_and_the_page_and_are_made_then_refreshed() {
    let app = app_with_directory(50).await;
    // JSON sign-in: the account is made at the first success, from the directory.
    let (status, alice) = sign_in_status(&app, "Alice", "alice-directory-pw").await;
    assert_eq!(status, StatusCode::OK, "{alice}");
    assert_eq!(alice["loginName"], "alice");
    assert_eq!(alice["firstName"], "Alice");
    assert_eq!(alice["lastName"], "Adams");
    assert_eq!(alice["emailAddress"], "alice@dir.lab.example");
    assert_eq!(alice["admin"], true, "alice is in the admin group");
    assert_eq!(ledger_user(&app, "alice"), ("LDAP".into(), None, true));
    let (status, _) = sign_in_status(&app, "alice", "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Filter characters in a login are literal: `*` matches nobody.
    for login in ["*", "alice)(uid=*", "al*"] {
        let (status, body) = sign_in_status(&app, login, "alice-directory-pw").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{login}: {body}");
    }

    // Basic, on a route: bob is made as a plain user.
    let basic = app
        .client
        .get(app.url("/scheduled-jobs"))
        .basic_auth("bob", Some("bob-directory-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK);
    assert_eq!(ledger_user(&app, "bob"), ("LDAP".into(), None, false));
    let events = ok_json(app.get("/audit-events?actor=alice&action=SIGN_IN").await).await;
    assert_eq!(events.as_array().unwrap().len(), 1);

    // The page form.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = client
        .get(format!("{}/ui/sign-in", app.base))
        .send()
        .await
        .unwrap();
    let cookie = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("labcron_sign_in="))
        .expect("sign-in form cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = cookie.trim_start_matches("labcron_sign_in=").to_string();
    let posted = client
        .post(format!("{}/ui/sign-in", app.base))
        .header("Cookie", &cookie)
        .form(&[
            ("loginName", "bob"),
            ("password", "bob-directory-pw"),
            ("csrf", csrf.as_str()),
            ("next", "/ui/jobs"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::SEE_OTHER);
    assert!(
        posted.headers().get_all("set-cookie").iter().any(|v| v
            .to_str()
            .unwrap_or_default()
            .starts_with("labcron_session=")),
        "signed in by the page"
    );

    // Names and the admin flag are refreshed at each sign-in.
    modify(&format!(
        "dn: uid=bob,ou=people,{SUFFIX}\nchangetype: modify\nreplace: sn\nsn: Brown-Baker\n\n\
         dn: {ADMIN_GROUP}\nchangetype: modify\nadd: member\nmember: uid=bob,ou=people,{SUFFIX}\n"
    ));
    let (status, bob) = sign_in_status(&app, "bob", "bob-directory-pw").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bob["lastName"], "Brown-Baker");
    assert_eq!(bob["admin"], true);
    modify(&format!(
        "dn: {ADMIN_GROUP}\nchangetype: modify\ndelete: member\nmember: uid=bob,ou=people,{SUFFIX}\n"
    ));
    let (_, bob) = sign_in_status(&app, "bob", "bob-directory-pw").await;
    assert_eq!(
        bob["admin"], false,
        "removed from the group, no longer an admin"
    );

    // A directory account has no password here.
    let bob_id = bob["id"].as_i64().unwrap();
    let refused = app
        .put(
            &format!("/users/{bob_id}"),
            &json!({"password": "a-local-password"}),
        )
        .await;
    assert_eq!(
        error_codes(refused, StatusCode::BAD_REQUEST).await,
        ["USER_DIRECTORY_ACCOUNT"]
    );
    let refused = app
        .request(Method::PUT, "/users/password")
        .json(&json!({"userId": bob_id, "newPassword": "a-local-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_codes(refused, StatusCode::BAD_REQUEST).await,
        ["USER_DIRECTORY_ACCOUNT"]
    );
    // A disabled directory user cannot sign in, even with the right directory password.
    ok_json(app.delete(&format!("/users/{bob_id}")).await).await;
    let (status, _) = sign_in_status(&app, "bob", "bob-directory-pw").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_directory_accounts_never_share_a_name_and_the_throttle_applies() {
    let app = app_with_directory(3).await;
    // carol exists locally: the directory is never asked about her.
    ok_json(
        app.post(
            "/users",
            &json!({"loginName": "carol", "password": "carol-local-pw", "firstName": "Local"}),
        )
        .await,
    )
    .await;
    let (status, _) = sign_in_status(&app, "carol", "carol-directory-pw").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the directory's carol is not this carol"
    );
    let (status, carol) = sign_in_status(&app, "carol", "carol-local-pw").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(carol["firstName"], "Local");
    assert_eq!(ledger_user(&app, "carol").0, "LOCAL");
    // alice signs in from the directory; a local alice cannot be made then.
    let (status, _) = sign_in_status(&app, "alice", "alice-directory-pw").await;
    assert_eq!(status, StatusCode::OK);
    let clash = app
        .post(
            "/users",
            &json!({"loginName": "alice", "password": "alice-local-pw"}),
        )
        .await;
    assert_eq!(
        error_codes(clash, StatusCode::BAD_REQUEST).await,
        ["USER_DUP_LOGIN_NAME"]
    );

    // Failed directory sign-ins are throttled like local ones.
    for _ in 0..3 {
        let (status, _) = sign_in_status(&app, "dave", "not-daves-password").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = sign_in_status(&app, "dave", "dave-directory-pw").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let failed = ok_json(
        app.get("/audit-events?actor=dave&action=SIGN_IN_FAILED")
            .await,
    )
    .await;
    assert_eq!(failed.as_array().unwrap().len(), 4);
    // The local admin is unaffected.
    let (status, _) = sign_in_status(&app, "admin", ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_is_down_or_silent_answers_503_and_local_admins_still_sign_in() {
    // A listener that accepts and never answers (a hung directory), and a closed port.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let closed_port = free_port();
    for url in [
        format!("ldap://127.0.0.1:{silent_port}/"),
        format!("ldap://127.0.0.1:{closed_port}/"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut ldap = ldap_settings(&url, dir.path());
        ldap.timeout_seconds = 2;
        // spawn_app_configured signs the local admin in: that works with the directory down.
        let app = spawn_app_configured(move |s: &mut Settings| s.auth.ldap = ldap).await;
        let response = app
            .client
            .post(app.url("/sessions"))
            .json(&json!({"loginName": "alice", "password": "alice-directory-pw"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_codes(response, StatusCode::SERVICE_UNAVAILABLE).await,
            ["AUTH_DIRECTORY_UNAVAILABLE"],
            "{url}"
        );
        let basic = app
            .client
            .get(app.url("/users"))
            .basic_auth("alice", Some("alice-directory-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status(), StatusCode::SERVICE_UNAVAILABLE, "{url}");
        let (status, _) = sign_in_status(&app, "admin", ADMIN_PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{url}");
        let events = ok_json(
            app.get("/audit-events?action=SIGN_IN_FAILED&actor=alice")
                .await,
        )
        .await;
        assert_eq!(
            events[0]["detail"]["reason"],
            "the directory is unavailable"
        );
    }
    drop(silent);
}

/// `ldap_settings` for `url` with TLS as given: `start_tls`, and `ca_file` (empty: none).
fn tls_settings(url: &str, start_tls: bool, ca_file: &std::path::Path) -> LdapSettings {
    let d = directory();
    LdapSettings {
        start_tls,
        ca_file: ca_file.display().to_string(),
        ..ldap_settings(url, &d.dir)
    }
}

async fn app_with_ldap(ldap: LdapSettings) -> TestApp {
    spawn_app_configured(move |s: &mut Settings| s.auth.ldap = ldap).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_sign_in_over_ldaps_and_start_tls_trusts_the_ca_file() {
    let d = directory();
    // erin's password is only accepted over TLS: over plain ldap:// she cannot sign in, which
    // makes her sign-ins below the proof that the connection really was TLS.
    let plain = app_with_directory(50).await;
    let (status, body) = sign_in_status(&plain, TLS_ONLY, "erin-directory-pw").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "plain ldap:// for erin: {body}"
    );

    for (url, start_tls) in [
        // By address: the certificate's IP:127.0.0.1.
        (format!("ldaps://127.0.0.1:{}/", d.ldaps_port), false),
        // By name: its DNS:localhost, upgraded with StartTLS on the plain port.
        (format!("ldap://localhost:{}/", d.port), true),
    ] {
        let app = app_with_ldap(tls_settings(&url, start_tls, &d.ca_file)).await;
        let (status, alice) = sign_in_status(&app, "alice", "alice-directory-pw").await;
        assert_eq!(status, StatusCode::OK, "{url}: {alice}");
        assert_eq!(alice["lastName"], "Adams", "{url}");
        assert_eq!(
            alice["admin"], true,
            "{url}: the admin group is read over TLS too"
        );
        assert_eq!(
            ledger_user(&app, "alice"),
            ("LDAP".into(), None, true),
            "{url}"
        );
        let (status, erin) = sign_in_status(&app, TLS_ONLY, "erin-directory-pw").await;
        assert_eq!(status, StatusCode::OK, "{url}: {erin}");
        assert_eq!(erin["emailAddress"], "erin@dir.lab.example", "{url}");
        // A wrong password over TLS is still a wrong password, not a directory failure.
        let (status, _) = sign_in_status(&app, "alice", "wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{url}");
        let basic = app
            .client
            .get(app.url("/scheduled-jobs"))
            .basic_auth("bob", Some("bob-directory-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status(), StatusCode::OK, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_or_misnamed_directory_certificate_is_refused_with_503_and_admins_still_sign_in()
 {
    let d = directory();
    let none = std::path::Path::new("");
    let ldaps = format!("ldaps://127.0.0.1:{}/", d.ldaps_port);
    for (case, ldap) in [
        (
            "ldaps://, the system's store only",
            tls_settings(&ldaps, false, none),
        ),
        (
            "StartTLS, the system's store only",
            tls_settings(&format!("ldap://localhost:{}/", d.port), true, none),
        ),
        (
            "ldaps://, ca_file of another CA",
            tls_settings(&ldaps, false, &d.other_ca_file),
        ),
        (
            "ldaps:// by an address the certificate is not for",
            tls_settings(
                &format!("ldaps://127.0.0.2:{}/", d.ldaps_port),
                false,
                &d.ca_file,
            ),
        ),
    ] {
        let app = app_with_ldap(ldap).await;
        let response = app
            .client
            .post(app.url("/sessions"))
            .json(&json!({"loginName": "alice", "password": "alice-directory-pw"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_codes(response, StatusCode::SERVICE_UNAVAILABLE).await,
            ["AUTH_DIRECTORY_UNAVAILABLE"],
            "{case}"
        );
        let basic = app
            .client
            .get(app.url("/scheduled-jobs"))
            .basic_auth("alice", Some("alice-directory-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status(), StatusCode::SERVICE_UNAVAILABLE, "{case}");
        let (status, _) = sign_in_status(&app, "admin", ADMIN_PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{case}: the local admin signs in");
        let users = ok_json(app.get("/users").await).await;
        assert!(
            users
                .as_array()
                .unwrap()
                .iter()
                .all(|u| u["loginName"] != "alice"),
            "{case}: no account made: {users}"
        );
        let events = ok_json(
            app.get("/audit-events?action=SIGN_IN_FAILED&actor=alice")
                .await,
        )
        .await;
        assert_eq!(
            events[0]["detail"]["reason"], "the directory is unavailable",
            "{case}"
        );
    }
}

/// The real binary with JSON log lines, on a data directory of its own.
fn start_server(args: &[&str], envs: &[(&str, &str)]) -> Server {
    let mut launch = Launch::on_own_dir()
        .args(["--log-format", "json"])
        .args(args);
    for (name, value) in envs {
        launch = launch.env(name, value);
    }
    launch.start()
}

/// The `reason` of the log line saying the directory cannot be asked (waits for it), and the
/// log so far.
async fn refusal_reason(server: &Server) -> (String, Vec<String>) {
    let reason = server
        .wait_log("refusal", |l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["fields"]["message"] == "directory sign-in: the directory cannot be asked").then(
                || {
                    v["fields"]["reason"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                },
            )
        })
        .await;
    (reason, server.log_lines())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_log_says_why_the_directory_certificate_was_refused_and_no_secret() {
    let d = directory();
    let base = format!("ou=people,{SUFFIX}");
    let common = |url: String| {
        vec![
            "--auth-ldap-url".to_string(),
            url,
            "--auth-ldap-bind-dn".into(),
            ROOT_DN.into(),
            "--auth-ldap-user-search-base".into(),
            base.clone(),
            "--auth-ldap-user-filter".into(),
            "(uid={login})".into(),
        ]
    };
    let ca_file = d.ca_file.display().to_string();
    let secrets = [("LABCRON_AUTH_LDAP_BIND_PASSWORD", ROOT_PASSWORD)];

    // Not trusted: no ca_file, and the system's store does not know the test CA.
    let args = common(format!("ldaps://127.0.0.1:{}/", d.ldaps_port));
    let server = start_server(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &secrets,
    );
    let status = sign_in_status(&server.api(), "alice", "alice-directory-pw")
        .await
        .0;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (reason, lines) = refusal_reason(&server).await;
    assert!(reason.contains("certificate is not accepted"), "{reason}");
    assert!(reason.contains("not signed by a trusted CA"), "{reason}");
    assert!(
        reason.contains("auth.ldap.ca_file"),
        "the fix is named: {reason}"
    );
    for line in &lines {
        assert!(
            !line.contains(ROOT_PASSWORD),
            "bind password in the log: {line}"
        );
        assert!(
            !line.contains("alice-directory-pw"),
            "user password in the log: {line}"
        );
    }
    drop(server);

    // Trusted, but reached by an address the certificate is not for (ca_file by its flag).
    let mut args = common(format!("ldaps://127.0.0.2:{}/", d.ldaps_port));
    args.extend(["--auth-ldap-ca-file".to_string(), ca_file.clone()]);
    let server = start_server(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &secrets,
    );
    let status = sign_in_status(&server.api(), "alice", "alice-directory-pw")
        .await
        .0;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (reason, lines) = refusal_reason(&server).await;
    assert!(
        reason.contains("not valid for name \"127.0.0.2\""),
        "{reason}"
    );
    assert!(reason.contains(&ca_file), "{reason}");
    for line in &lines {
        assert!(
            !line.contains(ROOT_PASSWORD),
            "bind password in the log: {line}"
        );
        assert!(
            !line.contains("alice-directory-pw"),
            "user password in the log: {line}"
        );
    }
    drop(server);

    // Trusted and the right name (ca_file by its environment variable): the sign-in works.
    let args = common(format!("ldaps://localhost:{}/", d.ldaps_port));
    let server = start_server(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[secrets[0], ("LABCRON_AUTH_LDAP_CA_FILE", &ca_file)],
    );
    assert_eq!(
        sign_in_status(&server.api(), "alice", "alice-directory-pw")
            .await
            .0,
        StatusCode::OK
    );
}

/// Finding 8 of issue #11's trial: the directory matches a name without regard to case or width,
/// so every such spelling must be one account (named by the directory's own uid) and share one
/// throttle counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_width_and_mixed_spellings_are_one_directory_account_and_one_throttle_counter() {
    let app = app_with_directory(3).await;
    let (status, dave) = sign_in_status(&app, "dave", "dave-directory-pw").await;
    assert_eq!(status, StatusCode::OK, "{dave}");
    let id = dave["id"].as_i64().unwrap();
    for spelling in ["ＤＡＶＥ", "Ｄａｖｅ", "dａve", " DAVE\t"] {
        let (status, same) = sign_in_status(&app, spelling, "dave-directory-pw").await;
        assert_eq!(status, StatusCode::OK, "{spelling}: {same}");
        assert_eq!(same["id"], id, "{spelling} is dave's account");
        assert_eq!(same["loginName"], "dave", "{spelling}");
    }
    let accounts = crate::common::ledger::sql_i64(
        &app.data_dir,
        "SELECT count(*) FROM users WHERE NOT is_system AND source = 'LDAP'",
    );
    assert_eq!(accounts, 1, "no account under a typed spelling");

    // Three wrong passwords lock dave out, whatever spelling comes next.
    for spelling in ["dave", "ＤＡＶＥ", "Dave"] {
        let (status, _) = sign_in_status(&app, spelling, "wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{spelling}");
    }
    for spelling in ["Ｄａｖｅ", "dａve", "DAVE"] {
        let (status, body) = sign_in_status(&app, spelling, "dave-directory-pw").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{spelling}: {body}");
    }
}

/// The account is named by the entry's `login_attribute` (uid), not by what was typed: with a
/// filter that also matches the e-mail address, signing in by it makes the account `dave`, and
/// signing in by uid later finds that same account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_account_is_named_by_the_entry_s_uid_not_the_name_typed() {
    let d = directory();
    let mut ldap = ldap_settings(&d.url, &d.dir);
    ldap.user_filter = "(&(objectClass=inetOrgPerson)(|(uid={login})(mail={login})))".into();
    let app = app_with_ldap(ldap).await;
    let (status, by_mail) = sign_in_status(&app, "Dave@Dir.Lab.Example", "dave-directory-pw").await;
    assert_eq!(status, StatusCode::OK, "{by_mail}");
    assert_eq!(by_mail["loginName"], "dave");
    let (status, by_uid) = sign_in_status(&app, "dave", "dave-directory-pw").await;
    assert_eq!(status, StatusCode::OK, "{by_uid}");
    assert_eq!(by_uid["id"], by_mail["id"]);
    assert_eq!(
        crate::common::ledger::sql_i64(
            &app.data_dir,
            "SELECT count(*) FROM users WHERE NOT is_system AND source = 'LDAP'"
        ),
        1
    );
}
