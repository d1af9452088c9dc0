//! The CLI against a real `sandpit serve` (root, namespaces, default image).

use super::support::{Served, images_dir_or_skip};

fn stdout(assert: assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone()).unwrap()
}

#[test]
fn serial_cli_against_real_server() {
    let Some(images) = images_dir_or_skip("serial_cli_against_real_server") else {
        return;
    };
    let served = Served::start(&images);
    assert!(
        served
            .log()
            .contains(&format!("sandpit listening on {}", served.url)),
        "{}",
        served.log()
    );
    assert!(
        served.log().contains("admin key stored in"),
        "{}",
        served.log()
    );

    // First use creates the sandbox, and says so; argv is shell-quoted.
    served
        .cli()
        .args(["exec", "demo", "--", "python3", "-c", "print(2+2)"])
        .assert()
        .success()
        .stdout("4\n")
        .stderr("created sandbox demo\n");
    // Exit codes and stderr come through; a single word is a command line.
    served
        .cli()
        .args(["exec", "demo", "--", "echo oops >&2; exit 5"])
        .assert()
        .code(5)
        .stdout("")
        .stderr("oops\n");
    served
        .cli()
        .args([
            "exec",
            "--env",
            "A=x y",
            "--cwd",
            "/tmp",
            "demo",
            "--",
            "sh",
            "-c",
            "echo \"$A\"; pwd",
        ])
        .assert()
        .success()
        .stdout("x y\n/tmp\n");

    // --timeout-ms gives up quickly with 124, as coreutils `timeout` does.
    let started = std::time::Instant::now();
    served
        .cli()
        .args(["exec", "--timeout-ms", "300", "demo", "--", "sleep", "5"])
        .assert()
        .code(124);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Sessions keep shell state between invocations.
    served
        .cli()
        .args([
            "exec",
            "--session",
            "s1",
            "demo",
            "--",
            "cd /tmp && export K=v",
        ])
        .assert()
        .success();
    served
        .cli()
        .args(["exec", "--session", "s1", "demo", "--", "echo $K; pwd"])
        .assert()
        .success()
        .stdout("v\n/tmp\n");

    // cp both ways with a file large enough to take several chunks.
    let dir = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let up = dir.path().join("big.bin");
    std::fs::write(&up, &content).unwrap();
    served
        .cli()
        .arg("cp")
        .arg(&up)
        .arg("demo:/workspace/big.bin")
        .assert()
        .success();
    let down = dir.path().join("back.bin");
    served
        .cli()
        .arg("cp")
        .arg("demo:/workspace/big.bin")
        .arg(&down)
        .assert()
        .success();
    assert!(
        std::fs::read(&down).unwrap() == content,
        "downloaded bytes differ"
    );

    let listed = stdout(served.cli().arg("ls").assert().success());
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("demo ") && l.contains("running")),
        "{listed}"
    );

    // Files survive sleep; the next exec wakes the sandbox.
    served.cli().args(["stop", "demo"]).assert().success();
    let listed = stdout(served.cli().arg("ls").assert().success());
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("demo ") && l.contains("sleeping")),
        "{listed}"
    );
    served
        .cli()
        .args([
            "exec",
            "demo",
            "--",
            "stat",
            "-c",
            "%s",
            "/workspace/big.bin",
        ])
        .assert()
        .success()
        .stdout("3000000\n");

    served.cli().args(["rm", "demo"]).assert().success();
    let listed = stdout(served.cli().arg("ls").assert().success());
    assert!(!listed.lines().any(|l| l.starts_with("demo ")), "{listed}");

    let out = served
        .cli()
        .args(["stop", "never-made"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: SANDBOX_NOT_FOUND: "), "{err}");
}

#[test]
fn serial_image_build_is_a_no_op_when_the_image_exists() {
    let Some(images) = images_dir_or_skip("serial_image_build_is_a_no_op_when_the_image_exists")
    else {
        return;
    };
    let out = stdout(
        super::support::sandpit()
            .args(["image", "build", "--images-dir"])
            .arg(&images)
            .assert()
            .success(),
    );
    assert!(out.starts_with("default ready"), "{out}");
    let out = stdout(
        super::support::sandpit()
            .args(["image", "--images-dir"])
            .arg(&images)
            .arg("ls")
            .assert()
            .success(),
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("default ") && l.contains("debootstrap")),
        "{out}"
    );
}

