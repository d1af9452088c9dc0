//! Integration tests of the local driver: real namespaces, cgroups and overlay mounts (root only).
//! Tests named `serial_*` run one at a time (see .config/nextest.toml).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
