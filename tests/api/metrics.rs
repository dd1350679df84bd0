//! `GET /metrics`: the Prometheus text is parsed strictly (every line, every label, histogram
//! invariants) and the series are checked after real requests, runs and scheduled fires; the
//! endpoint needs a signed-in admin, and Basic authorization works for scrapers. Also the parser
//! (`scrape`, `Scrape`) other test modules read metrics with.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{ADMIN_PASSWORD, TestApp, error_codes, ok_json, spawn_app};

/// One sample line.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape: samples and the declared type of each family.
#[derive(Debug)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    pub types: HashMap<String, String>,
}

impl Scrape {
    /// The value of the sample with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    /// Like `value`, panicking with the scrape when the sample is missing.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {:#?}", self.names()))
    }

    fn names(&self) -> Vec<String> {
        self.samples
            .iter()
            .map(|s| format!("{}{:?}", s.name, s.labels))
            .collect()
    }
}

/// Parses the text exposition format 0.0.4, panicking on anything malformed, and checks that
/// every sample belongs to a declared family and every histogram is consistent.
pub fn parse(text: &str) -> Scrape {
    let mut samples = Vec::new();
    let mut types = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line has a kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad type: {line}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "family declared twice: {name}"
            );
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with('#') {
            continue;
        }
        samples.push(parse_sample(line));
    }
    for sample in &samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| sample.name.strip_suffix(suffix))
            .find(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            .unwrap_or(&sample.name);
        assert!(
            types.contains_key(family),
            "sample {} has no # TYPE",
            sample.name
        );
        if family != sample.name {
            assert_eq!(types[family], "histogram");
        }
    }
    let scrape = Scrape { samples, types };
    for (family, kind) in &scrape.types {
        if kind == "histogram" {
            check_histogram(&scrape, family);
        }
    }
    scrape
}

fn check_histogram(scrape: &Scrape, family: &str) {
    let bucket_name = format!("{family}_bucket");
    let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    for s in scrape.samples.iter().filter(|s| s.name == bucket_name) {
        let mut labels = s.labels.clone();
        let le = labels.remove("le").expect("bucket has le");
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().expect("le is a number")
        };
        series.entry(labels).or_default().push((bound, s.value));
    }
    for (labels, buckets) in series {
        let mut last = (f64::NEG_INFINITY, 0.0);
        for (bound, count) in &buckets {
            assert!(*bound > last.0, "{family}{labels:?}: buckets out of order");
            assert!(
                *count >= last.1,
                "{family}{labels:?}: buckets not cumulative"
            );
            last = (*bound, *count);
        }
        assert_eq!(
            last.0,
            f64::INFINITY,
            "{family}{labels:?} lacks le=\"+Inf\""
        );
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            scrape.get(&format!("{family}_count"), &pairs),
            last.1,
            "{family}{labels:?}: +Inf != count"
        );
        assert!(
            scrape.value(&format!("{family}_sum"), &pairs).is_some(),
            "{family}{labels:?} lacks _sum"
        );
    }
}

fn parse_sample(line: &str) -> Sample {
    let chars: Vec<char> = line.chars().collect();
    let text = |range: std::ops::Range<usize>| chars[range].iter().collect::<String>();
    let mut i = 0;
    while i < chars.len() && chars[i] != '{' && chars[i] != ' ' {
        i += 1;
    }
    let name = text(0..i);
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit()),
        "bad metric name: {line}"
    );
    let mut labels = BTreeMap::new();
    if chars.get(i) == Some(&'{') {
        i += 1;
        loop {
            if chars.get(i) == Some(&'}') {
                i += 1;
                break;
            }
            let start = i;
            while i < chars.len() && chars[i] != '=' {
                i += 1;
            }
            let key = text(start..i);
            assert!(
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad label name in {line}"
            );
            i += 1;
            assert_eq!(chars.get(i), Some(&'"'), "label value not quoted: {line}");
            i += 1;
            let mut value = String::new();
            loop {
                match chars.get(i) {
                    Some('\\') => {
                        value.push(match chars.get(i + 1) {
                            Some('\\') => '\\',
                            Some('"') => '"',
                            Some('n') => '\n',
                            other => panic!("bad escape {other:?} in {line}"),
                        });
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        value.push(*c);
                        i += 1;
                    }
                    None => panic!("unterminated label value: {line}"),
                }
            }
            assert!(labels.insert(key, value).is_none(), "label twice: {line}");
            match chars.get(i) {
                Some(',') => i += 1,
                Some('}') => {
                    i += 1;
                    break;
                }
                other => panic!("bad label separator {other:?}: {line}"),
            }
        }
    }
    let rest = text(i..chars.len());
    let value_text = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space before value: {line}"));
    assert!(
        !value_text.contains(' '),
        "timestamps are not expected: {line}"
    );
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
    };
    Sample {
        name,
        labels,
        value,
    }
}

