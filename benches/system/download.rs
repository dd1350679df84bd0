//! Downloading a 1 GiB result file over HTTP (a real run wrote it) against reading the same file
//! from the page cache with 1 MiB reads: what serving it costs beyond the read itself.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::{
    Conn, OrMessage, call_json, create_ledger, get_request, launch, median, post_request, sign_in,
    write_script,
};
use crate::{Context, Figure, Target};

const SIZE: u64 = 1 << 30;
const ROUNDS: usize = 3;

pub fn result_download(ctx: &Context) -> Vec<Figure> {
    let name = "result-file download, 1 GiB, vs reading the file";
    match measure(ctx) {
        Ok((ours, baseline, loopback, note)) => vec![
            Figure::measured(name, ours, "MB/s")
                .baseline(baseline)
                .target(Target::AtLeast(0.8))
                .note(note),
            Figure::measured(
                "result-file download, 1 GiB, vs the bare loopback (no HTTP)",
                ours,
                "MB/s",
            )
            .baseline(loopback.0)
            .note(format!(
                "the same file sent over 127.0.0.1 to the same reader by a bare sender, the faster \
                 of sendfile ({:.0} MB/s) and 1 MiB read+write ({:.0} MB/s)",
                loopback.1, loopback.2
            )),
        ],
        Err(e) => vec![Figure::skipped(name, "MB/s", e)],
    }
}

type Measured = (f64, f64, (f64, f64, f64), String);

fn measure(ctx: &Context) -> Result<Measured, String> {
    let data_dir = ctx.dir.join("data");
    let log = ctx.dir.join("server.log");
    write_script(
        &data_dir,
        "big.sh",
        &format!("#!/bin/sh\nhead -c {SIZE} /dev/zero > \"$LABCRON_RESULT_DIR/big.bin\"\n"),
    )?;
    create_ledger(&data_dir, &log)?;
    let (server, _) = launch(&data_dir, &log, &[])?;
    let rt = super::runtime()?;
    let result = rt.block_on(async {
        let token = sign_in(server.port).await?;
        let mut conn = Conn::open(server.port).await?;
        let body = serde_json::json!({"name": "big result", "type": "EXTERNAL", "command": "big.sh",
            "repeatSchedule": "ONDEMAND"});
        let job = call_json(
            &mut conn,
            &post_request("/rest/ng/scheduled-jobs", &token, &body.to_string()),
        )
        .await?;
        let job = job["id"].as_i64().msg("job id")?;
        let run = call_json(
            &mut conn,
            &post_request(
                &format!("/rest/ng/scheduled-jobs/{job}/runs?response=run"),
                &token,
                "{}",
            ),
        )
        .await?;
        let run = run["id"].as_i64().msg("run id")?;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let view = call_json(
                &mut conn,
                &get_request(
                    &format!("/rest/ng/scheduled-jobs/{job}/runs/{run}?waitSeconds=30"),
                    &token,
                ),
            )
            .await?;
            match view["status"].as_str() {
                Some("SUCCEEDED") => break,
                Some("FAILED") => return Err(format!("the run failed: {}", view["message"])),
                _ if Instant::now() > deadline => return Err("the run did not finish".into()),
                _ => {}
            }
        }
        let file = data_dir
            .join("runs")
            .join(job.to_string())
            .join(run.to_string())
            .join("result/big.bin");
        // Warm the page cache, then read it as fast as a program can.
        read_file(&file)?;
        let mut reads = Vec::new();
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let n = read_file(&file)?;
            reads.push(n as f64 / started.elapsed().as_secs_f64() / 1e6);
        }
        let request = get_request(
            &format!("/rest/ng/scheduled-jobs/{job}/runs/{run}/result-file"),
            &token,
        );
        let mut downloads = Vec::new();
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let reply = conn.call(&request, false).await?;
            let took = started.elapsed();
            if reply.status != 200 || reply.body_len != SIZE {
                return Err(format!(
                    "the download answered {} with {} bytes",
                    reply.status, reply.body_len
                ));
            }
            downloads.push(SIZE as f64 / took.as_secs_f64() / 1e6);
        }
        Ok::<_, String>((median(downloads), median(reads), file))
    })?;
    drop(server);
    let by_sendfile = bare_loopback(&result.2, true)?;
    let by_copy = bare_loopback(&result.2, false)?;
    let loopback = (by_sendfile.max(by_copy), by_sendfile, by_copy);
    Ok((
        result.0,
        result.1,
        loopback,
        format!("median of {ROUNDS}; file in the page cache; client reads 1 MiB at a time"),
    ))
}

/// The file sent over a loopback TCP connection with no HTTP, read as the downloads are. The
/// sender uses sendfile (`std::io::copy` from a file to a socket) or plain 1 MiB reads and writes.
fn bare_loopback(path: &std::path::Path, sendfile: bool) -> Result<f64, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").msg("bind")?;
    let port = listener.local_addr().msg("port")?.port();
    let source = path.to_path_buf();
    let sender = std::thread::spawn(move || -> Result<(), String> {
        let (mut socket, _) = listener.accept().msg("accept")?;
        let mut piece = vec![0u8; 1 << 20];
        for _ in 0..ROUNDS {
            let mut file = std::fs::File::open(&source).msg("open")?;
            if sendfile {
                std::io::copy(&mut file, &mut socket).msg("send")?;
                continue;
            }
            loop {
                let n = file.read(&mut piece).msg("read")?;
                if n == 0 {
                    break;
                }
                socket.write_all(&piece[..n]).msg("send")?;
            }
        }
        Ok(())
    });
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).msg("connect")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut speeds = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let mut got = 0u64;
        while got < SIZE {
            // Never past this round's end: the next round follows on the same connection.
            let want = buf.len().min((SIZE - got) as usize);
            let n = socket.read(&mut buf[..want]).msg("receive")?;
            if n == 0 {
                return Err(match sender.join() {
                    Ok(Err(e)) => format!("bare loopback sender: {e}"),
                    _ => format!("the bare loopback sender stopped after {got} bytes"),
                });
            }
            got += n as u64;
        }
        speeds.push(SIZE as f64 / started.elapsed().as_secs_f64() / 1e6);
    }
    sender
        .join()
        .map_err(|_| "the sender panicked".to_string())??;
    Ok(median(speeds))
}

/// Reads the file to its end with 1 MiB reads; returns the bytes read.
fn read_file(path: &std::path::Path) -> Result<u64, String> {
    let mut file = std::fs::File::open(path).msg("open the result file")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).msg("read the result file")?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}
