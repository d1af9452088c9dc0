//! Against a real `sandpit serve`: typo'd ids create nothing (`start`, `cp`, `logs`, `run`,
//! `shell`, `ps`, `expose`), and `info`, `env`, `ctx` and `files ls` see what the sandbox really has.

use serde_json::Value;

use super::support::{Served, images_dir_or_skip};

fn stdout(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone()).unwrap()
}

fn json_of(assert: &assert_cmd::assert::Assert) -> Value {
    serde_json::from_slice(&assert.get_output().stdout).unwrap()
}

fn sandbox_ids(served: &Served) -> Vec<String> {
    let list = json_of(&served.cli().args(["ls", "--json"]).assert().success());
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn serial_cli_info_env_ctx_files_and_no_silent_creates() {
    let Some(images) = images_dir_or_skip("serial_cli_info_env_ctx_files_and_no_silent_creates")
    else {
        return;
    };
    let served = Served::start(&images);
    served
        .cli()
        .args(["create", "box", "--memory-mb", "256"])
        .assert()
        .success();

    // A typo'd id is an error that says what to do, and no sandbox appears.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("hello.txt");
    std::fs::write(&local, "hello\n").unwrap();
    let local = local.to_str().unwrap();
    let typos: [&[&str]; 7] = [
        &["start", "bxo", "--", "sleep", "60"],
        &["cp", local, "bxo:/workspace/hello.txt"],
        &["logs", "bxo", "job"],
        &["run", "bxo", "-"],
        &["shell", "bxo"],
        &["ps", "bxo"],
        &["expose", "bxo", "8080"],
    ];
    for args in typos {
        served
            .cli()
            .args(args)
            .write_stdin("print(1)\n")
            .assert()
            .code(1)
            .stdout("")
            .stderr(
                "error: no sandbox bxo — create it with `sandpit create bxo` or pass --create\n",
            );
    }
    assert_eq!(sandbox_ids(&served), ["box"]);

    // info: text and JSON agree with what was created.
    let text = stdout(&served.cli().args(["info", "box"]).assert().success());
    for line in [
        "id           box\n",
        "image        default\n",
        "memory       256 MiB\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    let info = json_of(
        &served
            .cli()
            .args(["info", "box", "--json"])
            .assert()
            .success(),
    );
    assert_eq!(info["id"], "box");
    assert_eq!(info["limits"]["memoryMb"], 256);
    assert_eq!(info["ports"], serde_json::json!([]));

    // env: set, seen by a later command; unset, gone.
    served
        .cli()
        .args(["env", "box", "GREETING=hi there"])
        .assert()
        .success()
        .stdout("box env updated\n");
    served
        .cli()
        .args(["exec", "box", "--", "echo \"$GREETING\""])
        .assert()
        .success()
        .stdout("hi there\n")
        .stderr("");
    served
        .cli()
        .args(["env", "box", "--unset", "GREETING"])
        .assert()
        .success();
    served
        .cli()
        .args(["exec", "box", "--", "echo \"[${GREETING-unset}]\""])
        .assert()
        .success()
        .stdout("[unset]\n");

    // ctx: a kept context is listed, then removed.
    let run = served
        .cli()
        .args(["run", "box", "--keep-context", "-"])
        .write_stdin("x = 41\n")
        .assert()
        .success();
    let err = String::from_utf8(run.get_output().stderr.clone()).unwrap();
    let context = err
        .lines()
        .find_map(|l| l.strip_prefix("context: "))
        .unwrap_or_else(|| panic!("no context id in {err:?}"))
        .to_owned();
    let listed = |served: &Served| -> Vec<String> {
        let list = json_of(
            &served
                .cli()
                .args(["ctx", "ls", "box", "--json"])
                .assert()
                .success(),
        );
        list.as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(listed(&served).contains(&context), "{context}");
    let table = stdout(&served.cli().args(["ctx", "ls", "box"]).assert().success());
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&context) && l.contains("python")),
        "{table}"
    );
    served
        .cli()
        .args(["ctx", "rm", "box", &context])
        .assert()
        .success()
        .stdout(format!("{context} removed\n"));
    assert!(!listed(&served).contains(&context));

    // files ls: a copied file is listed with its size.
    served
        .cli()
        .args(["cp", local, "box:/workspace/hello.txt"])
        .assert()
        .success();
    let files = json_of(
        &served
            .cli()
            .args(["files", "ls", "box", "/workspace", "--json"])
            .assert()
            .success(),
    );
    let hello = files
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "hello.txt")
        .unwrap_or_else(|| panic!("hello.txt not listed: {files}"));
    assert_eq!(hello["size"], 6);
    let table = stdout(&served.cli().args(["files", "ls", "box"]).assert().success());
    assert!(
        table
            .lines()
            .any(|l| l.ends_with("  hello.txt") && l.contains("6 B")),
        "{table}"
    );

    // Still only the one sandbox.
    assert_eq!(sandbox_ids(&served), ["box"]);
}
