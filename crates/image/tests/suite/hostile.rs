//! Hostile archives: nothing may be created, changed or deleted outside the image, a failed
//! import is never marked ready, and errors name the offending entry.

use std::fs;
use std::os::unix::fs::MetadataExt;

use sandpit_image::ImageError;

use super::{E, Env, docker_save, layer, read};

fn assert_unsafe(err: ImageError, expected_entry: &str) {
    match err {
        ImageError::UnsafeArchive { entry, .. } => assert_eq!(entry, expected_entry),
        other => panic!("expected UnsafeArchive for {expected_entry}, got {other}"),
    }
}

#[test]
fn dotdot_entries_are_rejected() {
    for name in [
        "../../escape",
        "a/../../escape",
        "./../escape",
        "/../escape",
    ] {
        let env = Env::new();
        let err = env
            .import("x", &docker_save(&[layer(&[E::File(name, b"pwned")])]))
            .unwrap_err();
        assert_unsafe(err, name);
        env.assert_clean_failure("x");
    }
}

#[test]
fn absolute_entries_stay_inside() {
    let env = Env::new();
    let outside = env.sentinel().join("abs");
    let abs = outside.to_str().unwrap().to_owned();
    env.import(
        "x",
        &docker_save(&[layer(&[E::File("/etc/x", b"1"), E::File(&abs, b"2")])]),
    )
    .unwrap();
    let root = env.store.rootfs("x").unwrap();
    assert_eq!(read(&root.join("etc/x")), "1");
    assert_eq!(read(&root.join(abs.trim_start_matches('/'))), "2");
    assert!(!outside.exists());
    assert_eq!(env.stray_paths(), ["images", "images/x", "outside"]);
}

