mod fake_server;
mod interpreter;
mod parity;
mod processes;
mod quota;
mod real_server;
