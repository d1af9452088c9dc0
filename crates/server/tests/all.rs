//! Integration tests of sandpit-server (one binary, see the house conventions).
mod suite;
