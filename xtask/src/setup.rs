//! Toolchain setup and the build/test/demo commands.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// Runs a command, failing with its command line if it does not succeed.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command and returns its stdout.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `cargo`, without the variables `cargo run` set for xtask itself
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …). Build scripts that watch one of
/// them (ring's watches `CARGO_MANIFEST_DIR`) would otherwise see it change
/// between a build run from xtask and one run from a shell, and everything
/// above them would be rebuilt: for the release `hoop`, a fat-LTO link of
/// six to seven minutes each time the two alternate.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    for (name, _) in env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_") || SET_BY_CARGO_RUN.contains(&name) {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// What `cargo run` sets for the program it runs, besides `CARGO_PKG_*`
/// (`CARGO` itself stays: it names the cargo that runs xtask).
const SET_BY_CARGO_RUN: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
];

/// The workspace root (xtask's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn home() -> anyhow::Result<PathBuf> {
    env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}

/// Installs nightly `rust-src` and a matching `bpf-linker`, then builds hoop.
pub fn setup() -> anyhow::Result<()> {
    toolchain()?;
    test_clients()?;
    eprintln!("xtask: building hoop (release)");
    run(cargo().current_dir(workspace_root()).args([
        "build",
        "--release",
        "--package",
        "hoop-userspace",
    ]))
}

/// Installs nightly `rust-src` and a matching `bpf-linker` if missing.
pub fn toolchain() -> anyhow::Result<()> {
    ensure_rust_src()?;
    ensure_bpf_linker()
}

