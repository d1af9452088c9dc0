mod fake_server;
