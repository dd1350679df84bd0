//! The web page's static files, compiled into the binary with `include_str!` (no CDN, no build
//! step): page shells (HTML templates), the stylesheet, the scripts and the icon. Served under
//! `/ui/assets/{name}` without authentication; pages link them with `?v=<version>` so browsers may
//! cache them for good. Nothing here reads the disk at run time.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

/// One embedded file.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Files served to browsers.
pub const PUBLIC: &[Asset] = &[
    Asset {
        name: "ui.css",
        content_type: CSS,
        body: include_str!("assets/ui.css"),
    },
    Asset {
        name: "common.js",
        content_type: JS,
        body: include_str!("assets/common.js"),
    },
    Asset {
        name: "sign-in.js",
        content_type: JS,
        body: include_str!("assets/sign-in.js"),
    },
    Asset {
        name: "jobs.js",
        content_type: JS,
        body: include_str!("assets/jobs.js"),
    },
    Asset {
        name: "job-form.js",
        content_type: JS,
        body: include_str!("assets/job-form.js"),
    },
    Asset {
        name: "job.js",
        content_type: JS,
        body: include_str!("assets/job.js"),
    },
    Asset {
        name: "runs.js",
        content_type: JS,
        body: include_str!("assets/runs.js"),
    },
    Asset {
        name: "all-runs.js",
        content_type: JS,
        body: include_str!("assets/all-runs.js"),
    },
    Asset {
        name: "run.js",
        content_type: JS,
        body: include_str!("assets/run.js"),
    },
    Asset {
        name: "queries.js",
        content_type: JS,
        body: include_str!("assets/queries.js"),
    },
    Asset {
        name: "users.js",
        content_type: JS,
        body: include_str!("assets/users.js"),
    },
    Asset {
        name: "audit.js",
        content_type: JS,
        body: include_str!("assets/audit.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("assets/favicon.svg"),
    },
];

/// Page shells, filled by `pages`; not served as files.
pub mod templates {
    pub const LAYOUT: &str = include_str!("assets/layout.html");
    pub const SIGN_IN: &str = include_str!("assets/sign-in.html");
    pub const JOBS: &str = include_str!("assets/jobs.html");
    pub const JOB_FORM: &str = include_str!("assets/job-form.html");
    pub const JOB: &str = include_str!("assets/job.html");
    pub const RUNS: &str = include_str!("assets/runs.html");
    pub const RUN: &str = include_str!("assets/run.html");
    pub const ALL_RUNS: &str = include_str!("assets/all-runs.html");
    pub const QUERIES: &str = include_str!("assets/queries.html");
    pub const QUERY_FORM: &str = include_str!("assets/query-form.html");
    pub const USERS: &str = include_str!("assets/users.html");
    pub const AUDIT: &str = include_str!("assets/audit.html");
    pub const NOT_FOUND: &str = include_str!("assets/not-found.html");
}

/// A short digest of every served file: changes whenever any of them does.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut digest = Sha256::new();
        for asset in PUBLIC {
            digest.update(asset.name.as_bytes());
            digest.update(asset.body.as_bytes());
        }
        hex::encode(&digest.finalize()[..6])
    })
}

pub fn find(name: &str) -> Option<&'static Asset> {
    PUBLIC.iter().find(|a| a.name == name)
}

/// The answer to `GET /ui/assets/{name}`: the file, cached for a year when the request names the
/// current version, else revalidated each time; `None` for an unknown name.
pub fn response(req: &HttpRequest) -> Option<HttpResponse> {
    let name = req.match_info().get("name").unwrap_or_default();
    let asset = find(name)?;
    let versioned = req
        .query_string()
        .split('&')
        .any(|pair| pair.strip_prefix("v=") == Some(version()));
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Some(
        HttpResponse::Ok()
            .content_type(asset.content_type)
            .insert_header((header::CACHE_CONTROL, cache))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .body(asset.body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_non_empty_and_named_once() {
        for (i, asset) in PUBLIC.iter().enumerate() {
            assert!(!asset.body.trim().is_empty(), "{} is empty", asset.name);
            assert!(
                PUBLIC[i + 1..].iter().all(|a| a.name != asset.name),
                "{} twice",
                asset.name
            );
        }
        assert_eq!(version().len(), 12);
    }

    /// ` onclick=`-like attributes: a space, `on`, letters, `=`.
    fn has_inline_handler(html: &str) -> bool {
        html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let letters = rest.chars().take_while(char::is_ascii_lowercase).count();
            letters > 0 && rest[letters..].starts_with('=')
        })
    }

    #[test]
    fn shells_have_no_inline_script_or_style() {
        // The Content-Security-Policy forbids them; a slip would silently break a page.
        let shells = [
            templates::LAYOUT,
            templates::SIGN_IN,
            templates::JOBS,
            templates::JOB_FORM,
            templates::JOB,
            templates::RUNS,
            templates::RUN,
            templates::ALL_RUNS,
            templates::QUERIES,
            templates::QUERY_FORM,
            templates::USERS,
            templates::AUDIT,
            templates::NOT_FOUND,
        ];
        for shell in shells {
            assert!(!shell.contains("<script>"), "inline script in a shell");
            assert!(!shell.contains("style=\""), "inline style in a shell");
            assert!(
                !has_inline_handler(shell),
                "inline event handler in a shell"
            );
        }
    }
}
