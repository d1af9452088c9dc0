//! `sandpit backup create|ls|restore|rm` and `sandpit mount|unmount|mounts` against a real
//! `sandpit serve` (real sandboxes, the local object store, s3fs over a real S3 server on
//! loopback), including bad input and piped output.

use super::support::{Served, TestS3, images_dir_or_skip};

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Runs `args` against `served`; asserts success; returns (stdout, stderr).
fn ok(served: &Served, args: &[&str]) -> (String, String) {
    let out = served.cli().args(args).assert().success();
    let out = out.get_output();
    (text(&out.stdout), text(&out.stderr))
}

/// Runs `args`; asserts exit code 1 and that stderr's last line is `error: CODE: …` (after
/// the plain progress line of long calls); returns stderr.
fn fails(served: &Served, args: &[&str], code: &str) -> String {
    let out = served.cli().args(args).assert().code(1);
    let stderr = text(&out.get_output().stderr);
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l.starts_with(&format!("error: {code}: "))),
        "{args:?}: {stderr}"
    );
    plain(&stderr);
    assert!(out.get_output().stdout.is_empty(), "{args:?}");
    stderr
}

/// Output meant for a pipe: no terminal control (spinner frames, cursor moves, `\r`).
fn plain(output: &str) {
    assert!(
        !output.contains('\u{1b}') && !output.contains('\r'),
        "terminal control in piped output: {output:?}"
    );
}

