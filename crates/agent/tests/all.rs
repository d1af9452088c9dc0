//! Integration tests of sandpit-agent: the real binary in `serve` mode, real bash, HTTP over
//! its Unix socket.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod suite;
