//! `sandpit-agent launch`. TODO: enter the sandbox with `sandpit_isolation::launch` once the
//! isolation crate provides it.

pub fn launch() -> anyhow::Result<()> {
    anyhow::bail!("launch is not available yet")
}
