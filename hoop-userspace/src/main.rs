//! The `hoop` command line. Thin: parsing here, work in the library.

#![forbid(unsafe_code)]

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
    /// Govern the cgroups listed in the config, and on Kubernetes the pods
    /// that opt in (or, as a sidecar, this pod), until SIGTERM.
    Agent {
        /// The hoop configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// For an init container: wait until this pod's connections to the
    /// intercepted ports are governed (exit 0), or fail after --timeout.
    Await {
        /// An intercepted destination port to check (repeatable).
        #[arg(long = "port", default_value = "5432")]
        ports: Vec<u16>,
        /// How long to wait, e.g. 60s or 2m.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
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
    /// List, show, replay, export and verify session recordings.
    Recordings {
        /// The recording directory (default: --config's recording.dir, else ./recordings).
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
        /// Read the recordings straight from this object store (`s3://bucket/prefix`,
        /// `gs://…`, `az://…`, `file:///dir`); default: --config's recording.store
        /// unless --dir is given. Credentials come from the environment.
        #[arg(long, global = true, conflicts_with = "dir")]
        store: Option<String>,
        /// A hoop config naming recording.dir and the HMAC key.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: RecordingsCommand,
    },
}

#[derive(Subcommand)]
enum RecordingsCommand {
    /// Recordings, oldest first.
    List {
        /// Only sessions started since this RFC 3339 time or this long ago (`2h`, `3days`).
        #[arg(long)]
        since: Option<String>,
        /// Only sessions whose workload (cgroup path) contains this.
        #[arg(long)]
        workload: Option<String>,
        /// Only sessions of this database user (as the client asked, or the role hoop injected).
        #[arg(long)]
        user: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A readable transcript: statements, verdicts, holds, summaries, masked rows.
    Show {
        /// Recording id (or a unique session id).
        id: String,
    },
    /// Print the session as it happened, paced by its original timing.
    Replay {
        /// Recording id.
        id: String,
        /// Speed factor: 2 is twice as fast, 0 means no pauses.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// Export a recording as one JSON document.
    Export {
        /// Recording id.
        id: String,
        /// Output format.
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// Verify hash chains and trailers; exit 1 if any recording was tampered with.
    Verify {
        /// Recording ids.
        ids: Vec<String>,
        /// Verify every recording in the directory.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
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
        Command::Await { ports, timeout } => hoop::agent::await_governed(&ports, timeout),
        Command::Holds {
            admin,
            config,
            token,
            command,
        } => holds(admin, config, token, command),
        Command::Recordings {
            dir,
            store,
            config,
            command,
        } => recordings(dir, store, config.as_deref(), command),
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => {
            let report = hoop::config::check_file(&file);
            if report.is_ok() {
                print!("{report}");
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            } else {
                eprint!("{report}");
                ExitCode::from(hoop::app::EXIT_CONFIG)
            }
        }
    }
}

fn holds(
    admin: Option<String>,
    config: Option<PathBuf>,
    token: Option<String>,
    command: HoldsCommand,
) -> ExitCode {
    use hoop::hold_cli as cli;
    let endpoint = match (admin, config) {
        (Some(url), _) => cli::AdminEndpoint::parse(&url).map_err(|e| e.to_string()),
        (None, Some(path)) => hoop_policy::load_checked(&path)
            .map(|l| cli::AdminEndpoint::from_listen(l.config.admin.listen))
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

fn recordings(
    dir: Option<PathBuf>,
    store: Option<String>,
    config: Option<&std::path::Path>,
    command: RecordingsCommand,
) -> ExitCode {
    use hoop_record::{self as record, cli};
    let recording = match config.map(hoop_policy::load_checked).transpose() {
        Ok(c) => c.map(|l| l.config.recording).unwrap_or_default(),
        Err(e) => {
            eprintln!("hoop recordings: {e}");
            return ExitCode::from(hoop::app::EXIT_CONFIG);
        }
    };
    if let RecordingsCommand::Verify { ids, all } = &command
        && ids.is_empty()
        && !all
    {
        eprintln!("hoop recordings verify: give recording ids or --all");
        return ExitCode::from(2);
    }
    let store = store.or_else(|| dir.is_none().then(|| recording.store.clone()).flatten());
    // A store is read through a private local copy of the recordings asked for.
    let copy = match store {
        Some(url) => {
            let ids = match &command {
                RecordingsCommand::List { .. } => Vec::new(),
                RecordingsCommand::Show { id }
                | RecordingsCommand::Replay { id, .. }
                | RecordingsCommand::Export { id, .. } => vec![id.clone()],
                RecordingsCommand::Verify { ids, .. } => ids.clone(),
            };
            match record::store::RecordingStore::open(&url)
                .and_then(|store| record::store::LocalCopy::download(&store, &ids))
            {
                Ok(copy) => Some(copy),
                Err(e) => {
                    eprintln!("hoop recordings: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    let dir = match &copy {
        Some(copy) => copy.path().to_path_buf(),
        None => dir.unwrap_or_else(|| recording.dir.clone()),
    };
    let mut out = std::io::stdout().lock();
    let result = match command {
        RecordingsCommand::List {
            since,
            workload,
            user,
            json,
        } => {
            let since = match since
                .map(|s| cli::parse_since(&s, std::time::SystemTime::now()))
                .transpose()
            {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("hoop recordings list: {e}");
                    return ExitCode::from(2);
                }
            };
            let filter = cli::ListFilter {
                since,
                workload: workload.as_deref(),
                user: user.as_deref(),
            };
            cli::list(&dir, &filter, json, &mut out)
        }
        RecordingsCommand::Show { id } => cli::show(&dir, &id, &mut out),
        RecordingsCommand::Replay { id, speed } => cli::replay(&dir, &id, speed, &mut out),
        RecordingsCommand::Export { id, format } => {
            if format != "json" {
                eprintln!("hoop recordings export: unknown format {format:?} (supported: json)");
                return ExitCode::from(2);
            }
            cli::export(&dir, &id, cli::ExportFormat::Json, &mut out)
        }
        RecordingsCommand::Verify { ids, all } => {
            if ids.is_empty() && !all {
                eprintln!("hoop recordings verify: give recording ids or --all");
                return ExitCode::from(2);
            }
            let key = match record::load_hmac_key(&recording) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("hoop recordings verify: {e}");
                    return ExitCode::from(2);
                }
            };
            match cli::verify(&dir, &ids, key.as_deref(), &mut out) {
                Ok(summary) => return ExitCode::from(summary.exit_code()),
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hoop recordings: {e}");
            ExitCode::FAILURE
        }
    }
}
