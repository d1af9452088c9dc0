//! start / stop / destroy / reconcile, and failure handling.

use std::time::{Duration, Instant};

use sandpit_runtime::local::LocalDriver;
use sandpit_runtime::{Driver, DriverError};

use super::harness::{Env, alive, exec, ok, running, unique_id};

fn assert_gone(env: &Env, id: &str, pids: &[u32]) {
    for pid in pids {
        assert!(!running(*pid), "pid {pid} of {id} survived");
    }
    for dir in env.driver.cgroups().dirs(id) {
        assert!(!dir.exists(), "cgroup {} left behind", dir.display());
    }
    assert!(!env.driver.socket_path(id).exists(), "socket left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_stop_kills_everything_and_workspace_survives() {
    let Some(env) = Env::new() else { return };
    let id = unique_id("life");
    let spec = env.spec(&id);
    let started = env.start(&spec).await;
    let s = &started;
    assert!(env.driver.is_running(&id).await);
    ok(s, "echo persisted > /workspace/keep; (sleep 1000 >/dev/null 2>&1 &); (sleep 1000 >/dev/null 2>&1 &)").await;
    let pids = env.driver.cgroups().pids(&id).unwrap();
    assert!(pids.len() >= 3, "{pids:?}");
    assert!(pids.contains(&started.pid));

    ok(s, "mv /workspace /ws-old && ln -s /nonexistent /workspace").await;
    env.driver.stop(&id).await.unwrap();
    assert!(!env.driver.is_running(&id).await);
    assert_gone(&env, &id, &pids);
    // Stopping again is a no-op.
    env.driver.stop(&id).await.unwrap();

    // The writable layer survives the stop, even with a workspace the sandbox broke.
    let again = env.start(&spec).await;
    assert_ne!(again.pid, started.pid);
    assert_eq!(ok(&again, "pwd; cat /ws-old/keep").await, "/\npersisted");
    // Starting a running sandbox returns it unchanged.
    assert_eq!(env.driver.start(&spec).await.unwrap().pid, again.pid);

    env.driver.destroy(&id).await.unwrap();
    assert_gone(&env, &id, &[again.pid]);
    assert!(!env.driver.layout().sandbox_dir(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_ephemeral_layer_is_dropped_on_stop() {
    let Some(env) = Env::new() else { return };
    let id = unique_id("eph");
    let mut spec = env.spec(&id);
    spec.ephemeral = true;
    let started = env.start(&spec).await;
    ok(&started, "echo gone > /workspace/tmp").await;
    env.driver.stop(&id).await.unwrap();
    assert!(!env.driver.layout().sandbox_dir(&id).join("upper").exists());
    let again = env.start(&spec).await;
    assert_ne!(exec(&again, "test -e /workspace/tmp").await.0, 0);
    env.driver.destroy(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_init_exit_is_noticed_and_reaped() {
    let Some(env) = Env::new() else { return };
    let id = unique_id("exit");
    let started = env.start(&env.spec(&id)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(started.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.driver.is_running(&id).await {
        assert!(Instant::now() < deadline, "exit not noticed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Reaped: no zombie left.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!alive(started.pid), "init not reaped");
    env.driver.stop(&id).await.unwrap();
    assert_gone(&env, &id, &[]);
    env.driver.destroy(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_reconcile_cleans_up_after_a_crash() {
    let Some(env) = Env::new() else { return };
    let ids = [unique_id("rec"), unique_id("rec")];
    let mut pids = Vec::new();
    for id in &ids {
        let started = env.start(&env.spec(id)).await;
        ok(
            &started,
            "echo x > /workspace/keep; (sleep 1000 >/dev/null 2>&1 &)",
        )
        .await;
        pids.extend(env.driver.cgroups().pids(id).unwrap());
    }
    // A stale socket without a sandbox, as a crashed server leaves it.
    std::fs::write(env.driver.socket_path("stale"), b"").unwrap();
    // Per-run files of a stopped sandbox, as a server killed halfway through a stop leaves
    // them: the egress socket and CA files in the run dir, a half-formatted disk image.
    let halfway = unique_id("rec");
    let run = env.driver.layout().run_dir(&halfway);
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("egress.sock"), b"").unwrap();
    std::fs::write(run.join("ca.crt"), b"").unwrap();
    std::fs::write(
        env.driver
            .layout()
            .sandbox_dir(&halfway)
            .join("disk.img.tmp"),
        b"",
    )
    .unwrap();

    // A new server on the same data dir.
    let second = LocalDriver::new(
        env.dir.path().to_path_buf(),
        env.driver.config().agent_bin.clone(),
    )
    .unwrap();
    let mut found = second.reconcile().await.unwrap();
    found.sort();
    let mut expected = vec![
        ids[0].clone(),
        ids[1].clone(),
        "stale".to_string(),
        halfway.clone(),
    ];
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(
        std::fs::read_dir(&run).unwrap().count(),
        0,
        "run dir not emptied"
    );
    assert!(
        !env.driver
            .layout()
            .sandbox_dir(&halfway)
            .join("disk.img.tmp")
            .exists()
    );
    for id in &ids {
        assert_gone(&env, id, &pids);
        // The writable layer is kept for the next start.
        assert!(env.host_path(id, "workspace/keep").is_file());
    }
    assert!(!env.driver.socket_path("stale").exists());
    assert!(second.reconcile().await.unwrap().is_empty());
    for id in ids.iter().chain([&halfway]) {
        env.driver.destroy(id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_invalid_specs_are_rejected() {
    let Some(env) = Env::new() else { return };
    let mut spec = env.spec("bad/id");
    assert!(matches!(
        env.driver.start(&spec).await,
        Err(DriverError::InvalidSpec(_))
    ));
    spec.id = "x".repeat(63);
    let long = LocalDriver::new(
        env.dir.path().join("a".repeat(60)),
        env.driver.config().agent_bin.clone(),
    )
    .unwrap();
    let err = long.start(&spec).await.unwrap_err();
    assert!(err.to_string().contains("Unix sockets"), "{err}");
    spec.id = "ok".into();
    spec.image = "no-such-image".into();
    assert!(matches!(
        env.driver.start(&spec).await,
        Err(DriverError::ImageNotFound(name)) if name == "no-such-image"
    ));
    spec.image = super::harness::TEST_IMAGE.into();
    for name in ["../escape", "a/b", "", "egress.sock"] {
        spec.run_files = vec![sandpit_runtime::RunFile {
            name: name.into(),
            contents: Vec::new(),
        }];
        assert!(
            matches!(
                env.driver.start(&spec).await,
                Err(DriverError::InvalidSpec(_))
            ),
            "{name:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_failed_launch_is_reported_and_cleaned_up() {
    let Some(env) = Env::new() else { return };
    // A launcher that exits without a reply.
    let mut config = env.driver.config().clone();
    config.agent_bin = "/bin/false".into();
    let failing = LocalDriver::with_config(config).unwrap();
    let id = unique_id("fail");
    let err = failing.start(&env.spec(&id)).await.unwrap_err();
    assert!(matches!(err, DriverError::StartFailed { .. }), "{err}");
    assert_gone(&env, &id, &[]);

    // A launcher that hangs: the start times out.
    let script = env.dir.path().join("hang.sh");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut config = env.driver.config().clone();
    config.agent_bin = script;
    config.start_timeout = Duration::from_millis(300);
    let hanging = LocalDriver::with_config(config).unwrap();
    let t = Instant::now();
    let err = hanging.start(&env.spec(&id)).await.unwrap_err();
    assert!(err.to_string().contains("did not report"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_gone(&env, &id, &[]);

    // Starts that time out mid-launch (the real launcher, killed at whatever step it reached).
    let mut timeouts = 0;
    for _ in 0..6 {
        let mut config = env.driver.config().clone();
        config.start_timeout = Duration::from_millis(1);
        let impatient = LocalDriver::with_config(config).unwrap();
        let id = unique_id("tmo");
        match impatient.start(&env.spec(&id)).await {
            Err(_) => timeouts += 1,
            Ok(_) => impatient.stop(&id).await.unwrap(),
        }
        assert_gone(&env, &id, &[]);
        env.driver.destroy(&id).await.unwrap();
    }
    assert!(timeouts > 0, "no start timed out");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let z = zombie_children();
    let names: Vec<String> = z
        .iter()
        .map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default())
        .collect();
    assert_eq!(z, Vec::<u32>::new(), "{names:?}");

    // The launcher's own error (here: the image is not usable) comes back as the message.
    let images = env.dir.path().join("images");
    Env::make_image(&images, "empty-image", |rootfs| {
        std::fs::write(rootfs.join("dev"), b"not a directory").unwrap();
    });
    Env::make_image(&images, "link-image", |rootfs| {
        std::os::unix::fs::symlink("/", rootfs.join("dev")).unwrap();
    });
    Env::make_image(&images, "bad-proc-image", |rootfs| {
        std::fs::write(rootfs.join("proc"), b"not a directory").unwrap();
    });
    let odd = env.driver_with_images(&images);
    let id = unique_id("fail");
    let mut spec = env.spec(&id);
    spec.image = "empty-image".into();
    let err = odd.start(&spec).await.unwrap_err();
    assert!(matches!(err, DriverError::StartFailed { .. }), "{err}");
    assert!(err.to_string().contains("/dev"), "{err}");
    assert_gone(&env, &id, &[]);
    env.driver.destroy(&id).await.unwrap();

    // Symlinks planted where the launcher mounts are refused, not followed.
    let id = unique_id("fail");
    let mut spec = env.spec(&id);
    spec.image = "link-image".into();
    let err = odd.start(&spec).await.unwrap_err();
    assert!(err.to_string().contains("is not a directory"), "{err}");
    assert_gone(&env, &id, &[]);
    env.driver.destroy(&id).await.unwrap();

    // A failure inside the sandbox init (after the fork) is reported too, and leaves no zombie.
    let id = unique_id("fail");
    let mut spec = env.spec(&id);
    spec.image = "bad-proc-image".into();
    let err = odd.start(&spec).await.unwrap_err();
    assert!(
        err.to_string().contains("sandbox init: mkdir /proc"),
        "{err}"
    );
    assert_gone(&env, &id, &[]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let z = zombie_children();
    let names: Vec<String> = z
        .iter()
        .map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default())
        .collect();
    assert_eq!(z, Vec::<u32>::new(), "{names:?}");
    env.driver.destroy(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_start_latency() {
    let Some(env) = Env::new() else { return };
    let runs: u32 = std::env::var("SANDPIT_LATENCY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let (mut start, mut first_exec, mut stop) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let id = unique_id("lat");
        let spec = env.spec(&id);
        let t = Instant::now();
        let started = env.start(&spec).await;
        start.push(t.elapsed());
        ok(&started, "true").await;
        first_exec.push(t.elapsed());
        let t = Instant::now();
        env.driver.destroy(&id).await.unwrap();
        stop.push(t.elapsed());
    }
    let p50 = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (a, b, c) = (p50(&mut start), p50(&mut first_exec), p50(&mut stop));
    eprintln!(
        "LATENCY over {runs} runs: start p50 {a:?}, start+first exec p50 {b:?}, destroy p50 {c:?}"
    );
    assert!(a < Duration::from_secs(1), "start p50 {a:?}");
}

/// The host uid that root of sandbox `id` maps to (the owner of a file it made).
async fn host_root(env: &Env, sandbox: &sandpit_runtime::Started, id: &str) -> u32 {
    use std::os::unix::fs::MetadataExt;
    ok(sandbox, "echo x > /workspace/owner").await;
    std::fs::metadata(env.host_path(id, "workspace/owner"))
        .unwrap()
        .uid()
}

/// The driver allocates each sandbox's uid range and keeps it for the sandbox's life (across
/// stops, wakes and a new driver on the data dir); destroy frees it for the next sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_uid_ranges_are_allocated_and_kept_for_life() {
    use std::os::unix::fs::MetadataExt;
    let Some(env) = Env::new() else { return };
    let (a, b) = (unique_id("uida"), unique_id("uidb"));
    let started = env.start(&env.spec(&a)).await;
    let base_a = host_root(&env, &started, &a).await;
    assert_eq!(base_a, sandpit_runtime::local::DEFAULT_FIRST_UID);
    ok(
        &started,
        "echo a > /workspace/f && chown 1000:1000 /workspace/f",
    )
    .await;
    let other = env.start(&env.spec(&b)).await;
    let base_b = host_root(&env, &other, &b).await;
    assert_eq!(base_b, base_a + 65_536, "the next free range");
    env.driver.stop(&a).await.unwrap();

    // Woken by a new driver on the same data dir (a restarted server): same range, same owners.
    let second = env.driver_with_images(&env.driver.config().images_dir);
    let again = second.start(&env.spec(&a)).await.unwrap();
    assert_eq!(host_root(&env, &again, &a).await, base_a);
    assert_eq!(
        ok(&again, "stat -c %u:%g /workspace/f; cat /workspace/f").await,
        "1000:1000\na"
    );
    let meta = std::fs::metadata(env.host_path(&a, "workspace/f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (base_a + 1000, base_a + 1000));

    // Destroyed, its range goes to the next new sandbox; b keeps its own.
    second.destroy(&a).await.unwrap();
    let c = unique_id("uidc");
    let third = second.start(&env.spec(&c)).await.unwrap();
    assert_eq!(host_root(&env, &third, &c).await, base_a);
    for id in [&b, &c] {
        second.destroy(id).await.unwrap();
    }
    env.driver.stop(&b).await.unwrap();
}

/// Sandboxes of a server from before the driver owned uid ranges (the store's slot formula)
/// keep theirs: the server hands them over at start, and the driver uses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_adopted_uid_ranges_are_used() {
    let Some(env) = Env::new() else { return };
    let id = unique_id("adopt");
    let legacy = 100_000 + 7 * 65_536;
    env.driver
        .adopt_uid_ranges(&[(id.clone(), legacy)])
        .await
        .unwrap();
    let started = env.start(&env.spec(&id)).await;
    assert_eq!(host_root(&env, &started, &id).await, legacy);
    // A second hand-over (another restart) changes nothing.
    env.driver
        .adopt_uid_ranges(&[(id.clone(), 100_000)])
        .await
        .unwrap();
    env.driver.stop(&id).await.unwrap();
    let again = env.start(&env.spec(&id)).await;
    assert_eq!(host_root(&env, &again, &id).await, legacy);
    // A new sandbox never gets an adopted range.
    let fresh = unique_id("fresh");
    let other = env.start(&env.spec(&fresh)).await;
    assert_ne!(host_root(&env, &other, &fresh).await, legacy);
    for id in [&id, &fresh] {
        env.driver.destroy(id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_parallel_starts() {
    let Some(env) = Env::new() else { return };
    let ids: Vec<String> = (0..4).map(|_| unique_id("par")).collect();
    let specs: Vec<_> = ids.iter().map(|id| env.spec(id)).collect();
    let started = futures::future::join_all(specs.iter().map(|s| env.driver.start(s))).await;
    for (id, res) in ids.iter().zip(started) {
        let s = res.unwrap();
        assert_eq!(ok(&s, "hostname").await, *id);
    }
    let stopped = futures::future::join_all(ids.iter().map(|id| env.driver.destroy(id))).await;
    assert!(stopped.iter().all(Result::is_ok));
    for id in &ids {
        assert_gone(&env, id, &[]);
    }
}

/// Zombie children of this test process.
fn zombie_children() -> Vec<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str())
        })
        .collect()
}
