//! Wire types shared by every sandpit component.
//!
//! * [`error`]: the one error-code table (code → HTTP status) and the error envelope.
//! * [`container`]: the in-sandbox agent API, byte-compatible with the Cloudflare Sandbox
//!   container protocol (`/api/*`), including SSE event enums.
//! * [`control`]: the control-plane API (`/v1/sandboxes`).
//! * [`netrange`]: the address ranges sandboxes never reach on their own (egress proxy and
//!   `full`-mode firewall alike).
//! * [`netpolicy`]: a network policy parsed once ([`netpolicy::EgressPolicy`]), what the egress
//!   proxy and the `full`-mode firewall enforce.
//! * [`quota`]: per-sandbox caps and per-tenant quotas.
//! * [`throttle`]: the rate limit on log lines a sandbox can trigger (agent and server).
//! * [`chain`]: an error with its causes on one line, for API messages and logs.
//!
//! No I/O and no async runtime here: every crate may depend on this one.

pub mod backup;
pub mod chain;
pub mod container;
pub mod control;
pub mod error;
pub mod netpolicy;
pub mod netrange;
pub mod quota;
pub mod throttle;
pub mod time;

pub use chain::{ErrorChain, display_chain};
pub use error::{ErrorCode, ErrorResponse};

/// Session id that means "run without a session" (the seed's `DISABLE_SESSION_TOKEN`).
pub const DISABLE_SESSION: &str = "__DISABLE_SESSION__";

/// Version string the agent reports on `/api/version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The port inside every sandbox where the egress bridge listens (what `HTTP_PROXY` names).
/// Reserved: it cannot be exposed as a preview URL, which would open the proxy to anyone.
pub const EGRESS_PROXY_PORT: u16 = 3128;
