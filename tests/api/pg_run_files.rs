//! Run files kept in PostgreSQL (`run_files::RunFiles::Database`, `store::files::DbFiles`),
//! called straight from the library on a fresh database of the private test server: a log copied
//! up while its run executes and read back at any offset, a result file copied up at the end and
//! read by ranges across piece boundaries, a result of 0 bytes, deletion by kind (the files
//! cleaner, retention), a chained run's copy of its upstream result, and a database that refuses
//! the pieces (the run's files are not kept: the executor fails the run).

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use labcron::domain::ids::{JobId, RunId, RunOfJob};
use labcron::domain::run::Run;
use labcron::query::csv::Guard;
use labcron::run_files::{LogUpload, ResultBytes, RunFiles};
use labcron::store::files::{DbFiles, FileKind, PIECE_BYTES};
use labcron::store::ledger::RunLedger;
use labcron::store::postgres::PgLedgerDb;

use crate::postgres::{self, TestDb};

/// A fresh PostgreSQL ledger, its run files, and a data directory for executing runs.
struct Fixture {
    db: TestDb,
    pg: PgLedgerDb,
    files: DbFiles,
    run_files: RunFiles,
    _data: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl Fixture {
    fn new() -> Fixture {
        let db = postgres::server().create_database("");
        let pg = PgLedgerDb::open(&db.url()).unwrap();
        let files = DbFiles::new(pg.clone());
        let data = tempfile::tempdir().unwrap();
        let run_files = RunFiles::Database {
            data_dir: data.path().to_path_buf(),
            files: files.clone(),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Fixture {
            db,
            pg,
            files,
            run_files,
            _data: data,
            rt,
        }
    }

    /// A new job with one IN_PROGRESS run, and that run's local directories.
    fn executing_run(&self) -> RunOfJob {
        let ids = self.db.query_text(
            "WITH u AS (SELECT min(id) AS id FROM users),
                  j AS (INSERT INTO jobs (name, type, repeat_schedule, timezone, start_date,
                          activity_status, created_by, timeout_seconds, max_queued_runs,
                          created_at, updated_at)
                        SELECT 'job ' || gen_random_uuid(), 'EXTERNAL', 'ONDEMAND', 'UTC', 0,
                               'Active', u.id, 60, 10, 0, 0 FROM u RETURNING id)
             INSERT INTO runs (job_id, status, run_trigger, run_by, queued_at, started_at)
             SELECT j.id, 'IN_PROGRESS', 'MANUAL', u.id, 0, 0 FROM j, u
             RETURNING job_id::text || ',' || id::text",
        );
        let (job, run) = ids.split_once(',').unwrap();
        let ids = RunOfJob::new(JobId(job.parse().unwrap()), RunId(run.parse().unwrap()));
        let paths = self.run_files.paths(ids);
        std::fs::create_dir_all(&paths.result_dir).unwrap();
        std::fs::create_dir_all(&paths.work_dir).unwrap();
        ids
    }

    /// Records the run's end as the executor would: SUCCEEDED at `finished_at`, with its result.
    fn finish(&self, ids: RunOfJob, finished_at: i64, result: Option<(&str, i64)>) -> Run {
        let (file, size) = match result {
            Some((file, size)) => (format!("'{file}'"), size.to_string()),
            None => ("NULL".into(), "NULL".into()),
        };
        self.db.query_text(&format!(
            "UPDATE runs SET status = 'SUCCEEDED', finished_at = {finished_at},
                 result_file = {file}, result_file_size = {size}
             WHERE id = {} RETURNING id::text",
            ids.run.0
        ));
        self.run(ids)
    }

    fn run(&self, ids: RunOfJob) -> Run {
        self.pg
            .read(|pg| pg.run(ids.run.0))
            .unwrap()
            .expect("the run")
    }

    fn log_size_noted(&self, ids: RunOfJob) -> u64 {
        self.db
            .query_text(&format!(
                "SELECT log_size::text FROM runs WHERE id = {}",
                ids.run.0
            ))
            .parse()
            .unwrap()
    }

    /// The whole stored log, read through `RunFiles::read_log` from `offset` in `chunk`s.
    fn read_log_from(&self, ids: RunOfJob, offset: u64, chunk: usize) -> Vec<u8> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut at = offset;
            loop {
                let (bytes, next) = self.run_files.read_log(ids, at, chunk).await.unwrap();
                if bytes.is_empty() {
                    return out;
                }
                assert_eq!(next, at + bytes.len() as u64);
                out.extend_from_slice(&bytes);
                at = next;
            }
        })
    }

    /// Bytes `[from, from + len)` of the run's stored result, as a download streams them.
    fn result_range(&self, run: &Run, from: u64, len: u64) -> (u64, Vec<u8>) {
        self.rt.block_on(async {
            let ResultBytes::Stored(stored) = self.run_files.open_result(run).await.unwrap() else {
                panic!("a stored result");
            };
            let mut body = Vec::new();
            let mut stream = std::pin::pin!(stored.stream(from, len));
            while let Some(piece) = stream.next().await {
                body.extend_from_slice(&piece.unwrap());
            }
            (stored.size, body)
        })
    }

    /// The log's pieces as (offset, length), in order.
    fn layout(&self, ids: RunOfJob) -> Vec<(u64, u64)> {
        layout_of(&self.db.query_text(&format!(
            "SELECT COALESCE(string_agg(start_at::text || '+' || length(data)::text, ' '
                                        ORDER BY start_at), '')
             FROM run_files WHERE run_id = {} AND kind = 'LOG'",
            ids.run.0
        )))
    }

    fn pieces(&self, ids: RunOfJob, kind: FileKind) -> usize {
        self.db
            .query_text(&format!(
                "SELECT count(*)::text FROM run_files WHERE run_id = {} AND kind = '{}'",
                ids.run.0,
                kind.as_str()
            ))
            .parse()
            .unwrap()
    }
}

