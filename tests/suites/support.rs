//! The routes the API registers, as the security suite walks them: every `web::resource("…")`
//! of `src/web/api/*.rs` with its methods and the paths it is served at, and how to fill a
//! template's parameters. (Starting the binary, the clients and the rest: `tests/common`.)

use std::path::{Path, PathBuf};

use reqwest::Method;

/// The routes the API registers, read from its source: every `web::resource("…")` in
/// `src/web/api/*.rs`, with the methods routed on it and the paths it is served
/// at (under both base paths when its module is configured inside the base-path scope).
#[derive(Debug, Clone)]
pub struct Route {
    pub template: String,
    pub methods: Vec<Method>,
    /// Full paths (templates) it is served at.
    pub paths: Vec<String>,
}

pub fn discover_routes() -> Vec<Route> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let api_mod =
        std::fs::read_to_string(root.join("src/web/api/mod.rs")).expect("src/web/api/mod.rs");
    // Modules configured inside `web::scope(base)` are served under every base path.
    let scoped: Vec<String> = api_mod
        .split("web::scope(")
        .nth(1)
        .map(|rest| rest.split("cfg.configure(").next().unwrap_or(""))
        .unwrap_or("")
        .split(".configure(")
        .skip(1)
        .filter_map(|s| s.split("::configure").next())
        .map(|s| s.trim().to_string())
        .collect();
    let bases: Vec<String> = api_mod
        .split("BASE_PATHS: &[&str] = &[")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    assert!(
        !scoped.is_empty() && !bases.is_empty(),
        "cannot read the scope of src/web/api/mod.rs"
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("src/web/api"))
        .expect("src/web/api")
        .filter_map(|e| e.ok().map(|e| e.path()))
        // A resource module is a file or a folder with its routes in mod.rs.
        .map(|p| if p.is_dir() { p.join("mod.rs") } else { p })
        .filter(|p| p.extension().is_some_and(|e| e == "rs") && p.exists())
        .collect();
    files.sort();
    let mut routes = Vec::new();
    for file in files {
        let named = if file.ends_with("mod.rs") {
            file.parent().and_then(|p| p.file_name())
        } else {
            file.file_stem()
        };
        let module = named
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let source = std::fs::read_to_string(&file).expect("read source");
        let is_scoped = scoped.contains(&module);
        let pieces: Vec<&str> = source.split("web::resource(\"").collect();
        for piece in pieces.iter().skip(1) {
            let Some((template, rest)) = piece.split_once('"') else {
                continue;
            };
            // The routes of this resource: up to the end of its `.service(...)`, roughly the
            // first blank line or the end of the configure function.
            let scope_end = rest.find("\n}").unwrap_or(rest.len());
            let rest = &rest[..scope_end];
            let mut methods = Vec::new();
            for (word, method) in [
                ("web::get()", Method::GET),
                ("web::post()", Method::POST),
                ("web::put()", Method::PUT),
                ("web::delete()", Method::DELETE),
                ("web::patch()", Method::PATCH),
            ] {
                if rest.contains(word) {
                    methods.push(method);
                }
            }
            let paths = if is_scoped {
                bases.iter().map(|b| format!("{b}{template}")).collect()
            } else {
                vec![template.to_string()]
            };
            routes.push(Route {
                template: template.to_string(),
                methods,
                paths,
            });
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
