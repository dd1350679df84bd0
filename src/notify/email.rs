//! Run e-mails: OpenSpecimen's subjects and contents (research §3.6) as plain text, and the SMTP
//! transport (lettre on tokio; plain SMTP, STARTTLS or TLS with rustls and the webpki roots). A
//! connection per e-mail (no pool), so a restarted mail server never leaves a dead one behind.
//! Who gets the e-mails is decided in `notify`, not here.

use std::time::Duration;

use anyhow::Context;
use chrono::TimeZone;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::NotificationSettings;
use crate::config::primitives::SmtpSecurity;
use crate::domain::run::{Run, RunStatus};
use crate::domain::user::User;

/// The longest an SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A composed e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub subject: String,
    pub body: String,
}

/// OpenSpecimen's subject of a finished run's e-mail.
pub fn subject(job_name: &str, status: RunStatus) -> String {
    if status == RunStatus::Succeeded {
        format!("Scheduled job \"{job_name}\" completed successfully.")
    } else {
        format!("Scheduled job \"{job_name}\" has failed!")
    }
}

/// The e-mail about a finished run: the run id, start and finish times (in the server's zone),
/// the error of a failed run, and the result file's link when there is a result.
pub fn compose(
    job_name: &str,
    run: &Run,
    greeting_name: &str,
    tz: chrono_tz::Tz,
    result_link: Option<&str>,
) -> Email {
    // A job name is one line in the subject and the text, whatever it holds.
    let job_name: String = job_name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let job_name = job_name.as_str();
    let time = |ms: Option<i64>| match ms.and_then(|ms| tz.timestamp_millis_opt(ms).single()) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S %Z").to_string(),
        None => "-".to_string(),
    };
    let failed = run.status != RunStatus::Succeeded;
    let mut body = format!("Hello {greeting_name},\n\n");
    if failed {
        body.push_str(&format!("Job {job_name} has failed.\n\n"));
    } else {
        body.push_str(&format!(
            "Job {job_name} has successfully run to completion.\n\n"
        ));
    }
    body.push_str(&format!("Run ID      : {}\n", run.id));
    body.push_str(&format!("Start Time  : {}\n", time(run.started_at)));
    body.push_str(&format!("Finish Time : {}\n", time(run.finished_at)));
    if failed {
        let message = run
            .message
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or("None");
        body.push_str(&format!("Error       : {message}\n"));
    }
    if let Some(link) = result_link {
        body.push_str(&format!("\nDownload the result file:\n{link}\n"));
    }
    if failed {
        body.push_str("\nPlease contact your administrator if the problem persists.\n");
    }
    body.push_str("\n-- \nThis message was sent by labcron.\n");
    Email {
        subject: subject(job_name, run.status),
        body,
    }
}

/// Adds why a failed run failed to its e-mail: the last lines of its log and a link to its page
/// (and, for a retried series, how many attempts were made), before the closing lines.
pub fn add_failure_details(email: &mut Email, run: &Run, log_tail: &[String], run_page: &str) {
    let mut block = String::new();
    if run.attempt > 1 {
        block.push_str(&format!(
            "Attempts    : {} (the job's retries are used up)\n",
            run.attempt
        ));
    }
    if !log_tail.is_empty() {
        block.push_str("\nLast lines of the log:\n");
        for line in log_tail {
            let line: String = line
                .chars()
                .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
                .collect();
            block.push_str(&format!("    {line}\n"));
        }
    }
    block.push_str(&format!("\nThe run's page:\n{run_page}\n"));
    let at = email
        .body
        .find("\nPlease contact your administrator")
        .or_else(|| email.body.find("\n-- \n"))
        .unwrap_or(email.body.len());
    email.body.insert_str(at, &block);
}

/// The last `max_lines` lines of a log file (reading at most its last 8 KiB), empty if unreadable.
pub fn log_tail(path: &std::path::Path, max_lines: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    tail_lines(&bytes, start > 0, max_lines)
}

/// How much of the end of a log a failed run's e-mail looks at.
pub const LOG_TAIL_BYTES: u64 = 8 * 1024;

/// The last `max_lines` non-empty-ended lines of the end of a log (`cut`: it does not start at
/// the log's first byte, so its first line is partial and dropped).
pub fn tail_lines(bytes: &[u8], cut: bool, max_lines: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    // A cut first line is partial: drop it.
    if cut && !lines.is_empty() {
        lines.remove(0);
    }
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let skip = lines.len().saturating_sub(max_lines);
    lines[skip..].iter().map(|l| l.to_string()).collect()
}

