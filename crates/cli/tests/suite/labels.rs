//! Against a real `sandpit serve`: `create --label/--ttl`, `ls --label` and what `info` shows
//! of labels, expiry and usage.

use serde_json::Value;

use super::support::{Served, images_dir_or_skip};

fn stdout(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone()).unwrap()
}

fn listed(served: &Served, args: &[&str]) -> Vec<String> {
    let out = served
        .cli()
        .args(["ls", "--json"])
        .args(args)
        .assert()
        .success();
    let list: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn serial_cli_labels_ttl_and_usage_in_info_and_ls() {
    let Some(images) = images_dir_or_skip("serial_cli_labels_ttl_and_usage_in_info_and_ls") else {
        return;
    };
    let served = Served::start(&images);
    for args in [
        &[
            "create", "web", "--label", "team=web", "--label", "env=prod", "--ttl", "1h",
        ][..],
        &["create", "ml", "--label", "team=ml", "--label", "env=prod"][..],
        &["create", "plain"][..],
    ] {
        served.cli().args(args).assert().success();
    }

    assert_eq!(listed(&served, &["--label", "env=prod"]), ["ml", "web"]);
    assert_eq!(
        listed(&served, &["--label", "env=prod", "--label", "team=web"]),
        ["web"]
    );
    assert!(listed(&served, &["--label", "team=none"]).is_empty());
    assert_eq!(listed(&served, &[]), ["ml", "plain", "web"]);
    let table = stdout(
        &served
            .cli()
            .args(["ls", "--label", "team=ml"])
            .assert()
            .success(),
    );
    assert!(table.contains("ml "), "{table}");
    assert!(
        !table.contains("web") && !table.contains("plain"),
        "{table}"
    );
    // A malformed selector is refused before any request.
    let refused = served
        .cli()
        .args(["ls", "--label", "team"])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(stderr.contains("must be key=value"), "{stderr}");

    // Some usage to show: a file in the workspace.
    served
        .cli()
        .args([
            "exec",
            "web",
            "--",
            "head -c 3145728 /dev/zero > /workspace/f && sync",
        ])
        .assert()
        .success();
    let text = stdout(&served.cli().args(["info", "web"]).assert().success());
    for needle in [
        "label        env=prod\n",
        "label        team=web\n",
        "disk used    ",
        "cpu time     ",
        "memory used  ",
        "processes    ",
        "egress       0 B up, 0 B down\n",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let expires = text
        .lines()
        .find_map(|l| l.strip_prefix("expires"))
        .unwrap_or_else(|| panic!("no expiry in:\n{text}"));
    assert!(expires.trim().starts_with("20"), "{text}");
    let plain = stdout(&served.cli().args(["info", "plain"]).assert().success());
    assert!(plain.contains("expires      never\n"), "{plain}");

    let out = served
        .cli()
        .args(["info", "web", "--json"])
        .assert()
        .success();
    let info: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(info["labels"]["team"], "web", "{info}");
    assert!(info["expiresAt"].is_string(), "{info}");
    assert!(
        info["usage"]["diskBytes"].as_u64().unwrap() >= 3 << 20,
        "{info}"
    );
    assert_eq!(info["usage"]["state"], "running", "{info}");
}
