//! The OpenAPI document (`GET /openapi.json`) against what the server really serves:
//! - every documented operation is served, and every other method on a documented path answers
//!   405 (the route builder registers and documents each handler in one call; this holds it so);
//! - every documented GET answers (no 404 for a route that does not exist) with a documented status;
//! - real responses, successes and errors, match the documented JSON schemas;
//! - `/docs` serves a page that loads nothing from elsewhere.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestApp, ok_json, spawn_app};

/// A documented route: method (upper case) and path with `{name}` placeholders.
type Route = (String, String);

fn documented_routes(doc: &Value) -> BTreeSet<Route> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("path item") {
            if [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

async fn fetch_document(app: &TestApp) -> Value {
    // Public: no token.
    let response = reqwest::get(format!("{}/openapi.json", app.base))
        .await
        .expect("GET /openapi.json");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    response.json().await.expect("JSON document")
}

/// The methods probed on every documented path (a `HEAD` answer has no body to check).
const PROBED: &[Method] = &[
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];

/// The code of an error array, if the body is one.
fn error_code(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    value[0]["code"].as_str().map(str::to_string)
}

#[tokio::test]
async fn every_documented_operation_is_served_and_every_other_method_is_refused() {
    let app = spawn_app().await;
    let doc = fetch_document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let documented = documented_routes(&doc);
    for expected in [
        ("POST", "/rest/ng/sessions"),
        (
            "GET",
            "/openspecimen/rest/ng/scheduled-jobs/{jobId}/runs/{runId}/result-file",
        ),
        (
            "HEAD",
            "/rest/ng/scheduled-jobs/{jobId}/runs/{runId}/result-file",
        ),
        ("DELETE", "/rest/ng/saved-queries/{queryId}"),
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ] {
        assert!(
            documented.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} is not documented; the document has {documented:#?}"
        );
    }
    let mut by_path: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (method, path) in &documented {
        by_path.entry(path).or_default().insert(method);
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // No credentials and ids of nothing: nothing is changed, and every answer is the handler's
    // (401, 400, …) or the resource's 405, never the unknown route's 404.
    let send = |method: Method, path: &str| {
        let url = format!(
            "{}{}",
            app.base,
            path.split('{')
                .map(|piece| piece.split_once('}').map_or(piece, |(_, rest)| rest))
                .collect::<Vec<_>>()
                .join("999999")
        );
        client
            .request(method, url)
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
    };
    // The unknown route's answer, so that its absence below means something.
    let unknown = send(Method::GET, "/rest/ng/no-such-resource")
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let no_route = error_code(&unknown.text().await.unwrap());
    assert_eq!(no_route.as_deref(), Some("NOT_FOUND"));

    let (mut served, mut refused) = (0, 0);
    for (path, methods) in &by_path {
        for method in methods {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let response = send(method.clone(), path).await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not served: {status} {body}"
            );
            served += 1;
        }
        for method in PROBED {
            if methods.contains(method.as_str()) {
                continue;
            }
            let response = send(method.clone(), path).await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert_eq!(
                (status, error_code(&body).as_deref()),
                (StatusCode::METHOD_NOT_ALLOWED, Some("METHOD_NOT_ALLOWED")),
                "{method} {path} is not documented, so it must be refused: {body}"
            );
            refused += 1;
        }
    }
    assert!(
        served >= 60 && refused >= 100,
        "only {served} served and {refused} refused"
    );
}

#[tokio::test]
async fn the_document_declares_both_ways_to_sign_in_and_the_headers_that_matter() {
    let app = spawn_app().await;
    let doc = fetch_document(&app).await;
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["apiToken"]["type"], "apiKey");
    assert_eq!(schemes["apiToken"]["in"], "header");
    assert_eq!(schemes["apiToken"]["name"], "X-OS-API-TOKEN");
    assert_eq!(schemes["basic"]["type"], "http");
    assert_eq!(schemes["basic"]["scheme"], "basic");
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");

    let public: BTreeSet<&str> = ["signIn", "health", "openapiDocument", "docsPage"].into();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().expect("operationId");
            let plain_id = id.trim_start_matches("openspecimen_rest_ng_");
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            assert_eq!(
                secured,
                !public.contains(plain_id),
                "{method} {path}: security {}",
                op["security"]
            );
            let responses = op["responses"].as_object().unwrap();
            if secured {
                for status in ["401", "429"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
            }
            if op.get("requestBody").is_some() {
                assert!(responses.contains_key("413"), "{method} {path}: no 413");
            }
            if path.starts_with("/rest/ng") || path.starts_with("/openspecimen") {
                assert!(responses.contains_key("400"), "{method} {path}: no 400");
            }
        }
    }
    let header = |path: &str, method: &str, name: &str| {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["in"] == "header" && p["name"] == name)
    };
    assert!(header(
        "/rest/ng/scheduled-jobs/{jobId}/runs",
        "post",
        "Idempotency-Key"
    ));
    assert!(header(
        "/rest/ng/scheduled-jobs/{jobId}/runs",
        "get",
        "X-OS-CLIENT-TZ"
    ));
    assert!(header(
        "/openspecimen/rest/ng/scheduled-jobs/{jobId}/runs",
        "get",
        "X-OS-CLIENT-TZ"
    ));
    let unavailable = &doc["paths"]["/health"]["get"]["responses"]["503"];
    assert!(unavailable.is_object(), "/health documents 503");
    let file = &doc["paths"]["/rest/ng/scheduled-jobs/{jobId}/runs/{runId}/result-file"]["get"]["responses"]
        ["200"]["content"];
    assert!(file["text/csv"].is_object() && file["application/zip"].is_object());
    let log = &doc["paths"]["/rest/ng/scheduled-jobs/{jobId}/runs/{runId}/log"]["get"]["responses"]
        ["200"]["content"];
    assert!(log["text/plain"].is_object());
    let error_list = &doc["components"]["schemas"]["ErrorList"];
    assert_eq!(error_list["type"], "array");
    assert_eq!(
        error_list["items"]["$ref"],
        "#/components/schemas/ErrorItem"
    );
}

