//! The `labcron` command: parse the command line, load the settings, start logging, then serve or
//! run one of the administration subcommands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use labcron::cli;
use labcron::config::Settings;
use labcron::config_overrides::{overrides_from_matches, settings_args};
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
    /// Write a consistent copy of the ledger to FILE while the server runs.
    Backup { file: PathBuf },
    /// Jobs as TOML files that round-trip with the API (keep job definitions in git).
    Jobs {
        #[command(subcommand)]
        action: JobsCommand,
    },
    /// Exit 0 when the server on `bind` answers /health with 200 (for Docker's HEALTHCHECK).
    Healthcheck,
}

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

fn init_tracing(format: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Everything labcron creates (ledger, backups, logs, results, run directories) is private to
    // its user unless it says otherwise: the ledger holds password and token hashes.
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    let matches = Cli::command().args(settings_args()).get_matches();
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
        init_tracing(&settings.log_format);
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
        Command::Backup { file } => {
            cli::backup(&settings, &file)?;
            println!(
                "wrote a consistent copy of the ledger to {}",
                file.display()
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
        Command::Healthcheck => {
            let body = cli::healthcheck::check(&settings.bind)?;
            println!("{body}");
            Ok(())
        }
    }
}
