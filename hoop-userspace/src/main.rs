//! The `hoop` command line. Thin: parsing here, work in the library.

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hoop",
    version,
    about = "Transparent, eBPF-assisted governance for database connections"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run CMD in a fresh cgroup whose database connections go through hoop.
    Exec {
        /// The hoop configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The command and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// Govern the cgroups listed in the config until SIGTERM.
    Agent {
        /// The hoop configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// List, approve and deny held statements (talks to the admin API).
    Holds {
        /// The admin API, e.g. http://127.0.0.1:9464 (default: from --config's admin.listen).
        #[arg(long, global = true)]
        admin: Option<String>,
        /// A hoop config whose admin.listen names the API.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// Bearer token (default: the HOOP_TOKEN environment variable).
        #[arg(long, global = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: HoldsCommand,
    },
}

#[derive(Subcommand)]
enum HoldsCommand {
    /// Pending and recent holds.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Approve a held statement: it runs once, in its session.
    Approve {
        /// The hold id.
        id: String,
        /// Why (recorded with the decision).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a held statement: the client gets an error with the reason.
    Deny {
        /// The hold id.
        id: String,
        /// Why (shown to the client and recorded).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a configuration/policy file without starting anything.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    hoop::app::init_logging();
    match cli.command {
        Command::Exec { config, command } => hoop::exec::run(&config, &command),
        Command::Agent { config } => hoop::agent::run(&config),
        Command::Holds {
            admin,
            config,
            token,
            command,
        } => holds(admin, config, token, command),
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => match hoop::config::Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(hoop::app::EXIT_CONFIG)
            }
        },
    }
}

fn holds(
    admin: Option<String>,
    config: Option<PathBuf>,
    token: Option<String>,
    command: HoldsCommand,
) -> ExitCode {
    use hoop::hold::cli;
    let endpoint = match (admin, config) {
        (Some(url), _) => cli::AdminEndpoint::parse(&url).map_err(|e| e.to_string()),
        (None, Some(path)) => hoop::config::Config::load(&path)
            .map(|c| cli::AdminEndpoint::from_listen(c.admin.listen))
            .map_err(|e| e.to_string()),
        (None, None) => Err("give the admin API with --admin URL or --config FILE".to_owned()),
    };
    let result = endpoint.and_then(|endpoint| {
        let token = cli::resolve_token(token).map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let mut out = std::io::stdout();
        runtime
            .block_on(async {
                match command {
                    HoldsCommand::List { json } => {
                        cli::list(&endpoint, &token, json, &mut out).await
                    }
                    HoldsCommand::Approve { id, reason } => {
                        cli::approve(&endpoint, &token, &id, reason.as_deref(), &mut out).await
                    }
                    HoldsCommand::Deny { id, reason } => {
                        cli::deny(&endpoint, &token, &id, reason.as_deref(), &mut out).await
                    }
                }
            })
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hoop holds: {e}");
            ExitCode::FAILURE
        }
    }
}
