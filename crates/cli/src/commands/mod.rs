//! One module per command group.

pub mod cp;
pub mod exec;
pub mod image;
pub mod sandbox;
pub mod serve;
pub mod shell;
