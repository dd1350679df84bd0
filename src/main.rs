//! The `labcron` command: parse the command line, load the settings, start logging, then serve or
//! run one of the administration subcommands.

#![warn(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use labcron::cli;
use labcron::config::Settings;
use labcron::config::overrides::{overrides_from_matches, settings_args};
use labcron::config::primitives::LogFormat;
use labcron::startup::Application;

#[derive(Parser)]
#[command(
    name = "labcron",
    version,
    about = "Job scheduler with a SQLite run ledger that serves OpenSpecimen's scheduled-jobs API",
    after_help = "Settings come from the defaults, then the --config file, then LABCRON_* environment \
                  variables, then flags. See labcron.example.toml for every setting."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file.
    #[arg(long, env = "LABCRON_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Manage users from the shell.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
    /// Write a backup to FILE (a zip, mode 0600) while the server runs; see --help.
    #[command(long_about = BACKUP_HELP)]
    Backup {
        file: PathBuf,
        /// Also every run's log and result files (runs/).
        #[arg(long)]
        with_runs: bool,
    },
    /// Fill the (empty) data directory from a backup FILE; see --help.
    #[command(long_about = RESTORE_HELP)]
    Restore {
        file: PathBuf,
        /// Restore into a data directory that is not empty, overwriting what the backup holds.
        #[arg(long)]
        force: bool,
    },
    /// Jobs as TOML files that round-trip with the API (keep job definitions in git).
    Jobs {
        #[command(subcommand)]
        action: JobsCommand,
    },
    /// Copy the ledger and its run files into an empty PostgreSQL database, checked; see --help.
    #[command(long_about = MIGRATE_LEDGER_HELP)]
    MigrateLedger {
        /// The target database: postgres://user:password@host:port/database.
        #[arg(long, value_name = "URL")]
        to: String,
        /// Do all of it and check it, then roll back: the target stays as it was.
        #[arg(long)]
        dry_run: bool,
    },
    /// Exit 0 when the server on `bind` answers /health with 200 (for Docker's HEALTHCHECK).
    Healthcheck,
}

const MIGRATE_LEDGER_HELP: &str = "Copy the SQLite ledger of data_dir (labcron.db) and its run \
files (runs/: each run's log and result file) into an empty PostgreSQL database, so nodes started \
with --database-url carry on with the whole history. Stop the server first: a server holding the \
data directory is refused, and the ledger is opened read-only.\n\n\
The target's schema is created if missing; a target that already holds users, jobs, runs or any \
other row is refused and nothing is written. Every table is copied with its ids, and the run files \
in pieces of at most 256 KiB, in one transaction; a link or a file that is not a regular file is \
skipped and reported. Before the commit, each table's row count and checksums and the run files' \
bytes are compared on both sides: any difference rolls everything back, naming the table. \
--dry-run does all of it and rolls back. The SQLite ledger and run files are left as they were.";

const BACKUP_HELP: &str = "Write a backup to FILE while the server runs: one zip file, created with \
mode 0600 (it holds password hashes), that `labcron restore` fills a new data directory from.\n\n\
Included: a consistent copy of the ledger (labcron.db: jobs, runs, users, saved queries, sessions), \
the scripts directory (scripts/, with file modes), and the SQLite data sources of saved queries \
that lie inside the data directory (consistent copies, e.g. lab.db). With --with-runs also every \
run's log and result files (runs/).\n\n\
Not included: data sources outside the data directory (they are listed), the configuration file \
and LABCRON_* settings, initial-admin-password, and without --with-runs the runs' files (their \
downloads then answer SCHEDULED_JOB_RESULT_DATA_FILE_NOT_FOUND). FILE must not exist.";

const RESTORE_HELP: &str = "Fill the configured data directory (data_dir) from a backup FILE made \
by `labcron backup`. Stop the server first. The data directory must be empty or missing unless \
--force is given; with --force the files the backup holds are overwritten and others are kept. \
Nothing is written outside the data directory: a backup with an absolute path, `..` or a link in \
it is refused before anything is written. Scripts are restored to <data dir>/scripts.";

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password comes from LABCRON_NEW_PASSWORD or the first line of stdin.
    Add {
        login: String,
        #[arg(long)]
        admin: bool,
        #[arg(long, default_value = "")]
        first_name: String,
        #[arg(long, default_value = "")]
        last_name: String,
        #[arg(long, default_value = "")]
        email: String,
    },
    /// Set a user's password (from LABCRON_NEW_PASSWORD or the first line of stdin).
    Passwd { login: String },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Write every job to FILE.
    Export { file: PathBuf },
    /// Compare FILE with the ledger and show what would change; with --apply, change it.
    Import {
        file: PathBuf,
        #[arg(long)]
        apply: bool,
        /// Login name recorded as the creator of new jobs [default: admin].
        #[arg(long = "as", value_name = "LOGIN", default_value = "admin")]
        as_login: String,
    },
}

/// The settings a subcommand reads besides `--config`; `None`: all of them (the server). The
/// others are still accepted (hidden), so a shared environment or wrapper keeps working.
fn used_settings(path: &str) -> Option<&'static [&'static str]> {
    match path {
        "" | "serve" => None,
        "user add" | "user passwd" => Some(&["data_dir", "database_url"]),
        "backup" => Some(&["data_dir", "database_url", "scripts_dir", "query_sources"]),
        "restore" => Some(&["data_dir", "database_url"]),
        "jobs export" => Some(&["data_dir", "database_url", "timezone"]),
        "jobs import" => Some(&[
            "data_dir",
            "database_url",
            "scripts_dir",
            "query_sources",
            "query_source_passwords",
            "query_source_password_files",
            "timezone",
            "runs.default_timeout_seconds",
            "runs.default_max_queued_runs",
        ]),
        "migrate-ledger" => Some(&["data_dir"]),
        "healthcheck" => Some(&["bind"]),
        _ => Some(&[]),
    }
}