#[test]
fn files_through_an_absolute_symlink_stay_inside() {
    let env = Env::new();
    let sentinel = env.sentinel();
    let target = sentinel.to_str().unwrap();
    // Same layer, and across layers.
    let tarball = docker_save(&[
        layer(&[E::Symlink("evil", target), E::File("evil/pwned", b"1")]),
        layer(&[E::Symlink("evil2", target), E::Dir("evil2/sub/")]),
        layer(&[E::File("evil2/sub/pwned2", b"2")]),
    ]);
    env.import("x", &tarball).unwrap();
    let root = env.store.rootfs("x").unwrap();
    let inside = root.join(target.trim_start_matches('/'));
    assert_eq!(
        read(&inside.join("pwned")),
        "1",
        "resolved as if the rootfs were /"
    );
    assert_eq!(read(&inside.join("sub/pwned2")), "2");
    assert_eq!(
        fs::read_dir(&sentinel).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert_eq!(env.stray_paths(), ["images", "images/x", "outside"]);
}

#[test]
fn symlink_chains_to_dotdot_stop_at_the_root() {
    let env = Env::new();
    let tarball = docker_save(&[layer(&[
        E::Symlink("up", ".."),
        E::Dir("d/"),
        E::Symlink("d/up2", "../up/../.."),
        E::Symlink("deep", "../../../../../../../../../.."),
        E::File("up/escape1", b"1"),
        E::File("d/up2/up/escape2", b"2"),
        E::File("deep/outside/escape3", b"3"),
    ])]);
    env.import("x", &tarball).unwrap();
    let root = env.store.rootfs("x").unwrap();
    assert_eq!(read(&root.join("escape1")), "1");
    assert_eq!(read(&root.join("escape2")), "2");
    assert_eq!(read(&root.join("outside/escape3")), "3");
    assert_eq!(fs::read_dir(env.sentinel()).unwrap().count(), 0);
    assert_eq!(env.stray_paths(), ["images", "images/x", "outside"]);
}

#[test]
fn symlink_loops_are_rejected() {
    let env = Env::new();
    let tarball = docker_save(&[layer(&[
        E::Symlink("a", "b"),
        E::Symlink("b", "a"),
        E::File("a/f", b"x"),
    ])]);
    assert_unsafe(env.import("x", &tarball).unwrap_err(), "a/f");
    env.assert_clean_failure("x");
}

#[test]
fn hard_links_out_of_the_image_are_rejected() {
    for target in ["/etc/passwd", "../outside/secret", "a/../../x"] {
        let env = Env::new();
        let tarball = docker_save(&[layer(&[E::File("ok", b"1"), E::Hard("link", target)])]);
        assert_unsafe(env.import("x", &tarball).unwrap_err(), "link");
        env.assert_clean_failure("x");
    }
}

#[test]
fn hard_link_through_a_symlink_cannot_reach_host_files() {
    let env = Env::new();
    let secret = env.sentinel().join("secret");
    fs::write(&secret, "host secret").unwrap();
    let tarball = docker_save(&[layer(&[
        E::Symlink("ln", env.sentinel().to_str().unwrap()),
        E::Hard("stolen", "ln/secret"),
    ])]);
    assert_unsafe(env.import("x", &tarball).unwrap_err(), "stolen");
    assert_eq!(
        fs::metadata(&secret).unwrap().nlink(),
        1,
        "no new link to the host file"
    );
    assert!(env.store.list().unwrap().is_empty());
}

#[test]
fn final_symlink_is_replaced_not_written_through() {
    let env = Env::new();
    let victim = env.sentinel().join("victim");
    fs::write(&victim, "original").unwrap();
    let sentinel = env.sentinel();
    let tarball = docker_save(&[
        layer(&[
            E::Symlink("f", victim.to_str().unwrap()),
            E::Symlink("d", sentinel.to_str().unwrap()),
        ]),
        // A file over a symlink, a directory over a symlink, then content in that directory.
        layer(&[
            E::File("f", b"new"),
            E::Dir("d/"),
            E::File("d/inner", b"in"),
        ]),
    ]);
    env.import("x", &tarball).unwrap();
    let root = env.store.rootfs("x").unwrap();
    assert_eq!(read(&root.join("f")), "new");
    assert!(fs::symlink_metadata(root.join("f")).unwrap().is_file());
    assert!(fs::symlink_metadata(root.join("d")).unwrap().is_dir());
    assert_eq!(read(&root.join("d/inner")), "in");
    assert_eq!(read(&victim), "original");
    assert_eq!(fs::read_dir(&sentinel).unwrap().count(), 1);
}

#[test]
fn whiteouts_never_delete_outside() {
    let env = Env::new();
    let keep = env.sentinel().join("keep");
    fs::create_dir(&keep).unwrap();
    fs::write(keep.join("file"), "k").unwrap();
    let target = env.sentinel();
    let tarball = docker_save(&[
        layer(&[E::Symlink("evil", target.to_str().unwrap())]),
        layer(&[
            E::File("evil/.wh.keep", b""),
            E::File("evil/keep/.wh..wh..opq", b""),
        ]),
    ]);
    env.import("x", &tarball).unwrap();
    assert_eq!(read(&keep.join("file")), "k");

    let env = Env::new();
    for name in [".wh...", "a/.wh..", ".wh."] {
        let err = env
            .import("y", &docker_save(&[layer(&[E::File(name, b"")])]))
            .unwrap_err();
        assert_unsafe(err, name);
        env.assert_clean_failure("y");
    }
}

#[test]
fn file_used_as_a_directory_is_rejected() {
    let env = Env::new();
    let tarball = docker_save(&[layer(&[E::File("f", b"1"), E::File("f/g", b"2")])]);
    assert_unsafe(env.import("x", &tarball).unwrap_err(), "f/g");
    env.assert_clean_failure("x");
}

#[test]
fn hostile_member_names_in_the_outer_tarball_are_ignored() {
    let env = Env::new();
    // The manifest points at a layer through `..`: not resolvable, so the import fails cleanly.
    let manifest = serde_json::json!([{"Config": "../c.json", "Layers": ["../../etc/passwd"]}]);
    let tarball = super::outer(&[(
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    )]);
    let err = env.import("x", &tarball).unwrap_err();
    assert!(matches!(err, ImageError::InvalidArchive(_)), "{err}");
    env.assert_clean_failure("x");
}