fn sha256_of(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn serial_cli_cp_100_mib_both_ways() {
    let Some(images) = images_dir_or_skip("serial_cli_cp_100_mib_both_ways") else {
        return;
    };
    let served = Served::start(&images);
    let dir = tempfile::tempdir().unwrap();
    // 100 MiB, no two MiB alike: a random block stamped with the MiB's index.
    let mut block = vec![0u8; 1 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut block))
        .unwrap();
    let up = dir.path().join("big.bin");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&up).unwrap());
        for i in 0u64..100 {
            block[..8].copy_from_slice(&i.to_le_bytes());
            std::io::Write::write_all(&mut file, &block).unwrap();
        }
    }
    let want = sha256_of(&up);

    served
        .cli()
        .arg("cp")
        .arg(&up)
        .args(["big:/workspace/in/", "--create"])
        .assert()
        .success();
    let in_sandbox = stdout(
        served
            .cli()
            .args(["exec", "big", "--", "sha256sum /workspace/in/big.bin"])
            .assert()
            .success(),
    );
    assert!(in_sandbox.starts_with(&want), "{in_sandbox} vs {want}");

    let down = dir.path().join("back.bin");
    served
        .cli()
        .arg("cp")
        .arg("big:in/big.bin")
        .arg(&down)
        .assert()
        .success();
    assert_eq!(sha256_of(&down), want);

    // A missing source is an error, and leaves no local file.
    let missing = dir.path().join("missing.bin");
    let out = served
        .cli()
        .arg("cp")
        .arg("big:/workspace/nope.bin")
        .arg(&missing)
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: FILE_NOT_FOUND: "), "{err}");
    assert!(!missing.exists());
    served.cli().args(["rm", "big"]).assert().success();
}

/// A raw `GET /metrics` with an optional bearer key; returns the status line.
fn metrics_status(url: &str, key: Option<&str>) -> String {
    let answer = super::support::raw_get(url, "/metrics", key);
    answer.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn serial_cli_keys_audit_and_metrics_auth() {
    let Some(images) = images_dir_or_skip("serial_cli_keys_audit_and_metrics_auth") else {
        return;
    };
    let served = Served::start_with(&images, &["--metrics-auth"]);
    assert!(metrics_status(&served.url, None).contains(" 401 "));
    assert!(metrics_status(&served.url, Some(&served.key)).contains(" 200 "));

    let created = stdout(
        served
            .cli()
            .args(["keys", "create", "acme", "--json"])
            .assert()
            .success(),
    );
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let (key, key_id) = (
        created["key"].as_str().unwrap(),
        created["keyId"].as_str().unwrap(),
    );
    let listed = stdout(served.cli().args(["keys", "ls"]).assert().success());
    assert!(
        listed.starts_with("KEY ID") && listed.contains(key_id),
        "{listed}"
    );
    assert!(!listed.contains(key), "{listed}");

    // The tenant rotates its own key; the old one is refused at once.
    let new_key = stdout(
        served
            .cli()
            .args(["--key", key, "keys", "rotate", key_id])
            .assert()
            .success(),
    );
    served
        .cli()
        .args(["--key", key, "keys", "ls"])
        .assert()
        .failure();
    let new_key = new_key.trim();
    served
        .cli()
        .args(["--key", new_key, "keys", "ls", "--tenant", "default"])
        .assert()
        .failure();
    let audit = stdout(
        served
            .cli()
            .args(["audit", "--tenant", "acme"])
            .assert()
            .success(),
    );
    let actions: Vec<&str> = audit
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(actions, ["key.rotate", "key.create"], "{audit}");
}

/// 10 MiB of bytes that are not UTF-8 (every value occurs).
fn random_bytes() -> Vec<u8> {
    let mut block = vec![0u8; 10 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut block))
        .unwrap();
    block
}