/// The MySQL tests' client library: Debian's PyMySQL (`python3-pymysql`),
/// with `python3-cryptography` for caching_sha2/sha256 RSA exchanges, for
/// the system Python the tests run (`/usr/bin/python3`); MariaDB's C API
/// conformance suite (`mariadb-client-test`, Debian's `mariadb-test`); and
/// the recording-store tests' S3 API, moto's server.
pub fn test_clients() -> anyhow::Result<()> {
    ensure_moto()?;
    ensure_mariadb_client_test()?;
    let present = Command::new("/usr/bin/python3")
        .args(["-c", "import pymysql, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    eprintln!(
        "xtask: installing python3-pymysql and python3-cryptography (the MySQL tests' client)"
    );
    run(Command::new("apt-get").args(["install", "-y", "python3-pymysql", "python3-cryptography"]))
}

/// `tests/tests/mysql_client_test.rs` runs every case of MariaDB's
/// `mariadb-client-test` directly and through hoop; Debian ships it in
/// `mariadb-test` (about 60 MB, and 230 MB more for the `mariadb-test-data` it depends on).
fn ensure_mariadb_client_test() -> anyhow::Result<()> {
    let present = Command::new("mariadb-client-test")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: installing mariadb-test (the MySQL conformance gate's mariadb-client-test)");
    run(Command::new("apt-get").args(["install", "-y", "mariadb-test"]))
}

/// The recording-store tests' S3 API: PyPI `moto[server]`, in a virtualenv
/// of its own under `~/.local/share/hoop/moto` (Debian's Python refuses
/// `pip install` outside one). The tests look there, then on `PATH`.
fn ensure_moto() -> anyhow::Result<()> {
    let venv = home()?.join(".local/share/hoop/moto");
    let server = venv.join("bin/moto_server");
    let works = |cmd: &mut Command| cmd.arg("--help").output().is_ok_and(|o| o.status.success());
    if works(&mut Command::new(&server)) || works(&mut Command::new("moto_server")) {
        return Ok(());
    }
    eprintln!(
        "xtask: installing moto[server] (the recording-store tests' S3 API) into {}",
        venv.display()
    );
    if run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).is_err() {
        run(Command::new("apt-get").args(["install", "-y", "python3-venv"]))?;
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", "moto[server]>=5,<6"]))
}

fn ensure_rust_src() -> anyhow::Result<()> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("the nightly toolchain is needed to build the eBPF programs (`rustup toolchain install nightly`)")?;
    let src = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library");
    if src.is_dir() {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for nightly");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// `bpf-linker` must link with the very LLVM the nightly was built with. It
/// is built from crates.io against the nightly's own `libLLVM.so`, through a
/// prefix directory of symlinks that must outlive the build (the binary's
/// rpath points into it), so it lives under `~/.local/share/hoop`.
fn ensure_bpf_linker() -> anyhow::Result<()> {
    let verbose = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let llvm_version = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc +nightly -vV printed no LLVM version")?
        .trim()
        .to_owned();
    let llvm_major = llvm_version
        .split('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let nightly_commit = verbose
        .lines()
        .find_map(|l| l.strip_prefix("commit-hash: "))
        .unwrap_or("unknown");

    let prefix = home()?.join(".local/share/hoop/llvm-prefix");
    let stamp = prefix.join("bpf-linker.stamp");
    let want_stamp = format!("{nightly_commit} llvm-{llvm_version}\n");
    let linker_works = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if linker_works && fs::read_to_string(&stamp).is_ok_and(|s| s == want_stamp) {
        return Ok(());
    }
    if linker_works && !stamp.exists() {
        // Installed by hand (e.g. following ../shared/notes): trust it once it links.
        fs::create_dir_all(&prefix)?;
        fs::write(&stamp, &want_stamp)?;
        return Ok(());
    }

    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let libllvm = fs::read_dir(&lib_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    for name in [
        "libLLVM.so".into(),
        libllvm.file_name().expect("has a name").to_owned(),
    ] {
        let link = prefix_lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), libllvm.display()))?;
    }
    eprintln!("xtask: building bpf-linker against LLVM {llvm_version} (about a minute)");
    run(cargo()
        .args([
            "+nightly",
            "install",
            "--force",
            "bpf-linker",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{llvm_major}"))
        .env("LLVM_PREFIX", &prefix))?;
    fs::write(&stamp, want_stamp)?;
    Ok(())
}

/// Runs the bundled example: `hoop exec` around psql, showing a masked
/// result, a denied statement and the session's recording.
pub fn demo() -> anyhow::Result<()> {
    let root = workspace_root();
    let hoop = root.join("target/release/hoop");
    // Demo data, written directly (not through hoop).
    output(Command::new("psql").args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-XAtqc"]).arg(
        "CREATE SCHEMA IF NOT EXISTS hoop_demo;
         CREATE TABLE IF NOT EXISTS hoop_demo.customers (id int PRIMARY KEY, name text, ssn text, email text);
         INSERT INTO hoop_demo.customers VALUES (1, 'Ada', '123-45-6789', 'ada@example.com'),
           (2, 'Bob', '987-65-4321', 'bob@example.com') ON CONFLICT DO NOTHING;",
    ))?;
    eprintln!("xtask: running psql under `hoop exec --config examples/hoop.yaml`");
    run(Command::new(&hoop).current_dir(&root).args([
        "exec",
        "--config",
        "examples/hoop.yaml",
        "--",
        "psql",
        "-X",
        "-h",
        "127.0.0.1",
        "-p",
        "5432",
        "-U",
        "postgres",
        "test",
        "-c",
        "SELECT * FROM hoop_demo.customers ORDER BY id",
        "-c",
        "DROP TABLE hoop_demo.customers",
        "-c",
        "SELECT 'the session is still usable' AS after_denial",
    ]))?;
    eprintln!("xtask: the session's recording (hoop recordings list, then verify):");
    run(Command::new(&hoop).current_dir(&root).args([
        "recordings",
        "--config",
        "examples/hoop.yaml",
        "list",
    ]))?;
    run(Command::new(&hoop).current_dir(&root).args([
        "recordings",
        "--config",
        "examples/hoop.yaml",
        "verify",
        "--all",
    ]))?;
    run(Command::new(&hoop)
        .current_dir(&root)
        .args(["policy", "check", "examples/hoop.yaml"]))
}

/// Runs every test tier. The end-to-end and privileged tiers need root and
/// the databases; with CI=true they fail instead of skipping when they can't run.
pub fn test(extra: &[String]) -> anyhow::Result<()> {
    let root = workspace_root();
    if !nix_is_root() {
        bail!("the test suite includes privileged eBPF tests: run it as root");
    }
    test_clients()?;
    // One `cargo test` builds everything, the `hoop` binary included (it is
    // built for hoop-userspace's integration tests, with the same features
    // as every test binary): a separate `cargo build` first would resolve
    // features differently and compile the crates twice.
    // One test thread per binary: the end-to-end tests move processes between
    // cgroups and share the databases.
    run(cargo()
        .current_dir(&root)
        .args(["test", "--no-fail-fast"])
        .args(extra)
        .args(["--", "--test-threads=1"])
        .env("HOOP_BIN", root.join("target/debug/hoop")))
}

fn nix_is_root() -> bool {
    output(Command::new("id").arg("-u")).is_ok_and(|s| s.trim() == "0")
}

#[cfg(test)]
mod tests {
    use super::cargo;

    #[test]
    fn cargo_runs_without_the_variables_cargo_run_set_for_xtask() {
        // `cargo test` sets them for this test as `cargo run` does for xtask.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
        let cmd = cargo();
        let removed: Vec<_> = cmd
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        for name in ["CARGO_MANIFEST_DIR", "CARGO_PKG_NAME", "CARGO_PKG_VERSION"] {
            assert!(removed.iter().any(|r| r == name), "{name}: {removed:?}");
        }
        // Only cargo's own variables for the program go; `CARGO` and the
        // rest of the environment stay.
        assert!(
            removed
                .iter()
                .all(|r| r.starts_with("CARGO_") && r != "CARGO_HOME"),
            "{removed:?}"
        );
    }
}
