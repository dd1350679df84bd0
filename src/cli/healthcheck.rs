//! `labcron healthcheck`: asks the server on `bind` for `/health` and exits 0 only on 200. Used by
//! the Docker image's HEALTHCHECK, so it needs no curl in the image.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail};

/// The address to ask: the bind address, with an unspecified host replaced by loopback.
pub fn target(bind: SocketAddr) -> SocketAddr {
    let mut addr = bind;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

/// Returns the health body when the server answers 200, else an error saying what was wrong.
pub fn check(bind: SocketAddr) -> anyhow::Result<String> {
    let addr = target(bind);
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /health HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.take(64 * 1024).read_to_string(&mut response)?;
    let status_line = response.lines().next().unwrap_or_default();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        bail!("unhealthy: {status_line} {body}");
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_hosts_become_loopback() {
        let target_of = |text: &str| target(text.parse().unwrap()).to_string();
        assert_eq!(target_of("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(target_of("[::]:9000"), "[::1]:9000");
        assert_eq!(target_of("10.1.2.3:80"), "10.1.2.3:80");
    }
}