#[test]
fn serial_cli_backups() {
    let Some(images) = images_dir_or_skip("serial_cli_backups") else {
        return;
    };
    let served = Served::start(&images);
    ok(&served, &["create", "bk-src"]);
    ok(
        &served,
        &[
            "exec",
            "bk-src",
            "mkdir -p /workspace/proj/empty && echo hello > /workspace/proj/a.txt \
             && echo noise > /workspace/proj/debug.log",
        ],
    );

    // stdout (piped, as here) is exactly the id: `id=$(sandpit backup create ...)` works; the
    // progress goes to stderr as plain lines.
    let (id, progress) = ok(
        &served,
        &[
            "backup",
            "create",
            "bk-src",
            "/workspace/proj",
            "--name",
            "cli-one",
            "--exclude",
            "*.log",
            "--ttl",
            "2h",
        ],
    );
    let id = id.strip_suffix('\n').expect("a line").to_owned();
    assert!(
        !id.is_empty() && !id.contains(char::is_whitespace),
        "{id:?}"
    );
    assert!(
        progress.contains("backing up bk-src:/workspace/proj\n")
            && progress.contains("backed up bk-src:/workspace/proj: "),
        "{progress}"
    );
    plain(&progress);

    let (table, _) = ok(&served, &["backup", "ls"]);
    let row = table.lines().find(|l| l.starts_with(&id)).expect(&table);
    assert!(
        row.contains("cli-one") && row.contains("bk-src") && row.contains("/workspace/proj"),
        "{row}"
    );
    let (json, _) = ok(&served, &["backup", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id.as_str())
        .expect(&json);
    assert_eq!(entry["name"], "cli-one");
    assert!(entry["sha256"].as_str().unwrap().len() == 64, "{entry}");

    // Restore into another sandbox: the old directory is replaced, the excluded file absent.
    ok(&served, &["create", "bk-dst"]);
    ok(
        &served,
        &[
            "exec",
            "bk-dst",
            "mkdir -p /workspace/proj && echo old > /workspace/proj/old",
        ],
    );
    let (out, progress) = ok(&served, &["backup", "restore", "bk-dst", &id]);
    assert_eq!(out, "");
    assert!(
        progress.contains(&format!("restored {id} into bk-dst:/workspace/proj (")),
        "{progress}"
    );
    plain(&progress);
    let (tree, _) = ok(
        &served,
        &[
            "exec",
            "bk-dst",
            "cd /workspace/proj && find . | LC_ALL=C sort && cat a.txt",
        ],
    );
    assert_eq!(tree, ".\n./a.txt\n./empty\nhello\n");
    ok(
        &served,
        &["backup", "restore", "bk-dst", &id, "--dir", "/tmp/copy"],
    );
    let (copy, _) = ok(&served, &["exec", "bk-dst", "cat /tmp/copy/a.txt"]);
    assert_eq!(copy, "hello\n");

    // Bad input: each its code and message, exit 1, nothing on stdout.
    let err = fails(
        &served,
        &["backup", "restore", "bk-dst", "no-such-backup"],
        "BACKUP_NOT_FOUND",
    );
    assert!(err.contains("no-such-backup"), "{err}");
    let err = fails(
        &served,
        &["backup", "create", "bk-src", "/etc"],
        "INVALID_BACKUP_CONFIG",
    );
    assert!(err.contains("/workspace"), "{err}");
    fails(
        &served,
        &["backup", "create", "bk-src", "/workspace", "--level", "99"],
        "INVALID_BACKUP_CONFIG",
    );
    fails(
        &served,
        &["backup", "create", "bk-src", "/workspace", "--ttl", "soon"],
        "INVALID_BACKUP_CONFIG",
    );
    fails(
        &served,
        &["backup", "create", "no-such-sandbox", "/workspace"],
        "SANDBOX_NOT_FOUND",
    );

    let (_, deleted) = ok(&served, &["backup", "rm", &id]);
    assert_eq!(deleted, format!("deleted {id}\n"));
    fails(&served, &["backup", "rm", &id], "BACKUP_NOT_FOUND");
    let (table, _) = ok(&served, &["backup", "ls"]);
    assert!(!table.contains(&id), "{table}");
}

#[test]
fn serial_cli_bucket_mounts() {
    let Some(images) = images_dir_or_skip("serial_cli_bucket_mounts") else {
        return;
    };
    let s3 = TestS3::start("cli-bucket");
    let served = Served::start_with(&images, &s3.serve_args());
    let endpoint = s3.server.endpoint.as_str();
    let with_keys = |args: &[&str]| {
        let mut cmd = served.cli();
        cmd.env("AWS_ACCESS_KEY_ID", &s3.server.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &s3.server.secret_key)
            .args(args);
        cmd
    };
    ok(&served, &["create", "mnt"]);

    // The keys come from the environment only: without them, a clear error before any call.
    let out = served
        .cli()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args([
            "mount",
            "mnt",
            "cli-bucket",
            "/mnt/data",
            "--endpoint",
            endpoint,
        ])
        .assert()
        .code(1);
    let err = text(&out.get_output().stderr);
    assert!(err.contains("set AWS_ACCESS_KEY_ID"), "{err}");

    let out = with_keys(&[
        "mount",
        "mnt",
        "cli-bucket",
        "/mnt/data",
        "--endpoint",
        endpoint,
    ])
    .assert()
    .success();
    assert_eq!(
        text(&out.get_output().stdout),
        "cli-bucket mounted at mnt:/mnt/data\n"
    );
    ok(
        &served,
        &["exec", "mnt", "echo from-cli > /mnt/data/cli.txt"],
    );
    assert_eq!(
        std::fs::read_to_string(s3.object_path("cli.txt")).unwrap(),
        "from-cli\n"
    );
    std::fs::write(s3.object_path("outside.txt"), "from-outside\n").unwrap();
    let (seen, _) = ok(&served, &["exec", "mnt", "cat /mnt/data/outside.txt"]);
    assert_eq!(seen, "from-outside\n");

    with_keys(&[
        "mount",
        "mnt",
        "cli-bucket",
        "/mnt/ro",
        "--endpoint",
        endpoint,
        "--read-only",
    ])
    .assert()
    .success();
    let (refused, _) = ok(
        &served,
        &[
            "exec",
            "mnt",
            "sh -c 'echo x > /mnt/ro/nope' 2>&1; echo rc=$?",
        ],
    );
    assert!(
        refused.contains("Read-only file system") && !refused.ends_with("rc=0\n"),
        "{refused}"
    );

    let (table, _) = ok(&served, &["mounts", "mnt"]);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("/mnt/data") && r.contains(" rw ") && r.contains("mounted")),
        "{table}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("/mnt/ro") && r.contains(" ro ")),
        "{table}"
    );
    let (json, _) = ok(&served, &["mounts", "mnt", "--json"]);
    assert!(!json.contains(&s3.server.secret_key), "{json}");
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{json}");

    // Bad input.
    let err = text(
        &with_keys(&[
            "mount",
            "mnt",
            "cli-bucket",
            "relative",
            "--endpoint",
            endpoint,
        ])
        .assert()
        .code(1)
        .get_output()
        .stderr,
    );
    assert!(err.starts_with("error: INVALID_MOUNT_CONFIG: "), "{err}");
    let err = text(
        &with_keys(&[
            "mount",
            "mnt",
            "cli-bucket",
            "/mnt/other",
            "--endpoint",
            "http://127.0.0.1:9",
        ])
        .assert()
        .code(1)
        .get_output()
        .stderr,
    );
    assert!(err.starts_with("error: INVALID_MOUNT_CONFIG: "), "{err}");
    fails(&served, &["mounts", "no-such-sandbox"], "SANDBOX_NOT_FOUND");

    let (out, _) = ok(&served, &["unmount", "mnt", "/mnt/data"]);
    assert_eq!(out, "mnt:/mnt/data unmounted\n");
    fails(
        &served,
        &["unmount", "mnt", "/mnt/data"],
        "INVALID_MOUNT_CONFIG",
    );
    let (table, _) = ok(&served, &["mounts", "mnt"]);
    assert!(
        !table.contains("/mnt/data") && table.contains("/mnt/ro"),
        "{table}"
    );
}

