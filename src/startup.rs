//! Wiring: `Application::build` prepares the data directory, opens and migrates the ledger, creates
//! the first admin, recovers runs a crash interrupted, binds the HTTP listener (port 0 in tests),
//! starts the executor (with its metrics and notifier) and the daily retention pass. The data
//! directory is locked for the server's life (one server per ledger), and the ledger file is
//! watched: replaced or removed under the server, it stops the server (see `watch_ledger_file`).
//! `run_until_stopped` serves until SIGTERM/SIGINT (or `stop`, or that watch), then
//! stops accepting, lets runs finish for a grace period and stops the rest.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use tracing_actix_web::TracingLogger;

use crate::auth::{LoginThrottle, generate_password, hash_password};
use crate::clock::now_ms;
use crate::cluster::Node;
use crate::config::Settings;
use crate::config::ledger::LedgerLocation;
use crate::executor::{Executor, recovery};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::scheduler::Scheduler;
use crate::store::{self, Db};
use crate::web::{AppState, access_log, api, cors, middleware};

pub struct Application {
    port: u16,
    server: Server,
    executor: Executor,
    scheduler: Scheduler,
    /// This node's membership of the cluster sharing the ledger.
    node: Arc<Node>,
    settings: Arc<Settings>,
    data_dir: PathBuf,
    /// Stops background passes (retention) at shutdown.
    background: tokio_util::sync::CancellationToken,
    /// Set (with the reason) when the ledger file is no longer the one the server opened.
    ledger_lost: tokio::sync::watch::Receiver<Option<String>>,
    /// Held until the server has stopped; released last, when `Application` is dropped.
    _lock: store::guard::DataDirLock,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let data_dir = prepare_data_dir(&settings.data_dir)?;
        let lock = store::guard::DataDirLock::acquire(&data_dir)?;
        let scripts_dir = settings.scripts_dir();
        if settings.scripts_dir.is_none() {
            std::fs::create_dir_all(&scripts_dir).with_context(|| {
                format!("cannot create scripts directory {}", scripts_dir.display())
            })?;
        }
        // Opening (and migrating) the ledger and making the first admin block: on PostgreSQL the
        // synchronous client must not run on an async thread.
        let (db, ledger_watch, created_admin) = {
            let (settings, data_dir) = (settings.clone(), data_dir.clone());
            tokio::task::spawn_blocking(move || open_ledger(&settings, &data_dir)).await??
        };
        // The very first start: a new ledger file, or (PostgreSQL, which outlives any one node)
        // the start that made the first admin.
        let first_start = match &ledger_watch {
            Some((_, _, new_file)) => *new_file,
            None => created_admin,
        };
        if first_start {
            // The demo lab database and example jobs: on the very first start only. They are a
            // convenience, so a failure is logged rather than stopping the server.
            let (db, settings, data_dir) = (db.clone(), settings.clone(), data_dir.clone());
            let prepared = tokio::task::spawn_blocking(move || {
                crate::service::seed::prepare_first_start(&db, &settings, &data_dir)
            })
            .await?;
            if let Err(e) = prepared {
                tracing::error!(error = ?e, "could not create the demo database or example jobs");
            }
        }
        // This node in the cluster sharing the ledger (on SQLite, the one node), before its
        // runs are recovered: only its own are.
        let node = {
            let (db, name) = (db.clone(), settings.node_name.clone());
            let timeout = Duration::from_secs(settings.node_timeout_seconds);
            tokio::task::spawn_blocking(move || Node::join(&db, &name, timeout)).await??
        };
        let recovered = {
            let (db, data_dir, name) = (db.clone(), data_dir.clone(), node.name().to_string());
            tokio::task::spawn_blocking(move || {
                recovery::recover_interrupted_runs(&db, &data_dir, &name)
            })
            .await??
        };
        if recovered > 0 {
            tracing::warn!(
                runs = recovered,
                "runs interrupted by a restart were marked FAILED"
            );
        }

        // Bound before the executor starts: run e-mails link to the address it listens on.
        let listener = TcpListener::bind(settings.bind)
            .with_context(|| format!("setting `bind`: cannot listen on {}", settings.bind))?;
        let port = listener.local_addr()?.port();

