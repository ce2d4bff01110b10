//! What the approvals page's browser test needs (tests/tests/ui.rs):
//! Debian's `chromium`, and `playwright-core` from the committed
//! `tests/ui/package-lock.json`. Installed only when missing: chromium with
//! apt-get, the npm package with `npm ci` (which never downloads a browser:
//! `playwright-core` has no install script, and the environment says so too).

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::setup::{output, run, workspace_root};

/// The browser the test drives.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The oldest Node.js the pinned playwright-core runs on.
const MIN_NODE_MAJOR: u32 = 20;

/// Installs chromium and the test's npm packages when missing.
pub fn ensure() -> anyhow::Result<()> {
    ensure_chromium()?;
    ensure_node_modules()
}

fn ensure_chromium() -> anyhow::Result<()> {
    if Path::new(CHROMIUM).exists() {
        return Ok(());
    }
    eprintln!("xtask: installing chromium (apt-get) for the approvals page's browser test");
    let apt = |args: &[&str]| {
        run(Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    // A fresh machine's package lists may be missing or stale.
    apt(&["update", "-q"])?;
    apt(&[
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "chromium",
        // A font, so text renders (and screenshots show it) without recommends.
        "fonts-liberation",
    ])
    .context("installing chromium (needs root and the Debian archive)")?;
    if !Path::new(CHROMIUM).exists() {
        bail!("apt-get installed chromium, but {CHROMIUM} is missing");
    }
    Ok(())
}

fn ensure_node_modules() -> anyhow::Result<()> {
    let version = output(Command::new("node").arg("--version")).with_context(|| {
        format!("Node.js {MIN_NODE_MAJOR}+ and npm are needed for the browser test")
    })?;
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("unexpected `node --version`: {version}"))?;
    if major < MIN_NODE_MAJOR {
        bail!(
            "Node.js {} is too old for playwright-core: {MIN_NODE_MAJOR}+ is needed",
            version.trim()
        );
    }
    let ui = workspace_root().join("tests/ui");
    let lock =
        fs::read(ui.join("package-lock.json")).context("reading tests/ui/package-lock.json")?;
    // node_modules is current when it was installed from this very lock file.
    let stamp = ui.join("node_modules/.hoop-installed-from-lock");
    let installed = ui
        .join("node_modules/playwright-core/package.json")
        .exists();
    if installed && fs::read(&stamp).is_ok_and(|s| s == lock) {
        return Ok(());
    }
    eprintln!("xtask: npm ci in tests/ui (playwright-core, from the committed lock file)");
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(&ui)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"))?;
    fs::write(&stamp, lock).context("writing the node_modules stamp")?;
    Ok(())
}
