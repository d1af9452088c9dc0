//! `sandpit shell ID`: this terminal attached to a PTY in the sandbox
//! (`/v1/sandboxes/{id}/ws/pty`). Keystrokes go out as binary frames, output is written to
//! stdout, window-size changes are sent as resize messages; the local terminal is in raw mode
//! while attached and restored however the command ends.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use nix::sys::termios::{self, SetArg, Termios};
use sandpit_client::Client;
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::cli::ShellArgs;
use crate::interrupted::EndedEarly;

/// Puts stdin in raw mode; restores the saved settings when dropped (also on error or panic).
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).context("reading terminal settings")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).context("setting raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The local terminal's size (columns, rows), if stdout is a terminal.
fn local_size() -> Option<(u16, u16)> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

/// The WebSocket URL of the sandbox's PTY route.
fn pty_url(base: &str, id: &str, session: &str, shell: Option<&str>) -> anyhow::Result<String> {
    let base = base.trim_end_matches('/');
    let ws_base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if base.starts_with("https://") {
        bail!("sandpit shell supports http:// servers only (no TLS in this build)");
    } else {
        bail!("server URL must start with http://: {base}");
    };
    let mut url = format!(
        "{ws_base}/v1/sandboxes/{}/ws/pty?sessionId={}",
        encode(id),
        encode(session)
    );
    if let Some((cols, rows)) = local_size() {
        url.push_str(&format!("&cols={cols}&rows={rows}"));
    }
    if let Some(shell) = shell {
        url.push_str(&format!("&shell={}", encode(shell)));
    }
    Ok(url)
}

/// Percent-encodes a query or path value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Stdin, read on a plain thread: a read blocked in tokio's blocking pool would keep the
/// runtime from shutting down after the shell exits.
fn stdin_chunks() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

fn resize(cols: u16, rows: u16) -> Message {
    Message::Text(
        json!({"type": "resize", "cols": cols, "rows": rows})
            .to_string()
            .into(),
    )
}

/// Attaches; returns the shell's exit code.
pub async fn run(client: &Client, url: &str, key: &str, args: ShellArgs) -> anyhow::Result<i32> {
    let ephemeral = args.session.is_none();
    let session = args
        .session
        .clone()
        .unwrap_or_else(|| format!("shell-{:016x}", rand::random::<u64>()));
    let mut request = pty_url(url, &args.id, &session, args.shell.as_deref())?
        .into_client_request()
        .context("building the WebSocket request")?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {key}")).context("API key is not a valid header")?,
    );
    let (ws, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(pair) => pair,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            bail!(
                "server refused the terminal ({}): {body}",
                response.status()
            );
        }
        Err(e) => return Err(e).context("connecting to the sandbox terminal"),
    };
    let result = attach(ws).await;
    // A stopped or removed sandbox took the shell with it, and a call to delete the session
    // would wake or re-create it.
    let gone = match &result {
        Err(e) => crate::interrupted::cut_by_stop_or_rm(client, &args.id, e)
            .await
            .is_some(),
        Ok(_) => false,
    };
    if ephemeral && !gone {
        // Our own fresh shell: end it with the command (deleting the session kills it).
        let _ = client
            .sandbox(args.id.clone())
            .delete_session(&session)
            .await;
    }
    result
}

async fn attach(
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> anyhow::Result<i32> {
    let interactive = std::io::stdin().is_terminal();
    let _raw = if interactive {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let (mut tx, mut rx) = ws.split();
    let mut keys = stdin_chunks();
    let mut winch = signal(SignalKind::window_change()).context("watching SIGWINCH")?;
    let mut stdout = std::io::stdout();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            chunk = keys.recv(), if stdin_open => match chunk {
                Some(bytes) => tx.send(Message::Binary(bytes.into())).await
                    .context("sending keystrokes")?,
                // Piped input ended: keep showing output until the shell exits.
                None => stdin_open = false,
            },
            _ = winch.recv() => {
                if let Some((cols, rows)) = local_size() {
                    tx.send(resize(cols, rows)).await.context("sending the window size")?;
                }
            }
            message = rx.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    stdout.write_all(&bytes)?;
                    stdout.flush()?;
                }
                Some(Ok(Message::Text(text))) => {
                    let status: Value = serde_json::from_str(&text).unwrap_or_default();
                    match status["type"].as_str() {
                        Some("exit") => {
                            let code = status["code"].as_i64().unwrap_or(1);
                            return Ok(i32::try_from(code).unwrap_or(1));
                        }
                        Some("error") => {
                            let message = status["message"].as_str().unwrap_or("unknown error");
                            bail!("terminal error: {message}");
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    return Err(EndedEarly("the terminal connection closed before the shell exited").into());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("terminal connection failed"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_websocket_urls() {
        let url = pty_url("http://127.0.0.1:7070/", "box", "s 1", Some("/bin/sh")).unwrap();
        assert!(url.starts_with("ws://127.0.0.1:7070/v1/sandboxes/box/ws/pty?sessionId=s%201"));
        assert!(url.ends_with("&shell=%2Fbin%2Fsh"));
        assert!(pty_url("https://x", "b", "s", None).is_err());
        assert!(pty_url("ftp://x", "b", "s", None).is_err());
    }
}
