mod fake_server;
mod real_server;
