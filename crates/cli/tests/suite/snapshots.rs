//! `sandpit snapshot create|ls|show|rm`, `create --snapshot` and `fork` against a real
//! `sandpit serve`.

use super::support::{Served, images_dir_or_skip};

fn stdout(assert: assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone()).unwrap()
}

#[test]
fn serial_cli_snapshots_and_fork() {
    let Some(images) = images_dir_or_skip("serial_cli_snapshots_and_fork") else {
        return;
    };
    let served = Served::start(&images);
    served.cli().args(["create", "par"]).assert().success();
    served
        .cli()
        .args(["exec", "par", "echo from-par > /workspace/f"])
        .assert()
        .success();
    let snap = stdout(
        served
            .cli()
            .args(["snapshot", "create", "par", "--name", "one"])
            .assert()
            .success(),
    );
    let snap = snap.trim().to_owned();
    assert!(snap.starts_with("snap-"), "{snap}");
    let listed = stdout(served.cli().args(["snapshot", "ls"]).assert().success());
    assert!(listed.contains(&snap) && listed.contains("one"), "{listed}");
    served
        .cli()
        .args(["create", "from", "--snapshot", &snap])
        .assert()
        .success();
    let out = stdout(
        served
            .cli()
            .args(["exec", "from", "cat /workspace/f"])
            .assert()
            .success(),
    );
    assert_eq!(out, "from-par\n");
    let refused = served
        .cli()
        .args(["snapshot", "rm", &snap])
        .assert()
        .failure();
    let err = String::from_utf8(refused.get_output().stderr.clone()).unwrap();
    assert!(err.contains("SNAPSHOT_IN_USE"), "{err}");

    let kids = stdout(
        served
            .cli()
            .args(["fork", "par", "--as", "k1", "--as", "k2"])
            .assert()
            .success(),
    );
    assert_eq!(kids, "k1\nk2\n");
    let out = stdout(
        served
            .cli()
            .args(["exec", "k2", "cat /workspace/f"])
            .assert()
            .success(),
    );
    assert_eq!(out, "from-par\n");
    served.cli().args(["rm", "from"]).assert().success();
    served
        .cli()
        .args(["snapshot", "rm", &snap])
        .assert()
        .success();
}
