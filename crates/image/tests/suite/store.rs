//! The store's stage-then-commit protocol: a failed, panicking or interrupted build is never
//! marked ready, leftovers are cleaned by the next build, names are validated, builds of the
//! same image are serialised.

use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use sandpit_image::{
    DEFAULT_IMAGE, ImageConfig, ImageError, ImageInfo, ImageStore, NoProgress, RECIPE_LABEL,
    SOURCE_DIR, recipe,
};

use super::Env;

fn write_file(rootfs: &std::path::Path) -> Result<ImageConfig, ImageError> {
    fs::write(rootfs.join("hello"), "world").unwrap();
    Ok(ImageConfig::default())
}

#[test]
fn create_with_commits_a_ready_image() {
    let env = Env::new();
    let info = env
        .store
        .create_with("tiny", SOURCE_DIR, &NoProgress, write_file)
        .unwrap();
    assert_eq!(
        (info.name.as_str(), info.source.as_str(), info.size_bytes),
        ("tiny", SOURCE_DIR, 5)
    );
    assert!(
        info.created_at.ends_with('Z') && info.created_at.contains('T'),
        "{}",
        info.created_at
    );
    let rootfs = env.store.rootfs("tiny").unwrap();
    assert_eq!(rootfs, env.store.root().join("tiny/rootfs"));
    assert_eq!(fs::read_to_string(rootfs.join("hello")).unwrap(), "world");
    assert_eq!(env.store.info("tiny").unwrap(), info);
    // Reopening the store sees the same image.
    let reopened = ImageStore::open(env.store.root()).unwrap();
    assert_eq!(reopened.list().unwrap(), [info]);
    assert!(matches!(
        env.store
            .create_with("tiny", SOURCE_DIR, &NoProgress, write_file),
        Err(ImageError::AlreadyExists(_))
    ));
}

#[test]
fn failed_build_is_never_ready_and_leaves_nothing() {
    let env = Env::new();
    let err = env
        .store
        .create_with("broken", SOURCE_DIR, &NoProgress, |rootfs| {
            fs::write(rootfs.join("half"), "written").unwrap();
            Err(ImageError::Build {
                stage: "fake".into(),
                message: "boom".into(),
            })
        })
        .unwrap_err();
    assert!(
        matches!(err, ImageError::Build { ref stage, .. } if stage == "fake"),
        "{err}"
    );
    env.assert_clean_failure("broken");
}

#[test]
fn panicking_build_leaves_nothing() {
    let env = Env::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        env.store
            .create_with("boom", SOURCE_DIR, &NoProgress, |rootfs| {
                fs::write(rootfs.join("half"), "written").unwrap();
                panic!("builder crashed");
            })
    }));
    assert!(result.is_err());
    env.assert_clean_failure("boom");
}

#[test]
fn interrupted_build_leftovers_are_not_ready_and_are_cleaned() {
    let env = Env::new();
    let root = env.store.root();
    // What a killed process leaves: a staging dir, and a renamed dir whose image.json never
    // got written. Plus a staging dir of another image whose name extends this one.
    fs::create_dir_all(root.join(".tmp-app-1a2b/rootfs/usr")).unwrap();
    fs::create_dir_all(root.join("app/rootfs/bin")).unwrap();
    fs::create_dir_all(root.join(".tmp-app-two-99/rootfs")).unwrap();
    assert!(matches!(
        env.store.rootfs("app"),
        Err(ImageError::NotFound(_))
    ));
    assert!(env.store.list().unwrap().is_empty());

    env.store
        .create_with("app", SOURCE_DIR, &NoProgress, write_file)
        .unwrap();
    assert!(!root.join(".tmp-app-1a2b").exists());
    assert!(
        !root.join("app/rootfs/bin").exists(),
        "the half image was replaced"
    );
    assert!(
        root.join(".tmp-app-two-99").exists(),
        "another image's staging dir is left alone"
    );
    assert_eq!(env.store.list().unwrap().len(), 1);
}

#[test]
fn corrupt_metadata_is_not_ready() {
    let env = Env::new();
    env.store
        .create_with("app", SOURCE_DIR, &NoProgress, write_file)
        .unwrap();
    fs::write(env.store.root().join("app/image.json"), "{truncated").unwrap();
    assert!(matches!(
        env.store.rootfs("app"),
        Err(ImageError::NotFound(_))
    ));
    assert!(env.store.list().unwrap().is_empty());
    // The next build replaces it.
    env.store
        .create_with("app", SOURCE_DIR, &NoProgress, write_file)
        .unwrap();
    assert!(env.store.rootfs("app").is_ok());
}

#[test]
fn names_are_validated_everywhere() {
    let env = Env::new();
    let tar = env.dir.path().join("x.tar");
    for name in ["../evil", "A", "", ".tmp-x", "a/b", "-x"] {
        let invalid = |r: Result<(), ImageError>| matches!(r, Err(ImageError::InvalidName { .. }));
        assert!(invalid(env.store.rootfs(name).map(drop)), "{name}");
        assert!(invalid(env.store.remove(name)), "{name}");
        assert!(
            invalid(env.store.import_tar(&tar, name, &NoProgress).map(drop)),
            "{name}"
        );
        assert!(invalid(
            env.store
                .create_with(name, SOURCE_DIR, &NoProgress, write_file)
                .map(drop)
        ));
    }
    assert_eq!(env.stray_paths(), ["images", "outside"]);
}

