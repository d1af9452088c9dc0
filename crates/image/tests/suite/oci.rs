//! OCI image layout import: index → manifest → config → gzip layers, digests verified.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use sandpit_image::{ImageError, ImportLimits, SOURCE_OCI};

use super::{E, Env, gzip, layer, oci_layout, read};

fn layers() -> Vec<Vec<u8>> {
    vec![
        layer(&[
            E::Dir("usr/"),
            E::Dir("usr/bin/"),
            E::FileMode("usr/bin/tool", b"#!/bin/sh\necho hi\n", 0o4755, 0),
            E::Symlink("bin", "usr/bin"),
        ]),
        layer(&[
            E::FileMode("home/user/notes", b"mine", 0o600, 1000),
            E::File("bin/via-link", b"v"),
        ]),
    ]
}

#[test]
fn imports_an_oci_layout() {
    let env = Env::new();
    let info = env
        .import("oci", &oci_layout(&layers(), |_, _| {}))
        .unwrap();
    assert_eq!(info.source, SOURCE_OCI);
    assert_eq!(info.config.working_dir.as_deref(), Some("/app"));
    let root = env.store.rootfs("oci").unwrap();
    let tool = fs::metadata(root.join("usr/bin/tool")).unwrap();
    assert_eq!(
        tool.permissions().mode() & 0o7777,
        0o4755,
        "setuid kept (sandboxes run in a userns)"
    );
    // A file under a symlinked dir lands in the link's in-image target.
    assert_eq!(read(&root.join("usr/bin/via-link")), "v");
    assert!(
        fs::symlink_metadata(root.join("bin"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let notes = fs::metadata(root.join("home/user/notes")).unwrap();
    if nix::unistd::geteuid().is_root() {
        assert_eq!((notes.uid(), notes.gid()), (1000, 1000));
    }
    assert_eq!(notes.mtime(), 1_700_000_000);
}

#[test]
fn gzipped_outer_tarball_is_accepted() {
    let env = Env::new();
    let info = env
        .import("gz", &gzip(&oci_layout(&layers(), |_, _| {})))
        .unwrap();
    assert_eq!(info.source, SOURCE_OCI);
    assert_eq!(
        env.stray_paths(),
        ["images", "images/gz", "outside"],
        "scratch copy removed"
    );
}

#[test]
fn tampered_blob_is_a_digest_mismatch_naming_the_blob() {
    let env = Env::new();
    let mut name = String::new();
    let tarball = oci_layout(&layers(), |i, blob| {
        if i == 1 {
            name = format!("blobs/sha256/{}", super::sha(blob));
            // Same content, recompressed differently: valid gzip, wrong bytes.
            *blob = gzip(&super::layer(&[E::File("evil", b"x")]));
        }
    });
    let err = env.import("oci", &tarball).unwrap_err();
    match &err {
        ImageError::DigestMismatch { entry, .. } => assert_eq!(entry, &name),
        other => panic!("unexpected {other}"),
    }
    env.assert_clean_failure("oci");
}

#[test]
fn size_and_entry_limits_apply() {
    let env = Env::new();
    let small = env.store.clone().with_limits(ImportLimits {
        max_bytes: 10,
        max_entries: 100,
    });
    let path = env.dir.path().join("img.tar");
    fs::write(&path, oci_layout(&layers(), |_, _| {})).unwrap();
    let err = small
        .import_tar(&path, "big", &sandpit_image::NoProgress)
        .unwrap_err();
    assert!(matches!(err, ImageError::TooLarge(_)), "{err}");
    let few = env.store.clone().with_limits(ImportLimits {
        max_bytes: 1 << 20,
        max_entries: 3,
    });
    let err = few
        .import_tar(&path, "big", &sandpit_image::NoProgress)
        .unwrap_err();
    assert!(matches!(err, ImageError::TooLarge(_)), "{err}");
    fs::remove_file(&path).unwrap();
    env.assert_clean_failure("big");
}

#[test]
fn gzip_bomb_outer_tarball_is_capped() {
    let env = Env::new();
    let small = env.store.clone().with_limits(ImportLimits {
        max_bytes: 1 << 20,
        max_entries: 100,
    });
    let path = env.dir.path().join("bomb.tar.gz");
    fs::write(&path, gzip(&vec![0u8; 8 << 20])).unwrap();
    let err = small
        .import_tar(&path, "bomb", &sandpit_image::NoProgress)
        .unwrap_err();
    assert!(matches!(err, ImageError::TooLarge(_)), "{err}");
    fs::remove_file(&path).unwrap();
    env.assert_clean_failure("bomb");
}
