//! Page handlers: each checks the session cookie (redirecting to sign-in without one), then fills
//! the shared layout with one page shell and the few values its script needs (ids from the path,
//! the signed-in user, the anti-forgery token) as escaped `data-*` attributes. Pages carry no job
//! or run data themselves; their scripts fetch it. Every page gets a strict Content-Security-Policy.

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};

use super::assets::{self, templates};
use super::html::{Slot, escape, fill};
use crate::domain::user::User;
use crate::web::AppState;
use crate::web::api::auth::{CurrentUser, SESSION_COOKIE, csrf_token};

/// Scripts only from us, no inline code or styles, no framing, forms post only to us.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The signed-in user of a page request and the anti-forgery token of their session.
pub struct PageUser {
    pub user: User,
    pub csrf: String,
}

/// The user behind the session cookie, if it is valid.
pub async fn page_user(req: &HttpRequest) -> Option<PageUser> {
    page_visitor(req).await.ok().flatten()
}

/// The user behind the session cookie (`None`: not signed in), or, when the ledger cannot be
/// reached to tell, the page saying so: a signed-in user is not sent to sign in again because
/// the database is down.
pub async fn page_visitor(req: &HttpRequest) -> Result<Option<PageUser>, HttpResponse> {
    let Some(token) = req.cookie(SESSION_COOKIE).map(|c| c.value().to_string()) else {
        return Ok(None);
    };
    match CurrentUser::extract(req).await {
        Ok(user) => Ok(Some(PageUser {
            user: user.0,
            csrf: csrf_token(&token),
        })),
        Err(e) if e.is_unreachable() => Err(unavailable_page()),
        Err(_) => Ok(None),
    }
}

/// "The database is unavailable" with status 503 and `Retry-After`: the pages work again by
/// themselves when the ledger's database is back.
pub fn unavailable_page() -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::RETRY_AFTER, "5"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        .body(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>labcron: database unavailable</title></head><body>\
             <h1>The ledger's database is unavailable</h1>\
             <p>labcron cannot reach its database right now. Nothing you saved is lost; reload \
             this page in a few seconds.</p></body></html>",
        )
}

