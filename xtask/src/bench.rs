//! Benchmarks (filled in with the protocol work).

pub fn run(_seconds: u32) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
