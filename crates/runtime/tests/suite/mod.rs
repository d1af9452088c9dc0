mod disk;
mod harness;
mod isolation;
mod lifecycle;
mod limits;
mod network;
