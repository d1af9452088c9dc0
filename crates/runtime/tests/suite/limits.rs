//! cgroup limits: written where expected and enforced.

use std::time::Duration;

use sandpit_runtime::Driver;

use super::harness::{Env, exec, ok, unique_id};

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_limits_are_applied_and_enforced() {
    let Some(env) = Env::new() else { return };
    let id = unique_id("lim");
    let mut spec = env.spec(&id);
    spec.limits.memory_mb = Some(64);
    spec.limits.pids = Some(32);
    spec.limits.cpus = Some(0.5);
    let started = env.start(&spec).await;
    let s = &started;

    let cg = env.driver.cgroups();
    let dirs = cg.dirs(&id);
    let find = |file: &str| {
        dirs.iter()
            .map(|d| d.join(file))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{file} not found in {dirs:?}"))
    };
    if cg.kind() == "v1-hybrid" {
        assert_eq!(
            read(&find("memory.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        assert_eq!(read(&find("pids.max")), "32");
        assert_eq!(read(&find("cpu.cfs_quota_us")), "50000");
        assert_eq!(read(&find("cpu.cfs_period_us")), "100000");
    } else {
        assert_eq!(read(&find("memory.max")), (64u64 << 20).to_string());
        assert_eq!(read(&find("cpu.max")), "50000 100000");
    }
    // Every process of the sandbox is in every cgroup, and sees only its own cgroup namespace.
    for dir in &dirs {
        let procs = read(&dir.join("cgroup.procs"));
        assert!(
            procs.lines().any(|p| p == started.pid.to_string()),
            "{}",
            dir.display()
        );
    }
    assert!(
        ok(s, "cat /proc/self/cgroup")
            .await
            .lines()
            .all(|l| l.ends_with(":/"))
    );

    // Memory bomb: killed by the OOM killer inside the cgroup; the sandbox lives on.
    let (code, out) = exec(
        s,
        "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
    )
    .await;
    assert!(!out.contains("survived"), "memory bomb survived: {out}");
    assert_ne!(code, 0);
    assert_eq!(ok(s, "echo alive").await, "alive");

    // Fork bomb: capped by pids.max.
    let (_, out) = exec(
        s,
        "n=0; for i in $(seq 60); do sleep 2 >/dev/null 2>&1 & n=$((n+1)); done 2>/dev/null; echo tried $n",
    )
    .await;
    let _ = out;
    let events = if cg.kind() == "v1-hybrid" {
        read(&find("pids.events"))
    } else {
        String::new()
    };
    let count = cg.pids(&id).unwrap().len();
    assert!(count <= 32, "{count} processes despite pids.max 32");
    if !events.is_empty() {
        let max: u64 = events.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(max > 0, "pids.events: {events}");
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(ok(s, "echo recovered").await, "recovered");

    env.driver.destroy(&id).await.unwrap();
}

/// Informational: host memory charged to an idle sandbox (kernel objects + the probe as init).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_idle_footprint() {
    let Some(env) = Env::new() else { return };
    let id = unique_id("mem");
    let started = env.start(&env.spec(&id)).await;
    ok(&started, "true").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cg = env.driver.cgroups();
    let usage = cg
        .dirs(&id)
        .iter()
        .map(|d| d.join("memory.usage_in_bytes"))
        .chain(cg.dirs(&id).iter().map(|d| d.join("memory.current")))
        .find(|p| p.exists())
        .map(|p| read(&p).parse::<u64>().unwrap())
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", started.pid)).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or_default()
        .to_string();
    eprintln!(
        "FOOTPRINT idle sandbox: cgroup memory {} KiB, init {rss}",
        usage / 1024
    );
    assert!(usage < 64 << 20, "idle sandbox uses {usage} bytes");
    env.driver.destroy(&id).await.unwrap();
}

fn meminfo_kib(keys: &[&str]) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .filter(|l| keys.iter().any(|k| l.starts_with(&format!("{k}:"))))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Informational: kernel memory per idle sandbox (unreclaimable slab, per-cpu, stacks, page
/// tables), from /proc/meminfo deltas over 16 sandboxes. Noisy on a busy host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_kernel_footprint() {
    let Some(env) = Env::new() else { return };
    let keys = ["SUnreclaim", "Percpu", "KernelStack", "PageTables"];
    let n = 16u32;
    let before = meminfo_kib(&keys);
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = unique_id("kmem");
        let started = env.start(&env.spec(&id)).await;
        ok(&started, "true").await;
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = meminfo_kib(&keys);
    eprintln!(
        "FOOTPRINT kernel per idle sandbox ({keys:?}): {} KiB",
        after.saturating_sub(before) / u64::from(n)
    );
    for id in &ids {
        env.driver.destroy(id).await.unwrap();
    }
}
