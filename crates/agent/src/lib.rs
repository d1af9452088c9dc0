//! sandpit-agent: the in-sandbox daemon. It speaks the Cloudflare Sandbox container API
//! (`/api/*`, see the protocol crate) over HTTP/1.1 on a Unix socket, runs commands in
//! persistent bash sessions or sessionless, serves file operations, and reaps orphans as the
//! sandbox's PID 1.
//!
//! * [`serve::run`] / [`serve::serve`]: serve a bound Unix socket until SIGTERM.
//! * [`http::router`]: the axum router over an [`Agent`], merging the `routes()` of every
//!   area in [`routes`] (handlers share [`handler`]'s extractors).
//! * [`Agent`]: command execution independent of HTTP.
//! * [`reaper::Reaper`]: the `waitpid(-1)` reaper every child's exit status goes through.

pub mod agent;
pub mod backup;
pub mod config;
pub mod egress_bridge;
pub mod env;
pub mod error;
pub mod exec;
pub mod files;
pub mod git;
pub mod handler;
pub mod http;
pub mod interpreter;
pub mod memcg;
pub mod meminfo;
pub mod port_watch;
pub mod process;
pub mod pty;
pub mod reaper;
pub mod routes;
pub mod serve;
pub mod sse;
pub mod watch;

pub use agent::Agent;
pub use config::AgentConfig;
pub use error::ApiError;
pub use serve::{run, serve};
