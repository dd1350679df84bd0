//! Notifications about finished runs. Once the executor has recorded a run's end it calls
//! `Notifier::run_finished`, which spawns the deliveries and returns at once: a notification never
//! delays, blocks or changes a run. Failures are logged and counted (`labcron_notifications_total`).
//!
//! - E-mail (`email`), OpenSpecimen's rules (research §3.6): the job's recipients plus, for an
//!   ONDEMAND job, the run's `runBy`, otherwise the job's creator (decided by the job's schedule,
//!   not by who triggered the run); only active, non-system users with an e-mail address; a FAILED
//!   run with nobody to tell goes to the admins; one e-mail per recipient.
//! - Webhook (`webhook`, ours): when the job has a `webhookUrl`, the run — the API's run object —
//!   is POSTed there, signed with HMAC-SHA256 and retried with exponential backoff.
//!
//! This module reads the ledger; it never writes it.

pub mod email;
pub mod webhook;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;

use crate::config::Settings;
use crate::domain::job::{Job, RepeatKind};
use crate::domain::run::{Run, RunStatus};
use crate::domain::user::User;
use crate::error::ServiceError;
use crate::metrics::{Channel, Delivery, Metrics};
use crate::present::{UserCache, run_view};
use crate::run_files::RunFiles;
use crate::store::Db;
use crate::store::Ledger;

/// Sends the notifications of finished runs; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    /// Where runs' logs are kept (a failed run's e-mail quotes its last lines).
    files: RunFiles,
    tz: chrono_tz::Tz,
    metrics: Arc<Metrics>,
    /// None when `notifications.smtp_host` is empty.
    mailer: Option<email::Mailer>,
    webhooks: webhook::WebhookSender,
    /// Without a trailing slash.
    public_base_url: String,
}

/// A finished run with everything its notifications need.
struct FinishedRun {
    run: Run,
    job: Job,
    /// The API's run object, serialized: the webhook body.
    run_json: Vec<u8>,
    /// Who gets an e-mail (empty when e-mail is off).
    recipients: Vec<User>,
    /// The last lines of a failed run's log (for its e-mail).
    log_tail: Vec<String>,
}

/// How many log lines a failed run's e-mail quotes.
const LOG_TAIL_LINES: usize = 15;

impl Notifier {
    /// A notifier for `settings`; `listening` is the server's address, the default base of links.
    pub fn new(
        db: Db,
        settings: &Settings,
        data_dir: PathBuf,
        metrics: Arc<Metrics>,
        listening: SocketAddr,
    ) -> anyhow::Result<Notifier> {
        let n = &settings.notifications;
        let mailer = email::Mailer::from_settings(n)?;
        let webhooks =
            webhook::WebhookSender::new(n).context("cannot set up the webhook client")?;
        if mailer.is_some() {
            tracing::info!(
                host = %n.smtp_host,
                port = n.smtp_port(),
                security = %n.smtp_security,
                "run e-mails on"
            );
        }
        Ok(Notifier {
            inner: Arc::new(Inner {
                files: RunFiles::for_ledger(&db, data_dir),
                db,
                tz: settings.timezone,
                metrics,
                mailer,
                webhooks,
                public_base_url: public_base_url(&n.public_base_url, listening),
            }),
        })
    }

    /// Whether a finished run of a job with (or without) a webhook has anywhere to go: e-mail is
    /// on, or the job has a webhook.
    pub fn would_send(&self, job_has_webhook: bool) -> bool {
        job_has_webhook || self.inner.mailer.is_some()
    }

    /// Sends the notifications of run `run_id`, whose end has just been recorded, in the
    /// background.
    pub fn run_finished(&self, run_id: i64) {
        let notifier = self.clone();
        tokio::spawn(async move {
            let span = tracing::info_span!("notify", run_id);
            tracing::Instrument::instrument(notifier.deliver(run_id), span).await;
        });
    }

