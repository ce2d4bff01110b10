//! Builds the eBPF object (`hoop-ebpf`) with the nightly toolchain and
//! `bpf-linker`, so a plain `cargo build` on stable produces a `hoop` binary
//! with its kernel programs embedded. `cargo xtask setup` installs both.
//!
//! `AYA_BUILD_SKIP=1` skips the eBPF build (for `cargo check`/clippy); the
//! binary then embeds an empty object and refuses to attach.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v != "0") {
        fs::write(out_dir.join("hoop"), []).context("writing the placeholder eBPF object")?;
        return Ok(());
    }
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("hoop-userspace has no parent directory"))?
        .join("hoop-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "hoop-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context(
        "building hoop-ebpf (run `cargo xtask setup` to install nightly rust-src and bpf-linker)",
    )
}
