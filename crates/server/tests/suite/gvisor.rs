//! The `gvisor` tier through the public API: what it does like the standard tier is tested by
//! the tests that run once per tier (`Real::tiers`); here are what is its own: the tier is
//! shown, the sandbox runs on gVisor's kernel, limits change live, and what gVisor cannot do is
//! refused with a clear code instead of failing later.

use reqwest::Method;
use sandpit_protocol::control::Isolation;
use serde_json::{Value, json};

use super::e2e::Real;

/// A real server with the gvisor tier, or `None` (skipped, or failed under CI, by `tiers`).
async fn gvisor_server() -> Option<Real> {
    if !Real::tiers().contains(&Isolation::Gvisor) {
        return None;
    }
    Real::start().await
}

async fn create(rs: &Real, body: Value) -> (u16, Value) {
    rs.call(Method::POST, "/v1/sandboxes", body).await
}

/// `memory.limit_in_bytes` of the running gVisor sandbox `id` (its cgroup is
/// `sandpit-gvisor/<id>-…`, the server's internal name, and holds its processes).
fn host_memory_limit(id: &str) -> u64 {
    let prefix = format!("{id}-");
    let found = walk_cgroups(std::path::Path::new("/sys/fs/cgroup/memory"), &prefix)
        .unwrap_or_else(|| panic!("no memory cgroup sandpit-gvisor/{prefix}*"));
    std::fs::read_to_string(found.join("memory.limit_in_bytes"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn walk_cgroups(dir: &std::path::Path, prefix: &str) -> Option<std::path::PathBuf> {
    let in_group = dir
        .parent()
        .is_some_and(|p| p.file_name().is_some_and(|n| n == "sandpit-gvisor"));
    if in_group
        && dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        && std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
    {
        return Some(dir.to_path_buf());
    }
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| walk_cgroups(&e.path(), prefix))
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_gvisor_sandbox_runs_on_gvisor_and_changes_limits_live() {
    let Some(rs) = gvisor_server().await else {
        return;
    };
    let id = "gv-api";
    let (s, b) = create(
        &rs,
        json!({"id": id, "isolation": "gvisor", "keepAlive": true,
               "limits": {"memoryMb": 256, "pids": 64}}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["isolation"], "gvisor");
    let (_, got) = rs
        .call(Method::GET, &format!("/v1/sandboxes/{id}"), Value::Null)
        .await;
    assert_eq!(got["isolation"], "gvisor", "{got}");
    // gVisor's kernel answers, not the host's: its boot messages are gVisor's own.
    let out = rs.exec(id, "dmesg 2>/dev/null | head -1; uname -r").await;
    let host_release = nix::sys::utsname::uname().unwrap();
    assert_ne!(
        out["stdout"].as_str().unwrap().lines().last(),
        host_release.release().to_str(),
        "{out}"
    );
    assert!(out["stdout"].as_str().unwrap().contains("gVisor"), "{out}");
    assert_eq!(host_memory_limit(id), 256 << 20);

    let (s, b) = rs
        .call(
            Method::PATCH,
            &format!("/v1/sandboxes/{id}"),
            json!({"limits": {"memoryMb": 384}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(host_memory_limit(id), 384 << 20);
    // A policy the tier cannot run is refused before it is stored.
    let (s, b) = rs
        .call(
            Method::PATCH,
            &format!("/v1/sandboxes/{id}"),
            json!({"network": {"mode": "full"}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["code"], "VALIDATION_FAILED", "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("network mode full"),
        "{b}"
    );
    let (_, got) = rs
        .call(Method::GET, &format!("/v1/sandboxes/{id}"), Value::Null)
        .await;
    assert_eq!(got["network"]["mode"], "none", "{got}");
    let (s, usage) = rs
        .call(
            Method::GET,
            &format!("/v1/sandboxes/{id}/usage"),
            Value::Null,
        )
        .await;
    assert_eq!(s, 200, "{usage}");
    assert!(usage["memoryBytes"].as_u64().unwrap() > 0, "{usage}");
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_gvisor_refuses_what_it_cannot_do_at_create() {
    let Some(rs) = gvisor_server().await else {
        return;
    };
    for (id, extra, needle) in [
        (
            "gv-full",
            json!({"network": {"mode": "full"}}),
            "network mode full",
        ),
        ("gv-disk", json!({"limits": {"diskMb": 64}}), "diskMb"),
        ("gv-tiny", json!({"limits": {"memoryMb": 32}}), "memoryMb"),
    ] {
        let mut body = json!({"id": id, "isolation": "gvisor"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, b) = create(&rs, body).await;
        assert_eq!(s, 400, "{id}: {b}");
        assert_eq!(b["code"], "VALIDATION_FAILED", "{id}: {b}");
        assert!(b["message"].as_str().unwrap().contains(needle), "{id}: {b}");
    }
    rs.stop().await;
}
