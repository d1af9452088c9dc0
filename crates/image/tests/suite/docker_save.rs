//! `docker save` import: layers in order, whiteouts, opaque dirs, config, verification.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use sandpit_image::{ImageError, SOURCE_DOCKER_SAVE};

use super::{E, Env, docker_save, docker_save_with, layer, read, sha};

fn two_layers() -> Vec<Vec<u8>> {
    let base = layer(&[
        E::Dir("etc/"),
        E::File("etc/a", b"1"),
        E::File("etc/b", b"doomed"),
        E::Dir("opaque/"),
        E::File("opaque/old", b"old"),
        E::Dir("opaque/sub/"),
        E::File("opaque/sub/old2", b"old"),
        E::Dir("keep/"),
        E::File("keep/k", b"k"),
        E::Dir("gone/"),
        E::File("gone/x", b"x"),
    ]);
    let top = layer(&[
        E::File("etc/a", b"2"),
        E::File("etc/.wh.b", b""),
        E::File(".wh.gone", b""),
        E::Dir("opaque/"),
        // Written before the opaque marker of the same layer: must survive it.
        E::File("opaque/new", b"new"),
        E::File("opaque/.wh..wh..opq", b""),
        E::Symlink("etc/link", "a"),
        E::Hard("etc/hard", "etc/a"),
        E::Fifo("run.fifo"),
        E::CharDev("dev-null"),
    ]);
    vec![base, top]
}

#[test]
fn imports_two_layers_with_whiteouts_and_opaque_dirs() {
    let env = Env::new();
    let info = env.import("app", &docker_save(&two_layers())).unwrap();
    assert_eq!(info.name, "app");
    assert_eq!(info.source, SOURCE_DOCKER_SAVE);
    assert_eq!(info.config.env, ["PATH=/usr/bin:/bin", "FOO=bar"]);
    assert_eq!(info.config.working_dir.as_deref(), Some("/app"));
    assert_eq!(info.config.cmd, ["sh"]);
    assert_eq!(info.config.labels["org.example"], "yes");

    let root = env.store.rootfs("app").unwrap();
    assert_eq!(read(&root.join("etc/a")), "2");
    assert!(
        !root.join("etc/b").exists(),
        "whiteout deletes a lower file"
    );
    assert!(
        !root.join("gone").exists(),
        "whiteout deletes a lower directory"
    );
    assert_eq!(read(&root.join("opaque/new")), "new");
    assert!(
        !root.join("opaque/old").exists(),
        "opaque dir hides lower files"
    );
    assert!(
        !root.join("opaque/sub").exists(),
        "opaque dir hides lower dirs"
    );
    assert_eq!(read(&root.join("keep/k")), "k");
    assert_eq!(
        fs::read_link(root.join("etc/link")).unwrap().to_str(),
        Some("a")
    );
    let (a, hard) = (
        fs::metadata(root.join("etc/a")).unwrap(),
        fs::metadata(root.join("etc/hard")).unwrap(),
    );
    assert_eq!(a.ino(), hard.ino(), "hard link shares the inode");
    assert!(
        fs::symlink_metadata(root.join("run.fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(!root.join("dev-null").exists(), "device nodes are skipped");
    assert!(!root.join("etc/.wh.b").exists() && !root.join("opaque/.wh..wh..opq").exists());
    // 1 + 1 + 1 + 1 ("2" "new" "k" ... ) : sizes of the surviving regular files, links once.
    assert_eq!(info.size_bytes, 1 + 3 + 1);

    assert_eq!(env.store.list().unwrap(), [info]);
    assert_eq!(env.stray_paths(), ["images", "images/app", "outside"]);
}

#[test]
fn wrong_diff_id_is_a_digest_mismatch() {
    let env = Env::new();
    let layers = two_layers();
    let ids = vec![sha(&layers[0]), sha(b"something else")];
    let err = env
        .import("app", &docker_save_with(&layers, &ids))
        .unwrap_err();
    match err {
        ImageError::DigestMismatch { entry, .. } => {
            assert_eq!(entry, format!("{:064x}/layer.tar (uncompressed)", 2));
        }
        other => panic!("unexpected {other}"),
    }
    env.assert_clean_failure("app");
}

#[test]
fn not_an_image_is_rejected() {
    let env = Env::new();
    let tarball = super::outer(&[("hello.txt".into(), b"hi".to_vec())]);
    let err = env.import("x", &tarball).unwrap_err();
    assert!(matches!(err, ImageError::InvalidArchive(_)), "{err}");
    env.assert_clean_failure("x");
    let err = env.import("x", b"definitely not a tarball").unwrap_err();
    assert!(matches!(err, ImageError::InvalidArchive(_)), "{err}");
    env.assert_clean_failure("x");
}

#[test]
fn missing_layer_member_is_rejected() {
    let env = Env::new();
    let manifest = serde_json::json!([{"Config": "c.json", "Layers": ["nope/layer.tar"]}]);
    let tarball = super::outer(&[
        ("c.json".into(), b"{}".to_vec()),
        (
            "manifest.json".into(),
            serde_json::to_vec(&manifest).unwrap(),
        ),
    ]);
    let err = env.import("x", &tarball).unwrap_err();
    assert!(err.to_string().contains("nope/layer.tar"), "{err}");
    env.assert_clean_failure("x");
}

#[test]
fn import_refuses_an_existing_name_and_remove_frees_it() {
    let env = Env::new();
    let tarball = docker_save(&two_layers());
    env.import("app", &tarball).unwrap();
    assert!(matches!(
        env.import("app", &tarball),
        Err(ImageError::AlreadyExists(_))
    ));
    env.store.remove("app").unwrap();
    assert!(matches!(
        env.store.rootfs("app"),
        Err(ImageError::NotFound(_))
    ));
    assert!(matches!(
        env.store.remove("app"),
        Err(ImageError::NotFound(_))
    ));
    env.import("app", &tarball).unwrap();
    assert_eq!(env.stray_paths(), ["images", "images/app", "outside"]);
}
