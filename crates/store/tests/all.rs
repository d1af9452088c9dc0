//! Integration tests of sandpit-store (one binary, see the house conventions).
mod suite;
