//! The Jobs web pages: server-rendered shells for signing in, the jobs list, the add/edit form, a
//! job's page and its runs, one run, saved queries and users. Each shell is an HTML template
//! compiled into the binary; small hand-written scripts (also compiled in) fill it by calling the
//! JSON API with the session cookie and the session's anti-forgery token. No CDN, no Node, works
//! offline.
//!
//! UI routes answer only 200 or 3xx (the app's `json_errors` middleware would turn any HTML error
//! status into JSON): a page that does not exist is a 200 "Page not found" page. This module owns
//! no data: it reads through `store` and `api` like any handler, and never changes jobs or runs
//! itself — the pages do that through the API.

mod assets;
mod data;
mod html;
mod job_page;
mod pages;
mod query_preview;
pub use query_preview::PreviewSlots;
mod scripts;
mod session;

use actix_web::web;

/// Registers `/`, `/ui/...` (pages, sign-in/out, assets, and the pages' helper endpoints under
/// `/ui/api/`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(web::get().to(pages::home)))
        .service(web::resource("/ui").route(web::get().to(pages::home)))
        .service(web::resource("/ui/").route(web::get().to(pages::home)))
        .service(web::resource("/ui/assets/{name}").route(web::get().to(serve_asset)))
        .service(
            web::resource("/ui/sign-in")
                .route(web::get().to(session::sign_in_page))
                .route(web::post().to(session::sign_in)),
        )
        .service(web::resource("/ui/sign-out").route(web::post().to(session::sign_out)));
    // Before `/ui/jobs/{jobId}`, which would otherwise take `new` for an id.
    for page in pages::PAGES {
        cfg.service(
            web::resource(page.path)
                .route(web::get().to(move |req, state| pages::shell_page(req, state, page))),
        );
    }
    cfg.service(web::resource("/ui/jobs/{jobId}").route(web::get().to(job_page::page)))
        .service(web::resource("/ui/api/me").route(web::get().to(data::me)))
        .service(web::resource("/ui/api/recent-runs").route(web::get().to(data::recent_runs)))
        .service(web::resource("/ui/api/scripts").route(web::get().to(scripts::scripts)))
        .service(
            web::resource("/ui/api/jobs/{jobId}/overview").route(web::get().to(job_page::overview)),
        )
        .service(
            web::resource("/ui/api/jobs/{jobId}/run-form")
                .route(web::get().to(job_page::run_form_facts)),
        )
        .service(
            web::resource("/ui/api/saved-queries/{queryId}/facts")
                .route(web::get().to(job_page::saved_query_facts)),
        )
        .service(
            web::resource("/ui/api/schedule-preview").route(web::post().to(data::schedule_preview)),
        )
        .service(
            web::resource("/ui/api/saved-query-preview")
                .route(web::post().to(query_preview::saved_query_preview)),
        )
        .service(web::resource("/ui/{tail:.*}").route(web::get().to(pages::not_found)));
}

/// `GET /ui/assets/{name}`: the embedded file, or the not-found page for an unknown name.
async fn serve_asset(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    assets::response(&req).unwrap_or_else(pages::not_found_page)
}
