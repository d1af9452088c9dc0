//! Finding the server and the API key.

use std::path::Path;

use anyhow::{Context, bail};
use sandpit_client::{Client, ClientError};

/// Name of the admin key file inside the data directory (written by `sandpit serve`).
pub const KEY_FILE: &str = "admin.key";

/// A client for the server the flags and environment point at.
pub fn client(url: &str, key: Option<&str>, data_dir: &Path) -> anyhow::Result<Client> {
    Ok(Client::new(url, api_key(key, data_dir)?)?)
}

/// The API key: the flag or environment, else the key file.
pub fn api_key(key: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    match key {
        Some(key) if !key.is_empty() => Ok(key.to_owned()),
        _ => read_key_file(data_dir),
    }
}

fn read_key_file(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(KEY_FILE);
    let key = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no API key: pass --key or set SANDPIT_KEY (reading {})",
            path.display()
        )
    })?;
    let key = key.trim();
    if key.is_empty() {
        bail!("no API key: {} is empty", path.display());
    }
    Ok(key.to_owned())
}

/// Whether `error` says the server could not be reached at all (nothing listening, unknown
/// host), as opposed to an answer or a stream that broke later.
pub fn is_unreachable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(cause.downcast_ref::<ClientError>(),
            Some(ClientError::Transport(e)) if e.is_connect())
    })
}
