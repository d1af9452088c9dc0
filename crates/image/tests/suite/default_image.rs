//! The real default image: built once per machine at the standard store root (or
//! `$SANDPIT_IMAGES`) and cached, so this is quick after the first build. Needs root.

use std::process::Command;

use sandpit_image::{DEFAULT_IMAGE, ImageStore, NODE_VERSION, NoProgress};

#[test]
fn serial_default_image_runs_node_git_python() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let root = std::env::var("SANDPIT_IMAGES").unwrap_or_else(|_| "/var/lib/sandpit/images".into());
    let store = ImageStore::open(root).unwrap();
    let info = store.build_default(&NoProgress).unwrap();
    assert_eq!(info.name, DEFAULT_IMAGE);
    assert_eq!(info.source, "debootstrap");
    let rootfs = store.rootfs(DEFAULT_IMAGE).unwrap();
    assert!(rootfs.join("workspace").is_dir());

    let script = "mount -t proc proc \"$1/proc\" && exec chroot \"$1\" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        /bin/bash -c 'node -v && npm -v >/dev/null && git --version && python3 -c \"print(2+2)\" \
        && python3 -c \"import numpy, pandas, matplotlib\" && jq --version'";
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&rootfs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let node = lines[0];
    // The LTS from npm, unless its install failed and the build kept Debian's node.
    let expected = info
        .config
        .labels
        .get("sandpit.node")
        .cloned()
        .unwrap_or_default();
    if expected == "debian" {
        assert!(node.starts_with("v18."), "{node}");
    } else {
        assert_eq!(node, format!("v{NODE_VERSION}"));
    }
    assert!(lines[1].starts_with("git version "), "{stdout}");
    assert_eq!(lines[2], "4");
    assert!(lines[3].starts_with("jq-"), "{stdout}");
}
