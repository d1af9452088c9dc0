//! One module per command group.

pub mod backup;
pub mod cluster;
pub mod cp;
pub mod ctx;
pub mod env;
pub mod events;
pub mod exec;
pub mod expose;
pub mod files;
pub mod git;
pub mod image;
pub mod keys;
pub mod mount;
pub mod network;
pub mod process;
pub mod quota;
pub mod run;
pub mod sandbox;
pub mod serve;
pub mod shell;
pub mod snapshot;
pub mod target;
pub mod watch;
