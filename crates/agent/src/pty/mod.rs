//! PTY terminals: one shell on a pseudo-terminal per session id ([`Terminals`]). Clients attach
//! over WebSocket through `GET /ws/pty` (`crate::routes::pty`).

pub mod terminal;

pub use terminal::{Attachment, PtyError, PtyEvent, PtyOptions, Terminal, Terminals};
