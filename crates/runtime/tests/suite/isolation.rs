//! What a process inside a sandbox can see and do.

use std::os::unix::fs::MetadataExt;

use sandpit_runtime::Driver;

use super::harness::{Env, exec, ok, unique_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_namespaces_identity_and_root() {
    let Some(env) = Env::new() else { return };
    let id = unique_id("ns");
    // A fresh driver gives its first sandbox the first range.
    let base = sandpit_runtime::local::DEFAULT_FIRST_UID;
    let started = env.start(&env.spec(&id)).await;
    let s = &started;

    // User namespace: root inside, uid_base outside.
    assert_eq!(ok(s, "id -u; id -g").await, "0\n0");
    assert_eq!(ok(s, "id -G").await, "0");
    let map = ok(s, "cat /proc/self/uid_map").await;
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", &base.to_string(), "65536"]
    );
    ok(s, "echo hi > /workspace/created-inside").await;
    let meta = std::fs::metadata(env.host_path(&id, "workspace/created-inside")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (base, base));

    // PID namespace: the agent is PID 1, host processes are invisible.
    let comm = ok(s, "cat /proc/1/comm").await;
    assert!(comm.starts_with("sandpit-launch"), "{comm}");
    let count: usize = ok(s, "ls /proc | grep -c '^[0-9]'").await.parse().unwrap();
    assert!(count < 10, "sees {count} processes");
    assert!(
        !ok(s, "ls /proc")
            .await
            .split_whitespace()
            .any(|p| p == std::process::id().to_string())
    );

    // UTS and network namespaces.
    assert_eq!(ok(s, "cat /proc/sys/kernel/hostname").await, id);
    let ifaces: Vec<String> = ok(s, "tail -n +3 /proc/net/dev | cut -d: -f1")
        .await
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(ifaces, ["lo"]);
    // lo is up (IFF_UP, bit 0 of the flags).
    let flags = ok(
        s,
        "python3 -c \"import fcntl, socket, struct; \
         r = fcntl.ioctl(socket.socket(), 0x8913, struct.pack('256s', b'lo')); \
         print(struct.unpack('H', r[16:18])[0])\"",
    )
    .await;
    let flags: u32 = flags.parse().unwrap();
    assert_eq!(flags & 1, 1, "lo flags {flags:#x}");

    // No sysfs by default: /sys is a read-only tree holding only the cgroup views.
    assert_eq!(ok(s, "ls /sys; ls /sys/fs").await, "fs\ncgroup");
    let mounts = ok(s, "cat /proc/self/mountinfo").await;
    assert!(!mounts.contains(" - sysfs "), "{mounts}");
    assert_ne!(exec(s, "touch /sys/x").await.0, 0);
    assert_ne!(exec(s, "mount -o remount,rw /sys").await.0, 0);
    // One tmpfs for /dev, /dev/shm, /sys and the masks, and no other.
    let tmpfs: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(" - tmpfs "))
        .map(|l| {
            l.split(" - tmpfs ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
        })
        .collect();
    assert!(
        !tmpfs.is_empty() && tmpfs.iter().all(|source| *source == "sandpit"),
        "{mounts}"
    );
    // /dev/shm: a sticky, nodev directory of it.
    assert_eq!(ok(s, "stat -c %a /dev/shm").await, "1777");
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(" /dev/shm ") && l.contains("nodev")),
        "{mounts}"
    );

    // Working directory, environment, stdio.
    assert_eq!(ok(s, "pwd").await, "/workspace");
    assert_eq!(ok(s, "echo $SANDPIT_TEST").await, "yes");

    // No host path is reachable: the root is the overlay and nothing else of the host is mounted.
    let mounts = ok(s, "cat /proc/self/mountinfo").await;
    assert!(mounts.lines().next().unwrap().contains(" / / "), "{mounts}");
    // (The overlay's own options name its host dirs, as with Docker, and so does the root of
    // the /run/sandpit bind, a sibling of them; no other mount does.)
    let host = env.dir.path().to_str().unwrap();
    assert!(
        !mounts
            .lines()
            .skip(1)
            .any(|l| l.contains(host) && !l.contains(" /run/sandpit ")),
        "host path leaked: {mounts}"
    );
    let (code, _) = exec(s, "ls /old_root /.oldroot 2>/dev/null").await;
    assert_ne!(code, 0);

    env.driver.destroy(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_sysfs_when_the_operator_asks_for_it() {
    let Some(env) = Env::with(|c| c.sysfs = true) else {
        return;
    };
    let id = unique_id("sysfs");
    let started = env.start(&env.spec(&id)).await;
    let s = &started;
    // The sandbox's own network namespace, read-only, with the cgroup views still bound.
    let flags = ok(s, "cat /sys/class/net/lo/flags").await;
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo flags {flags:#x}");
    assert_eq!(ok(s, "ls /sys/class/net").await, "lo");
    assert_ne!(exec(s, "echo x > /sys/kernel/uevent_helper").await.0, 0);
    assert!(!ok(s, "ls /sys/fs/cgroup").await.is_empty());
    // /sys/firmware is masked by the shared empty directory.
    if std::path::Path::new("/sys/firmware").is_dir() {
        assert_eq!(ok(s, "ls -A /sys/firmware | wc -l").await, "0");
    }
    let mounts = ok(s, "cat /proc/self/mountinfo").await;
    assert_eq!(mounts.matches(" - sysfs ").count(), 1, "{mounts}");
    env.driver.destroy(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_overlay_root_is_writable_and_image_untouched() {
    let Some(env) = Env::new() else { return };
    let id = unique_id("ovl");
    let started = env.start(&env.spec(&id)).await;
    let s = &started;

    let image_ls = env.rootfs.join("usr/bin/tac");
    let before = std::fs::metadata(&image_ls).unwrap();
    ok(
        s,
        "echo new > /etc/sandpit-test && rm /usr/bin/tac && mkdir -p /opt/x && touch /opt/x/y",
    )
    .await;
    assert_eq!(ok(s, "cat /etc/sandpit-test").await, "new");
    assert_ne!(exec(s, "test -e /usr/bin/tac").await.0, 0);
    // chown to another sandbox uid works (CAP_CHOWN in the namespace, id mapped).
    ok(s, "chown 1000:1000 /opt/x/y").await;
    assert_eq!(
        std::fs::metadata(env.host_path(&id, "opt/x/y"))
            .unwrap()
            .uid(),
        sandpit_runtime::local::DEFAULT_FIRST_UID + 1000
    );

    // The image is untouched; the changes are in the writable layer.
    assert!(image_ls.exists());
    assert_eq!(std::fs::metadata(&image_ls).unwrap().ino(), before.ino());
    assert!(!env.rootfs.join("etc/sandpit-test").exists());
    assert_eq!(
        std::fs::read_to_string(env.host_path(&id, "etc/sandpit-test")).unwrap(),
        "new\n"
    );
    // Image files appear owned by sandbox root.
    assert_eq!(
        ok(s, "stat -c %u:%g /usr/bin/env /etc/passwd").await,
        "0:0\n0:0"
    );

    // /dev is the small private one.
    let dev = ok(s, "ls /dev | sort | tr '\\n' ' '").await;
    for node in [
        "full", "null", "ptmx", "pts", "random", "shm", "tty", "urandom", "zero",
    ] {
        assert!(dev.split(' ').any(|d| d == node), "{node} missing in {dev}");
    }
    assert_eq!(
        ok(s, "echo x > /dev/null && head -c 4 /dev/zero | wc -c").await,
        "4"
    );
    assert_eq!(
        ok(s, "echo shm > /dev/shm/f && cat /dev/shm/f").await,
        "shm"
    );
    env.driver.destroy(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_hardening_seccomp_caps_nnp() {
    let Some(env) = Env::new() else { return };
    let id = unique_id("sec");
    let started = env.start(&env.spec(&id)).await;
    let s = &started;

    let status = ok(s, "cat /proc/self/status").await;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Seccomp:"), "2");
    // Docker's default capability set.
    assert_eq!(field("CapBnd:"), "00000000a80425fb");
    assert_eq!(field("CapEff:"), "00000000a80425fb");
    assert_eq!(field("CapAmb:"), "0000000000000000");

    // Denied syscalls fail with EPERM (1): keyctl, bpf, userfaultfd, perf_event_open, io_uring_setup.
    for (name, nr) in [
        ("keyctl", 250),
        ("bpf", 321),
        ("userfaultfd", 323),
        ("perf_event_open", 298),
        ("io_uring_setup", 425),
    ] {
        let out = ok(
            s,
            &format!("perl -e '$r = syscall({nr}, 0, 0, 0, 0, 0); print $r, \" \", $!+0'"),
        )
        .await;
        assert_eq!(out, "-1 1", "{name}");
    }
    // getpid still works; clone3 is ENOSYS (38) so libc falls back to clone.
    assert_ne!(ok(s, "perl -e 'print syscall(39)'").await, "-1");
    assert_eq!(
        ok(
            s,
            "perl -e '$r = syscall(435, 0, 0); print $r, \" \", $!+0'"
        )
        .await,
        "-1 38"
    );

    // The init (agent) is not dumpable: sandboxed code cannot read its memory or environment.
    assert_ne!(exec(s, "cat /proc/1/environ").await.0, 0);
    assert_ne!(exec(s, "head -c 1 /proc/1/mem").await.0, 0);

    // Namespaces and mounts cannot be created.
    assert_ne!(exec(s, "unshare -U true").await.0, 0);
    assert_ne!(exec(s, "mount -t tmpfs x /mnt").await.0, 0);
    // Masked and read-only /proc paths.
    assert_ne!(exec(s, "echo 1 > /proc/sys/kernel/hostname").await.0, 0);
    ok(
        s,
        "test ! -e /proc/kcore || test $(wc -c < /proc/kcore) = 0",
    )
    .await;
    // rlimits.
    assert_eq!(ok(s, "ulimit -c").await, "0");
    let nofile: u64 = ok(s, "ulimit -n").await.parse().unwrap();
    assert!(nofile > 1024, "nofile {nofile}");
    env.driver.destroy(&id).await.unwrap();
}
