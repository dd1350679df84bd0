//! Several nodes: three real binaries on one PostgreSQL database (a fresh database of the test
//! cluster, each node its own data directory), on-demand runs posted to every node plus
//! every-second CRON jobs. A cancel and a long-poll go through a node other than the one running
//! the run. Then the node holding the firing lock is SIGKILLed mid-load, later another. Checked
//! at the end: every accepted run is in the ledger and has ended; no run executed twice (each
//! run's script appends its id to one file); no job ever had two runs IN_PROGRESS (sampled all
//! along); no scheduled instant has two runs, and every instant between a job's first and last
//! fire either has its run or was counted (skipped busy, or missed while no node fired); the
//! killed nodes' runs FAILED "node <name> lost"; the survivor still fires; the ledger's
//! constraints hold. Figures printed: how long until a killed node was declared lost, and until
//! another node fired in place of the killed one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::common::postgres::{self, TestDb};
use crate::common::{Api, Launch, Server, announce, location_run_id, write_script};

/// A node silent this long is declared lost (short, so the suite stays short).
const NODE_TIMEOUT_SECONDS: u64 = 6;
/// Generous: a busy 2-core machine runs this.
const DEADLINE: Duration = Duration::from_secs(120);

struct Node {
    name: String,
    server: Option<Server>,
    api: Api,
    /// Its counters of skipped and missed fires, read just before it was killed.
    counted_at_kill: Option<u64>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn start_node(dir: &Path, name: &str, url: &str, ran: &Path) -> Server {
    start_node_timing_out(dir, name, url, ran, NODE_TIMEOUT_SECONDS)
}

fn start_node_timing_out(
    dir: &Path,
    name: &str,
    url: &str,
    ran: &Path,
    node_timeout_seconds: u64,
) -> Server {
    let data_dir = dir.join(name).join("data");
    // Every run appends its id to `ran` (and to `ran.finished` when its script ends); `long`
    // runs wait long enough to be caught by a kill, `fenced` ones past the outage suite's
    // node timeout (but not past its outage), `outage` ones until `ran.go` exists.
    write_script(
        &data_dir.join("scripts"),
        "work.sh",
        &format!(
            "#!/bin/sh\necho \"$LABCRON_RUN_ID\" >> {ran}\n\
             echo \"log of run $LABCRON_RUN_ID\"\n\
             printf '%s' \"$LABCRON_RUN_ID\" > \"$LABCRON_RESULT_DIR/ran.txt\"\n\
             case \"$1\" in long) sleep 15;; short) sleep 0.1;; fenced) sleep 30;;\n\
               outage) while [ ! -e {ran}.go ]; do sleep 0.1; done;; esac\n\
             echo \"$LABCRON_RUN_ID\" >> {ran}.finished\n",
            ran = ran.display()
        ),
    );
    Launch::new(&data_dir)
        .no_example_jobs()
        .args(["--database-url", url, "--node-name", name])
        .args(["--node-timeout-seconds", &node_timeout_seconds.to_string()])
        .args([
            "--runs-kill-grace-seconds",
            "1",
            "--runs-max-concurrent",
            "4",
        ])
        .start()
}

/// One number of a node's `/metrics` (summed over its label sets).
async fn metric(api: &Api, name: &str) -> u64 {
    let text = api
        .client
        .get(format!("{}/metrics", api.base))
        .header("X-OS-API-TOKEN", &api.token)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Fires a node counted as not made: skipped (the job was busy) or missed (nobody fired).
async fn fires_not_made(api: &Api) -> u64 {
    metric(api, "labcron_fires_skipped_busy_total").await
        + metric(api, "labcron_fires_missed_total").await
}

/// Which node's log says it fires the schedules now (the last such line of each log wins).
fn firing_node(nodes: &[Node]) -> Option<usize> {
    nodes.iter().position(|n| {
        n.server.as_ref().is_some_and(|s| {
            let lines = s.log_lines();
            let fires = lines
                .iter()
                .rposition(|l| l.contains("this node fires the schedules"));
            let stopped = lines
                .iter()
                .rposition(|l| l.contains("this node no longer fires the schedules"));
            fires.is_some() && fires > stopped
        })
    })
}

fn sql(db: &TestDb, query: &str) -> String {
    db.query_text(query)
}

fn sql_i64(db: &TestDb, query: &str) -> i64 {
    sql(db, &format!("SELECT ({query})::BIGINT::TEXT"))
        .parse()
        .expect("a number")
}

/// Waits until `query` (one number) is `want`.
async fn until_sql(db: &TestDb, query: &str, want: i64, what: &str) {
    let start = Instant::now();
    loop {
        let (db_name, q) = (db_clone(db), query.to_string());
        let got = tokio::task::spawn_blocking(move || sql_i64(&db_name, &q))
            .await
            .expect("query");
        if got == want {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "{what}: {got}, not {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn db_clone(db: &TestDb) -> TestDb {
    TestDb {
        name: db.name.clone(),
        owner: db.owner.clone(),
        password: db.password.clone(),
        port: db.port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_no_run_and_fire_each_instant_once_while_two_are_killed() {
    let _heavy = crate::HEAVY.lock().await;
    let db = tokio::task::spawn_blocking(|| postgres::server().create_database(""))
        .await
        .expect("a database");
    let url = db.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let ran = dir.path().join("ran");
    std::fs::write(&ran, "").expect("ran file");

    // The first node makes the schema and the admin; the others join it.
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let server = start_node(dir.path(), name, &url, &ran);
        let api = server.admin().await;
        nodes.push(Node {
            name: name.to_string(),
            server: Some(server),
            api,
            counted_at_kill: None,
        });
    }
    let admin = nodes[0].api.clone();
    let mut on_demand = Vec::new();
    for i in 0..5 {
        on_demand.push(
            admin
                .create_job(
                    &json!({"name": format!("on demand {i}"), "type": "EXTERNAL",
                    "command": "work.sh", "repeatSchedule": "ONDEMAND", "maxQueuedRuns": 1000,
                    "rtArgsProvided": true}),
                )
                .await,
        );
    }
    // Runs of these wait long enough for a kill to catch them.
    let mut long = Vec::new();
    for i in 0..6 {
        long.push(
            admin
                .create_job(&json!({"name": format!("long {i}"), "type": "EXTERNAL",
                    "command": "work.sh", "fixedArgs": "long", "repeatSchedule": "ONDEMAND",
                    "maxQueuedRuns": 1000}))
                .await,
        );
    }
    let mut every_second = Vec::new();
    for i in 0..3 {
        every_second.push(
            admin
                .create_job(
                    &json!({"name": format!("every second {i}"), "type": "EXTERNAL",
                    "command": "work.sh", "fixedArgs": "tick", "repeatSchedule": "CRON",
                    "cronExpression": "*/1 * * * * *"}),
                )
                .await,
        );
    }

    // Across nodes: a run executing on one node is cancelled through another, and a long-poll
    // through a third sees its end.
    let cancelled = admin.start_run(long[0], None).await;
    let executing = wait_for_node(&db, cancelled).await;
    let owner = nodes
        .iter()
        .position(|n| n.name == executing)
        .expect("a node");
    let via = &nodes[(owner + 1) % 3].api;
    let answer = via.cancel_run(long[0], cancelled).await;
    let poll = &nodes[(owner + 2) % 3].api;
    let ended = poll.wait_run(long[0], cancelled).await;
    assert_eq!(ended["status"], "FAILED", "{answer} / {ended}");
    assert!(
        ended["message"]
            .as_str()
            .is_some_and(|m| m.contains("cancelled by admin")),
        "{ended}"
    );
    let waited = poll.start_run(on_demand[4], Some("short")).await;
    let done = nodes[(owner + 1) % 3]
        .api
        .ok(
            Method::GET,
            &format!(
                "/scheduled-jobs/{}/runs/{waited}?waitSeconds=60",
                on_demand[4]
            ),
            None,
        )
        .await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");

    // The load: clients post to every node still up; a sampler watches the ledger.
    let accepted: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let bases: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(
        nodes.iter().map(|n| n.api.base.clone()).collect(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..3usize {
        let (accepted, bases, stop, posted) = (
            accepted.clone(),
            bases.clone(),
            stop.clone(),
            posted.clone(),
        );
        let (jobs, token) = (on_demand.clone(), admin.token.clone());
        clients.push(tokio::spawn(async move {
            let http = crate::common::client();
            let mut n = client;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let base = {
                    let bases = bases.lock().expect("bases");
                    bases[n % bases.len()].clone()
                };
                let sent = http
                    .post(format!(
                        "{base}/rest/ng/scheduled-jobs/{}/runs",
                        jobs[n % jobs.len()]
                    ))
                    .header("X-OS-API-TOKEN", &token)
                    .json(&json!({"args": "short"}))
                    .send()
                    .await;
                if let Ok(response) = sent
                    && response.status() == 200
                    && let Some(id) = location_run_id(&response)
                {
                    accepted.lock().expect("accepted").insert(id);
                    posted.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    let doubled = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (db, stop, doubled, samples) = (
            db_clone(&db),
            stop.clone(),
            doubled.clone(),
            samples.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let twice = sql_i64(
                    &db,
                    "SELECT count(*) FROM (SELECT job_id FROM runs WHERE status = 'IN_PROGRESS'
                     GROUP BY job_id HAVING count(*) > 1) t",
                );
                doubled.fetch_add(twice as usize, Ordering::Relaxed);
                samples.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // Kill the firing node mid-load, later another one.
    let mut kills: Vec<(String, i64)> = Vec::new();
    let mut firing_takeover_ms = None;
    for round in 0..2 {
        tokio::time::sleep(Duration::from_secs(6)).await;
        let start = Instant::now();
        let victim = loop {
            match firing_node(&nodes) {
                Some(i) if round == 0 => break i,
                Some(i) => {
                    break (i + 1..i + 3)
                        .map(|j| j % 3)
                        .find(|j| nodes[*j].server.is_some())
                        .expect("a node up");
                }
                None => {
                    assert!(start.elapsed() < DEADLINE, "no node fires the schedules");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        // The victim must hold runs to lose: long ones (15 s, so still running at the kill) are
        // queued through it (its own dispatcher is woken at once, so it tends to claim them)
        // until it executes one.
        let victim_name = nodes[victim].name.clone();
        let long_list = long
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let start = Instant::now();
        let mut next_long = 0;
        while sql_i64(
            &db,
            &format!(
                "SELECT count(*) FROM runs WHERE status = 'IN_PROGRESS' AND node = '{victim_name}' AND job_id IN ({long_list})"
            ),
        ) == 0
        {
            assert!(
                start.elapsed() < DEADLINE,
                "{victim_name} never executed a run"
            );
            let job = long[next_long % long.len()];
            next_long += 1;
            let response = nodes[victim]
                .api
                .post(&format!("/scheduled-jobs/{job}/runs"), &json!({}))
                .await;
            if response.status() == 200
                && let Some(id) = location_run_id(&response)
            {
                accepted.lock().expect("accepted").insert(id);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let counted = fires_not_made(&nodes[victim].api).await;
        nodes[victim].counted_at_kill = Some(counted);
        let base = nodes[victim].api.base.clone();
        bases.lock().expect("bases").retain(|b| *b != base);
        let killed_at = now_ms();
        nodes[victim].server.take().expect("up").kill();
        announce(&format!(
            "cluster suite: killed {} (round {round})",
            nodes[victim].name
        ));
        kills.push((nodes[victim].name.clone(), killed_at));
        if round == 0 {
            // Another node takes the firing lock and fires the next instants.
            let jobs = every_second
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let q = format!(
                "SELECT count(*) FROM runs WHERE job_id IN ({jobs}) AND queued_at > {killed_at}
                   AND run_trigger = 'SCHEDULED'"
            );
            until_sql(
                &db,
                &format!("LEAST(({q}), 1)"),
                1,
                "no fire after the kill",
            )
            .await;
            let first = sql_i64(
                &db,
                &format!(
                    "SELECT min(queued_at) FROM runs WHERE job_id IN ({jobs})
                       AND queued_at > {killed_at} AND run_trigger = 'SCHEDULED'"
                ),
            );
            firing_takeover_ms = Some(first - killed_at);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    sampler.join().expect("sampler");

    // The killed nodes are declared lost and their runs fail.
    for (name, _) in &kills {
        until_sql(
            &db,
            &format!("SELECT count(*) FROM runs WHERE status = 'IN_PROGRESS' AND node = '{name}'"),
            0,
            &format!("runs of {name} still IN_PROGRESS"),
        )
        .await;
    }
    let mut detection_ms = Vec::new();
    for (name, killed_at) in &kills {
        let lost = sql_i64(
            &db,
            &format!(
                "SELECT count(*) FROM runs WHERE node = '{name}' AND message = 'node {name} lost'"
            ),
        );
        assert!(lost > 0, "no run of {name} FAILED \"node {name} lost\"");
        assert_eq!(
            sql(
                &db,
                &format!(
                    "SELECT string_agg(DISTINCT status, ',') FROM runs WHERE node = '{name}' AND message = 'node {name} lost'"
                )
            ),
            "FAILED"
        );
        let first = sql_i64(
            &db,
            &format!("SELECT min(finished_at) FROM runs WHERE message = 'node {name} lost'"),
        );
        detection_ms.push(first - killed_at);
        assert!(
            first >= *killed_at,
            "{name} declared lost before it was killed"
        );
    }

    // Every accepted run is in the ledger and ends.
    let accepted: Vec<i64> = {
        let mut ids: Vec<i64> = accepted.lock().expect("accepted").iter().copied().collect();
        ids.sort();
        ids
    };
    assert!(
        accepted.len() > 20,
        "too little load: {} runs",
        accepted.len()
    );
    let list = accepted
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        sql_i64(
            &db,
            &format!("SELECT count(*) FROM runs WHERE id IN ({list})")
        ),
        accepted.len() as i64,
        "an accepted run is missing from the ledger"
    );
    until_sql(
        &db,
        &format!(
            "SELECT count(*) FROM runs WHERE id IN ({list}) AND status IN ('QUEUED', 'IN_PROGRESS')"
        ),
        0,
        "accepted runs not ended",
    )
    .await;

    // No run executed twice; every run that succeeded executed (once). The runs that ended
    // are read before the file, as the CRON jobs go on firing.
    let succeeded: Vec<i64> = sql(
        &db,
        "SELECT coalesce(string_agg(id::TEXT, ','), '') FROM runs WHERE status = 'SUCCEEDED'",
    )
    .split(',')
    .filter_map(|s| s.parse().ok())
    .collect();
    let ran_ids: Vec<i64> = std::fs::read_to_string(&ran)
        .expect("ran")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let mut seen = HashMap::new();
    for id in &ran_ids {
        *seen.entry(*id).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "runs executed twice: {twice:?}");
    let not_run: Vec<_> = succeeded
        .iter()
        .filter(|id| !seen.contains_key(id))
        .collect();
    assert!(
        not_run.is_empty(),
        "SUCCEEDED without executing: {not_run:?}"
    );

    // At most one run of a job IN_PROGRESS at any sample.
    assert!(samples.load(Ordering::Relaxed) > 10);
    assert_eq!(
        doubled.load(Ordering::Relaxed),
        0,
        "a job had two runs IN_PROGRESS"
    );

    // Each scheduled instant fired once, and none went missing uncounted.
    assert_eq!(
        sql_i64(
            &db,
            "SELECT count(*) FROM (SELECT job_id, scheduled_for FROM runs WHERE scheduled_for IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1) t"
        ),
        0,
        "an instant fired twice"
    );
    let mut gaps = 0u64;
    let mut fired: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for job in &every_second {
        let instants: Vec<i64> = sql(&db, &format!("SELECT string_agg(scheduled_for::TEXT, ',' ORDER BY scheduled_for) FROM runs WHERE job_id = {job} AND run_trigger = 'SCHEDULED'"))
            .split(',')
            .filter_map(|s| s.parse().ok())
            .collect();
        assert!(
            instants.len() > 10,
            "job {job} fired {} times",
            instants.len()
        );
        for pair in instants.windows(2) {
            gaps += ((pair[1] - pair[0]) / 1000 - 1) as u64;
        }
        fired.insert(*job, instants);
    }
    let mut counted: u64 = nodes.iter().filter_map(|n| n.counted_at_kill).sum();
    for node in nodes.iter().filter(|n| n.server.is_some()) {
        counted += fires_not_made(&node.api).await;
    }
    assert!(
        gaps <= counted,
        "{gaps} instants were neither fired nor counted as skipped or missed ({counted} counted)"
    );
    // The survivor fires: its jobs' last instants are after the second kill.
    let last_kill = kills.last().expect("kills").1;
    for (job, instants) in &fired {
        assert!(
            instants.last().is_some_and(|last| *last > last_kill),
            "job {job} stopped firing after the second kill"
        );
    }

    // The ledger's constraints hold.
    assert_eq!(
        sql_i64(
            &db,
            "SELECT count(*) FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid WHERE t.relname = 'runs' AND NOT c.convalidated"
        ),
        0
    );
    assert_eq!(
        sql_i64(
            &db,
            "SELECT count(*) FROM runs r LEFT JOIN jobs j ON j.id = r.job_id WHERE j.id IS NULL"
        ),
        0
    );
    assert_eq!(
        sql_i64(
            &db,
            "SELECT count(*) FROM runs WHERE status IN ('SUCCEEDED', 'FAILED') AND finished_at IS NULL"
        ),
        0
    );

    // A run and its log are served by the survivor, whichever node ran it.
    let survivor = nodes
        .iter()
        .find(|n| n.server.is_some())
        .expect("a survivor");
    let run = survivor
        .api
        .ok(
            Method::GET,
            &format!("/scheduled-jobs/{}/runs/{waited}", on_demand[4]),
            None,
        )
        .await;
    assert_eq!(run["status"], "SUCCEEDED");

    // The log and result file of a run a killed node executed download from the survivor (run
    // files are kept in the database, not on the node's disk).
    for killed in nodes.iter().filter(|n| n.server.is_none()) {
        let found = sql(
            &db,
            &format!(
                "SELECT coalesce(min(id)::TEXT || ' ' || min(job_id)::TEXT, '') FROM runs \
                 WHERE id = (SELECT min(id) FROM runs WHERE status = 'SUCCEEDED' AND node = '{}')",
                killed.name
            ),
        );
        let (run_id, job_id) = found
            .split_once(' ')
            .unwrap_or_else(|| panic!("a SUCCEEDED run executed by {}", killed.name));
        let result = survivor
            .api
            .get(&format!(
                "/scheduled-jobs/{job_id}/runs/{run_id}/result-file"
            ))
            .await;
        assert_eq!(
            result.status(),
            200,
            "result of run {run_id} from {}",
            killed.name
        );
        assert_eq!(result.text().await.expect("result body"), run_id);
        let log = survivor
            .api
            .get(&format!("/scheduled-jobs/{job_id}/runs/{run_id}/log"))
            .await;
        assert_eq!(
            log.status(),
            200,
            "log of run {run_id} from {}",
            killed.name
        );
        let text = log.text().await.expect("log body");
        assert!(
            text.contains(&format!("log of run {run_id}")),
            "log of run {run_id} executed by {}: {text:?}",
            killed.name
        );
    }

    announce(&format!(
        "cluster suite: {} runs accepted, {} executions, {} fires; declared lost after {:?} ms \
         (timeout {NODE_TIMEOUT_SECONDS} s); another node fired {} ms after the firing node was \
         killed; {gaps} instants not fired, {counted} counted skipped or missed",
        accepted.len(),
        ran_ids.len(),
        fired.values().map(Vec::len).sum::<usize>(),
        detection_ms,
        firing_takeover_ms.unwrap_or(-1),
    ));
}

/// Waits until the run has started and returns the node executing it.
async fn wait_for_node(db: &TestDb, run_id: i64) -> String {
    let start = Instant::now();
    loop {
        let node = sql(
            db,
            &format!(
                "SELECT coalesce(max(node), '') FROM runs WHERE id = {run_id} AND status = 'IN_PROGRESS'"
            ),
        );
        if !node.is_empty() {
            return node;
        }
        assert!(start.elapsed() < DEADLINE, "run {run_id} never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_calls_answer_503_and_runs_end_when_it_is_back() {
    let _heavy = crate::HEAVY.lock().await;
    // A server of its own: this test stops it.
    let pg = Arc::new(
        tokio::task::spawn_blocking(postgres::start_own)
            .await
            .expect("a PostgreSQL"),
    );
    let db = {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.create_database(""))
            .await
            .expect("a database")
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let ran = dir.path().join("ran");
    let mut nodes = Vec::new();
    for name in ["d1", "d2"] {
        let server = start_node(dir.path(), name, &db.url(), &ran);
        let api = server.admin().await;
        nodes.push((server, api));
    }
    let admin = nodes[0].1.clone();
    let mut jobs = Vec::new();
    for i in 0..2 {
        jobs.push(
            admin
                .create_job(
                    &json!({"name": format!("through the outage {i}"), "type": "EXTERNAL",
                    "command": "work.sh", "fixedArgs": "outage", "repeatSchedule": "ONDEMAND"}),
                )
                .await,
        );
    }
    // A long run, still executing when its node has been silent for longer than the timeout.
    let long = admin
        .create_job(
            &json!({"name": "cut off", "type": "EXTERNAL", "command": "work.sh",
            "fixedArgs": "fenced", "repeatSchedule": "ONDEMAND"}),
        )
        .await;
    let fenced = admin.start_run(long, None).await;
    // A run through each node, both executing when the database goes, ending just after.
    let mut runs = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        runs.push(nodes[i].1.start_run(*job, None).await);
    }
    let list = runs
        .iter()
        .chain([&fenced])
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    until_sql(
        &db,
        &format!("SELECT count(*) FROM runs WHERE id IN ({list}) AND status = 'IN_PROGRESS'"),
        3,
        "runs not started",
    )
    .await;
    // Their scripts have started (each writes its id first).
    let start = Instant::now();
    while std::fs::read_to_string(&ran)
        .unwrap_or_default()
        .lines()
        .count()
        < 3
    {
        assert!(start.elapsed() < DEADLINE, "the scripts never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The first run's log followed through the other node, plain and as SSE, across the
    // outage: both streams wait for the database and reach the run's end.
    let path = format!(
        "/scheduled-jobs/{}/runs/{}/log?follow=true",
        jobs[0], runs[0]
    );
    let plain = nodes[1]
        .1
        .request(Method::GET, &path)
        .send()
        .await
        .expect("a followed log");
    let sse = nodes[1]
        .1
        .request(Method::GET, &path)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .expect("a followed log as SSE");
    assert_eq!((plain.status().as_u16(), sse.status().as_u16()), (200, 200));
    let plain = tokio::spawn(plain.text());
    let sse = tokio::spawn(sse.text());

    let down_at = Instant::now();
    {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.pause())
            .await
            .expect("stopped");
    }
    std::fs::write(dir.path().join("ran.go"), "").expect("go");
    for (_, api) in &nodes {
        let response = api.get("/scheduled-jobs").await;
        assert_eq!(response.status(), 503);
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        assert_eq!(body[0]["code"], "LEDGER_UNAVAILABLE", "{body}");
        assert!(body[0]["message"].is_string(), "{body}");
        // A signed-in page says the database is away; it does not send the user to sign in.
        let page = api
            .client
            .get(format!("{}/ui/jobs", api.base))
            .header("Cookie", format!("labcron_session={}", api.token))
            .send()
            .await
            .expect("the jobs page");
        assert_eq!(page.status(), 503, "{:?}", page.headers());
        let text = page.text().await.expect("the page's text");
        assert!(text.contains("database is unavailable"), "{text}");
    }
    // Down for longer than the node timeout (when it is back, nobody may call the others lost),
    // and longer than the ~31 s after which storing a finished run's files used to give up.
    let outage = Duration::from_secs(40);
    if let Some(left) = outage.checked_sub(down_at.elapsed()) {
        tokio::time::sleep(left).await;
    }
    {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.resume())
            .await
            .expect("started");
    }
    announce(&format!(
        "cluster suite: the database was down for {} ms",
        down_at.elapsed().as_millis()
    ));

    // The runs ended during the outage; their ends are written now, by their own nodes.
    // Their logs and results are whole, and each run executed once.
    for (job, run) in jobs.iter().zip(&runs) {
        let ended = admin.wait_run(*job, *run).await;
        assert_eq!(ended["status"], "SUCCEEDED", "{ended}");
        let log = admin
            .get(&format!("/scheduled-jobs/{job}/runs/{run}/log"))
            .await;
        assert_eq!(log.status(), 200);
        let log = log.text().await.expect("the log");
        assert!(log.contains(&format!("log of run {run}\n")), "{log:?}");
        let result = admin
            .get(&format!("/scheduled-jobs/{job}/runs/{run}/result-file"))
            .await;
        assert_eq!(result.status(), 200);
        assert_eq!(result.text().await.expect("the result"), run.to_string());
    }
    let plain = plain
        .await
        .expect("joined")
        .expect("the whole followed log");
    assert!(
        plain.contains(&format!("log of run {}\n", runs[0])),
        "{plain:?}"
    );
    let sse = sse.await.expect("joined").expect("the whole event stream");
    assert!(
        sse.contains(&format!("data: log of run {}", runs[0])),
        "{sse:?}"
    );
    assert!(sse.ends_with("event: end\ndata: SUCCEEDED\n\n"), "{sse:?}");
    // The long run's node, cut off past the timeout, killed its process (it never finished its
    // script) and wrote its end when the database was back.
    let cut_off = admin.wait_run(long, fenced).await;
    assert_eq!(cut_off["status"], "FAILED", "{cut_off}");
    assert!(
        cut_off["message"]
            .as_str()
            .is_some_and(|m| m.contains("cut off from the database")),
        "{cut_off}"
    );
    let finished = std::fs::read_to_string(dir.path().join("ran.finished")).unwrap_or_default();
    assert!(
        !finished.lines().any(|l| l == fenced.to_string()),
        "{finished}"
    );
    let ran_ids = std::fs::read_to_string(&ran).expect("the runs' record");
    for run in &runs {
        let times = ran_ids.lines().filter(|l| *l == run.to_string()).count();
        assert_eq!(times, 1, "run {run} executed {times} times: {ran_ids}");
    }
    // A few heartbeats later, still nobody lost, and both nodes run new work.
    tokio::time::sleep(Duration::from_secs(NODE_TIMEOUT_SECONDS)).await;
    assert_eq!(
        sql_i64(
            &db,
            "SELECT count(*) FROM runs WHERE message LIKE 'node % lost'"
        ),
        0
    );
    assert_eq!(
        sql_i64(&db, "SELECT count(*) FROM nodes WHERE lost_at IS NULL"),
        2
    );
    for (i, (_, api)) in nodes.iter().enumerate() {
        let run = api.run_to_end(jobs[i], None).await;
        assert_eq!(run["status"], "SUCCEEDED", "{run}");
    }
    drop(nodes);
    tokio::task::spawn_blocking(move || pg.stop())
        .await
        .expect("stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_past_the_timeout_is_declared_lost_and_comes_back_without_overwriting() {
    let _heavy = crate::HEAVY.lock().await;
    let TwoNodes {
        db,
        dir: _dir,
        ran: _,
        nodes,
    } = two_nodes(["f1", "f2"], NODE_TIMEOUT_SECONDS).await;
    let admin = nodes[0].2.clone();
    let long = admin
        .create_job(
            &json!({"name": "long", "type": "EXTERNAL", "command": "work.sh",
            "fixedArgs": "long", "repeatSchedule": "ONDEMAND"}),
        )
        .await;
    let quick = admin
        .create_job(
            &json!({"name": "quick", "type": "EXTERNAL", "command": "work.sh",
            "fixedArgs": "short", "repeatSchedule": "ONDEMAND"}),
        )
        .await;
    let run = admin.start_run(long, None).await;
    let executing = wait_for_node(&db, run).await;
    let frozen = nodes.iter().position(|n| n.0 == executing).expect("a node");
    let other = &nodes[1 - frozen].2;
    let before = sql(
        &db,
        &format!("SELECT incarnation FROM nodes WHERE name = '{executing}'"),
    );

    // Frozen (SIGSTOP) for longer than the timeout: the other node declares it lost.
    let pid = nodes[frozen].1.pid() as i32;
    // SAFETY: signals to a child process of this test.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let failed = other.wait_run(long, run).await;
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(
        failed["message"].as_str(),
        Some(format!("node {executing} lost").as_str())
    );

    // Woken, it finds itself lost: it kills the run, writes nothing of it, and joins again.
    let start = Instant::now();
    loop {
        let now = sql(
            &db,
            &format!(
                "SELECT incarnation || CASE WHEN lost_at IS NULL THEN '' ELSE ' lost' END
                 FROM nodes WHERE name = '{executing}'"
            ),
        );
        if now != before && !now.ends_with(" lost") {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{executing} never joined again: {now}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = admin
        .ok(
            Method::GET,
            &format!("/scheduled-jobs/{long}/runs/{run}"),
            None,
        )
        .await;
    assert_eq!(after["status"], "FAILED", "{after}");
    assert_eq!(after["message"], failed["message"], "{after}");
    assert_eq!(after["finishedAt"], failed["finishedAt"], "{after}");
    // It works again, under its new incarnation: a run through it ends there.
    let api = &nodes[frozen].2;
    let start = Instant::now();
    loop {
        let id = api.start_run(quick, None).await;
        let ended = api.wait_run(quick, id).await;
        assert_eq!(ended["status"], "SUCCEEDED", "{ended}");
        let on = sql(&db, &format!("SELECT node FROM runs WHERE id = {id}"));
        if on == executing {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{executing} executes nothing any more"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_whose_name_was_taken_over_stops_on_waking_and_never_takes_it_back() {
    let _heavy = crate::HEAVY.lock().await;
    let db = tokio::task::spawn_blocking(|| postgres::server().create_database(""))
        .await
        .expect("a database");
    let dir = tempfile::tempdir().expect("temp dir");
    let ran = dir.path().join("ran");
    let old = start_node(dir.path(), "same", &db.url(), &ran);
    let admin = old.admin().await;
    let long = admin
        .create_job(
            &json!({"name": "long", "type": "EXTERNAL", "command": "work.sh",
            "fixedArgs": "long", "repeatSchedule": "ONDEMAND"}),
        )
        .await;
    let quick = admin
        .create_job(
            &json!({"name": "quick", "type": "EXTERNAL", "command": "work.sh",
            "fixedArgs": "short", "repeatSchedule": "ONDEMAND"}),
        )
        .await;
    let run = admin.start_run(long, None).await;
    wait_for_node(&db, run).await;
    let incarnation = "SELECT incarnation || CASE WHEN lost_at IS NULL THEN '' ELSE ' lost' END \
                       FROM nodes WHERE name = 'same'";
    let first = sql(&db, incarnation);

    // Frozen; a second process under the same name (in a data directory of its own) finds the
    // name silent and takes it over.
    let pid = old.pid() as i32;
    // SAFETY: signals to a child process of this test.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let new = start_node(&dir.path().join("second"), "same", &db.url(), &ran);
    let new_api = new.admin().await;
    let second = sql(&db, incarnation);
    assert_ne!(second, first);
    assert!(!second.ends_with(" lost"), "{second}");
    let before_waking = new_api
        .ok(
            Method::GET,
            &format!("/scheduled-jobs/{long}/runs/{run}"),
            None,
        )
        .await;
    // The firing lock the frozen one held passes to it (the old lock connection is ended).
    new.wait_log("firing", |l| {
        l.contains("this node fires the schedules").then_some(())
    })
    .await;
    // Its start failed the run left IN_PROGRESS under the name (as after a crash).
    assert_eq!(before_waking["status"], "FAILED", "{before_waking}");

    // Woken, the first finds its name taken: it stops with an error and never takes it back.
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    let (old, exited) = tokio::task::spawn_blocking(move || {
        let mut old = old;
        let exited = old.wait_exit(DEADLINE);
        (old, exited)
    })
    .await
    .expect("waited");
    let exited = exited.unwrap_or_else(|| {
        panic!(
            "the replaced process did not stop: {}",
            sql(&db, incarnation)
        )
    });
    assert!(!exited.success(), "{exited:?}");
    assert!(
        old.log_text()
            .contains("another labcron process took the node name `same` over"),
        "{}",
        old.log_tail()
    );
    assert_eq!(sql(&db, incarnation), second);
    // Nothing it did after waking was written: the run is as the new process left it.
    let after = new_api
        .ok(
            Method::GET,
            &format!("/scheduled-jobs/{long}/runs/{run}"),
            None,
        )
        .await;
    assert_eq!(after["status"], before_waking["status"], "{after}");
    assert_eq!(after["message"], before_waking["message"], "{after}");
    assert_eq!(after["finishedAt"], before_waking["finishedAt"], "{after}");
    // The name's new holder goes on: a few heartbeats later it is still not lost, and runs work.
    tokio::time::sleep(Duration::from_secs(NODE_TIMEOUT_SECONDS)).await;
    assert_eq!(sql(&db, incarnation), second);
    let done = new_api.run_to_end(quick, None).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    drop(new);
}

/// Two nodes on a fresh database, each with the suite's scripts, and the file their runs write.
struct TwoNodes {
    db: TestDb,
    dir: tempfile::TempDir,
    ran: std::path::PathBuf,
    nodes: Vec<(&'static str, Server, Api)>,
}

async fn two_nodes(names: [&'static str; 2], node_timeout_seconds: u64) -> TwoNodes {
    let db = tokio::task::spawn_blocking(|| postgres::server().create_database(""))
        .await
        .expect("a database");
    let dir = tempfile::tempdir().expect("temp dir");
    let ran = dir.path().join("ran");
    let mut nodes = Vec::new();
    for name in names {
        let server = start_node_timing_out(dir.path(), name, &db.url(), &ran, node_timeout_seconds);
        let api = server.admin().await;
        nodes.push((name, server, api));
    }
    TwoNodes {
        db,
        dir,
        ran,
        nodes,
    }
}

/// The node whose connection holds the firing lock now, by the database ('' if none).
fn lock_holder(db: &TestDb) -> String {
    sql(
        db,
        "SELECT coalesce(max(substr(a.application_name, 14)), '') FROM pg_stat_activity a
         JOIN pg_locks l ON l.pid = a.pid
         WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'labcron fire %'",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_firing_node_is_replaced_before_it_is_declared_lost() {
    let _heavy = crate::HEAVY.lock().await;
    // The default timeout: a hung node is declared lost after 30 s, and loses the firing lock
    // after 15 s of silence.
    let timeout = 30;
    let TwoNodes {
        db,
        dir: _dir,
        ran,
        nodes,
    } = two_nodes(["h1", "h2"], timeout).await;
    let job = nodes[0]
        .2
        .create_job(
            &json!({"name": "every second", "type": "EXTERNAL", "command": "work.sh",
            "fixedArgs": "tick", "repeatSchedule": "CRON", "cronExpression": "*/1 * * * * *"}),
        )
        .await;
    let start = Instant::now();
    let fires = loop {
        let fires = lock_holder(&db);
        let fired = sql_i64(
            &db,
            &format!("SELECT count(*) FROM runs WHERE job_id = {job}"),
        );
        if !fires.is_empty() && fired > 0 {
            break fires;
        }
        assert!(start.elapsed() < DEADLINE, "nothing fired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let hung = nodes.iter().position(|n| n.0 == fires).expect("a node");
    let other = nodes[1 - hung].0;

    // Hung (SIGSTOP): its connections stay open, the firing lock with them.
    let pid = nodes[hung].1.pid() as i32;
    let hung_at = now_ms();
    // SAFETY: signals to a child process of this test.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let fired_after =
        format!("SELECT count(*) FROM runs WHERE job_id = {job} AND queued_at > {hung_at} + 1000");
    let start = Instant::now();
    while sql_i64(&db, &fired_after) == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "nothing fired while {fires} was hung"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took_over_ms = sql_i64(
        &db,
        &format!(
            "SELECT min(queued_at) FROM runs WHERE job_id = {job} AND queued_at > {hung_at} + 1000"
        ),
    ) - hung_at;
    let lost = sql(
        &db,
        &format!("SELECT (lost_at IS NOT NULL)::TEXT FROM nodes WHERE name = '{fires}'"),
    );
    let holder = lock_holder(&db);
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    announce(&format!(
        "cluster suite: {other} fired {took_over_ms} ms after the firing node {fires} hung \
         (node timeout {timeout} s)"
    ));
    assert_eq!(lost, "false", "the takeover waited for the declaration");
    assert_eq!(holder, other);
    assert!(
        took_over_ms < (timeout as i64) * 1000,
        "took {took_over_ms} ms"
    );
    // Woken within the timeout, it is not lost, and no run executed twice.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        sql_i64(&db, "SELECT count(*) FROM nodes WHERE lost_at IS NULL"),
        2
    );
    let ran_ids = std::fs::read_to_string(&ran).expect("the runs' record");
    let mut seen = HashSet::new();
    for id in ran_ids.lines() {
        assert!(seen.insert(id), "run {id} executed twice");
    }
    let api = &nodes[hung].2;
    let run = api.run_to_end(job, None).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    drop(nodes);
}
