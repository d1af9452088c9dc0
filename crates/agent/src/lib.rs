//! sandpit-agent (work in progress).
