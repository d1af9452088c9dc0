//! Rust SDK for sandpit.
//!
//! ```no_run
//! # async fn demo() -> sandpit_client::Result<()> {
//! use sandpit_client::{Client, ExecOptions};
//! let client = Client::new("http://127.0.0.1:7070", "API-KEY")?;
//! let sandbox = client.sandbox("user-123"); // created on first use
//! let out = sandbox.exec("python3 -c 'print(2+2)'", &ExecOptions::default()).await?;
//! assert_eq!(out.stdout, "4\n");
//! # Ok(()) }
//! ```
//!
//! * [`Client`]: the control plane (create, get, list, update, stop, destroy).
//! * [`SandboxHandle`]: one sandbox's container API (exec, streaming exec, sessions, files),
//!   and raw transfers of files of any size ([`SandboxHandle::upload`],
//!   [`SandboxHandle::download`]).
//! * [`ProcessHandle`]: background processes ([`SandboxHandle::start_process`]): logs, live
//!   output, kill, and client-side waits for exit, a log line or a ready port.
//! * File watches ([`SandboxHandle::watch`], [`SandboxHandle::check_changes`]) and
//!   [`SandboxHandle::git_checkout`].
//! * Preview URLs: [`SandboxHandle::expose_port`], [`SandboxHandle::unexpose_port`],
//!   [`SandboxHandle::exposed_ports`], [`SandboxHandle::is_port_exposed`].
//! * WebSocket credentials: [`SandboxHandle::ws_ticket`], [`SandboxHandle::terminal_url`].
//! * Network policy and secrets: [`Client::set_network`], [`Client::set_secrets`] (or the
//!   `network`/`secrets` fields of a create request), built with [`allowlist`],
//!   [`full_network`], [`no_network`] and [`secret`].
//! * Code contexts ([`SandboxHandle::create_context`], [`SandboxHandle::run_code`],
//!   [`SandboxHandle::run_code_stream`]): Python and JavaScript/TypeScript interpreters whose
//!   state persists between runs, with live output and rich results.
//! * Quotas: [`Client::quota`] (the caller's quota, usage and the server's per-sandbox caps),
//!   and for the admin [`Client::tenant_quota`], [`Client::set_tenant_quota`],
//!   [`Client::reset_tenant_quota`].
//! * API keys and the audit log: [`Client::create_key`], [`Client::list_keys`],
//!   [`Client::revoke_key`], [`Client::rotate_key`], [`Client::audit`].
//! * Sandbox changes as they happen: [`Client::events`] (`GET /v1/events`).
//! * [`ClientError`]: `Api` carries the server's error envelope (code, status, context).

mod admin;
mod backup;
mod client;
mod error;
mod events;
mod interpreter;
mod mounts;
mod network;
mod ports;
mod process;
mod quota;
mod sandbox;
mod snapshots;
mod sse;
mod stdin_stream;
mod watch;
mod websocket;

pub use admin::AuditOptions;
pub use client::{Client, ListOptions};
pub use error::{ClientError, InterruptReason, Result};
pub use events::Event;
pub use interpreter::{
    ContextOptions, Execution, ExecutionError, Language, ResultFile, RunOptions, result_files,
};
pub use mounts::MountOptions;
pub use network::{allowlist, full_network, no_network, secret};
pub use ports::ExposeOptions;
pub use process::{LogPattern, PortMode, PortWaitOptions, ProcessHandle, ProcessOptions};
pub use sandbox::{Download, ExecOptions, FileDownload, SandboxHandle, decode_output};
pub use sse::EventStream;
pub use watch::{GitOptions, WatchOptions};

/// The wire types, re-exported so users need no second dependency.
pub use sandpit_protocol as protocol;
