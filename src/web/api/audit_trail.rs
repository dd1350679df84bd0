//! How handlers start and record audit events: every event names its actor and the client's
//! address alike (`event`), and an event that goes with no change is written on its own
//! (`record_alone`).

use actix_web::HttpRequest;

use super::params::client_addr;
use crate::clock::now_ms;
use crate::domain::user::User;
use crate::store::audit::Event;
use crate::web::AppState;

/// A new event by `me`, from the request's client address.
pub fn event(me: &User, req: &HttpRequest, action: &str) -> Event {
    Event::new(&me.login_name, action, Some(&client_addr(req)))
}

/// Records an event that goes with no change (a download, a sign-in): its own small write. A
/// failure is logged, never the caller's error: the read it records has already been allowed.
pub async fn record_alone(state: &AppState, event: Event) {
    let action = event.action.clone();
    if let Err(e) = state
        .db
        .write(move |tx| tx.record_audit(&event, now_ms()))
        .await
    {
        tracing::error!(error = ?e, action, "the audit event could not be written");
    }
}
