//! Integration tests of sandpit-interpreter: prepared cells run in the real Node executor.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod suite;