/// Ids of real objects for every path parameter the document uses.
struct Ids {
    job: i64,
    run: i64,
    user: i64,
    query: i64,
}

async fn real_objects(app: &TestApp) -> Ids {
    app.write_script(
        "report.sh",
        "#!/bin/sh\necho started\nprintf 'site,n\\nMain,1\\n' > \"$LABCRON_RESULT_DIR/r.csv\"\n",
    );
    let job = app.create_external_job("Report", "report.sh").await;
    let run = app.start_run(job, None).await;
    let finished = app.wait_run(job, run).await;
    assert_eq!(finished["status"], "SUCCEEDED", "{finished}");
    let users = ok_json(app.get("/users").await).await;
    let user = users[0]["id"].as_i64().expect("a user");
    let created = ok_json(
        app.post(
            "/saved-queries",
            &json!({"title": "One", "sql": "SELECT 1 AS one"}),
        )
        .await,
    )
    .await;
    Ids {
        job,
        run,
        user,
        query: created["id"].as_i64().expect("query id"),
    }
}

fn fill(path: &str, ids: &Ids) -> String {
    path.replace("{jobId}", &ids.job.to_string())
        .replace("{runId}", &ids.run.to_string())
        .replace("{userId}", &ids.user.to_string())
        .replace("{queryId}", &ids.query.to_string())
}

#[tokio::test]
async fn every_documented_get_answers_with_a_documented_status() {
    let app = spawn_app().await;
    let doc = fetch_document(&app).await;
    let ids = real_objects(&app).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(op) = item.get("get") else { continue };
        let url = format!("{}{}", app.base, fill(path, &ids));
        assert!(!url.contains('{'), "unfilled parameter in {path}");
        let response = client
            .get(&url)
            .header("X-OS-API-TOKEN", &app.token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_ne!(
            status,
            StatusCode::NOT_FOUND,
            "GET {path}: no such route: {body}"
        );
        assert!(
            op["responses"].get(status.as_str()).is_some(),
            "GET {path} answered {status}, which the document does not list: {body}"
        );
        assert!(
            status.is_success() || status.is_redirection(),
            "GET {path}: {status} {body}"
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} GET operations");
}

/// The JSON schema documented for `status` of `method path`, with the document's components so
/// that its `$ref`s resolve.
fn documented_schema(doc: &Value, method: &str, path: &str, status: u16) -> Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let mut response = &op["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path}: {status} is not documented"
    );
    if let Some(reference) = response["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap();
        response = &doc["components"]["responses"][name];
    }
    let mut schema = response["content"]["application/json"]["schema"].clone();
    assert!(
        schema.is_object(),
        "{method} {path} {status}: no JSON schema"
    );
    schema["components"] = doc["components"].clone();
    schema
}

