//! What the system benches share: the real `labcron` binary started on 127.0.0.1 with a data
//! directory of the bench's own (`launch`: the tests' `Server` from `tests/common`), a small HTTP/1.1 keep-alive client that costs the
//! machine little (the load generator shares the two cores with the server), a closed-loop load
//! runner, resident memory from `/proc`, percentiles, and a filler that writes jobs and runs
//! straight into a stopped server's ledger.

pub mod download;
pub mod fire_memory;
pub mod lateness;
pub mod ledger;
pub mod throughput;
pub mod tokens;

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use crate::common::{ADMIN_PASSWORD, Server};
use crate::common::{Launch, cpu_seconds, rss_kib, try_write_script};

/// Turns any error into the message a skipped figure shows.
pub trait OrMessage<T> {
    fn msg(self, what: &str) -> Result<T, String>;
}

impl<T, E: Display> OrMessage<T> for Result<T, E> {
    fn msg(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

impl<T> OrMessage<T> for Option<T> {
    fn msg(self, what: &str) -> Result<T, String> {
        self.ok_or_else(|| what.to_string())
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Nearest-rank percentile of sorted values (`p` in 0..=100).
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Starts the release binary the way the tests do (`tests/common`: port 0, learnt from its log)
/// on `data_dir` with no example jobs, its log appended to `log`, and waits until `/health`
/// answers 200; returns it and the time from the spawn to that answer.
pub fn launch(data_dir: &Path, log: &Path, extra: &[&str]) -> Result<(Server, Duration), String> {
    let server = Launch::new(data_dir)
        .no_example_jobs()
        .args(extra)
        .log_file(log)
        .try_start()?;
    let took = server.start_up;
    Ok((server, took))
}

/// What the benches read of a running server, as figures or the message of a skipped one.
pub trait ServerFigures {
    /// VmRSS of the server process, in MiB.
    fn rss_mib(&self) -> Result<f64, String>;
    /// CPU time the server process has used so far (user + system, all threads), in seconds.
    fn cpu_seconds(&self) -> Result<f64, String>;
}

impl ServerFigures for Server {
    fn rss_mib(&self) -> Result<f64, String> {
        rss_kib(self.pid())
            .map(|kib| kib as f64 / 1024.0)
            .msg("no VmRSS in /proc status")
    }
    fn cpu_seconds(&self) -> Result<f64, String> {
        cpu_seconds(self.pid()).msg("no CPU times in /proc stat")
    }
}

/// Starts the binary once on an empty data directory (creating the ledger and `admin`) and stops it.
pub fn create_ledger(data_dir: &Path, log: &Path) -> Result<(), String> {
    create_ledger_with(data_dir, log, &[])
}

/// [`create_ledger`] with `extra` arguments (`--database-url …` for a ledger on PostgreSQL).
pub fn create_ledger_with(data_dir: &Path, log: &Path, extra: &[&str]) -> Result<(), String> {
    std::fs::create_dir_all(data_dir.join("scripts")).msg("create the scripts directory")?;
    let (server, _) = launch(data_dir, log, extra)?;
    server.stop(Duration::from_secs(30)).map(|_| ())
}

/// Writes an executable script into the data directory's scripts directory.
pub fn write_script(data_dir: &Path, name: &str, body: &str) -> Result<PathBuf, String> {
    try_write_script(&data_dir.join("scripts"), name, body).msg("write a script")
}

pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .msg("tokio runtime")
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client: one keep-alive connection, Content-Length or chunked bodies.

/// A reply: status and body (or only the body's length when it was not kept).
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub body_len: u64,
}

impl Reply {
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).msg("reply is not JSON")
    }
}

pub struct Conn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
    /// Where bodies that are only counted are read to (1 MiB, allocated once).
    scratch: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Conn {
    pub async fn open(port: u16) -> Result<Conn, String> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .msg("connect")?;
        stream.set_nodelay(true).msg("nodelay")?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            scratch: Vec::new(),
        })
    }

    async fn read_more(&mut self) -> Result<(), String> {
        self.buf.reserve(64 * 1024);
        let n = self.stream.read_buf(&mut self.buf).await.msg("read")?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        Ok(())
    }

    /// Sends `request` and reads the whole reply. With `keep` false the body is only counted
    /// (read in 1 MiB pieces), for downloads.
    pub async fn call(&mut self, request: &[u8], keep: bool) -> Result<Reply, String> {
        self.stream.write_all(request).await.msg("write")?;
        self.buf.clear();
        let header_end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos + 4;
            }
            self.read_more().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..header_end]).into_owned();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .msg("no status line")?;
        let mut length: Option<u64> = None;
        let mut chunked = false;
        for line in head.lines().skip(1) {
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().ok();
                } else if name.eq_ignore_ascii_case("transfer-encoding")
                    && value.to_ascii_lowercase().contains("chunked")
                {
                    chunked = true;
                }
            }
        }
        self.buf.drain(..header_end);
        if chunked {
            let body = self.read_chunked().await?;
            return Ok(Reply {
                status,
                body_len: body.len() as u64,
                body,
            });
        }
        let length = length.unwrap_or(0);
        if keep {
            while (self.buf.len() as u64) < length {
                self.read_more().await?;
            }
            let body: Vec<u8> = self.buf.drain(..length as usize).collect();
            return Ok(Reply {
                status,
                body_len: length,
                body,
            });
        }
        let mut seen = self.buf.len() as u64;
        self.buf.clear();
        if seen < length && self.scratch.is_empty() {
            self.scratch = vec![0u8; 1 << 20];
        }
        while seen < length {
            let n = self.stream.read(&mut self.scratch).await.msg("read body")?;
            if n == 0 {
                return Err(format!("body ended after {seen} of {length} bytes"));
            }
            seen += n as u64;
        }
        Ok(Reply {
            status,
            body: Vec::new(),
            body_len: seen,
        })
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        let mut pos = 0;
        loop {
            let Some(line_end) = find(&self.buf[pos..], b"\r\n") else {
                self.read_more().await?;
                continue;
            };
            let size_text = String::from_utf8_lossy(&self.buf[pos..pos + line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .msg("bad chunk size")?;
            let data_start = pos + line_end + 2;
            while self.buf.len() < data_start + size + 2 {
                self.read_more().await?;
            }
            if size == 0 {
                self.buf.clear();
                return Ok(body);
            }
            body.extend_from_slice(&self.buf[data_start..data_start + size]);
            pos = data_start + size + 2;
        }
    }
}

