mod exec;
mod files;
mod harness;
mod http;
mod launch;
mod reaping;
mod sessions;
mod streaming;
