mod executor;
mod harness;
mod prepare;
