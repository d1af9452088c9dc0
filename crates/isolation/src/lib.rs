//! sandpit-isolation (work in progress).