#[test]
fn serial_cli_exec_stdin_binary_output_and_timeouts() {
    let Some(images) = images_dir_or_skip("serial_cli_exec_stdin_binary_output_and_timeouts")
    else {
        return;
    };
    let served = Served::start(&images);
    let input = random_bytes();

    // `... | sandpit exec ID -- cat`: 10 MiB through and back, byte for byte (sha256 both ways).
    let out = served
        .cli()
        .args(["exec", "pipe", "--", "cat"])
        .write_stdin(input.clone())
        .assert()
        .success();
    let echoed = &out.get_output().stdout;
    assert!(
        *echoed == input,
        "echo differs: {} of {} bytes",
        echoed.len(),
        input.len()
    );
    let hashed = stdout(
        served
            .cli()
            .args(["exec", "pipe", "--", "sha256sum"])
            .write_stdin(input.clone())
            .assert()
            .success(),
    );
    let local = dir_file(&input);
    assert_eq!(&hashed[..64], sha256_of(local.path()));
    // In a session too; and output that is not UTF-8 arrives raw.
    served
        .cli()
        .args(["exec", "--session", "s", "pipe", "--", "tr a-z A-Z"])
        .write_stdin("data\n")
        .assert()
        .success()
        .stdout("DATA\n");
    let out = served
        .cli()
        .args(["exec", "pipe", "--", r"printf '\xff\xfe\x00A'"])
        .assert()
        .success();
    assert_eq!(out.get_output().stdout, b"\xff\xfe\x00A");

    // `cp -` both ways.
    served
        .cli()
        .args(["cp", "-", "pipe:/workspace/from-stdin.bin"])
        .write_stdin(input.clone())
        .assert()
        .success();
    let out = served
        .cli()
        .args(["cp", "pipe:/workspace/from-stdin.bin", "-"])
        .assert()
        .success();
    assert!(out.get_output().stdout == input, "cp - round trip differs");

    // --timeout-ms kills the command: exit code 124, a message, and the file it would touch
    // after the deadline never appears (sessionless and in a session).
    for session in [None, Some("s")] {
        let mut cmd = served.cli();
        cmd.args(["exec", "--timeout-ms", "500"]);
        if let Some(s) = session {
            cmd.args(["--session", s]);
        }
        let out = cmd
            .args(["pipe", "--", "sleep 3; touch /workspace/after"])
            .assert()
            .code(124);
        let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        assert!(err.contains("Command timed out after 500ms"), "{err}");
    }
    std::thread::sleep(std::time::Duration::from_millis(3500));
    served
        .cli()
        .args([
            "exec",
            "pipe",
            "--",
            "test -e /workspace/after && echo ran || echo killed",
        ])
        .assert()
        .success()
        .stdout("killed\n");
    // 0 is no timeout.
    served
        .cli()
        .args([
            "exec",
            "--timeout-ms",
            "0",
            "pipe",
            "--",
            "sleep 1; echo done",
        ])
        .assert()
        .success()
        .stdout("done\n");
}

/// `bytes` in a temporary file (for [`sha256_of`]).
fn dir_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    file
}

/// `sandpit events`: one line per change of the tenant's sandboxes, as they happen; another
/// tenant's changes do not appear.
#[test]
fn cli_events_follow_the_tenants_changes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let Some(images) = images_dir_or_skip("cli_events_follow_the_tenants_changes") else {
        return;
    };
    let served = Served::start(&images);
    let mut follower = Command::new(env!("CARGO_BIN_EXE_sandpit"))
        .args(["events", "--json"])
        .env("SANDPIT_URL", &served.url)
        .env("SANDPIT_KEY", &served.key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(follower.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("following sandbox changes"), "{line}");
    // Another tenant's sandbox first: it must not show up.
    let other = stdout(
        served
            .cli()
            .args(["keys", "create", "elsewhere"])
            .assert()
            .success(),
    );
    let other_key = other
        .split_whitespace()
        .find(|w| w.starts_with("sp_"))
        .unwrap();
    served
        .cli()
        .env("SANDPIT_KEY", other_key)
        .args(["create", "theirs"])
        .assert()
        .success();
    served.cli().args(["create", "ours"]).assert().success();
    served.cli().args(["rm", "ours"]).assert().success();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(10)) else {
            break;
        };
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        seen.push(format!(
            "{} {} {}",
            event["sandboxId"], event["kind"], event["state"]
        ));
    }
    follower.kill().unwrap();
    let _ = follower.wait();
    assert_eq!(
        seen,
        [
            r#""ours" "created" "creating""#,
            r#""ours" "started" "running""#,
            r#""ours" "destroyed" "destroyed""#,
        ]
    );
}
