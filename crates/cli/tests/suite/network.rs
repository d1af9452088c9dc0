//! `create --allow/--secret`, `network` and `secret` against a real `sandpit serve`: a sandbox
//! reaches a test server in a network namespace the test creates (a private 10.x address,
//! granted by the policy the admin key sets) through the egress proxy, the secret reaches that
//! server while the sandbox sees a placeholder, and a runtime switch to `none` cuts it off.
//! (The host's loopback is always blocked, whatever the policy.)

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use sandpit_runtime::testnet::TestNet;

use super::support::{Served, images_dir_or_skip};

fn stdout(assert: assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone()).unwrap()
}

/// An HTTP server on `listener` that answers `hello` and sends each request's header lines.
fn header_server(listener: TcpListener) -> (u16, mpsc::Receiver<Vec<String>>) {
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut lines = Vec::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                lines.push(line.trim_end().to_owned());
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            );
            if tx.send(lines).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

#[test]
fn serial_cli_network_policy_and_secrets() {
    let Some(images) = images_dir_or_skip("serial_cli_network_policy_and_secrets") else {
        return;
    };
    let net = TestNet::create().unwrap();
    let inner = net.inner.to_string();
    let served = Served::start(&images);
    let (port, requests) = header_server(net.listen(7103).unwrap());
    served
        .cli()
        .args(["create", "net", "--allow", &format!("{inner}/32")])
        .args(["--secret", &format!("API_KEY;hosts={inner}")])
        .env("API_KEY", "real-secret-value")
        .assert()
        .success()
        .stdout("net\n");
    served
        .cli()
        .args(["network", "net"])
        .assert()
        .success()
        .stdout(format!("mode   allowlist\nallow  {inner}/32\n"));
    served
        .cli()
        .args(["secret", "ls", "net"])
        .assert()
        .success()
        .stdout(format!(
            "NAME     HOSTS{}  HEADER\nAPI_KEY  {inner}  -\n",
            " ".repeat(inner.len() - "HOSTS".len())
        ));

    // Inside: a placeholder, never the value.
    let seen = stdout(
        served
            .cli()
            .args(["exec", "net", "--", "echo $API_KEY"])
            .assert()
            .success(),
    );
    assert!(seen.starts_with("sandpit-secret-"), "{seen}");
    assert!(!seen.contains("real-secret-value"), "{seen}");

    // Through the proxy, the server gets the value in place of the placeholder.
    let curl = format!("curl -sS --max-time 20 -H \"X-Api-Key: $API_KEY\" http://{inner}:{port}/");
    served
        .cli()
        .args(["exec", "net", "--", &curl])
        .assert()
        .success()
        .stdout("hello");
    let headers = requests.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case("x-api-key: real-secret-value")),
        "{headers:?}"
    );

    // A runtime switch to `none` refuses the next request; the server sees nothing.
    served
        .cli()
        .args(["network", "net", "--mode", "none"])
        .assert()
        .success()
        .stdout("mode   none\n");
    let refused = stdout(
        served
            .cli()
            .args(["exec", "net", "--"])
            .arg(format!(
                "curl -s --max-time 20 -o /dev/null -w '%{{http_code}}' http://{inner}:{port}/"
            ))
            .assert(),
    );
    assert_eq!(refused, "403");
    assert!(requests.recv_timeout(Duration::from_millis(500)).is_err());

    served
        .cli()
        .args(["secret", "clear", "net"])
        .assert()
        .success()
        .stdout("net secrets removed\n");
    served
        .cli()
        .args(["secret", "ls", "net"])
        .assert()
        .success()
        .stdout("NAME  HOSTS  HEADER\n");
}
