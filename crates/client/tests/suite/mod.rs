mod fake_server;
mod interpreter;
mod processes;
mod quota;
mod real_server;