/// Only local UI paths may be a sign-in's destination (no open redirect).
pub fn safe_next(next: &str) -> &str {
    let ok = next.starts_with("/ui/")
        && !next.starts_with("/ui/sign-")
        && !next.contains("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    if ok { next } else { "/ui/jobs" }
}

pub fn redirect(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

pub(super) fn to_sign_in(req: &HttpRequest) -> HttpResponse {
    let mut here = req.path().to_string();
    if !req.query_string().is_empty() {
        here.push('?');
        here.push_str(req.query_string());
    }
    let query = serde_urlencoded::to_string([("next", safe_next(&here))]).unwrap_or_default();
    redirect(&format!("/ui/sign-in?{query}"))
}

/// What distinguishes one page from another in the layout.
pub struct Page<'a> {
    pub title: &'a str,
    /// `data-page`, also the highlighted navigation entry.
    pub name: &'a str,
    /// The page's script under `/ui/assets/`.
    pub script: &'a str,
    /// The page shell (trusted markup from `templates`).
    pub shell: &'a str,
    /// Extra `data-*` attributes for the page script (escaped here).
    pub data: Vec<(&'a str, String)>,
}

fn user_label(user: &User) -> String {
    let name = format!("{} {}", user.first_name, user.last_name);
    let name = name.trim();
    if name.is_empty() {
        user.login_name.clone()
    } else {
        format!("{name} ({})", user.login_name)
    }
}

fn header_markup(page: &Page, me: &PageUser) -> String {
    let link = |href: &str, label: &str, name: &str| {
        let current = if page.name.starts_with(name) {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<li><a href=\"{href}\"{current}>{label}</a></li>")
    };
    let mut nav = link("/ui/jobs", "Jobs", "job");
    nav.push_str(&link("/ui/runs", "Runs", "all-runs"));
    nav.push_str(&link("/ui/saved-queries", "Saved queries", "quer"));
    if me.user.admin {
        nav.push_str(&link("/ui/users", "Users", "users"));
        nav.push_str(&link("/ui/audit", "Audit", "audit"));
    }
    format!(
        "<header class=\"site-header\"><a class=\"brand\" href=\"/ui/jobs\">labcron</a>\
         <nav aria-label=\"Main\"><ul>{nav}</ul></nav>\
         <div class=\"account\"><span class=\"who\">{who}</span>\
         <form method=\"post\" action=\"/ui/sign-out\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" class=\"link\" id=\"sign-out\">Sign out</button></form></div></header>",
        who = escape(&user_label(&me.user)),
        csrf = escape(&me.csrf),
    )
}

/// The full HTML of a page. `me` is `None` only for the sign-in page.
pub fn render_page(page: &Page, me: Option<&PageUser>) -> String {
    let mut data = format!("data-page=\"{}\"", escape(page.name));
    if let Some(me) = me {
        data.push_str(&format!(
            " data-csrf=\"{}\" data-user-id=\"{}\" data-user-login=\"{}\" data-admin=\"{}\"",
            escape(&me.csrf),
            me.user.id,
            escape(&me.user.login_name),
            me.user.admin
        ));
    }
    for (key, value) in &page.data {
        data.push_str(&format!(" data-{}=\"{}\"", escape(key), escape(value)));
    }
    let header = me.map(|me| header_markup(page, me)).unwrap_or_default();
    let version = assets::version();
    let mut scripts = format!("<script src=\"/ui/assets/common.js?v={version}\" defer></script>");
    if page.script != "common.js" {
        scripts.push_str(&format!(
            "<script src=\"/ui/assets/{}?v={version}\" defer></script>",
            escape(page.script)
        ));
    }
    fill(
        templates::LAYOUT,
        &[
            ("title", Slot::Text(page.title)),
            ("version", Slot::Text(version)),
            ("scripts", Slot::Markup(&scripts)),
            ("data", Slot::Markup(&data)),
            ("header", Slot::Markup(&header)),
            ("main", Slot::Markup(page.shell)),
        ],
    )
}

/// An HTML response with the security headers every page gets.
pub fn html_response(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

/// A signed-in page, or a redirect to sign-in.
async fn signed_in_page(req: &HttpRequest, page: Page<'_>) -> HttpResponse {
    match page_visitor(req).await {
        Ok(Some(me)) => html_response(render_page(&page, Some(&me))),
        Ok(None) => to_sign_in(req),
        Err(unavailable) => unavailable,
    }
}

/// A numeric path segment, or `None` (which shows the not-found page).
fn path_id(req: &HttpRequest, name: &str) -> Option<String> {
    let text = req.match_info().get(name)?;
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .map(|id| id.to_string())
}

pub async fn home(req: HttpRequest) -> HttpResponse {
    match page_visitor(&req).await {
        Ok(Some(_)) => redirect("/ui/jobs"),
        Ok(None) => to_sign_in(&req),
        Err(unavailable) => unavailable,
    }
}

/// A page that is a shell filled by its script: what it shows and which path segments (numeric
/// ids) it hands to the script as `data-*` attributes.
pub struct ShellPage {
    pub path: &'static str,
    title: &'static str,
    /// `data-page`, also the highlighted navigation entry.
    name: &'static str,
    script: &'static str,
    shell: &'static str,
    /// `(data attribute, path segment)`: `("job-id", "jobId")` passes `{jobId}` as `data-job-id`.
    ids: &'static [(&'static str, &'static str)],
    /// Whether the script needs the server's time zone (`data-server-timezone`).
    server_timezone: bool,
}

const JOB_ID: (&str, &str) = ("job-id", "jobId");

/// Every shell page (the job page, with its own data, is `job_page`).
pub const PAGES: &[ShellPage] = &[
    ShellPage {
        path: "/ui/jobs",
        title: "Jobs",
        name: "jobs",
        script: "jobs.js",
        shell: templates::JOBS,
        ids: &[],
        server_timezone: true,
    },
    ShellPage {
        path: "/ui/runs",
        title: "Runs",
        name: "all-runs",
        script: "all-runs.js",
        shell: templates::ALL_RUNS,
        ids: &[],
        server_timezone: false,
    },
    ShellPage {
        path: "/ui/jobs/new",
        title: "Create job",
        name: "job-form",
        script: "job-form.js",
        shell: templates::JOB_FORM,
        ids: &[],
        server_timezone: true,
    },
    ShellPage {
        path: "/ui/jobs/{jobId}/edit",
        title: "Edit job",
        name: "job-form",
        script: "job-form.js",
        shell: templates::JOB_FORM,
        ids: &[JOB_ID],
        server_timezone: true,
    },
    ShellPage {
        path: "/ui/jobs/{jobId}/runs",
        title: "Job runs",
        name: "job-runs",
        script: "runs.js",
        shell: templates::RUNS,
        ids: &[JOB_ID],
        server_timezone: false,
    },
    ShellPage {
        path: "/ui/jobs/{jobId}/runs/{runId}",
        title: "Job run",
        name: "job-run",
        script: "run.js",
        shell: templates::RUN,
        ids: &[JOB_ID, ("run-id", "runId")],
        server_timezone: false,
    },
    // One job's history: the audit trail filtered to the job (issue 15).
    ShellPage {
        path: "/ui/jobs/{jobId}/history",
        title: "Job history",
        name: "audit-job",
        script: "audit.js",
        shell: templates::AUDIT,
        ids: &[JOB_ID],
        server_timezone: false,
    },
    ShellPage {
        path: "/ui/saved-queries",
        title: "Saved queries",
        name: "queries",
        script: "queries.js",
        shell: templates::QUERIES,
        ids: &[],
        server_timezone: false,
    },
    ShellPage {
        path: "/ui/saved-queries/new",
        title: "Create saved query",
        name: "query-form",
        script: "queries.js",
        shell: templates::QUERY_FORM,
        ids: &[],
        server_timezone: false,
    },
    ShellPage {
        path: "/ui/saved-queries/{queryId}/edit",
        title: "Edit saved query",
        name: "query-form",
        script: "queries.js",
        shell: templates::QUERY_FORM,
        ids: &[("query-id", "queryId")],
        server_timezone: false,
    },
    ShellPage {
        path: "/ui/users",
        title: "Users",
        name: "users",
        script: "users.js",
        shell: templates::USERS,
        ids: &[],
        server_timezone: false,
    },
    // The audit trail (issue 15, admins; the API refuses others).
    ShellPage {
        path: "/ui/audit",
        title: "Audit trail",
        name: "audit",
        script: "audit.js",
        shell: templates::AUDIT,
        ids: &[],
        server_timezone: false,
    },
];

/// `GET` of a shell page: signed in, with its ids (a segment that is not an id shows the
/// not-found page).
pub async fn shell_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    spec: &'static ShellPage,
) -> HttpResponse {
    let mut data = Vec::with_capacity(spec.ids.len() + 1);
    for (attribute, segment) in spec.ids {
        let Some(id) = path_id(&req, segment) else {
            return not_found_page();
        };
        data.push((*attribute, id));
    }
    if spec.server_timezone {
        data.push((
            "server-timezone",
            state.settings.timezone.name().to_string(),
        ));
    }
    let page = Page {
        title: spec.title,
        name: spec.name,
        script: spec.script,
        shell: spec.shell,
        data,
    };
    signed_in_page(&req, page).await
}

/// A "Page not found" page with status 404 (the error middleware lets HTML error pages through).
pub fn not_found_page() -> HttpResponse {
    let page = Page {
        title: "Page not found",
        name: "not-found",
        script: "common.js",
        shell: templates::NOT_FOUND,
        data: Vec::new(),
    };
    let mut response = html_response(render_page(&page, None));
    *response.status_mut() = actix_web::http::StatusCode::NOT_FOUND;
    response
}

pub async fn not_found() -> HttpResponse {
    not_found_page()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_be_a_local_ui_path() {
        assert_eq!(
            safe_next("/ui/jobs/3/runs?status=FAILED"),
            "/ui/jobs/3/runs?status=FAILED"
        );
        assert_eq!(safe_next("https://evil.example/"), "/ui/jobs");
        assert_eq!(safe_next("//evil.example/ui/"), "/ui/jobs");
        assert_eq!(safe_next("/ui//evil.example"), "/ui/jobs");
        assert_eq!(safe_next("/ui/\\evil"), "/ui/jobs");
        assert_eq!(safe_next("/ui/sign-in"), "/ui/jobs");
        assert_eq!(safe_next("/rest/ng/users"), "/ui/jobs");
    }

    #[test]
    fn page_data_is_escaped() {
        let me = PageUser {
            user: User {
                id: 7,
                login_name: "\"><script>x</script>".into(),
                first_name: "<b>".into(),
                last_name: String::new(),
                email_address: String::new(),
                admin: false,
                is_system: false,
                active: true,
                created_at: 0,
            },
            csrf: "abc".into(),
        };
        let page = Page {
            title: "<t>",
            name: "jobs",
            script: "jobs.js",
            shell: "<p>shell</p>",
            data: vec![("job-id", "\"1".into())],
        };
        let html = render_page(&page, Some(&me));
        assert!(!html.contains("<script>x"));
        assert!(!html.contains("<b>"));
        assert!(html.contains("data-job-id=\"&quot;1\""));
        assert!(html.contains("<title>&lt;t&gt;"));
        assert!(
            !html.contains("href=\"/ui/users\""),
            "no Users link for non-admins"
        );
    }
}
