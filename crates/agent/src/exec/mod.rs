//! Running commands: persistent session shells ([`session`]) and one-shot sessionless commands
//! ([`oneshot`]), both writing their output to a [`Sink`]. [`runner`] runs every child process
//! (sessionless commands, background processes, git) under the one kill policy ([`kill`]).

pub mod kill;
pub mod oneshot;
pub mod output;
pub mod runner;
pub mod session;
pub mod shell;
pub mod stdin;
pub mod tree;

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use sandpit_protocol::container::{EnvMap, ExecEvent, OutputEncoding};
use sandpit_protocol::time;
use tokio::sync::mpsc;

use crate::config::AgentConfig;
use crate::error::ApiError;
use crate::sse;
use output::{CappedBuffer, Utf8Carry};
pub use output::{StreamKind, reader};

/// Where a running command's output goes.
#[derive(Debug)]
pub enum Sink {
    /// Buffered for `/api/execute`, capped per stream.
    Collect {
        stdout: CappedBuffer,
        stderr: CappedBuffer,
    },
    /// Streamed as SSE frames for `/api/execute/stream`. `tx` becomes `None` when the client
    /// went away; output is then drained and dropped while the command is stopped.
    Events {
        tx: Option<mpsc::Sender<Bytes>>,
        encoding: OutputEncoding,
        stdout: Utf8Carry,
        stderr: Utf8Carry,
    },
}

impl Sink {
    pub fn collect(cap: usize) -> Self {
        Sink::Collect {
            stdout: CappedBuffer::new(cap),
            stderr: CappedBuffer::new(cap),
        }
    }

    pub fn events(tx: mpsc::Sender<Bytes>, encoding: OutputEncoding) -> Self {
        Sink::Events {
            tx: Some(tx),
            encoding,
            stdout: Utf8Carry::default(),
            stderr: Utf8Carry::default(),
        }
    }

    /// A watcher that fires when the stream's reader is gone (never for a buffered sink,
    /// whose request holds a [`kill::ClientPresent`] instead).
    pub fn reader_gone(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        match self {
            Sink::Events { tx: Some(tx), .. } => {
                let tx = tx.clone();
                Some(async move { tx.closed().await })
            }
            _ => None,
        }
    }

    /// Takes output bytes of one stream.
    pub async fn output(&mut self, kind: StreamKind, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self {
            Sink::Collect { stdout, stderr } => match kind {
                StreamKind::Stdout => stdout.push(bytes),
                StreamKind::Stderr => stderr.push(bytes),
            },
            Sink::Events {
                tx,
                encoding,
                stdout,
                stderr,
            } => {
                let data = match (*encoding, kind) {
                    (OutputEncoding::Base64, _) => BASE64.encode(bytes),
                    (OutputEncoding::Text, StreamKind::Stdout) => stdout.push(bytes),
                    (OutputEncoding::Text, StreamKind::Stderr) => stderr.push(bytes),
                };
                send_data(tx, *encoding, kind, data).await;
            }
        }
    }

    /// Flushes characters still carried at the end of the output.
    pub async fn finish_output(&mut self) {
        if let Sink::Events {
            tx,
            encoding,
            stdout,
            stderr,
        } = self
        {
            let out = stdout.finish();
            send_data(tx, *encoding, StreamKind::Stdout, out).await;
            let err = stderr.finish();
            send_data(tx, *encoding, StreamKind::Stderr, err).await;
        }
    }

    /// Sends a whole event (stream mode only; ignored when collecting).
    pub async fn event(&mut self, event: &ExecEvent) {
        if let Sink::Events { tx, .. } = self {
            send_frame(tx, sse::frame(event)).await;
        }
    }
}

impl runner::OutputSink for Sink {
    fn output(&mut self, kind: StreamKind, bytes: &[u8]) -> impl Future<Output = ()> + Send {
        Sink::output(self, kind, bytes)
    }
}

async fn send_data(
    tx: &mut Option<mpsc::Sender<Bytes>>,
    encoding: OutputEncoding,
    kind: StreamKind,
    data: String,
) {
    if data.is_empty() {
        return;
    }
    let timestamp = time::now();
    let encoding = (encoding == OutputEncoding::Base64).then_some(encoding);
    let event = match kind {
        StreamKind::Stdout => ExecEvent::Stdout {
            data,
            timestamp,
            encoding,
        },
        StreamKind::Stderr => ExecEvent::Stderr {
            data,
            timestamp,
            encoding,
        },
    };
    send_frame(tx, sse::frame(&event)).await;
}