        let settings = Arc::new(settings);
        let metrics = Arc::new(Metrics::new());
        let notifier = Notifier::new(
            db.clone(),
            &settings,
            data_dir.clone(),
            metrics.clone(),
            listener.local_addr()?,
        )?;
        let executor = Executor::new(
            db.clone(),
            settings.clone(),
            data_dir.clone(),
            metrics.clone(),
            notifier,
        );
        executor.start();
        let background = tokio_util::sync::CancellationToken::new();
        crate::retention::spawn_daily(
            db.clone(),
            settings.clone(),
            data_dir.clone(),
            metrics.clone(),
            background.clone(),
        );
        crate::allocator::spawn_trim(background.clone());
        let scheduler = Scheduler::new(db.clone(), executor.clone()).await?;
        // Fires only while this node holds the cluster's firing lock (on SQLite, always).
        node.start(executor.clone(), &scheduler);
        // A replaced ledger file is SQLite's concern; a database is never swapped under a node.
        let ledger_lost = match ledger_watch {
            Some((path, identity, _)) => watch_ledger_file(path, identity, background.clone()),
            // On PostgreSQL, the node stops the server when another process took its name.
            None => node.replaced(),
        };

        let state_ledger = db.describe();
        let state = web::Data::new(AppState {
            db: db.clone(),
            settings: settings.clone(),
            executor: executor.clone(),
            scheduler: scheduler.clone(),
            throttle: LoginThrottle::new(
                settings.auth.max_failed_logins,
                Duration::from_secs(settings.auth.lockout_minutes * 60),
            ),
            hashing: crate::auth::HashingGate::for_this_machine(),
            data_dir: data_dir.clone(),
            files: crate::run_files::RunFiles::for_ledger(&db, data_dir.clone()),
            metrics,
            previews: Default::default(),
        });
        let body_limit = settings.http.max_body_bytes;
        let cors_origins = settings.http.cors_origins.clone();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(middleware::json_errors())
                .wrap(actix_web::middleware::from_fn(access_log::body_deadline))
                .wrap(actix_web::middleware::from_fn(access_log::access_line))
                .wrap(TracingLogger::<access_log::CompactRootSpan>::new())
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(body_limit))
                .configure(api::configure)
                .configure(crate::web::ui::configure) // the web pages under / and /ui
                .default_service(web::to(middleware::no_route))
                .wrap(actix_web::middleware::Condition::new(
                    !cors_origins.is_empty(),
                    cors::cors(&cors_origins),
                ))
                // Outermost but one, so it counts every request with its final status.
                .wrap(actix_web::middleware::from_fn(middleware::track_requests))
                .wrap(actix_web::middleware::from_fn(
                    middleware::trim_api_trailing_slash,
                ))
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(5)
        .run();
        tracing::info!(
            port,
            data_dir = %data_dir.display(),
            ledger = %state_ledger,
            node = %settings.node_name,
            "labcron listening"
        );
        Ok(Application {
            port,
            server,
            executor,
            scheduler,
            node,
            settings,
            data_dir,
            background,
            ledger_lost,
            _lock: lock,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The scheduler's handle (tests look at what its `JobScheduler` holds).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// A handle that stops the HTTP server (tests use it).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until a stop signal (or until the server is stopped through its handle), then shuts
    /// down in order: stop firing, stop accepting, let runs finish for the grace period, stop the
    /// rest.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        let signal = wait_for_stop_signal();
        tokio::pin!(signal);
        tokio::pin!(server);
        let mut ledger_lost = self.ledger_lost.clone();
        let lost = async move {
            let seen = ledger_lost
                .wait_for(Option::is_some)
                .await
                .map(|reason| reason.clone());
            match seen {
                Ok(reason) => reason,
                // The watch ended without a loss: never finish this branch.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::pin!(lost);
        let mut served = None;
        let mut lost_reason = None;
        tokio::select! {
            result = &mut server => served = Some(result),
            _ = &mut signal => {}
            reason = &mut lost => lost_reason = reason,
        }
        let grace = Duration::from_secs(self.settings.runs.shutdown_grace_seconds);
        tracing::info!(
            "stopping: no new fires or requests; running runs get {} s",
            grace.as_secs()
        );
        self.scheduler.stop();
        self.background.cancel();
        let stopping = tokio::spawn(async move { handle.stop(true).await });
        self.executor.shutdown(grace).await;
        self.node.leave().await;
        let _ = stopping.await;
        let served = match served {
            Some(result) => result,
            None => server.await,
        };
        tracing::info!("stopped");
        served??;
        if let Some(reason) = lost_reason {
            anyhow::bail!("{reason}");
        }
        Ok(())
    }
}

/// How often the ledger file's identity is checked. A replacement is an operator's act (a
/// restore by hand, a copy over the file), so seconds are quick enough, and a `stat` is cheap.
const LEDGER_WATCH_EVERY: Duration = Duration::from_secs(2);

/// Watches that `path` still names the ledger file the server opened. SQLite would go on using
/// the old file (an unlinked inode) while the CLI, backups and the next start use the new one:
/// the scheduler would fire from stale jobs and every run written would be lost. So a change
/// stops the server (with an error, so a supervisor restarts it on the new file, where each job's
/// misfire policy decides about the fires missed meanwhile).
fn watch_ledger_file(
    path: PathBuf,
    opened: store::guard::FileIdentity,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::sync::watch::Receiver<Option<String>> {
    let (lost, receiver) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(LEDGER_WATCH_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let (checked, path_again) = {
                let path = path.clone();
                match tokio::task::spawn_blocking(move || {
                    (store::guard::still_the_opened_file(&path, opened), path)
                })
                .await
                {
                    Ok(result) => result,
                    Err(_) => continue,
                }
            };
            if let Err(reason) = checked {
                tracing::error!(ledger = %path_again.display(), "{reason}; stopping the server");
                for stale in store::guard::set_aside_replaced_journal(&path_again) {
                    tracing::warn!(file = %stale.display(), "removed the replaced ledger's journal so it is never applied to the new file");
                }
                let _ = lost.send(Some(format!(
                    "{reason}; the server stopped so that it does not go on writing a file \
                     nobody reads: start it again to use the file now in place"
                )));
                // Keep the sender until shutdown, so the reason stays readable.
                stop.cancelled().await;
                return;
            }
        }
    });
    receiver
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn prepare_data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("runs"))
        .with_context(|| format!("setting `data_dir`: cannot create {}", dir.display()))?;
    // The data directory holds the ledger, logs and results: the server's user only (0700).
    // A directory of another owner cannot be changed; say so rather than refuse to start.
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot make the data directory private (0700)");
    }
    dir.canonicalize()
        .with_context(|| format!("setting `data_dir`: cannot resolve {}", dir.display()))
}

