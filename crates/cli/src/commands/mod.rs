//! One module per command group.

pub mod cp;
pub mod exec;
pub mod git;
pub mod image;
pub mod process;
pub mod sandbox;
pub mod serve;
pub mod shell;
pub mod watch;
