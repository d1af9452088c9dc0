mod args;
mod compat;
mod fake_server;
mod processes;
mod real_server;
mod shell;
mod support;
