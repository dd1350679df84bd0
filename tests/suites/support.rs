//! The routes the API serves, as the security suite walks them: every operation of the served
//! `/openapi.json` (the route builder documents exactly what it registers; `tests/api/openapi.rs`
//! checks the server agrees), grouped by path template with the paths it is served at, and how to
//! fill a template's parameters. (Starting the binary, the clients and the rest: `tests/common`.)

use reqwest::Method;
use serde_json::Value;

/// A served route: a path template (without the base path), the methods it takes and the paths it
/// is served at.
#[derive(Debug, Clone)]
pub struct Route {
    pub template: String,
    pub methods: Vec<Method>,
    /// Full paths (templates) it is served at.
    pub paths: Vec<String>,
}

/// The API's base paths; a template under one is served under each.
const BASE_PATHS: &[&str] = &["/openspecimen/rest/ng", "/rest/ng"];

/// The methods the suite sends (a `HEAD` answer has no body to check).
const METHODS: &[Method] = &[
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];

/// The routes of the server at `base`, read from its `/openapi.json`.
pub async fn served_routes(base: &str) -> Vec<Route> {
    let doc: Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .expect("GET /openapi.json")
        .json()
        .await
        .expect("the OpenAPI document");
    let mut routes: Vec<Route> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let template = BASE_PATHS
            .iter()
            .find_map(|b| path.strip_prefix(b))
            .unwrap_or(path)
            .to_string();
        let methods: Vec<Method> = METHODS
            .iter()
            .filter(|m| item.get(m.as_str().to_lowercase()).is_some())
            .cloned()
            .collect();
        match routes.iter_mut().find(|r| r.template == template) {
            Some(route) => {
                assert_eq!(
                    route.methods, methods,
                    "{path}: other methods than its mirror"
                );
                route.paths.push(path.clone());
            }
            None => routes.push(Route {
                template,
                methods,
                paths: vec![path.clone()],
            }),
        }
    }
    assert!(routes.len() >= 10, "found only {} routes", routes.len());
    routes
}

/// The path parameters (`{jobId}`) of a template.
pub fn parameters(template: &str) -> Vec<String> {
    template
        .split('{')
        .skip(1)
        .filter_map(|s| s.split('}').next())
        .map(|s| s.split(':').next().unwrap_or(s).to_string())
        .collect()
}

/// Fills a template's parameters with `values` (by name; missing ones get `fallback`).
pub fn fill(template: &str, values: &[(&str, String)], fallback: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
        let name = rest[open + 1..close].split(':').next().unwrap_or("");
        let value = values
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(fallback.to_string(), |(_, v)| v.clone());
        out.push_str(&value);
        rest = &rest[(close + 1).min(rest.len())..];
    }
    out.push_str(rest);
    out
}