/// Scrapes `/metrics` as admin.
pub async fn scrape(app: &TestApp) -> Scrape {
    let response = app
        .client
        .get(format!("{}/metrics", app.base))
        .header("X-OS-API-TOKEN", &app.token)
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    parse(&response.text().await.expect("text"))
}

/// Scrapes until `done` holds (generous deadline for a busy machine).
pub async fn scrape_until(app: &TestApp, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let scraped = scrape(app).await;
        if done(&scraped) {
            return scraped;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {what}: {:#?}",
            scraped.names()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_runs_fires_and_the_run_gauges() {
    let app = spawn_app().await;
    app.write_script("ok.sh", "#!/bin/sh\nexit 0\n");
    app.write_script("fail.sh", "#!/bin/sh\nexit 1\n");
    app.write_script(
        "wait.sh",
        "#!/bin/sh\nwhile [ ! -e \"$1\" ]; do sleep 0.1; done\n",
    );
    app.write_script("slow.sh", "#!/bin/sh\nsleep 2\n");

    // Requests: a matched route, a path no route matches, an error answer.
    ok_json(app.get("/scheduled-jobs").await).await;
    let response = app
        .client
        .get(format!("{}/rest/ng/no-such-thing", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = app.get("/scheduled-jobs/999999").await;
    assert_eq!(
        error_codes(response, StatusCode::BAD_REQUEST).await,
        ["SCHEDULED_JOB_NOT_FOUND"]
    );

    // Runs: one success, one failure.
    let ok = app.create_external_job("ok", "ok.sh").await;
    let fail = app.create_external_job("fail", "fail.sh").await;
    let run = app.start_run(ok, None).await;
    assert_eq!(app.wait_run(ok, run).await["status"], "SUCCEEDED");
    let run = app.start_run(fail, None).await;
    assert_eq!(app.wait_run(fail, run).await["status"], "FAILED");

    // Gauges: one run holds the job, a second waits behind it.
    let release = app.data_dir.join("release");
    let holder = app
        .create_job(
            &json!({"name": "holder", "type": "EXTERNAL", "command": "wait.sh",
        "repeatSchedule": "ONDEMAND", "rtArgsProvided": true}),
        )
        .await;
    let arg = release.display().to_string();
    let first = app.start_run(holder, Some(&arg)).await;
    let second = app.start_run(holder, Some(&arg)).await;
    scrape_until(&app, "a running and a queued run", |s| {
        s.get("labcron_runs_running", &[]) >= 1.0 && s.get("labcron_runs_queued", &[]) >= 1.0
    })
    .await;
    std::fs::write(&release, "go").unwrap();
    app.wait_run(holder, first).await;
    app.wait_run(holder, second).await;

    // Fires: a job every second whose run takes two, so some fires find it busy.
    let cron = ok_json(
        app.post(
            "/scheduled-jobs",
            &json!({"name": "every second", "type": "EXTERNAL",
        "command": "slow.sh", "repeatSchedule": "CRON", "cronExpression": "* * * * * *"}),
        )
        .await,
    )
    .await;
    let cron = cron["id"].as_i64().unwrap();
    scrape_until(&app, "fires, a busy skip and a finished fired run", |s| {
        s.get("labcron_fires_total", &[]) >= 2.0
            && s.get("labcron_fires_skipped_busy_total", &[]) >= 1.0
            && s.get(
                "labcron_runs_finished_total",
                &[("job_type", "EXTERNAL"), ("status", "SUCCEEDED")],
            ) >= 4.0
    })
    .await;
    ok_json(app.delete(&format!("/scheduled-jobs/{cron}")).await).await;

    // The last fire's counters settle right after its ledger write.
    let s = scrape_until(&app, "as many lateness observations as fires", |s| {
        s.get("labcron_fire_lateness_seconds_count", &[]) == s.get("labcron_fires_total", &[])
    })
    .await;
    let counter = |name: &str| {
        assert_eq!(
            s.types.get(name).map(String::as_str),
            Some("counter"),
            "{name}"
        )
    };
    let gauge = |name: &str| {
        assert_eq!(
            s.types.get(name).map(String::as_str),
            Some("gauge"),
            "{name}"
        )
    };
    let histogram = |name: &str| {
        assert_eq!(
            s.types.get(name).map(String::as_str),
            Some("histogram"),
            "{name}"
        )
    };

    counter("labcron_http_requests_total");
    histogram("labcron_http_request_duration_seconds");
    let requests = |route: &str, method: &str, status: &str| {
        s.value(
            "labcron_http_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
        .unwrap_or(0.0)
    };
    assert!(requests("/rest/ng/scheduled-jobs", "GET", "200") >= 1.0);
    assert!(requests("UNKNOWN", "GET", "404") >= 1.0);
    assert!(requests("/rest/ng/scheduled-jobs/{jobId}", "GET", "400") >= 1.0);
    assert!(requests("/rest/ng/scheduled-jobs/{jobId}/runs", "POST", "200") >= 4.0);
    assert!(requests("/rest/ng/sessions", "POST", "200") >= 1.0);
    // Routes are patterns, never concrete paths.
    assert!(
        s.samples
            .iter()
            .all(|x| !x.labels.get("route").is_some_and(|r| r.contains("999999")))
    );
    assert!(
        s.get(
            "labcron_http_request_duration_seconds_count",
            &[("route", "/rest/ng/scheduled-jobs"), ("method", "GET")]
        ) >= 1.0
    );

    counter("labcron_runs_finished_total");
    histogram("labcron_run_duration_seconds");
    let finished = |status: &str| {
        s.get(
            "labcron_runs_finished_total",
            &[("job_type", "EXTERNAL"), ("status", status)],
        )
    };
    assert_eq!(finished("FAILED"), 1.0);
    // ok, the two holder runs, and at least one fired run of the CRON job.
    assert!(finished("SUCCEEDED") >= 4.0);
    let external_runs = finished("SUCCEEDED") + finished("FAILED");
    assert_eq!(
        s.get(
            "labcron_run_duration_seconds_count",
            &[("job_type", "EXTERNAL")]
        ),
        external_runs
    );
    assert!(
        s.get(
            "labcron_run_duration_seconds_sum",
            &[("job_type", "EXTERNAL")]
        ) >= 2.0,
        "a slow run took 2 s"
    );
    assert_eq!(
        s.get(
            "labcron_runs_finished_total",
            &[("job_type", "QUERY"), ("status", "SUCCEEDED")]
        ),
        0.0
    );

    histogram("labcron_fire_lateness_seconds");
    counter("labcron_fires_total");
    assert_eq!(
        s.get("labcron_fire_lateness_seconds_count", &[]),
        s.get("labcron_fires_total", &[])
    );
    assert!(s.get("labcron_fire_lateness_seconds_bucket", &[("le", "60")]) >= 2.0);
    counter("labcron_fires_skipped_busy_total");
    assert!(s.get("labcron_fires_skipped_busy_total", &[]) >= 1.0);
    for name in [
        "labcron_fires_missed_total",
        "labcron_catch_up_runs_total",
        "labcron_scheduler_restarts_total",
    ] {
        counter(name);
        assert!(s.get(name, &[]) >= 0.0);
    }
    gauge("labcron_runs_queued");
    gauge("labcron_runs_running");
    counter("labcron_notifications_total");
    for channel in ["email", "webhook"] {
        for outcome in ["delivered", "failed"] {
            assert_eq!(
                s.get(
                    "labcron_notifications_total",
                    &[("channel", channel), ("outcome", outcome)]
                ),
                0.0
            );
        }
    }
    counter("labcron_retention_run_files_removed_total");
    counter("labcron_retention_run_rows_deleted_total");
}

#[tokio::test]
async fn metrics_need_a_signed_in_admin_and_basic_authorization_works() {
    let app = spawn_app().await;
    let url = format!("{}/metrics", app.base);

    let response = app.client.get(&url).send().await.unwrap();
    assert_eq!(
        error_codes(response, StatusCode::UNAUTHORIZED).await,
        ["AUTH_REQUIRED"]
    );

    let (_, token) = app.create_user("viewer", false).await;
    let response = app
        .client
        .get(&url)
        .header("X-OS-API-TOKEN", token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_codes(response, StatusCode::BAD_REQUEST).await,
        ["ACCESS_DENIED"]
    );

    let response = app
        .client
        .get(&url)
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let s = parse(&response.text().await.unwrap());
    // The failed attempts above were counted, under the /metrics route.
    assert!(
        s.get(
            "labcron_http_requests_total",
            &[("route", "/metrics"), ("method", "GET"), ("status", "401")]
        ) >= 1.0
    );
    assert!(
        s.get(
            "labcron_http_requests_total",
            &[("route", "/metrics"), ("method", "GET"), ("status", "400")]
        ) >= 1.0
    );

    let response = app
        .client
        .get(&url)
        .basic_auth("admin", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_codes(response, StatusCode::UNAUTHORIZED).await,
        ["AUTH_INVALID_CREDENTIALS"]
    );
}

#[test]
fn the_parser_rejects_what_prometheus_would() {
    let good = "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"q\\\"\\\\\\n\",b=\"2\"} 3\n";
    let s = parse(good);
    assert_eq!(s.get("x_total", &[("a", "q\"\\\n"), ("b", "2")]), 3.0);
    for bad in [
        "x_total 1\n",                                 // no TYPE
        "# TYPE x_total counter\nx_total{a=1} 1\n",    // unquoted
        "# TYPE x_total counter\nx_total{a=\"1\"}1\n", // no space
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", // not cumulative
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
    ] {
        assert!(
            std::panic::catch_unwind(|| parse(bad)).is_err(),
            "accepted: {bad}"
        );
    }
}
