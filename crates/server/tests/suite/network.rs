//! Sandbox networking end to end (real server, LocalDriver, agent): the `full` mode through the
//! API (create, PATCH at run time, sleep and wake), the `none` mode's loopback-only namespace,
//! and the in-sandbox egress bridge at 127.0.0.1:3128.
//!
//! Traffic goes only to loopback and to a network namespace the test creates.

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::Method;
use sandpit_runtime::testnet::{TestNet, connect_command, count_accepts};
use serde_json::{Value, json};

use super::e2e::Real;

fn have_full_mode_tools() -> bool {
    let ok = ["/usr/bin/slirp4netns", "/usr/sbin/nft"]
        .iter()
        .all(|p| std::path::Path::new(p).exists());
    if !ok {
        eprintln!("\n!!! SKIPPED: needs slirp4netns and nft (scripts/test.sh installs them) !!!\n");
    }
    ok
}

async fn stdout(rs: &Real, id: &str, command: &str) -> String {
    let out = rs.exec(id, command).await;
    assert_eq!(out["exitCode"], 0, "`{command}`: {out}");
    out["stdout"].as_str().unwrap_or_default().trim().to_owned()
}

async fn interfaces(rs: &Real, id: &str) -> String {
    stdout(
        rs,
        id,
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '",
    )
    .await
}

async fn patch_network(rs: &Real, id: &str, network: Value) {
    let (s, b) = rs
        .call(
            Method::PATCH,
            &format!("/v1/sandboxes/{id}"),
            json!({ "network": network }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["network"]["mode"], network["mode"], "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_network_full_mode_reaches_only_allowed_cidrs() {
    if !have_full_mode_tools() {
        return;
    }
    let Some(rs) = Real::start().await else {
        return;
    };
    let net = TestNet::create().unwrap();
    let outside = count_accepts(net.listen(7101).unwrap());
    let lo = TcpListener::bind("127.0.0.1:0").unwrap();
    let lo_port = lo.local_addr().unwrap().port();
    let on_loopback = count_accepts(lo);

    // Created in full mode, nothing allowed: private and host destinations are refused.
    let body = json!({"id": "net-full", "network": {"mode": "full"}});
    let (s, b) = rs.call(Method::POST, "/v1/sandboxes", body).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["network"]["mode"], "full", "{b}");
    assert_eq!(interfaces(&rs, "net-full").await, "lo tap0");
    assert_eq!(
        stdout(&rs, "net-full", "cat /etc/resolv.conf").await,
        "nameserver 10.0.2.3"
    );
    for (addr, port) in [
        (net.inner.to_string(), 7101),
        ("10.0.2.2".to_string(), lo_port),
        (net.host.to_string(), lo_port),
    ] {
        let got = stdout(&rs, "net-full", &connect_command(&addr, port)).await;
        assert_eq!(got, "refused", "{addr}:{port}");
    }
    assert_eq!(outside.load(Ordering::SeqCst), 0);

    // Allowed at run time.
    let allowed = json!({"mode": "full", "allow": [net.cidr()]});
    patch_network(&rs, "net-full", allowed.clone()).await;
    let got = stdout(&rs, "net-full", &connect_command(net.inner, 7101)).await;
    assert_eq!(got, "hello");
    assert_eq!(outside.load(Ordering::SeqCst), 1);

    // Sleep and wake: the stored policy is applied at start.
    let (s, b) = rs
        .call(Method::POST, "/v1/sandboxes/net-full/stop", json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    let got = stdout(&rs, "net-full", &connect_command(net.inner, 7101)).await;
    assert_eq!(got, "hello");
    assert_eq!(outside.load(Ordering::SeqCst), 2);

    // none: only loopback is left, the outside is unreachable.
    patch_network(&rs, "net-full", json!({"mode": "none"})).await;
    assert_eq!(interfaces(&rs, "net-full").await, "lo");
    let got = stdout(&rs, "net-full", &connect_command(net.inner, 7101)).await;
    assert_eq!(got, "refused");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(outside.load(Ordering::SeqCst), 2);
    assert_eq!(
        on_loopback.load(Ordering::SeqCst),
        0,
        "host loopback reached"
    );
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_network_none_has_loopback_and_the_egress_bridge() {
    for tier in Real::tiers() {
        let Some(rs) = Real::start_tier(tier).await else {
            return;
        };
        let (s, b) = rs
            .call(Method::POST, "/v1/sandboxes", json!({"id": "net-none"}))
            .await;
        assert_eq!(s, 201, "{b}");
        assert_eq!(interfaces(&rs, "net-none").await, "lo");
        assert_eq!(
            stdout(&rs, "net-none", "echo $HTTP_PROXY $no_proxy").await,
            "http://127.0.0.1:3128 localhost,127.0.0.1,::1"
        );
        // The agent's bridge answers on 127.0.0.1:3128 and hands the request to the server's
        // egress proxy, which refuses it in mode none.
        let out = stdout(
            &rs,
            "net-none",
            "curl -s -o /dev/null -w '%{http_code}' http://blocked.example.test/",
        )
        .await;
        assert_eq!(out, "403");
        rs.stop().await;
    }
}

/// ATTACK (issue 9), `full` mode: a tenant key's CIDR does not open a private range in the
/// firewall (before, any CIDR of the policy went into the nftables allow set); the same policy
/// set by the admin key does.
#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_full_mode_tenant_cidr_opens_no_private_range() {
    if !have_full_mode_tools() {
        return;
    }
    let Some(rs) = Real::start().await else {
        return;
    };
    let net = TestNet::create().unwrap();
    let outside = count_accepts(net.listen(7102).unwrap());
    let tenant = rs.create_key("net-tenant").await;
    let body = json!({"id": "net-grant", "network": {"mode": "full", "allow": [net.cidr()]}});
    let (s, b) = rs
        .call_as(&tenant, Method::POST, "/v1/sandboxes", body.clone())
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, out) = rs
        .exec_as(&tenant, "net-grant", &connect_command(net.inner, 7102))
        .await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out["stdout"].as_str().unwrap().trim(), "refused", "{out}");
    assert_eq!(outside.load(Ordering::SeqCst), 0);

    // The operator's own sandbox with the same policy reaches it.
    let (s, b) = rs.call(Method::POST, "/v1/sandboxes", body).await;
    assert_eq!(s, 201, "{b}");
    let got = stdout(&rs, "net-grant", &connect_command(net.inner, 7102)).await;
    assert_eq!(got, "hello");
    assert_eq!(outside.load(Ordering::SeqCst), 1);
    rs.stop().await;
}
