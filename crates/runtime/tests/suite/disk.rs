//! `diskMb`: the writable layer on a loop-mounted ext4 image, invisible on the host.

use std::time::{Duration, Instant};

use sandpit_runtime::Driver;

use super::harness::{Env, exec, ok, unique_id};

fn losetup() -> String {
    let out = std::process::Command::new("losetup")
        .arg("-a")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (bounded) until neither a loop device nor a mount of this host names `needle`.
async fn assert_gone_from_host(needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let loops = losetup();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        if !loops.contains(needle) && !mounts.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left on the host:\nlosetup: {loops}\nmountinfo: {mounts}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_disk_limit_is_enforced_and_leaves_nothing_on_the_host() {
    let Some(env) = Env::new() else { return };
    let loops_before = losetup();
    let needle = env.dir.path().to_string_lossy().into_owned();

    // Without diskMb: no image.
    let plain = unique_id("nodisk");
    let spec = env.spec(&plain);
    let t = Instant::now();
    env.start(&spec).await;
    let plain_ms = t.elapsed().as_millis();
    assert!(!env.driver.disk_image(&plain).exists());
    assert!(
        env.driver
            .layout()
            .sandbox_dir(&plain)
            .join("upper")
            .is_dir()
    );
    env.driver.destroy(&plain).await.unwrap();

    let id = unique_id("disk");
    let mut spec = env.spec(&id);
    spec.limits.disk_mb = Some(64);
    let t = Instant::now();
    let started = env.start(&spec).await;
    eprintln!(
        "start without diskMb: {plain_ms} ms, first start with diskMb 64: {} ms",
        t.elapsed().as_millis()
    );
    let s = &started;
    assert!(env.driver.disk_image(&id).is_file());
    // The layer is on the image: nothing on the host dir, no mount in the host's table.
    assert!(!env.driver.layout().sandbox_dir(&id).join("upper").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&needle), "{mounts}");

    assert_eq!(ok(s, "stat -c %U /workspace").await, "root");
    let (code, out) = exec(s, "dd if=/dev/zero of=/workspace/big bs=1M count=100 2>&1").await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    // The sandbox keeps working once space is freed.
    ok(s, "rm /workspace/big && echo kept > /workspace/keep").await;
    assert_eq!(ok(s, "echo alive").await, "alive");

    env.driver.stop(&id).await.unwrap();
    assert_gone_from_host(&needle).await;
    let t = Instant::now();
    let started = env.start(&spec).await;
    eprintln!("restart with diskMb: {} ms", t.elapsed().as_millis());
    assert_eq!(ok(&started, "cat /workspace/keep").await, "kept");

    env.driver.destroy(&id).await.unwrap();
    assert_gone_from_host(&needle).await;
    assert!(!env.driver.layout().sandbox_dir(&id).exists());
    assert_eq!(losetup(), loops_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_disk_limit_out_of_range_is_refused() {
    let Some(env) = Env::new() else { return };
    let id = unique_id("diskbad");
    let mut spec = env.spec(&id);
    spec.limits.disk_mb = Some(1);
    let err = env.driver.start(&spec).await.unwrap_err();
    assert!(err.to_string().contains("diskMb"), "{err}");
}
