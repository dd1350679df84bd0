//! A Prometheus scrape of `/metrics` authenticated by an API token against the same scrape by
//! Basic authorization (issue 15): a token costs one SHA-256 and an indexed read, a Basic sign-in
//! one argon2 check. Measured closed-loop on one keep-alive connection each, as a scraper does.

use std::time::Duration;

use base64::Engine;

use super::{
    ADMIN_PASSWORD, Conn, OrMessage, call_json, closed_loop, create_ledger, launch, post_request,
    runtime, sign_in,
};
use crate::{Context, Figure, Target};

const CONNECTIONS: usize = 1;
const WARMUP: Duration = Duration::from_secs(1);
const WINDOW: Duration = Duration::from_secs(5);

pub fn metrics_auth(ctx: &Context) -> Vec<Figure> {
    let name = "/metrics scrape by API token vs Basic, median";
    match measure(ctx) {
        Ok((token_ms, basic_ms, token_rate, basic_rate)) => vec![
            Figure::measured(name, token_ms, "ms")
                .baseline(basic_ms)
                .target(Target::AtMost(0.5))
                .note(format!(
                    "baseline: Basic (argon2 per request); {token_rate:.0} vs {basic_rate:.0} scrapes/s on {CONNECTIONS} connection"
                )),
        ],
        Err(e) => vec![Figure::skipped(name, "ms", e)],
    }
}

fn measure(ctx: &Context) -> Result<(f64, f64, f64, f64), String> {
    let data_dir = ctx.dir.join("data");
    let log = ctx.dir.join("server.log");
    create_ledger(&data_dir, &log)?;
    let (server, _) = launch(&data_dir, &log, &[])?;
    let rt = runtime()?;
    let result = rt.block_on(async {
        let session = sign_in(server.port).await?;
        let mut conn = Conn::open(server.port).await?;
        let made = call_json(
            &mut conn,
            &post_request("/rest/ng/api-tokens", &session, r#"{"name": "bench"}"#),
        )
        .await?;
        let token = made["token"].as_str().msg("the new token")?.to_string();
        let by_token = format!(
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_PASSWORD}"));
        let by_basic = format!(
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {basic}\r\n\r\n"
        );
        let token_load = closed_loop(
            server.port,
            CONNECTIONS,
            by_token.into_bytes(),
            WARMUP,
            WINDOW,
        )
        .await?;
        let basic_load = closed_loop(
            server.port,
            CONNECTIONS,
            by_basic.into_bytes(),
            WARMUP,
            WINDOW,
        )
        .await?;
        for (what, load) in [("token", &token_load), ("Basic", &basic_load)] {
            if load.failures > 0 || load.latencies_us.is_empty() {
                return Err(format!(
                    "{what} scrapes failed: {} ({:?})",
                    load.failures, load.first_failure
                ));
            }
        }
        Ok((
            token_load.p_ms(50.0),
            basic_load.p_ms(50.0),
            token_load.per_second(),
            basic_load.per_second(),
        ))
    });
    server.stop(Duration::from_secs(30))?;
    result
}
