//! Integration tests of sandpit-isolation against the real kernel (root only; `serial_*` run
//! one at a time). The full launch sequence is tested through `sandpit-runtime`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