/// Sends e-mails through the configured SMTP server.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// The mailer of `settings`, or None when `smtp_host` is empty (e-mail off).
    pub fn from_settings(settings: &NotificationSettings) -> anyhow::Result<Option<Mailer>> {
        let host = settings.smtp_host.as_str();
        if host.is_empty() {
            return Ok(None);
        }
        let builder = match settings.smtp_security {
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpSecurity::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(host).with_context(|| {
                    format!("setting `notifications.smtp_host`: cannot use `{host}` with TLS")
                })?
            }
            SmtpSecurity::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .with_context(|| {
                    format!("setting `notifications.smtp_host`: cannot use `{host}` with STARTTLS")
                })?,
        };
        let mut builder = builder
            .port(settings.smtp_port())
            .timeout(Some(SMTP_TIMEOUT));
        if !settings.smtp_username.is_empty() {
            builder = builder.credentials(Credentials::new(
                settings.smtp_username.clone(),
                settings.smtp_password.clone(),
            ));
        }
        let from = settings.from_address.parse::<Mailbox>().with_context(|| {
            format!(
                "setting `notifications.from_address`: `{}` is not an e-mail address",
                settings.from_address
            )
        })?;
        Ok(Some(Mailer {
            transport: builder.build(),
            from,
        }))
    }

    /// Sends `email` to `user`.
    pub async fn send(&self, user: &User, email: &Email) -> Result<(), String> {
        let address = user
            .email_address
            .trim()
            .parse::<Address>()
            .map_err(|e| format!("`{}` is not an e-mail address: {e}", user.email_address))?;
        let name = format!("{} {}", user.first_name.trim(), user.last_name.trim());
        let name = name.trim();
        let to = Mailbox::new((!name.is_empty()).then(|| name.to_string()), address);
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone())
            .map_err(|e| format!("cannot build the e-mail: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::run::Trigger;

    #[test]
    fn failure_details_come_before_the_closing_lines() {
        let mut run = run(RunStatus::Failed, Some("exit code 3: LIMS timeout"), None);
        run.attempt = 3;
        let mut email = compose("nightly", &run, "Ann", chrono_tz::UTC, None);
        add_failure_details(
            &mut email,
            &run,
            &["connecting".into(), "LIMS timeout".into()],
            "http://h/ui/jobs/7/runs/42",
        );
        let details = email
            .body
            .find("Last lines of the log:\n    connecting\n    LIMS timeout\n");
        let closing = email.body.find("Please contact");
        assert!(details.is_some() && details < closing, "{}", email.body);
        assert!(email.body.contains("Attempts    : 3"));
        assert!(
            email
                .body
                .contains("The run's page:\nhttp://h/ui/jobs/7/runs/42\n")
        );
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = std::env::temp_dir().join(format!("labcron-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(log_tail(&path, 2), vec!["line 4998", "line 4999"]);
        assert!(log_tail(&dir.join("missing"), 5).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn run(status: RunStatus, message: Option<&str>, result: Option<&str>) -> Run {
        Run {
            id: 42,
            job_id: 7,
            job_name: "nightly".into(),
            status,
            trigger: Trigger::Manual,
            run_by: 2,
            rt_args: None,
            queued_at: 1_700_000_000_000,
            started_at: Some(1_700_000_000_000),
            finished_at: Some(1_700_000_065_000),
            scheduled_for: None,
            exit_code: None,
            message: message.map(str::to_string),
            result_file: result.map(str::to_string),
            result_file_size: None,
            log_size: 0,
            log_truncated: false,
            attempt: 1,
            retry_of: None,
            chained_from: None,
            not_before: None,
            cancelled_by: None,
            task: None,
            node: None,
        }
    }

    #[test]
    fn a_successful_run_says_so_with_times_and_the_result_link() {
        let link = "https://jobs.example/rest/ng/scheduled-jobs/7/runs/42/result-file";
        let email = compose(
            "nightly",
            &run(RunStatus::Succeeded, None, Some("out.csv")),
            "Ada Lovelace",
            chrono_tz::Europe::Berlin,
            Some(link),
        );
        assert_eq!(
            email.subject,
            "Scheduled job \"nightly\" completed successfully."
        );
        assert!(email.body.starts_with("Hello Ada Lovelace,\n"));
        assert!(
            email
                .body
                .contains("Job nightly has successfully run to completion.")
        );
        assert!(email.body.contains("Run ID      : 42\n"));
        assert!(
            email
                .body
                .contains("Start Time  : 2023-11-14 23:13:20 CET\n")
        );
        assert!(
            email
                .body
                .contains("Finish Time : 2023-11-14 23:14:25 CET\n")
        );
        assert!(email.body.contains(link));
        assert!(!email.body.contains("Error"));
    }

    #[test]
    fn a_failed_run_gives_its_error_or_none() {
        let email = compose(
            "nightly",
            &run(RunStatus::Failed, Some("exit code 3: boom"), None),
            "admin",
            chrono_tz::UTC,
            None,
        );
        assert_eq!(email.subject, "Scheduled job \"nightly\" has failed!");
        assert!(email.body.contains("Job nightly has failed."));
        assert!(email.body.contains("Error       : exit code 3: boom\n"));
        assert!(!email.body.contains("result file"));
        let email = compose(
            "n",
            &run(RunStatus::Failed, None, None),
            "x",
            chrono_tz::UTC,
            None,
        );
        assert!(email.body.contains("Error       : None\n"));
    }

    #[test]
    fn a_job_name_cannot_add_headers() {
        let email = compose(
            "x\r\nBcc: victim@example.org",
            &run(RunStatus::Succeeded, None, None),
            "a",
            chrono_tz::UTC,
            None,
        );
        let message = Message::builder()
            .from("labcron <labcron@localhost>".parse().unwrap())
            .to("a@lab.example".parse().unwrap())
            .subject(email.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(email.body)
            .unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(!text.lines().any(|l| l.starts_with("Bcc")), "{text}");
        assert!(
            text.contains("Job x  Bcc: victim@example.org has"),
            "{text}"
        );
    }

    #[test]
    fn transports_are_built_for_every_security_without_connecting() {
        for security in [
            SmtpSecurity::None,
            SmtpSecurity::StartTls,
            SmtpSecurity::Tls,
        ] {
            let settings = NotificationSettings {
                smtp_host: "smtp.lab.example".into(),
                smtp_security: security,
                smtp_username: "user".into(),
                smtp_password: "secret".into(),
                ..NotificationSettings::default()
            };
            assert!(
                Mailer::from_settings(&settings).unwrap().is_some(),
                "{security}"
            );
        }
        assert!(
            Mailer::from_settings(&NotificationSettings::default())
                .unwrap()
                .is_none()
        );
    }
}