/// Pieces written `offset+length offset+length …`, as (offset, length).
fn layout_of(text: &str) -> Vec<(u64, u64)> {
    text.split_whitespace()
        .map(|piece| {
            let (start, len) = piece.split_once('+').unwrap();
            (start.parse().unwrap(), len.parse().unwrap())
        })
        .collect()
}

/// The layout of a kept file of `size` bytes: a piece at each 256 KiB slot's start, every one
/// full but the last.
fn slots(size: u64) -> Vec<(u64, u64)> {
    let slot = PIECE_BYTES as u64;
    (0..size.div_ceil(slot))
        .map(|k| (k * slot, (size - k * slot).min(slot)))
        .collect()
}

/// `n` bytes no two offsets of which are easily confused (a counter mixed with its position).
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

fn append(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(data).unwrap();
}

/// Waits (generously: the machine is shared) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_3_mb_log_is_copied_up_while_its_run_executes_and_reads_back_at_any_offset() {
    let fx = Fixture::new();
    let ids = fx.executing_run();
    let log = fx.run_files.paths(ids).log;
    let data = bytes(3 * 1024 * 1024 + 12_345, 1);
    let upload = {
        let _entered = fx.rt.enter();
        fx.run_files.start_log(ids)
    };
    // A first line, then silence: it is copied up within about a second, not held back for a
    // whole piece.
    append(&log, &data[..100]);
    eventually("the first 100 bytes are stored", || {
        fx.files.end(ids.run.0, FileKind::Log).unwrap() == Some(100)
    });
    assert_eq!(fx.log_size_noted(ids), 100, "the run notes its log's size");
    // Then the rest in uneven writes, some larger than a piece.
    let mut at = 100;
    for (n, size) in [1usize, 300_000, 77_777, 1_000_000, 5, 600_000]
        .iter()
        .cycle()
        .enumerate()
    {
        if at == data.len() {
            break;
        }
        let end = (at + size).min(data.len());
        append(&log, &data[at..end]);
        at = end;
        if n % 3 == 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    eventually("the whole log is stored while the run executes", || {
        fx.files.end(ids.run.0, FileKind::Log).unwrap() == Some(data.len() as u64)
    });
    assert_eq!(fx.log_size_noted(ids), data.len() as u64);
    let kept = fx.rt.block_on(fx.run_files.keep(ids, upload, None));
    assert_eq!(kept, Ok(None), "no result");
    // One piece per 256 KiB slot, however the writes fell, covering the log without gap or
    // overlap.
    assert_eq!(fx.layout(ids), slots(data.len() as u64));

    let piece = PIECE_BYTES as u64;
    for offset in [
        0,
        1,
        99,
        100,
        piece - 1,
        piece,
        piece + 1,
        1_000_000,
        3 * piece + 7,
    ] {
        let read = fx.read_log_from(ids, offset, 256 * 1024);
        assert!(
            read == data[offset as usize..],
            "the log read from {offset} differs"
        );
    }
    // Small reads across a piece boundary.
    let mut at = piece - 10;
    for _ in 0..3 {
        let (bytes, next) = fx.rt.block_on(fx.run_files.read_log(ids, at, 7)).unwrap();
        assert!(bytes == data[at as usize..next as usize] && next == at + 7);
        at = next;
    }
    // At and past the end: nothing, and the offset stays.
    let end = data.len() as u64;
    for offset in [end, end + 1, end + 10_000_000] {
        let (bytes, next) = fx
            .rt
            .block_on(fx.run_files.read_log(ids, offset, 1024))
            .unwrap();
        assert!(bytes.is_empty());
        assert_eq!(next, offset);
    }
    assert_eq!(fx.rt.block_on(fx.run_files.log_end(ids)).unwrap(), end);
    let (tail, cut) = fx.rt.block_on(fx.run_files.log_tail(ids, 8192));
    assert!(cut);
    assert!(tail == data[data.len() - 8192..]);
    // The local directory goes once the end is recorded; the log stays readable.
    fx.rt.block_on(fx.run_files.clear_local(ids));
    assert!(!fx.run_files.paths(ids).run_dir.exists());
    assert!(fx.read_log_from(ids, 0, 1 << 20) == data);
}

