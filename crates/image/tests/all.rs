//! Integration tests of sandpit-image (one binary; modules in tests/suite/).

// Helpers outside #[test] fns panic on setup failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
