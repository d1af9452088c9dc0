mod fake_server;
mod processes;
mod real_server;
