//! Integration tests of the `sandpit` binary: argument handling, the commands against a fake
//! server (exact output and exit codes), and `serial_*` tests against a real server (need root
//! and the default image), including the @cloudflare/sandbox compatibility suite.

// Helpers outside #[test] fns panic on setup failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
