//! sandpit-server (work in progress).
