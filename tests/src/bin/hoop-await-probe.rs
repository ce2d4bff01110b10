//! `hoop await` as the Kubernetes tier runs it inside a simulated pod until
//! the CLI command is wired: `hoop-await-probe PORT TIMEOUT_MS` exits 0 and
//! prints the pod hoop governs this connection as, or exits 1 with the
//! reason.

use std::{process::ExitCode, time::Duration};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(timeout)) = (
        args.get(1).and_then(|p| p.parse::<u16>().ok()),
        args.get(2).and_then(|t| t.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: hoop-await-probe PORT TIMEOUT_MS");
        return ExitCode::from(2);
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("cannot start a runtime");
        return ExitCode::from(2);
    };
    match runtime.block_on(hoop_k8s::canary::await_governed(
        port,
        Duration::from_millis(timeout),
    )) {
        Ok(pod) => {
            println!("governed as {pod}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
