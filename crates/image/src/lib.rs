//! sandpit-image (work in progress).
