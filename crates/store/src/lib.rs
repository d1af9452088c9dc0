//! sandpit-store (work in progress).
