//! Preview URLs end to end with the CLI and a real browser: a Node server inside a sandbox
//! serves a page whose script opens a WebSocket back to the page's own (preview) origin;
//! headless Chromium loads the preview URL and the test reads the echoed message out of the
//! DOM. Also `expose`, `ports`, token rotation and `unexpose` as seen by plain HTTP. Every
//! connection goes to 127.0.0.1 (`*.localhost` resolves to loopback; Chromium is told to
//! resolve nothing else).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::support::{Served, images_dir_or_skip};

const PAGE_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ws-page.js");

fn stdout(assert: assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone()).unwrap()
}

/// `http://{host}/` → (host, port) of the server the URL points at.
fn host_of(url: &str) -> (String, u16) {
    let host = url
        .strip_prefix("http://")
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let port = host.rsplit_once(':').unwrap().1.parse().unwrap();
    (host, port)
}

/// `GET /` with this Host header to 127.0.0.1; returns (status, body).
fn get(url: &str) -> (u16, String) {
    let (host, port) = host_of(url);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Waits until the preview URL answers 200 (the server inside may still be starting).
fn wait_ok(url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(url);
        if status == 200 {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url} still answers {status}: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The flags every test's Chromium starts with (no sandbox, nothing resolved but loopback:
/// no traffic elsewhere, whatever Chromium would like to fetch on its own), shared with the
/// console's browser test.
fn chromium_flags() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../server/console/tests/chromium-flags.json"
    );
    let flags: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::from_value(flags["args"].clone()).unwrap()
}

/// Loads `url` in headless Chromium and returns the DOM after scripts ran.
fn chromium_dom(chromium: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = assert_cmd::Command::new(chromium)
        .arg("--headless")
        .args(chromium_flags())
        .args(["--dump-dom", "--virtual-time-budget=10000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .timeout(Duration::from_secs(90))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn find_chromium() -> Option<std::path::PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
}

#[test]
fn serial_browser_preview_websocket() {
    let Some(images) = images_dir_or_skip("serial_browser_preview_websocket") else {
        return;
    };
    let Some(chromium) = find_chromium() else {
        eprintln!(
            "SKIPPED serial_browser_preview_websocket: no chromium (apt-get install chromium)"
        );
        return;
    };
    let served = Served::start(&images);
    // Upper case in the id: browsers lowercase the host, the proxy must still find it.
    let id = "Browser1";
    served.cli().args(["create", id]).assert().success();
    served
        .cli()
        .args(["cp", PAGE_SERVER, &format!("{id}:/workspace/ws-page.js")])
        .assert()
        .success();
    served
        .cli()
        .args(["start", id, "--id", "web", "--"])
        .arg("node /workspace/ws-page.js 8080")
        .assert()
        .success();

    let url = stdout(
        served
            .cli()
            .args(["expose", id, "8080", "--name", "web"])
            .assert()
            .success(),
    );
    let url = url.trim().to_owned();
    let (host, port) = host_of(&url);
    assert!(
        host.starts_with("8080-browser1-") && host.ends_with(&format!(".localhost:{port}")),
        "{url}"
    );
    assert!(
        served.url.ends_with(&format!(":{port}")),
        "{url} vs {}",
        served.url
    );
    let page = wait_ok(&url);
    assert!(page.contains("new WebSocket"), "{page}");

    let ports = stdout(served.cli().args(["ports", id]).assert().success());
    let lines: Vec<&str> = ports.lines().collect();
    assert_eq!(lines.len(), 2, "{ports}");
    assert!(lines[0].starts_with("PORT"), "{ports}");
    assert!(
        lines[1].starts_with("8080") && lines[1].contains("web") && lines[1].ends_with(&url),
        "{ports}"
    );

    // The browser: page over HTTP, then a WebSocket to the same preview origin, echoed.
    let dom = chromium_dom(&chromium, &url);
    assert!(
        dom.contains(&format!("<div id=\"result\">echo: hello from {host}</div>")),
        "{dom}"
    );

    // A new token rotates the URL: the old one is refused, the new one works.
    let rotated = stdout(
        served
            .cli()
            .args(["expose", id, "8080", "--token", "fresh_token"])
            .assert()
            .success(),
    );
    let rotated = rotated.trim().to_owned();
    // Same sandbox label (`browser1-<hash>`), new token.
    let label = host.split_once('.').unwrap().0.rsplit_once('-').unwrap().0;
    assert_eq!(
        rotated,
        format!("http://{label}-fresh_token.localhost:{port}/")
    );
    assert_eq!(get(&url).0, 404);
    wait_ok(&rotated);
    let dom = chromium_dom(&chromium, &rotated);
    assert!(
        dom.contains(&format!("echo: hello from {label}-fresh_token.localhost")),
        "{dom}"
    );

    // Unexposed: refused, and gone from the list.
    served
        .cli()
        .args(["unexpose", id, "8080"])
        .assert()
        .success()
        .stdout(format!("{id}:8080 unexposed\n"));
    let (status, body) = get(&rotated);
    assert!(status == 404 || status == 410, "{status} {body}");
    let ports = stdout(served.cli().args(["ports", id]).assert().success());
    assert_eq!(ports.lines().count(), 1, "{ports}");
    served.cli().args(["expose", id, "80"]).assert().code(1);
}

/// `sandpit serve --preview-domain/--preview-scheme/--preview-port`: URLs for a public domain
/// behind a TLS front proxy, and the proxy routes that domain (here reached on loopback with
/// the Host header the front proxy would pass on).
#[test]
fn serial_preview_urls_for_a_public_domain() {
    let Some(images) = images_dir_or_skip("serial_preview_urls_for_a_public_domain") else {
        return;
    };
    let served = Served::start_with(
        &images,
        &[
            "--preview-domain",
            "preview.example.test",
            "--preview-scheme",
            "https",
            "--preview-port",
            "443",
        ],
    );
    served.cli().args(["create", "pub"]).assert().success();
    let url = stdout(
        served
            .cli()
            .args(["expose", "pub", "8080", "--token", "tok"])
            .assert()
            .success(),
    );
    // `8080-pub-<12 hex>-tok`: the sandbox label is the id plus a hash of tenant and id.
    let label = url
        .strip_prefix("https://8080-")
        .and_then(|rest| rest.strip_suffix("-tok.preview.example.test/\n"))
        .unwrap_or_else(|| panic!("{url}"));
    assert!(
        label.len() == "pub-".len() + 12 && label.starts_with("pub-"),
        "{url}"
    );
    let port = served.url.rsplit_once(':').unwrap().1;
    // Nothing listens on 8080 inside: the proxy (not the API) answers, 502.
    let (status, body) = get(&format!(
        "http://8080-{label}-tok.preview.example.test:{port}/"
    ));
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("SERVICE_NOT_RESPONDING"), "{body}");
    let (status, body) = get(&format!(
        "http://8080-{label}-bad.preview.example.test:{port}/"
    ));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("INVALID_TOKEN"), "{body}");
}
