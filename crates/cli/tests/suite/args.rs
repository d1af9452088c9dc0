//! Argument handling and the commands that need no server.

use super::support::sandpit;

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_lists_every_command() {
    let out = sandpit()
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let help = String::from_utf8(out).unwrap();
    for command in [
        "serve", "create", "ls", "info", "stop", "rm", "exec", "cp", "image", "env", "ctx", "files",
    ] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
    assert!(help.contains("SANDPIT_URL"), "{help}");
}

#[test]
fn exec_needs_a_command() {
    let out = sandpit()
        .args(["exec", "demo"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(stderr_of(&out).contains("CMD"), "{}", stderr_of(&out));
}

#[test]
fn malformed_env_is_rejected_before_anything_runs() {
    let out = sandpit()
        .args(["exec", "--env", "NOEQUALS", "demo", "--", "true"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        stderr_of(&out).contains("expected K=V"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn a_missing_key_is_explained() {
    let empty = tempfile::tempdir().unwrap();
    let out = sandpit()
        .args(["ls", "--data-dir"])
        .arg(empty.path())
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = stderr_of(&out);
    assert!(err.starts_with("error: no API key"), "{err}");
    assert!(err.contains("admin.key"), "{err}");
}

#[test]
fn an_unreachable_server_says_what_to_do() {
    // Nothing listens on port 1 of loopback; every kind of command says the same thing.
    for args in [
        &["ls"][..],
        &["info", "box"],
        &["exec", "box", "--", "true"],
        &["cp", "box:/a", "./a"],
    ] {
        sandpit()
            .args(["--url", "http://127.0.0.1:1", "--key", "k"])
            .args(args)
            .assert()
            .code(1)
            .stdout("")
            .stderr(
                "error: cannot reach sandpit at http://127.0.0.1:1 — is `sandpit serve` running?\n",
            );
    }
}

#[test]
fn image_ls_json_parses() {
    let dir = tempfile::tempdir().unwrap();
    sandpit()
        .args(["image", "ls", "--json", "--images-dir"])
        .arg(dir.path())
        .assert()
        .success()
        .stdout("[]\n");
    // With the default image where the real-server tests find it, its entry is listed.
    let Some(images) = super::support::images_dir_or_skip("image_ls_json_parses (default image)")
    else {
        return;
    };
    let out = sandpit()
        .args(["image", "ls", "--json", "--images-dir"])
        .arg(&images)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let list: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let default = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "default")
        .unwrap_or_else(|| panic!("no default image in {list}"));
    assert!(default["sizeBytes"].as_u64().unwrap() > 0, "{default}");
}

#[test]
fn cp_needs_exactly_one_sandbox_side() {
    let out = sandpit()
        .args(["--key", "k", "cp", "./a", "./b"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(
        stderr_of(&out).contains("one of SRC and DST must be a sandbox path"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn image_commands_work_on_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    sandpit()
        .args(["image", "--images-dir"])
        .arg(dir.path())
        .arg("ls")
        .assert()
        .success()
        .stdout("no images\n");
    let out = sandpit()
        .args(["image", "--images-dir"])
        .arg(dir.path())
        .args(["rm", "nope"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(
        stderr_of(&out).starts_with("error: "),
        "{}",
        stderr_of(&out)
    );
    let out = sandpit()
        .args(["image", "--images-dir"])
        .arg(dir.path())
        .args(["import", "/nonexistent.tar", "--name", "x"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(
        stderr_of(&out).contains("/nonexistent.tar"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn a_misspelt_secret_option_is_named() {
    let out = sandpit()
        .args([
            "--key",
            "k",
            "create",
            "box",
            "--secret",
            "TOKEN=abc;host=api.example.com",
        ])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = stderr_of(&out);
    assert!(
        err.contains("secret TOKEN: unknown option \"host\""),
        "{err}"
    );
    // The value never appears in the message.
    assert!(!err.contains("abc"), "{err}");
}
