//! sandpit-client (work in progress).