/// The ledger's file identity and whether the file was new (SQLite's; none on PostgreSQL).
type LedgerWatch = Option<(PathBuf, store::guard::FileIdentity, bool)>;

/// Opens the configured ledger (bringing its schema up to date) and makes the first admin if
/// there is no login user yet (whether it did is the third answer). Blocking.
fn open_ledger(settings: &Settings, data_dir: &Path) -> anyhow::Result<(Db, LedgerWatch, bool)> {
    let location = settings.ledger_location(data_dir);
    let (db, ledger_watch) = match &location {
        LedgerLocation::Sqlite(path) => {
            let new_file = !path.exists();
            let db = Db::open(path)?;
            let identity = store::guard::FileIdentity::of(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            (db, Some((path.clone(), identity, new_file)))
        }
        LedgerLocation::Postgres(_) => (Db::open_location(&location)?, None),
    };
    let created_admin = create_first_admin(&db, data_dir, settings.admin_password.as_deref())?;
    Ok((db, ledger_watch, created_admin))
}

/// On first start, creates `admin` with the configured password, or a generated one written to
/// `<data dir>/initial-admin-password` (mode 0600; the log says where, never the password). Whether it did
/// (false when a user existed, or another node made `admin` at the same moment).
fn create_first_admin(db: &Db, data_dir: &Path, configured: Option<&str>) -> anyhow::Result<bool> {
    if db.read_sync(|l| l.any_login_user())? {
        return Ok(false);
    }
    let generated = configured.is_none();
    let password = configured
        .map(str::to_string)
        .unwrap_or_else(generate_password);
    let hash = hash_password(&password)?;
    let made = db.write_sync(|tx| {
        let admin = store::users::NewUser {
            login_name: "admin",
            first_name: "Admin",
            last_name: "",
            email_address: "",
            admin: true,
            password_hash: &hash,
        };
        tx.insert_user(&admin, now_ms())
    })?;
    if made.is_none() {
        return Ok(false);
    }
    if generated {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = data_dir.join("initial-admin-password");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        writeln!(file, "{password}")?;
        // The password itself stays in the 0600 file: logs are read (and shipped) more widely.
        tracing::warn!(
            "created user `admin` with a generated password, written to {} (mode 0600); sign in and change it",
            path.display()
        );
    } else {
        tracing::info!("created user `admin` with the password from LABCRON_ADMIN_PASSWORD");
    }
    Ok(true)
}
