//! Integration tests of sandpit-server (one binary, see the house conventions).
// Helpers outside #[test] fns unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
