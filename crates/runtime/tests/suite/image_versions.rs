//! A rebuilt image under running sandboxes (sandpit-image's `replace_with`): the driver holds
//! the image a sandbox runs on, so the replaced version survives until the sandbox stops, and
//! the next start gets the new version at the same path.

use std::path::Path;
use std::process::Command;

use sandpit_image::{ImageConfig, ImageInfo, ImageStore, NoProgress, SOURCE_DIR};
use sandpit_runtime::Driver;

use super::harness::{Env, ok, unique_id};

/// Fills `rootfs` with hard links to the test rootfs (cheap, same file system) plus a
/// `/etc/image-version` file of its own.
fn fill(from: &Path, rootfs: &Path, version: &str) -> ImageConfig {
    let status = Command::new("cp")
        .arg("-al")
        .arg(from.join("."))
        .arg(rootfs)
        .status()
        .unwrap();
    assert!(status.success());
    let marker = rootfs.join("etc/image-version");
    let _ = std::fs::remove_file(&marker);
    std::fs::write(marker, format!("{version}\n")).unwrap();
    let mut config = ImageConfig::default();
    config.labels.insert("v".into(), version.into());
    config
}

fn old_versions(store: &ImageStore) -> usize {
    std::fs::read_dir(store.root())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with(".old-app-")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_running_sandbox_keeps_its_image_version_across_a_rebuild() {
    let Some(env) = Env::new() else { return };
    let source = env.rootfs.clone();
    let Ok(store) = ImageStore::open(env.dir.path().join("images")) else {
        panic!("image store")
    };
    let build = |version: &'static str| {
        let is_current = |i: &ImageInfo| i.config.labels.get("v").is_some_and(|v| v == version);
        store
            .replace_with("app", SOURCE_DIR, &NoProgress, &is_current, |rootfs| {
                Ok(fill(&source, rootfs, version))
            })
            .unwrap()
    };
    build("1");
    let id = unique_id("imgver");
    let driver = env.driver_with_images(store.root());
    let mut spec = env.spec(&id);
    spec.image = "app".into();
    let app_rootfs = store.rootfs("app").unwrap();
    let started = driver.start(&spec).await.unwrap();
    assert_eq!(ok(&started, "cat /etc/image-version").await, "1");

    build("2");
    assert_eq!(store.rootfs("app").unwrap(), app_rootfs, "same path");
    // The running sandbox still has all of version 1 (an unheld old version would have been
    // deleted under it), kept as one old version.
    assert_eq!(
        ok(&started, "cat /etc/image-version; ls /usr/bin | wc -l").await,
        format!(
            "1\n{}",
            std::fs::read_dir(source.join("usr/bin")).unwrap().count()
        )
    );
    assert_eq!(old_versions(&store), 1);

    // Stopped, it lets go: the next build deletes version 1; a new start runs on version 2.
    driver.stop(&id).await.unwrap();
    build("2");
    assert_eq!(old_versions(&store), 0);
    let again = driver.start(&spec).await.unwrap();
    assert_eq!(ok(&again, "cat /etc/image-version").await, "2");
    driver.destroy(&id).await.unwrap();
}