#[test]
fn concurrent_builds_of_one_image_are_serialised() {
    let env = Env::new();
    let busy = AtomicBool::new(false);
    let builds = AtomicUsize::new(0);
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    env.store
                        .create_with("same", SOURCE_DIR, &NoProgress, |rootfs| {
                            assert!(!busy.swap(true, Ordering::SeqCst), "two builds overlapped");
                            builds.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(50));
                            busy.store(false, Ordering::SeqCst);
                            write_file(rootfs)
                        })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        builds.load(Ordering::SeqCst),
        1,
        "later callers see the ready image"
    );
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(ImageError::AlreadyExists(_))))
    );
}

#[test]
fn build_default_returns_a_ready_default_image_of_the_current_recipe_at_once() {
    let env = Env::new();
    let fake = env
        .store
        .create_with(DEFAULT_IMAGE, "debootstrap", &NoProgress, |rootfs| {
            write_file(rootfs)?;
            Ok(labelled("sandpit.recipe", &recipe()))
        })
        .unwrap();
    assert_eq!(RECIPE_LABEL, "sandpit.recipe");
    let started = std::time::Instant::now();
    assert_eq!(env.store.build_default(&NoProgress).unwrap(), fake);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn remove_deletes_without_following_symlinks() {
    let env = Env::new();
    let victim = env.sentinel().join("victim");
    fs::write(&victim, "keep me").unwrap();
    let sentinel = env.sentinel();
    env.store
        .create_with("links", SOURCE_DIR, &NoProgress, |rootfs| {
            std::os::unix::fs::symlink(&sentinel, rootfs.join("out")).unwrap();
            Ok(ImageConfig::default())
        })
        .unwrap();
    env.store.remove("links").unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
    assert_eq!(env.stray_paths(), ["images", "outside", "outside/victim"]);
}

fn labelled(key: &str, value: &str) -> ImageConfig {
    let mut config = ImageConfig::default();
    config.labels.insert(key.to_owned(), value.to_owned());
    config
}

/// Builds version `v` of image "app" with `replace_with`: `hello` holds `v`, label `v` = `v`.
fn build_version(env: &Env, v: &str) -> Result<ImageInfo, ImageError> {
    let is_current = |info: &ImageInfo| info.config.labels.get("v").map(String::as_str) == Some(v);
    env.store
        .replace_with("app", SOURCE_DIR, &NoProgress, &is_current, |rootfs| {
            fs::write(rootfs.join("hello"), v).unwrap();
            Ok(labelled("v", v))
        })
}

fn old_versions(env: &Env) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(env.store.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".old-app-"))
        .collect();
    names.sort();
    names
}

/// A changed recipe rebuilds the image at the same path; a sandbox still running on the old
/// version (its driver holds the rootfs open) keeps its files until it stops, after which the
/// next build deletes them.
#[test]
fn replace_with_swaps_in_a_new_version_and_keeps_the_old_one_while_held() {
    let env = Env::new();
    build_version(&env, "1").unwrap();
    let rootfs = env.store.rootfs("app").unwrap();
    let running = fs::File::open(&rootfs).unwrap();
    let held = std::path::PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&running)
    ));

    let info = build_version(&env, "2").unwrap();
    assert_eq!(info.config.labels["v"], "2");
    assert_eq!(env.store.rootfs("app").unwrap(), rootfs, "same path");
    assert_eq!(fs::read_to_string(rootfs.join("hello")).unwrap(), "2");
    assert_eq!(env.store.info("app").unwrap(), info);
    assert_eq!(env.store.list().unwrap(), std::slice::from_ref(&info));
    // The running sandbox still sees version 1, kept as one old version.
    assert_eq!(fs::read_to_string(held.join("hello")).unwrap(), "1");
    assert_eq!(old_versions(&env).len(), 1);

    // Current: reused without building, the held old version stays.
    let built = AtomicBool::new(false);
    let is_current = |i: &ImageInfo| i.config.labels.get("v").is_some_and(|v| v == "2");
    let again = env
        .store
        .replace_with("app", SOURCE_DIR, &NoProgress, &is_current, |_| {
            built.store(true, Ordering::SeqCst);
            Ok(ImageConfig::default())
        })
        .unwrap();
    assert_eq!(again, info);
    assert!(!built.load(Ordering::SeqCst));
    assert_eq!(old_versions(&env).len(), 1);

    // The sandbox stopped: the next build of the image deletes the old version.
    drop(running);
    build_version(&env, "2").unwrap();
    assert!(old_versions(&env).is_empty());
    assert_eq!(env.stray_paths(), ["images", "images/app", "outside"]);
}

#[test]
fn an_unused_old_version_is_deleted_at_once_and_a_failed_rebuild_keeps_the_current_one() {
    let env = Env::new();
    build_version(&env, "1").unwrap();
    build_version(&env, "2").unwrap();
    assert!(old_versions(&env).is_empty());

    let is_current = |_: &ImageInfo| false;
    let err = env
        .store
        .replace_with("app", SOURCE_DIR, &NoProgress, &is_current, |rootfs| {
            fs::write(rootfs.join("hello"), "half").unwrap();
            Err(ImageError::Build {
                stage: "fake".into(),
                message: "mirror down".into(),
            })
        })
        .unwrap_err();
    assert!(matches!(err, ImageError::Build { .. }), "{err}");
    let rootfs = env.store.rootfs("app").unwrap();
    assert_eq!(fs::read_to_string(rootfs.join("hello")).unwrap(), "2");
    assert_eq!(env.store.info("app").unwrap().config.labels["v"], "2");
    assert_eq!(env.stray_paths(), ["images", "images/app", "outside"]);
}
