mod fake_server;
mod interpreter;
mod processes;
mod real_server;
