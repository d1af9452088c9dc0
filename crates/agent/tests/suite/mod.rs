mod exec;
mod files;
mod harness;
mod http;
mod reaping;
mod sessions;
mod streaming;