    async fn deliver(&self, run_id: i64) {
        let inner = &self.inner;
        let with_email = inner.mailer.is_some();
        let files = inner.files.clone();
        let loaded = inner
            .db
            .read(move |c| load_finished(c, run_id, with_email, &files))
            .await;
        let mut finished = match loaded {
            Ok(Some(finished)) => finished,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = ?e, "notifications: cannot read the finished run");
                return;
            }
        };
        // Read after the ledger's answer, not inside it: the log may be in the database too.
        if with_email && finished.run.status == RunStatus::Failed {
            let (bytes, cut) = inner
                .files
                .log_tail(finished.run.of_job(), email::LOG_TAIL_BYTES)
                .await;
            finished.log_tail = email::tail_lines(&bytes, cut, LOG_TAIL_LINES);
        }
        if let Some(url) = finished.job.webhook_url.clone() {
            let notifier = self.clone();
            let body = Bytes::from(finished.run_json.clone());
            let event = webhook::event_name(finished.run.status);
            tokio::spawn(async move {
                let outcome = notifier
                    .inner
                    .webhooks
                    .deliver(&url, event, run_id, body)
                    .await;
                let counted = match outcome {
                    Ok(attempts) => {
                        tracing::info!(attempts, host = %webhook::host_of(&url), "webhook delivered");
                        Delivery::Delivered
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, host = %webhook::host_of(&url), "webhook delivery failed");
                        Delivery::Failed
                    }
                };
                notifier
                    .inner
                    .metrics
                    .observe_notification(Channel::Webhook, counted);
            });
        }
        if let Some(mailer) = &inner.mailer {
            self.send_emails(mailer, &finished).await;
        }
    }

    /// One e-mail per recipient, one after the other.
    async fn send_emails(&self, mailer: &email::Mailer, finished: &FinishedRun) {
        let inner = &self.inner;
        let link = finished.run.result_file.as_ref().map(|_| {
            format!(
                "{}/rest/ng/scheduled-jobs/{}/runs/{}/result-file",
                inner.public_base_url, finished.run.job_id, finished.run.id
            )
        });
        let run_page = format!(
            "{}/ui/jobs/{}/runs/{}",
            inner.public_base_url, finished.run.job_id, finished.run.id
        );
        for user in &finished.recipients {
            let mut message = email::compose(
                &finished.job.name,
                &finished.run,
                &greeting_name(user),
                inner.tz,
                link.as_deref(),
            );
            if finished.run.status == RunStatus::Failed {
                email::add_failure_details(
                    &mut message,
                    &finished.run,
                    &finished.log_tail,
                    &run_page,
                );
            }
            let counted = match mailer.send(user, &message).await {
                Ok(()) => {
                    tracing::info!(user_id = user.id, "run e-mail sent");
                    Delivery::Delivered
                }
                Err(e) => {
                    tracing::warn!(user_id = user.id, error = %e, "run e-mail could not be sent");
                    Delivery::Failed
                }
            };
            inner.metrics.observe_notification(Channel::Email, counted);
        }
    }
}

/// The base of links: the configured URL, else `http://<listening address>`.
fn public_base_url(configured: &str, listening: SocketAddr) -> String {
    let base = if configured.is_empty() {
        format!("http://{listening}")
    } else {
        configured.to_string()
    };
    base.trim_end_matches('/').to_string()
}

fn greeting_name(user: &User) -> String {
    let name = format!("{} {}", user.first_name.trim(), user.last_name.trim());
    let name = name.trim();
    if name.is_empty() {
        user.login_name.clone()
    } else {
        name.to_string()
    }
}

/// The run (if it has finished), its job, its API object and, when e-mail is on, its recipients.
fn load_finished(
    conn: &dyn Ledger,
    run_id: i64,
    with_email: bool,
    files: &RunFiles,
) -> Result<Option<FinishedRun>, ServiceError> {
    let Some(run) = conn.run(run_id)? else {
        return Ok(None);
    };
    if !run.status.is_finished() {
        return Ok(None);
    }
    let Some(job) = conn.job_even_deleted(run.job_id)? else {
        return Ok(None);
    };
    if !with_email && job.webhook_url.is_none() {
        return Ok(None);
    }
    let view = run_view(conn, &run, &mut UserCache::default(), files)?;
    let run_json = serde_json::to_vec(&view).map_err(|e| ServiceError::Internal(e.into()))?;
    let recipients = if with_email {
        recipients(conn, &job, &run)?
    } else {
        Vec::new()
    };
    Ok(Some(FinishedRun {
        run,
        job,
        run_json,
        recipients,
        log_tail: Vec::new(),
    }))
}

/// Whether a user can be sent an e-mail at all.
fn reachable(user: &User) -> bool {
    user.active && !user.is_system && !user.email_address.trim().is_empty()
}

/// OpenSpecimen's recipients of a finished run's e-mail: the job's recipients plus the run's
/// runner (ONDEMAND jobs) or the job's creator (every other schedule), keeping active, non-system
/// users with an e-mail address, each address once; a FAILED run with nobody left goes to every
/// admin instead.
pub fn recipients(conn: &dyn Ledger, job: &Job, run: &Run) -> Result<Vec<User>, ServiceError> {
    let (mut ids, _) = conn.job_user_lists(job.id)?;
    ids.push(if job.repeat.kind() == RepeatKind::OnDemand {
        run.run_by
    } else {
        job.created_by
    });
    let mut seen = HashSet::new();
    let mut chosen = Vec::new();
    for id in ids {
        if let Some(user) = conn.user(id)?
            && reachable(&user)
            && seen.insert(user.email_address.trim().to_lowercase())
        {
            chosen.push(user);
        }
    }
    if chosen.is_empty() && run.status == RunStatus::Failed {
        for user in conn.list_users()? {
            if user.admin
                && reachable(&user)
                && seen.insert(user.email_address.trim().to_lowercase())
            {
                chosen.push(user);
            }
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_default_to_the_listening_address() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(public_base_url("", addr), "http://127.0.0.1:8080");
        assert_eq!(
            public_base_url("https://jobs.lab.example/", addr),
            "https://jobs.lab.example"
        );
    }
}