fn assert_conforms(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let schema = documented_schema(doc, method, path, status);
    let validator = jsonschema::draft202012::new(&schema)
        .unwrap_or_else(|e| panic!("{method} {path} {status}: bad schema: {e}"));
    let problems: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        problems.is_empty(),
        "{method} {path} {status}: the response does not match the documented schema:\n{}\nbody: {body:#}",
        problems.join("\n")
    );
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = app.client.request(method, format!("{}{path}", app.base));
    if let Some(token) = token {
        request = request.header("X-OS-API-TOKEN", token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"));
    (status, value)
}

/// method, path (with `{…}` placeholders and maybe a query), body, token, expected status
type Case<'a> = (Method, &'a str, Option<Value>, Option<&'a str>, u16);

#[tokio::test]
async fn real_responses_match_the_documented_schemas() {
    let app = spawn_app().await;
    let doc = fetch_document(&app).await;
    let ids = real_objects(&app).await;
    let token = Some(app.token.as_str());
    let cases: Vec<Case> = vec![
        (Method::GET, "/rest/ng/scheduled-jobs", None, token, 200),
        (
            Method::GET,
            "/rest/ng/scheduled-jobs/{jobId}",
            None,
            token,
            200,
        ),
        (
            Method::GET,
            "/openspecimen/rest/ng/scheduled-jobs/{jobId}",
            None,
            token,
            200,
        ),
        (
            Method::GET,
            "/rest/ng/scheduled-jobs/count",
            None,
            token,
            200,
        ),
        (
            Method::GET,
            "/rest/ng/scheduled-jobs/{jobId}/next-runs",
            None,
            token,
            200,
        ),
        (
            Method::GET,
            "/rest/ng/scheduled-jobs/{jobId}/runs",
            None,
            token,
            200,
        ),
        (
            Method::GET,
            "/rest/ng/scheduled-jobs/{jobId}/runs/{runId}",
            None,
            token,
            200,
        ),
        (Method::GET, "/rest/ng/users", None, token, 200),
        (Method::GET, "/rest/ng/users/{userId}", None, token, 200),
        (Method::GET, "/rest/ng/saved-queries", None, token, 200),
        (
            Method::GET,
            "/rest/ng/saved-queries/{queryId}",
            None,
            token,
            200,
        ),
        (Method::GET, "/health", None, None, 200),
        (
            Method::POST,
            "/rest/ng/sessions",
            Some(json!({"loginName": "admin", "password": crate::common::ADMIN_PASSWORD})),
            None,
            200,
        ),
        (
            Method::POST,
            "/rest/ng/scheduled-jobs/{jobId}/runs",
            Some(json!({})),
            token,
            200,
        ),
        (
            Method::POST,
            "/rest/ng/scheduled-jobs",
            Some(
                json!({"name": "Daily", "type": "INTERNAL", "taskImplFqn": "runs-report",
                        "repeatSchedule": "DAILY", "scheduledHour": 3, "scheduledMinute": 0,
                        "recipients": [{"id": ids.user}]}),
            ),
            token,
            200,
        ),
        // Errors: the contract's array.
        (
            Method::GET,
            "/rest/ng/scheduled-jobs/999999",
            None,
            token,
            400,
        ),
        (
            Method::GET,
            "/rest/ng/scheduled-jobs/not-a-number",
            None,
            token,
            400,
        ),
        (
            Method::GET,
            "/rest/ng/scheduled-jobs?maxResults=many",
            None,
            token,
            400,
        ),
        (
            Method::POST,
            "/rest/ng/scheduled-jobs",
            Some(json!({})),
            token,
            400,
        ),
        (Method::GET, "/rest/ng/scheduled-jobs", None, None, 401),
        (
            Method::GET,
            "/rest/ng/scheduled-jobs",
            None,
            Some("not-a-token"),
            401,
        ),
        (
            Method::GET,
            "/rest/ng/scheduled-jobs/{jobId}/runs/{runId}/result-file",
            None,
            None,
            401,
        ),
    ];
    for (method, template, body, token, expected) in cases {
        let (path_only, query) = template.split_once('?').unwrap_or((template, ""));
        let url = if query.is_empty() {
            fill(path_only, &ids)
        } else {
            format!("{}?{query}", fill(path_only, &ids))
        };
        let (status, value) = call(&app, method.clone(), &url, body, token).await;
        assert_eq!(status, expected, "{method} {url}: {value}");
        // `/scheduled-jobs/not-a-number` is the `{jobId}` operation.
        let documented_path =
            if path_only.ends_with("/not-a-number") || path_only.ends_with("/999999") {
                "/rest/ng/scheduled-jobs/{jobId}"
            } else {
                path_only
            };
        assert_conforms(
            &doc,
            &method.as_str().to_lowercase(),
            documented_path,
            status,
            &value,
        );
    }

    // `?response=run` answers with the run: the documented answer covers it too.
    let (status, run) = call(
        &app,
        Method::POST,
        &fill("/rest/ng/scheduled-jobs/{jobId}/runs?response=run", &ids),
        None,
        token,
    )
    .await;
    assert_eq!(status, 200, "{run}");
    assert!(run["jobId"].is_i64(), "{run}");
    assert_conforms(
        &doc,
        "post",
        "/rest/ng/scheduled-jobs/{jobId}/runs",
        200,
        &run,
    );
    let finished = app.wait_run(ids.job, run["id"].as_i64().unwrap()).await;
    assert_conforms(
        &doc,
        "get",
        "/rest/ng/scheduled-jobs/{jobId}/runs/{runId}",
        200,
        &finished,
    );

    // A too-large body and a wrong Basic password: 413 and 401 in the documented shape.
    let big = json!({"name": "x".repeat(2 * 1024 * 1024)});
    let (status, value) = call(
        &app,
        Method::POST,
        "/rest/ng/scheduled-jobs",
        Some(big),
        token,
    )
    .await;
    assert_eq!(status, 413, "{value}");
    assert_conforms(&doc, "post", "/rest/ng/scheduled-jobs", 413, &value);
}

#[tokio::test]
async fn the_docs_page_is_public_and_loads_nothing_from_elsewhere() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let page = client
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK, "/docs follows to the page");
    assert!(page.url().path().ends_with("/docs/"));
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    let mut assets = vec!["swagger-initializer.js".to_string()];
    for attribute in ["src=\"", "href=\""] {
        for piece in html.split(attribute).skip(1) {
            let target = piece.split('"').next().unwrap();
            assert!(
                !target.contains("//"),
                "the docs page loads {target} from elsewhere"
            );
            assets.push(target.trim_start_matches("./").to_string());
        }
    }
    for asset in &assets {
        let response = client
            .get(format!("{}/docs/{asset}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "/docs/{asset}");
        let text = response.text().await.unwrap_or_default();
        if asset.ends_with("initializer.js") {
            assert!(text.contains("/openapi.json"), "{text}");
        }
    }
}

#[tokio::test]
async fn the_schema_check_rejects_a_body_that_contradicts_the_document() {
    let app = spawn_app().await;
    let doc = fetch_document(&app).await;
    let schema = documented_schema(&doc, "get", "/rest/ng/scheduled-jobs/{jobId}", 200);
    let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
    for wrong in [
        json!({"id": "1", "name": "x"}),
        json!([{"code": "X", "message": "y"}]),
        json!(null),
    ] {
        assert!(!validator.is_valid(&wrong), "{wrong} passed as a job");
    }
    let errors = documented_schema(&doc, "get", "/rest/ng/scheduled-jobs/{jobId}", 400);
    let validator = jsonschema::draft202012::new(&errors).expect("schema compiles");
    assert!(validator.is_valid(&json!([{"code": "X", "message": "y"}])));
    assert!(!validator.is_valid(&json!({"code": "X", "message": "y"})));
    assert!(!validator.is_valid(&json!([])));
}

// Found by the fuzz suite (tests/fuzz): a log offset far past the end made the seek fail (500).
#[tokio::test]
async fn a_log_offset_past_the_end_gives_no_bytes_not_an_error() {
    let app = spawn_app().await;
    let ids = real_objects(&app).await;
    for follow in ["false", "true"] {
        let response = app
            .get(&format!(
                "/scheduled-jobs/{}/runs/{}/log?offset=9223372036854775806&follow={follow}",
                ids.job, ids.run
            ))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "follow={follow}");
        assert!(response.text().await.unwrap().is_empty());
    }
}
