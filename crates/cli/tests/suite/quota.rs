//! `serve --max-* --default-quota-*` and `quota [set|reset]` against a real `sandpit serve`.

use super::support::{Served, images_dir_or_skip, sandpit};

fn stdout(assert: assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone()).unwrap()
}

#[test]
fn serial_cli_quota_caps_and_quotas() {
    let Some(images) = images_dir_or_skip("serial_cli_quota_caps_and_quotas") else {
        return;
    };
    let served = Served::start_with(
        &images,
        &["--max-memory-mb", "1536", "--default-quota-sandboxes", "1"],
    );
    let shown = stdout(served.cli().args(["quota"]).assert().success());
    assert!(
        shown.starts_with("tenant default (server default)\n"),
        "{shown}"
    );
    assert!(
        shown.contains("per sandbox at most: memory 1536 MiB"),
        "{shown}"
    );

    let refused = served
        .cli()
        .args(["create", "big", "--memory-mb", "2048"])
        .assert()
        .failure();
    let err = String::from_utf8(refused.get_output().stderr.clone()).unwrap();
    assert!(err.contains("LIMIT_EXCEEDED"), "{err}");

    served.cli().args(["create", "q1"]).assert().success();
    let refused = served.cli().args(["create", "q2"]).assert().failure();
    let err = String::from_utf8(refused.get_output().stderr.clone()).unwrap();
    assert!(err.contains("QUOTA_EXCEEDED"), "{err}");

    let set = stdout(
        served
            .cli()
            .args([
                "quota",
                "set",
                "default",
                "--sandboxes",
                "2",
                "--running",
                "5",
            ])
            .assert()
            .success(),
    );
    assert!(set.starts_with("tenant default (own quota)\n"), "{set}");
    served.cli().args(["create", "q2"]).assert().success();
    let json = stdout(
        served
            .cli()
            .args(["quota", "default", "--json"])
            .assert()
            .success(),
    );
    let info: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        info["quota"],
        serde_json::json!({"sandboxes": 2, "runningSandboxes": 5})
    );
    assert_eq!(info["usage"]["sandboxes"], 2);
    let reset = stdout(
        served
            .cli()
            .args(["quota", "reset", "default"])
            .assert()
            .success(),
    );
    assert!(
        reset.starts_with("tenant default (server default)\n"),
        "{reset}"
    );
    served.cli().args(["rm", "q1", "q2"]).assert().success();
}

#[test]
fn serve_refuses_maxima_above_the_host() {
    // `serve` builds the default image first when it is missing: use the built one.
    let Some(images) = images_dir_or_skip("serve_refuses_maxima_above_the_host") else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let out = sandpit()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(["--images-dir"])
        .arg(images)
        .args(["--max-cpus", "100000"])
        .env_remove("SANDPIT_ADMIN_KEY")
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .failure();
    let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(
        err.contains("--max-cpus 100000 is more than the host has"),
        "{err}"
    );
}