/// A slow printer's line: its number at both ends (a read from a wrong offset shows) around
/// 1,500 letters that differ from line to line.
fn slow_line(n: usize) -> Vec<u8> {
    let mut line = format!("{n:05} ").into_bytes();
    line.extend(bytes(1488, n as u64).iter().map(|b| b'a' + b % 26));
    line.extend_from_slice(format!(" {n:05}\n").as_bytes());
    line
}

#[test]
fn a_slow_printers_log_ends_as_one_piece_per_slot_and_reads_exactly_while_it_grows() {
    let fx = Fixture::new();
    let ids = fx.executing_run();
    let log = fx.run_files.paths(ids).log;
    // A line every 20 ms for 4 s or more: about 75 KB a second, copied up a second at a time,
    // 300 KB in all (two slots).
    let lines: Vec<Vec<u8>> = (0..200).map(slow_line).collect();
    let data = lines.concat();
    let piece = PIECE_BYTES as u64;
    assert!(data.len() as u64 > piece);
    let upload = {
        let _entered = fx.rt.enter();
        fx.run_files.start_log(ids)
    };
    let printed = std::sync::atomic::AtomicBool::new(false);
    let reads = std::thread::scope(|scope| {
        // Readers while the log grows and its first slot is written whole: every read, the
        // whole log from 0 in uneven chunks or a window across the slot boundary, is exactly
        // the bytes written there, in order, each once (what follow=true and SSE read).
        let reader = scope.spawn(|| {
            let mut reads = 0;
            loop {
                let last = printed.load(std::sync::atomic::Ordering::SeqCst);
                let whole = fx.read_log_from(ids, 0, 7_001);
                assert!(whole[..] == data[..whole.len()], "a read from 0 differs");
                let from = piece - 3_000;
                let (window, next) = fx
                    .rt
                    .block_on(fx.run_files.read_log(ids, from, 6_000))
                    .unwrap();
                let at = from as usize;
                assert!(
                    window[..] == data[at..at + window.len()],
                    "a window differs"
                );
                assert_eq!(next, from + window.len() as u64);
                reads += 1;
                if last {
                    return reads;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        for line in &lines {
            append(&log, line);
            std::thread::sleep(Duration::from_millis(20));
        }
        printed.store(true, std::sync::atomic::Ordering::SeqCst);
        reader.join().unwrap()
    });
    assert!(reads > 0);
    // While the run still executes, the filled slot is one piece, and the whole log is stored.
    eventually("the log is stored, its first slot as one piece", || {
        let layout = fx.layout(ids);
        layout.first() == Some(&(0, piece))
            && layout
                .last()
                .is_some_and(|(at, len)| at + len == data.len() as u64)
    });
    assert_eq!(fx.log_size_noted(ids), data.len() as u64);
    let kept = fx.rt.block_on(fx.run_files.keep(ids, upload, None));
    assert_eq!(kept, Ok(None));
    // Kept: a piece per slot, not per second.
    let layout = fx.layout(ids);
    assert!(layout.len() as u64 <= (data.len() as u64).div_ceil(piece) + 1);
    assert_eq!(layout, slots(data.len() as u64));
    fx.rt.block_on(fx.run_files.clear_local(ids));
    assert!(fx.read_log_from(ids, 0, 1 << 20) == data, "the whole log");
    for (from, len) in [
        (piece / 2, 1_000),
        (piece - 500, 1_000),
        (piece, 10),
        (1, 5),
    ] {
        let (bytes, next) = fx
            .rt
            .block_on(fx.run_files.read_log(ids, from, len))
            .unwrap();
        let at = from as usize;
        assert!(bytes == data[at..at + len], "{from}+{len} differs");
        assert_eq!(next, from + len as u64);
    }
}

#[test]
fn a_result_is_copied_up_at_the_end_and_downloads_by_ranges_across_pieces() {
    let fx = Fixture::new();
    let ids = fx.executing_run();
    let paths = fx.run_files.paths(ids);
    let data = bytes(3 * PIECE_BYTES + 1000, 2);
    std::fs::write(paths.result_dir.join("out.csv"), &data).unwrap();
    append(&paths.log, b"done\n");
    let upload = {
        let _entered = fx.rt.enter();
        fx.run_files.start_log(ids)
    };
    let kept = fx
        .rt
        .block_on(fx.run_files.keep(ids, upload, Some("result/out.csv")));
    assert_eq!(kept, Ok(Some(data.len() as u64)));
    // The rest of the log came up with it, though the run ended before a second had passed.
    assert_eq!(fx.read_log_from(ids, 0, 1024), b"done\n");
    assert_eq!(fx.pieces(ids, FileKind::Result), 4);
    let run = fx.finish(ids, 10, Some(("result/out.csv", data.len() as i64)));
    fx.rt.block_on(fx.run_files.clear_local(ids));

    let piece = PIECE_BYTES as u64;
    let size = data.len() as u64;
    for (from, len) in [
        (0, size),
        (piece - 3, 7),
        (piece, 1),
        (piece - 1, piece + 2),
        (2 * piece + 5, size - 2 * piece - 5),
        (size - 1, 1),
        (0, 0),
    ] {
        let (total, body) = fx.result_range(&run, from, len);
        assert_eq!(total, size);
        assert!(
            body == data[from as usize..(from + len) as usize],
            "range {from}+{len} differs"
        );
    }
}

#[test]
fn a_result_of_0_bytes_has_no_piece_and_downloads_empty() {
    let fx = Fixture::new();
    let ids = fx.executing_run();
    let paths = fx.run_files.paths(ids);
    std::fs::write(paths.result_dir.join("empty.csv"), b"").unwrap();
    let kept = fx.rt.block_on(
        fx.run_files
            .keep(ids, LogUpload::none(), Some("result/empty.csv")),
    );
    assert_eq!(kept, Ok(Some(0)));
    assert_eq!(fx.pieces(ids, FileKind::Result), 0);
    assert_eq!(fx.pieces(ids, FileKind::Log), 0, "no output, no log");
    let run = fx.finish(ids, 10, Some(("result/empty.csv", 0)));
    let (size, body) = fx.result_range(&run, 0, 0);
    assert_eq!((size, body.len()), (0, 0));
    // A result with bytes whose pieces are gone (removed) is not found.
    let other = fx.executing_run();
    let gone = fx.finish(other, 10, Some(("result/x.csv", 10)));
    let opened = fx.rt.block_on(fx.run_files.open_result(&gone));
    assert_eq!(
        opened.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::NotFound)
    );
}

#[test]
fn the_files_cleaner_and_retention_delete_the_pieces_by_kind() {
    let fx = Fixture::new();
    let mut runs = Vec::new();
    for n in 0..3u64 {
        let ids = fx.executing_run();
        let paths = fx.run_files.paths(ids);
        append(&paths.log, &bytes(PIECE_BYTES + 10, n));
        std::fs::write(paths.result_dir.join("r.csv"), bytes(1000, n + 10)).unwrap();
        let kept = fx.rt.block_on(
            fx.run_files
                .keep(ids, LogUpload::none(), Some("result/r.csv")),
        );
        assert_eq!(kept, Ok(Some(1000)));
        // Finished at 10, 20 and 30.
        fx.finish(ids, 10 * (n as i64 + 1), Some(("result/r.csv", 1000)));
        fx.rt.block_on(fx.run_files.clear_local(ids));
        runs.push(ids);
    }

    // Deletion by kind touches that kind only.
    fx.files.delete(&[runs[2].run.0], FileKind::Log).unwrap();
    assert_eq!(fx.pieces(runs[2], FileKind::Log), 0);
    assert_eq!(fx.pieces(runs[2], FileKind::Result), 1);

    // The files cleaner with a cutoff of 25 removes the first two runs' files (the rows stay).
    // Its local walk reads finish times through a `Db`; the runs of this test are in the
    // PostgreSQL database only, so a SQLite one (which knows none of them) is passed.
    let sqlite_dir = tempfile::tempdir().unwrap();
    let sqlite = labcron::store::Db::open(&sqlite_dir.path().join("labcron.db")).unwrap();
    let never = Guard {
        deadline: None,
        cancel: None,
    };
    let removed = fx
        .run_files
        .remove_old(&sqlite, 25, None, &never)
        .unwrap()
        .unwrap();
    let summary: Vec<(i64, i64, u64, u64)> = removed
        .iter()
        .map(|r| (r.run_id, r.finished_at, r.files, r.bytes))
        .collect();
    assert_eq!(
        summary,
        vec![
            (runs[0].run.0, 10, 2, (PIECE_BYTES + 10 + 1000) as u64),
            (runs[1].run.0, 20, 2, (PIECE_BYTES + 10 + 1000) as u64),
        ]
    );
    for ids in &runs[..2] {
        assert_eq!(fx.pieces(*ids, FileKind::Log), 0);
        assert_eq!(fx.pieces(*ids, FileKind::Result), 0);
        let run = fx.run(*ids);
        assert_eq!(
            run.result_file.as_deref(),
            Some("result/r.csv"),
            "the row stays"
        );
        assert!(fx.rt.block_on(fx.run_files.open_result(&run)).is_err());
    }
    assert_eq!(fx.pieces(runs[2], FileKind::Result), 1, "run 3 is newer");
    // A cleaner's own run is spared (here the third, as if it were the cleaner's), and what was
    // removed is not found again.
    let again = fx
        .run_files
        .remove_old(&sqlite, 100, Some(runs[2]), &never)
        .unwrap()
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(fx.pieces(runs[2], FileKind::Result), 1);

    // Retention's row deletion removes the files of the runs it deletes, by kind.
    let results = fx.run_files.remove_runs(&runs[1..]);
    let results: Vec<Option<(u64, u64)>> = results.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(results, vec![None, Some((1, 1000))]);
    assert_eq!(fx.pieces(runs[2], FileKind::Result), 0);
}

#[test]
fn a_chained_run_gets_a_read_only_copy_of_its_upstream_result() {
    let fx = Fixture::new();
    let upstream = fx.executing_run();
    let data = bytes(PIECE_BYTES * 2 + 3, 7);
    std::fs::write(
        fx.run_files.paths(upstream).result_dir.join("up.csv"),
        &data,
    )
    .unwrap();
    let kept = fx.rt.block_on(fx.run_files.keep(
        upstream,
        LogUpload::none(),
        Some("result/up.csv"),
    ));
    assert_eq!(kept, Ok(Some(data.len() as u64)));
    let up = fx.finish(upstream, 10, Some(("result/up.csv", data.len() as i64)));
    fx.rt.block_on(fx.run_files.clear_local(upstream));
    let chained = fx.executing_run();
    let into = fx.run_files.paths(chained);
    let copy = fx
        .rt
        .block_on(fx.run_files.upstream_result(&up, &into))
        .expect("a copy");
    assert!(copy.starts_with(&into.run_dir));
    assert!(std::fs::read(&copy).unwrap() == data);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o444
    );
}

#[test]
fn a_database_that_refuses_the_pieces_means_the_files_are_not_kept() {
    let fx = Fixture::new();
    let ids = fx.executing_run();
    let paths = fx.run_files.paths(ids);
    std::fs::write(paths.result_dir.join("out.csv"), b"a,b\n1,2\n").unwrap();
    // Every new piece is refused from now on.
    let url = fx.db.url();
    std::thread::spawn(move || {
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        client
            .batch_execute(
                "ALTER TABLE run_files ADD CONSTRAINT refuse_all CHECK (start_at < 0) NOT VALID",
            )
            .unwrap();
    })
    .join()
    .unwrap();
    let kept = fx.rt.block_on(
        fx.run_files
            .keep(ids, LogUpload::none(), Some("result/out.csv")),
    );
    let why = kept.expect_err("the result could not be stored");
    assert!(
        why.starts_with("cannot store the result file in the database:"),
        "{why}"
    );
    assert!(why.contains("refuse_all"), "{why}");
    assert_eq!(fx.pieces(ids, FileKind::Result), 0);
}

/// The real server on PostgreSQL (`LABCRON_TEST_LEDGER=postgres`; skipped on SQLite): a run's
/// log is in the database while it runs (its `logSize` grows), and once it has ended its log and
/// result are served from the pieces alone — its local directory is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_the_server_serves_a_runs_files_from_the_database() {
    use crate::common::{on_postgres, spawn_app};
    use reqwest::{Method, StatusCode};
    if !on_postgres() {
        eprintln!("skipped: needs the server on PostgreSQL (LABCRON_TEST_LEDGER=postgres)");
        return;
    }
    let app = spawn_app().await;
    app.write_script(
        "slow.sh",
        "#!/bin/sh\nfor i in 1 2 3; do echo \"line $i\"; sleep 1; done\n\
         head -c 600000 /dev/zero | tr '\\0' x > \"$LABCRON_RESULT_DIR/r.txt\"\n",
    );
    let job = app.create_external_job("slow", "slow.sh").await;
    let run = app.start_run(job, None).await;
    // While it runs, the run JSON's logSize comes from the pieces copied up.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view: serde_json::Value = app
            .get(&format!("/scheduled-jobs/{job}/runs/{run}"))
            .await
            .json()
            .await
            .unwrap();
        if view["status"] == "IN_PROGRESS" && view["logSize"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            view["status"] != "SUCCEEDED" && Instant::now() < deadline,
            "the log was never seen growing in the database: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finished = app.wait_run(job, run).await;
    assert_eq!(finished["status"], "SUCCEEDED", "{finished}");
    assert_eq!(finished["logSize"], 21);
    assert!(
        !app.data_dir.join(format!("runs/{job}/{run}")).exists(),
        "the local run directory is removed"
    );
    let log = app
        .get(&format!("/scheduled-jobs/{job}/runs/{run}/log?offset=7"))
        .await;
    assert_eq!(log.headers()["x-log-offset"], "21");
    assert_eq!(log.text().await.unwrap(), "line 2\nline 3\n");
    let path = format!("/scheduled-jobs/{job}/runs/{run}/result-file");
    let whole = app.get(&path).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()["content-length"], "600000");
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        whole.headers()["content-disposition"],
        "attachment; filename=\"r.txt\""
    );
    let body = whole.bytes().await.unwrap();
    assert!(body.len() == 600_000 && body.iter().all(|b| *b == b'x'));
    let ranged = app
        .request(Method::GET, &path)
        .header("Range", "bytes=262140-262149")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        ranged.headers()["content-range"],
        "bytes 262140-262149/600000"
    );
    assert_eq!(ranged.text().await.unwrap(), "xxxxxxxxxx");
    let outside = app
        .request(Method::GET, &path)
        .header("Range", "bytes=600000-")
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let head = app.request(Method::HEAD, &path).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "600000");
}