/// Adds the settings flags to `command` and to every command below it, each showing in `--help`
/// only the settings it uses.
fn with_settings(mut command: clap::Command, path: &str) -> clap::Command {
    let used = used_settings(path);
    for arg in settings_args() {
        let shown = used.is_none_or(|u| u.contains(&arg.get_id().as_str()));
        command = command.arg(arg.global(false).hide(!shown));
    }
    let subcommands: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subcommands {
        let inner = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        command = command.mut_subcommand(&name, move |s| with_settings(s, &inner));
    }
    command
}

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // The library's tasks log an error as they end with their instance (see the layer).
    let quiet = labcron::scheduler::library::QuietLibraryEnds;
    if format == LogFormat::Json {
        builder.json().finish().with(quiet).init();
    } else {
        builder.finish().with(quiet).init();
    }
}

fn main() -> ExitCode {
    // A query process (`labcron query-worker`, started by the server for each SQLite query) is
    // nothing else: no settings, no runtime, no logging.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(labcron::query::worker::SUBCOMMAND))
    {
        return labcron::query::worker::main();
    }
    // Before any thread starts: the first may exec the binary again, and arenas made before
    // the cap would stay.
    labcron::allocator::without_thread_caches();
    labcron::allocator::limit_arenas();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(async_main()),
        Err(e) => {
            eprintln!("labcron: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn async_main() -> ExitCode {
    // Everything labcron creates (ledger, backups, logs, results, run directories) is private to
    // its user unless it says otherwise: the ledger holds password and token hashes.
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    let matches = with_settings(Cli::command(), "").get_matches();
    let mut overrides = overrides_from_matches(&matches);
    if let Some((_, sub)) = matches.subcommand() {
        // Settings given after the subcommand land in its matches.
        overrides.extend(overrides_from_matches(sub));
        if let Some((_, inner)) = sub.subcommand() {
            overrides.extend(overrides_from_matches(inner));
        }
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let settings = match Settings::load_from(cli.config.as_deref(), &overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("labcron: {e:#}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if matches!(command, Command::Serve) {
        init_tracing(settings.log_format);
    }
    match run(command, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("labcron: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
        // The other commands block (the ledger, files, the synchronous PostgreSQL client, which
        // must not run on an async thread): off the runtime's threads, all of them.
        command => tokio::task::block_in_place(move || run_command(command, settings)),
    }
}

/// A command other than `serve`. Blocking.
fn run_command(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => anyhow::bail!("`serve` runs on the async runtime, not here"),
        Command::User {
            action:
                UserCommand::Add {
                    login,
                    admin,
                    first_name,
                    last_name,
                    email,
                },
        } => {
            let password = cli::read_new_password()?;
            let args = cli::users::NewUserArgs {
                login: &login,
                admin,
                first_name: &first_name,
                last_name: &last_name,
                email: &email,
                password: &password,
            };
            let id = cli::users::add_user(&settings, &args)?;
            println!(
                "added user {login} (id {id}{})",
                if admin { ", admin" } else { "" }
            );
            Ok(())
        }
        Command::User {
            action: UserCommand::Passwd { login },
        } => {
            let password = cli::read_new_password()?;
            cli::users::set_password(&settings, &login, &password)?;
            println!("changed the password of {login}");
            Ok(())
        }
        Command::Backup { file, with_runs } => {
            let summary = cli::backup::backup(&settings, &file, with_runs)?;
            println!(
                "wrote {} files ({} bytes) to {}{}",
                summary.files,
                summary.bytes,
                file.display(),
                if with_runs {
                    ", run files included"
                } else {
                    ", without run files (add --with-runs)"
                }
            );
            for source in &summary.sources_outside {
                println!("not included (outside the data directory): data source {source}");
            }
            Ok(())
        }
        Command::Restore { file, force } => {
            let summary = cli::backup::restore(&settings, &file, force)?;
            println!(
                "restored {} files into {}: {} jobs, {} runs",
                summary.files,
                settings.data_dir.display(),
                summary.jobs,
                summary.runs
            );
            Ok(())
        }
        Command::Jobs {
            action: JobsCommand::Export { file },
        } => {
            let count = cli::jobs_file::export(&settings, &file)?;
            println!("exported {count} jobs to {}", file.display());
            Ok(())
        }
        Command::Jobs {
            action:
                JobsCommand::Import {
                    file,
                    apply,
                    as_login,
                },
        } => {
            let plan = cli::jobs_file::import(&settings, &file, apply, &as_login)?;
            print!("{}", plan.report());
            if !apply && plan.has_changes() {
                println!(
                    "dry run: nothing was changed; run again with --apply to apply these changes"
                );
            }
            Ok(())
        }
        Command::MigrateLedger { to, dry_run } => {
            let summary = cli::migrate_ledger::migrate(&settings, &to, dry_run)?;
            print!("{}", summary.report());
            Ok(())
        }
        Command::Healthcheck => {
            let body = cli::healthcheck::check(settings.bind)?;
            println!("{body}");
            Ok(())
        }
    }
}