pub fn get_request(path: &str, token: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-OS-API-TOKEN: {token}\r\n\r\n")
        .into_bytes()
}

pub fn post_request(path: &str, token: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-OS-API-TOKEN: {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Signs in as `admin` and returns the session token.
pub async fn sign_in(port: u16) -> Result<String, String> {
    let mut conn = Conn::open(port).await?;
    let body = serde_json::json!({"loginName": "admin", "password": ADMIN_PASSWORD}).to_string();
    let request = format!(
        "POST /rest/ng/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let reply = conn.call(request.as_bytes(), true).await?;
    if reply.status != 200 {
        return Err(format!("sign-in answered {}", reply.status));
    }
    reply.json()?["token"]
        .as_str()
        .map(str::to_string)
        .msg("no token in the sign-in reply")
}

/// A call that must answer 200 with JSON.
pub async fn call_json(conn: &mut Conn, request: &[u8]) -> Result<serde_json::Value, String> {
    let reply = conn.call(request, true).await?;
    if reply.status != 200 {
        return Err(format!(
            "answered {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    reply.json()
}

/// What a load run saw in its measured window.
pub struct Load {
    /// Latency of every request answered in the window, microseconds, sorted.
    pub latencies_us: Vec<u64>,
    pub failures: u64,
    pub first_failure: Option<String>,
    pub window: Duration,
}

impl Load {
    pub fn per_second(&self) -> f64 {
        self.latencies_us.len() as f64 / self.window.as_secs_f64()
    }
    pub fn p_ms(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p).unwrap_or(0) as f64 / 1000.0
    }
}

/// `connections` clients, each sending `request` again as soon as the previous reply is in
/// (closed loop), for `warmup` (not counted) then `window`. Anything but 200 is a failure.
pub async fn closed_loop(
    port: u16,
    connections: usize,
    request: Vec<u8>,
    warmup: Duration,
    window: Duration,
) -> Result<Load, String> {
    let request = Arc::new(request);
    let start = tokio::time::Instant::now();
    let counted_from = start + warmup;
    let end = counted_from + window;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            let mut first_failure = None;
            let mut conn = Conn::open(port).await?;
            loop {
                let sent = tokio::time::Instant::now();
                if sent >= end {
                    break;
                }
                match conn.call(&request, false).await {
                    Ok(reply) if reply.status == 200 => {
                        if sent >= counted_from {
                            latencies.push(sent.elapsed().as_micros() as u64);
                        }
                    }
                    Ok(reply) => {
                        failures += 1;
                        first_failure.get_or_insert(format!("status {}", reply.status));
                    }
                    Err(e) => {
                        failures += 1;
                        first_failure.get_or_insert(e);
                        conn = Conn::open(port).await?;
                    }
                }
            }
            Ok::<_, String>((latencies, failures, first_failure))
        }));
    }
    let mut load = Load {
        latencies_us: Vec::new(),
        failures: 0,
        first_failure: None,
        window,
    };
    for task in tasks {
        let (latencies, failures, first) = task.await.msg("load task")??;
        load.latencies_us.extend(latencies);
        load.failures += failures;
        if load.first_failure.is_none() {
            load.first_failure = first;
        }
    }
    load.latencies_us.sort_unstable();
    Ok(load)
}

/// `connections` clients sharing `rate` requests a second between them, each on a fixed schedule
/// (open loop): a request's latency counts from when it was due, so a slow answer that delays the
/// next request is charged to it too (no coordinated omission).
pub async fn open_loop(
    port: u16,
    connections: usize,
    request: Vec<u8>,
    rate: f64,
    warmup: Duration,
    window: Duration,
) -> Result<Load, String> {
    let request = Arc::new(request);
    let period = Duration::from_secs_f64(connections as f64 / rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let counted_from = start + warmup;
    let end = counted_from + window;
    let mut tasks = Vec::new();
    for i in 0..connections {
        let request = request.clone();
        let offset = period.mul_f64(i as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            let mut first_failure = None;
            let mut conn = Conn::open(port).await?;
            let mut due = start + offset;
            while due < end {
                tokio::time::sleep_until(due).await;
                match conn.call(&request, false).await {
                    Ok(reply) if reply.status == 200 => {
                        if due >= counted_from {
                            latencies.push(due.elapsed().as_micros() as u64);
                        }
                    }
                    Ok(reply) => {
                        failures += 1;
                        first_failure.get_or_insert(format!("status {}", reply.status));
                    }
                    Err(e) => {
                        failures += 1;
                        first_failure.get_or_insert(e);
                        conn = Conn::open(port).await?;
                    }
                }
                due += period;
            }
            Ok::<_, String>((latencies, failures, first_failure))
        }));
    }
    let mut load = Load {
        latencies_us: Vec::new(),
        failures: 0,
        first_failure: None,
        window,
    };
    for task in tasks {
        let (latencies, failures, first) = task.await.msg("load task")??;
        load.latencies_us.extend(latencies);
        load.failures += failures;
        if load.first_failure.is_none() {
            load.first_failure = first;
        }
    }
    load.latencies_us.sort_unstable();
    Ok(load)
}