#[test]
fn serial_cli_snapshot_export_import() {
    let Some(images) = images_dir_or_skip("serial_cli_snapshot_export_import") else {
        return;
    };
    let served = Served::start(&images);
    ok(&served, &["create", "exp"]);
    ok(&served, &["exec", "exp", "echo exported > /workspace/f"]);
    let (snap, _) = ok(&served, &["snapshot", "create", "exp", "--name", "to-move"]);
    let snap = snap.trim().to_owned();

    let (key, progress) = ok(&served, &["snapshot", "export", &snap]);
    let key = key.strip_suffix('\n').expect("a line").to_owned();
    assert!(
        key.starts_with(&format!("snapshot-exports/default/{snap}-")),
        "{key}"
    );
    assert!(progress.contains("exported "), "{progress}");
    plain(&progress);
    let (json, _) = ok(&served, &["snapshot", "export", &snap, "--json"]);
    let exported: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(exported["snapshotId"], snap.as_str());

    let wrong = "ab".repeat(32);
    let err = fails(
        &served,
        &["snapshot", "import", &key, "--sha256", &wrong],
        "VALIDATION_FAILED",
    );
    assert!(err.contains("nothing was imported"), "{err}");
    let missing = key.replace(".tar.zst", "-gone.tar.zst");
    fails(
        &served,
        &["snapshot", "import", &missing],
        "SNAPSHOT_EXPORT_NOT_FOUND",
    );
    fails(
        &served,
        &["snapshot", "import", "backups/x.tar.zst"],
        "VALIDATION_FAILED",
    );
    fails(
        &served,
        &["snapshot", "export", "snap-nosuch"],
        "SNAPSHOT_NOT_FOUND",
    );

    let (imported, _) = ok(&served, &["snapshot", "import", &key, "--name", "moved"]);
    let imported = imported.trim().to_owned();
    assert!(
        imported.starts_with("snap-") && imported != snap,
        "{imported}"
    );
    let (listed, _) = ok(&served, &["snapshot", "ls"]);
    assert!(
        listed.contains(&imported) && listed.contains("moved"),
        "{listed}"
    );
    ok(&served, &["create", "copy", "--snapshot", &imported]);
    let (f, _) = ok(&served, &["exec", "copy", "cat /workspace/f"]);
    assert_eq!(f, "exported\n");
}
