//! Integration tests of the Rust SDK: against a recording fake server (wire shapes) and against
//! a real sandpit server (`serial_*`, needs the default image).

// Helpers outside #[test] fns panic on setup failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
