//! `sandpit cp` against a real `sandpit serve`: copies into existing directories as `cp` does,
//! whole trees with `-r` both ways (contents, modes, symlinks, empty directories), errors that
//! name the real problem, and a hostile sandbox whose archive tries to write outside the
//! target.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::support::{Served, images_dir_or_skip};

/// One line per directory, file (with its sha256), symlink (with its target) and executable
/// file under the current directory, sorted: equal listings mean equal trees.
const LISTING: &str = "{ find . -type f -print0 | sort -z | xargs -0 -r sha256sum; \
     find . -type l -printf '%p -> %l\\n' | sort; find . -type d | sort; \
     find . -type f -perm -u+x | sort; }";

fn local_listing(dir: &Path) -> String {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("cd '{}' && {LISTING}", dir.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn sandbox_listing(served: &Served, id: &str, dir: &str) -> String {
    let out = served
        .cli()
        .args(["exec", id, "--", &format!("cd '{dir}' && {LISTING}")])
        .assert()
        .success();
    String::from_utf8(out.get_output().stdout.clone()).unwrap()
}

fn stderr_of(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stderr).into_owned()
}

/// Deterministic bytes that do not compress or repeat.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A tree with nested, empty and oddly named directories, a binary file of 3 MiB, an
/// executable and a relative symlink.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deep")).unwrap();
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    std::fs::write(root.join("a.txt"), "hello\n").unwrap();
    std::fs::write(root.join("with space.txt"), "spaced\n").unwrap();
    std::fs::write(root.join("sub/deep/big.bin"), noise(3 << 20)).unwrap();
    std::fs::write(root.join("sub/run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(root.join("sub/run.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
}

#[test]
fn serial_cli_cp_directories_and_clear_errors() {
    let Some(images) = images_dir_or_skip("serial_cli_cp_directories_and_clear_errors") else {
        return;
    };
    let served = Served::start(&images);
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("tree");
    make_tree(&tree);
    served.cli().args(["create", "cpbox"]).assert().success();

    // A file into an existing directory named without a trailing slash: /workspace/a.txt, as
    // `cp` does (the file API alone answered a directory target with SANDBOX_UNAVAILABLE).
    served
        .cli()
        .arg("cp")
        .arg(tree.join("a.txt"))
        .arg("cpbox:/workspace")
        .assert()
        .success()
        .stderr("");
    served
        .cli()
        .args(["exec", "cpbox", "--", "cat /workspace/a.txt"])
        .assert()
        .success()
        .stdout("hello\n");
    // ... and back into an existing local directory: down/a.txt.
    let down = local.path().join("down");
    std::fs::create_dir(&down).unwrap();
    served
        .cli()
        .arg("cp")
        .arg("cpbox:/workspace/a.txt")
        .arg(&down)
        .assert()
        .success();
    assert_eq!(
        std::fs::read_to_string(down.join("a.txt")).unwrap(),
        "hello\n"
    );

    // A directory without -r is refused, naming the fix.
    let tree_s = tree.display().to_string();
    cp_fails(
        &served,
        &[&tree_s, "cpbox:/workspace/"],
        &format!("{tree_s} is a directory (use -r to copy directories)"),
    );

    // -r up into an existing directory: /workspace/tree, identical (contents, modes, links,
    // empty directories).
    served
        .cli()
        .args(["cp", "-r", &tree_s, "cpbox:/workspace"])
        .assert()
        .success();
    let expected = local_listing(&tree);
    assert!(
        expected.contains("big.bin") && expected.contains("-> a.txt"),
        "{expected}"
    );
    assert_eq!(
        sandbox_listing(&served, "cpbox", "/workspace/tree"),
        expected
    );
    // -r up to a new name, relative to the workspace (whatever the default session's cwd):
    // /workspace/copy is the tree itself.
    served
        .cli()
        .args(["exec", "--session", "default", "cpbox", "cd /tmp"])
        .assert()
        .success();
    served
        .cli()
        .args(["cp", "-r", &tree_s, "cpbox:copy"])
        .assert()
        .success();
    assert_eq!(
        sandbox_listing(&served, "cpbox", "/workspace/copy"),
        expected
    );

    // -r down to a new local name, and into an existing local directory.
    let fresh = local.path().join("fresh");
    served
        .cli()
        .args(["cp", "-r", "cpbox:/workspace/tree"])
        .arg(&fresh)
        .assert()
        .success()
        .stderr("");
    assert_eq!(local_listing(&fresh), expected);
    let down_s = down.display().to_string();
    served
        .cli()
        .args(["cp", "--recursive", "cpbox:/workspace/copy", &down_s])
        .assert()
        .success();
    assert_eq!(local_listing(&down.join("copy")), expected);
    // On a terminal (`script` gives the command one) -r shows a progress bar both ways.
    for (src, dst, label) in [
        (
            tree_s.clone(),
            "cpbox:/workspace/tty".to_owned(),
            "upload [",
        ),
        (
            "cpbox:/workspace/tree".to_owned(),
            local.path().join("tty").display().to_string(),
            "download [",
        ),
    ] {
        let command = format!("{} cp -r {src} {dst}", env!("CARGO_BIN_EXE_sandpit"));
        let out = std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("SANDPIT_URL", &served.url)
            .env("SANDPIT_KEY", &served.key)
            .output()
            .unwrap();
        let terminal = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(terminal.contains(label), "{terminal}");
    }
    assert_eq!(local_listing(&local.path().join("tty")), expected);
    // A sandbox directory without -r names the fix too.
    cp_fails(
        &served,
        &["cpbox:/workspace/tree", &down_s],
        "cpbox:/workspace/tree is a directory (use -r to copy directories)",
    );

    // Missing sources on either side.
    let nope = local.path().join("nope.txt").display().to_string();
    cp_fails(
        &served,
        &[&nope, "cpbox:/workspace/"],
        &format!("cannot read {nope}: no such file or directory"),
    );
    for flags in [&[][..], &["-r"][..]] {
        let args: Vec<&str> = flags
            .iter()
            .copied()
            .chain(["cpbox:/workspace/nope", &down_s])
            .collect();
        cp_fails(
            &served,
            &args,
            "FILE_NOT_FOUND: File not found: /workspace/nope",
        );
    }
    // A missing local parent directory, before anything is transferred.
    let nowhere = local.path().join("no/such/a.txt").display().to_string();
    cp_fails(
        &served,
        &["cpbox:/workspace/a.txt", &nowhere],
        &format!(
            "cannot create {nowhere}: no such directory {}",
            local.path().join("no/such").display()
        ),
    );
    // A file where -r needs a directory, on either side.
    cp_fails(
        &served,
        &["-r", &tree_s, "cpbox:/workspace/a.txt"],
        "cpbox:/workspace/a.txt exists and is not a directory",
    );
    let file_s = down.join("a.txt").display().to_string();
    cp_fails(
        &served,
        &["-r", "cpbox:/workspace/tree", &file_s],
        &format!("{file_s} exists and is not a directory"),
    );

    // A refused write in the sandbox: a large upload to a read-only place is refused with the
    // sandbox's code (the body is drained, so no broken transfer hides it)...
    let big = local.path().join("big.bin");
    std::fs::write(&big, noise(8 << 20)).unwrap();
    cp_fails(
        &served,
        &[&big.display().to_string(), "cpbox:/sys/big.bin"],
        "cannot write cpbox:/sys/big.bin: READ_ONLY: Read-only file system: /sys/big.bin",
    );
    // ... and for a whole tree, tar's own words.
    let assert = served
        .cli()
        .args(["cp", "-r", &tree_s, "cpbox:/sys/kernel/tree"])
        .assert()
        .code(1);
    let stderr = stderr_of(&assert);
    assert!(
        stderr.starts_with(
            "error: extracting into cpbox:/sys/kernel/tree failed: mkdir: cannot create directory"
        ) && stderr.contains("/sys/kernel/tree")
            && stderr.ends_with(": Read-only file system\n"),
        "{stderr}"
    );
    // Permission denied here (sysfs refuses new files even to root), file and tree.
    cp_fails(
        &served,
        &["cpbox:/workspace/a.txt", "/sys/"],
        "cannot create /sys/a.txt: permission denied",
    );
    cp_fails(
        &served,
        &["-r", "cpbox:/workspace/tree", "/sys/"],
        "cannot create /sys/tree: permission denied",
    );
}

/// Runs `sandpit cp ARGS`, which must fail with exit code 1 and `error: <message>` on stderr.
fn cp_fails(served: &Served, args: &[&str], message: &str) {
    let assert = served.cli().arg("cp").args(args).assert().code(1);
    assert_eq!(
        stderr_of(&assert),
        format!("error: {message}\n"),
        "{args:?}"
    );
}

/// ATTACK: a sandbox controls the archive `cp -r` unpacks here (it can replace its own `tar`).
/// An archive with a symlink out of the target and a file written through it, or a `..` path,
/// is refused and writes nothing outside the target.
#[test]
fn serial_cli_cp_r_from_a_hostile_sandbox_stays_in_the_target() {
    let Some(images) =
        images_dir_or_skip("serial_cli_cp_r_from_a_hostile_sandbox_stays_in_the_target")
    else {
        return;
    };
    let served = Served::start(&images);
    let local = tempfile::tempdir().unwrap();
    let outside = local.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    served.cli().args(["create", "evil"]).assert().success();
    // A `tar` first in PATH that prints a crafted archive whatever it is asked.
    let craft = format!(
        r#"mkdir -p /workspace/d && python3 - <<'PY'
import io, tarfile
for name, entries in [("escape", [("esc", "{outside}", None), ("esc/pwned", None, b"owned")]),
                      ("dotdot", [("../pwned2", None, b"owned")])]:
    with tarfile.open(f"/opt/{{name}}.tar", "w", format=tarfile.GNU_FORMAT) as t:
        for path, link, data in entries:
            info = tarfile.TarInfo(path)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
PY
printf '#!/bin/sh\nexec cat /opt/$(cat /opt/which).tar\n' > /usr/local/bin/tar
chmod +x /usr/local/bin/tar"#,
        outside = outside.display()
    );
    served
        .cli()
        .args(["exec", "evil", "--", &craft])
        .assert()
        .success();
    for (which, target) in [("escape", "t1"), ("dotdot", "sub/t2")] {
        served
            .cli()
            .args(["exec", "evil", "--", &format!("echo {which} > /opt/which")])
            .assert()
            .success();
        let target = local.path().join(target);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let assert = served
            .cli()
            .args(["cp", "-r", "evil:/workspace/d"])
            .arg(&target)
            .assert()
            .code(1);
        let stderr = stderr_of(&assert);
        assert!(stderr.contains("outside"), "{which}: {stderr}");
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!local.path().join("pwned2").exists());
    assert!(!local.path().join("sub/pwned2").exists());
}
