//! Rebuild the eBPF object when the `bpf-linker` binary changes: the link step
//! depends on it, but cargo cannot see that dependency.

fn main() {
    // A missing linker is reported by rustc at link time with a clearer message.
    if let Ok(bpf_linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
}
