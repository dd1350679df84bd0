//! QUERY jobs on a PostgreSQL data source, against the private test server (`shared/postgres.rs`).

use crate::postgres;

#[test]
fn the_private_server_runs_unprivileged_and_answers() {
    let server = postgres::server();
    let db = server.create_database("CREATE TABLE t (x int); INSERT INTO t VALUES (41);");
    assert_eq!(db.query_text("SELECT (x + 1)::text FROM t"), "42");
    let user = db.query_text("SELECT current_user::text");
    assert_eq!(user, db.owner);
    let pid = server.pid().expect("running");
    let owner = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = owner
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    // SAFETY: no preconditions.
    let me = unsafe { libc::geteuid() };
    if me == 0 {
        assert!(
            !uid_line.contains("\t0\t"),
            "postgres runs as root: {uid_line}"
        );
    } else {
        assert!(uid_line.contains(&format!("\t{me}\t")), "{uid_line}");
    }
}