async fn send_frame(tx: &mut Option<mpsc::Sender<Bytes>>, frame: Bytes) {
    if let Some(sender) = tx
        && sender.send(frame).await.is_err()
    {
        // The client disconnected: the command is being stopped; drop its output from now on.
        *tx = None;
    }
}

/// The bytes a command reads on stdin, from a request's text field or its base64 field
/// (named by `fields`, e.g. `["stdin", "stdinBase64"]`); 400 if both are given or the base64
/// is bad. `None`: neither was given.
pub fn stdin_bytes(
    text: Option<&str>,
    base64: Option<&str>,
    fields: [&str; 2],
) -> Result<Option<Vec<u8>>, ApiError> {
    let [text_field, base64_field] = fields;
    match (text, base64) {
        (Some(_), Some(_)) => Err(ApiError::validation(
            text_field,
            format!("give {text_field} or {base64_field}, not both"),
        )),
        (Some(text), None) => Ok(Some(text.as_bytes().to_vec())),
        (None, Some(b64)) => BASE64.decode(b64).map(Some).map_err(|e| {
            ApiError::validation(
                base64_field,
                format!("{base64_field} is not valid base64: {e}"),
            )
        }),
        (None, None) => Ok(None),
    }
}

/// Checks what every command request carries: non-empty command text without NUL bytes, a
/// usable cwd and valid env names (shared by `/api/execute` and `/api/process/start`).
pub fn validate_command(
    command: &str,
    cwd: Option<&str>,
    env: Option<&EnvMap>,
) -> Result<(), ApiError> {
    if command.trim().is_empty() {
        return Err(ApiError::validation("command", "command must not be empty"));
    }
    if command.contains('\0') {
        return Err(ApiError::validation(
            "command",
            "command must not contain NUL bytes",
        ));
    }
    if cwd.is_some_and(|c| c.is_empty() || c.contains('\0')) {
        return Err(ApiError::validation(
            "cwd",
            "cwd must be a non-empty path without NUL bytes",
        ));
    }
    match env {
        Some(env) => validate_env(env),
        None => Ok(()),
    }
}

/// Checks per-command or per-session environment keys and values.
pub fn validate_env(env: &EnvMap) -> Result<(), ApiError> {
    for (key, value) in env {
        let mut chars = key.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ApiError::validation(
                "env",
                format!(
                    "Invalid environment variable name: {key:?} (must match ^[A-Za-z_][A-Za-z0-9_]*$)"
                ),
            ));
        }
        if key.starts_with("__sp_") {
            return Err(ApiError::validation(
                "env",
                format!("Environment variable name {key:?} is reserved (prefix __sp_)"),
            ));
        }
        if value.as_deref().is_some_and(|v| v.contains('\0')) {
            return Err(ApiError::validation(
                "env",
                format!("Environment variable {key} contains a NUL byte"),
            ));
        }
    }
    Ok(())
}

/// `cwd` made absolute against the workspace.
pub fn cwd_in(config: &AgentConfig, cwd: Option<&str>) -> std::path::PathBuf {
    cwd.map_or_else(|| config.workspace.clone(), |c| config.workspace.join(c))
}

/// The environment of a new shell or sessionless command: the agent's env with sane defaults,
/// then `overlay` (where `null` unsets).
pub fn child_env(config: &AgentConfig, overlay: Option<&EnvMap>) -> BTreeMap<String, String> {
    let mut env = config.env.clone();
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    env.entry("HOME".into()).or_insert_with(|| "/root".into());
    env.insert("LANG".into(), "C.UTF-8".into());
    env.insert("LC_ALL".into(), "C.UTF-8".into());
    let overrides = config
        .env_overrides
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for (key, value) in overrides.iter().chain(overlay.into_iter().flatten()) {
        match value {
            Some(v) => env.insert(key.clone(), v.clone()),
            None => env.remove(key),
        };
    }
    env
}

/// Shell single-quoting: safe for every byte except NUL (rejected earlier).
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_checked() {
        let ok: EnvMap = [
            ("A_1".to_string(), Some("x".to_string())),
            ("_b".into(), None),
        ]
        .into();
        assert!(validate_env(&ok).is_ok());
        for bad in ["1A", "A-B", "", "A B", "É"] {
            let env: EnvMap = [(bad.to_string(), Some("x".to_string()))].into();
            assert!(validate_env(&env).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quoting_escapes_single_quotes() {
        assert_eq!(quote("a'b $X"), r"'a'\''b $X'");
    }
}
