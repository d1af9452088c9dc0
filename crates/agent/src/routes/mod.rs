//! The HTTP routes of the container API, one module per area. Each exposes
//! `pub fn routes() -> Router<AppState>`; [`crate::http::router`] merges them.
//!
//! The convention (crate README, "Where does a new route go"): handlers take extractors in
//! their signature ([`crate::handler::Body`] for JSON bodies, `State<AppState>`, `Path`,
//! `Query`) and return [`crate::handler::ApiResult`]; they translate between the wire and the
//! areas' own types (`Agent`, `Processes`, `Interpreters`, `files`, ...) and hold no logic of
//! their own beyond that. No module outside `routes` imports a route module, and route
//! modules import no other route module, so the module graph has no loops.

pub mod backup;
pub mod env;
pub mod exec;
pub mod files;
pub mod files_raw;
pub mod git;
pub mod interpreter;
pub mod port_watch;
pub mod process;
pub mod pty;
pub mod sessions;
pub mod status;
pub mod tunnel;
pub mod watch;
pub mod ws;
