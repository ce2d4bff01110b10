//! The `hoop` command line. Thin: parsing here, work in the library.

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "hoop", version, about = "Transparent, eBPF-assisted governance for database connections")]
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
        Command::Policy { command: PolicyCommand::Check { file } } => match hoop::config::Config::load(&file) {
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