/// The real server on PostgreSQL (skipped on SQLite): a script printing a 2 KB line every 20 ms
/// (300 KB over some seconds, two slots) is followed byte-exact while it runs, and its log ends
/// as a piece per slot, downloading whole and from offsets inside a piece and across pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_slow_printers_log_is_followed_exactly_and_ends_in_few_pieces() {
    use crate::common::ledger::sql_text;
    use crate::common::{on_postgres, spawn_app};
    if !on_postgres() {
        eprintln!("skipped: needs the server on PostgreSQL (LABCRON_TEST_LEDGER=postgres)");
        return;
    }
    let app = spawn_app().await;
    app.write_script(
        "slow.sh",
        "#!/bin/sh\npad=$(head -c 1988 /dev/zero | tr '\\0' x)\ni=0\n\
         while [ $i -lt 150 ]; do printf '%05d %s %05d\\n' $i \"$pad\" $i; sleep 0.02; \
         i=$((i + 1)); done\n",
    );
    let pad = "x".repeat(1988);
    let expected: String = (0..150).map(|i| format!("{i:05} {pad} {i:05}\n")).collect();
    let piece = PIECE_BYTES;
    assert!(expected.len() > piece);
    let job = app.create_external_job("slow printer", "slow.sh").await;
    let run = app.start_run(job, None).await;
    let log = format!("/scheduled-jobs/{job}/runs/{run}/log");
    // Followed from the start while the run goes on: every byte, once, in order.
    let followed = app.get(&format!("{log}?follow=true")).await;
    assert_eq!(followed.status(), reqwest::StatusCode::OK);
    let followed = followed.text().await.unwrap();
    assert!(followed == expected, "the followed log differs");
    let finished = app.wait_run(job, run).await;
    assert_eq!(finished["status"], "SUCCEEDED", "{finished}");
    assert_eq!(finished["logSize"], expected.len());
    let layout = layout_of(&sql_text(
        &app.data_dir,
        &format!(
            "SELECT COALESCE(string_agg(start_at::text || '+' || length(data)::text, ' '
                                        ORDER BY start_at), '')
             FROM run_files WHERE run_id = {run} AND kind = 'LOG'"
        ),
    ));
    assert!(
        layout.len() <= expected.len().div_ceil(piece) + 1,
        "{layout:?}"
    );
    assert_eq!(layout, slots(expected.len() as u64));
    let whole = app.get(&log).await;
    assert_eq!(whole.headers()["x-log-offset"], expected.len().to_string());
    assert!(
        whole.text().await.unwrap() == expected,
        "the whole log differs"
    );
    for offset in [1000, piece - 100, piece, piece + 1] {
        let from = app.get(&format!("{log}?offset={offset}")).await;
        assert_eq!(from.headers()["x-log-offset"], expected.len().to_string());
        assert!(
            from.text().await.unwrap() == expected[offset..],
            "the log from {offset} differs"
        );
    }
}
