mod harness;
mod isolation;
mod lifecycle;
mod limits;
