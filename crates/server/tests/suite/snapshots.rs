//! Snapshots and forks end to end through the HTTP API, on real sandboxes: children of a fork
//! of a 1 GiB workspace see the parent's files (owners included), their writes are private,
//! the parent keeps working; snapshot list/get/delete, create-from-snapshot, deletion refused
//! while in use, layer chains squashed past the depth limit; and the attacks: another tenant's
//! key cannot snapshot, fork, read, delete or use a snapshot, and forking cannot pass a quota.

use std::time::Instant;

use reqwest::Method;
use serde_json::{Value, json};

use super::e2e::Real;
use super::{assert_error, created_key, key_request};

/// A key of a new tenant.
async fn tenant(rs: &Real, name: &str) -> String {
    created_key(rs.call(Method::POST, "/v1/keys", key_request(name)).await)
}

async fn run(rs: &Real, key: &str, id: &str, command: &str) -> Value {
    let (s, b) = rs.exec_as(key, id, command).await;
    assert_eq!(s, 200, "{id}: {command}: {b}");
    b
}

/// stdout of a command that must succeed.
async fn out(rs: &Real, key: &str, id: &str, command: &str) -> String {
    let b = run(rs, key, id, command).await;
    assert_eq!(b["exitCode"], 0, "{id}: {command}: {b}");
    b["stdout"].as_str().unwrap_or_default().to_owned()
}

/// Whether `path` exists in sandbox `id`.
async fn exists(rs: &Real, key: &str, id: &str, path: &str) -> bool {
    run(rs, key, id, &format!("test -e {path}")).await["exitCode"] == 0
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_fork_of_a_1gib_workspace() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let key = tenant(&rs, "forker").await;
    rs.create_as(
        &key,
        json!({"id": "parent", "keepAlive": true, "labels": {"team": "a"}}),
    )
    .await;
    // 1 GiB of workspace, a file owned by a non-root user, and a deleted image file.
    out(
        &rs,
        &key,
        "parent",
        "head -c 1073741824 /dev/zero > /workspace/big && echo parent-data > /workspace/f \
         && echo mine > /workspace/owned && chown 1000:1000 /workspace/owned \
         && rm /etc/issue",
    )
    .await;

    let started = Instant::now();
    let (s, b) = rs
        .call_as(
            &key,
            Method::POST,
            "/v1/sandboxes/parent/fork",
            json!({"ids": ["kid-a", "kid-b"]}),
        )
        .await;
    let forked_in = started.elapsed();
    assert_eq!(s, 201, "{b}");
    eprintln!("fork of 1 GiB into 2 children: {forked_in:?}");
    let kids: Vec<&str> = b["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["kid-a", "kid-b"]);
    for kid in b["sandboxes"].as_array().unwrap() {
        assert_eq!(kid["state"], "running", "{kid}");
        assert_eq!(kid["labels"]["team"], "a", "labels are inherited: {kid}");
    }
    let snapshot = b["snapshot"]["id"].as_str().unwrap().to_owned();
    assert_eq!(b["snapshot"]["sandboxId"], "parent");
    assert!(
        b["snapshot"]["sizeBytes"].as_u64().unwrap() >= 1 << 30,
        "{b}"
    );

    // Children see the parent's files, with their owners, and its deletions.
    for kid in ["kid-a", "kid-b"] {
        assert_eq!(
            out(&rs, &key, kid, "stat -c %s /workspace/big").await,
            "1073741824\n"
        );
        assert_eq!(
            out(&rs, &key, kid, "cat /workspace/f").await,
            "parent-data\n"
        );
        assert_eq!(
            out(
                &rs,
                &key,
                kid,
                "stat -c '%u:%g' /workspace/owned /workspace/f"
            )
            .await,
            "1000:1000\n0:0\n",
            "owners shifted into {kid}'s own uid range"
        );
        assert!(!exists(&rs, &key, kid, "/etc/issue").await);
        // The file is writable by its owner inside the child (copy-up).
        let (s, b) = rs
            .exec_as(
                &key,
                kid,
                "setpriv --reuid=1000 --regid=1000 --keep-groups sh -c 'echo more >> /workspace/owned' && cat /workspace/owned",
            )
            .await;
        assert_eq!(
            (s, b["stdout"].as_str()),
            (200, Some("mine\nmore\n")),
            "{b}"
        );
    }

    // Writes are private: each child's, and the parent's after the fork.
    out(
        &rs,
        &key,
        "kid-a",
        "echo a > /workspace/only-a && rm /workspace/big",
    )
    .await;
    out(&rs, &key, "parent", "echo p > /workspace/only-parent").await;
    assert!(exists(&rs, &key, "kid-a", "/workspace/only-a").await);
    assert!(!exists(&rs, &key, "kid-b", "/workspace/only-a").await);
    assert!(!exists(&rs, &key, "parent", "/workspace/only-a").await);
    assert!(!exists(&rs, &key, "kid-a", "/workspace/only-parent").await);
    assert!(!exists(&rs, &key, "kid-b", "/workspace/only-parent").await);
    assert!(exists(&rs, &key, "kid-b", "/workspace/big").await);
    assert!(exists(&rs, &key, "parent", "/workspace/big").await);
    assert_eq!(
        out(&rs, &key, "kid-a", "cat /workspace/owned").await,
        "mine\nmore\n"
    );
    assert_eq!(
        out(&rs, &key, "parent", "cat /workspace/owned").await,
        "mine\n",
        "the children's copy-ups never reach the parent"
    );

    // The parent keeps working, across sleep and wake too, with everything it had.
    let (_, b) = rs
        .call_as(&key, Method::GET, "/v1/sandboxes/parent", Value::Null)
        .await;
    assert_eq!(b["state"], "running", "woken after the fork: {b}");
    let (s, _) = rs
        .call_as(&key, Method::POST, "/v1/sandboxes/parent/stop", json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        out(
            &rs,
            &key,
            "parent",
            "cat /workspace/f /workspace/only-parent"
        )
        .await,
        "parent-data\np\n"
    );

    // The snapshot: listed, readable, usable, and not deletable while children use it.
    let (s, b) = rs
        .call_as(&key, Method::GET, "/v1/snapshots", Value::Null)
        .await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = b["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [snapshot.as_str()]);
    let (s, b) = rs
        .call_as(
            &key,
            Method::GET,
            &format!("/v1/snapshots/{snapshot}"),
            Value::Null,
        )
        .await;
    assert_eq!(
        (s, b["name"].as_str()),
        (200, Some("fork of parent")),
        "{b}"
    );
    rs.create_as(&key, json!({"id": "from-snap", "snapshot": snapshot}))
        .await;
    assert_eq!(
        out(&rs, &key, "from-snap", "cat /workspace/f").await,
        "parent-data\n"
    );
    assert!(!exists(&rs, &key, "from-snap", "/workspace/only-parent").await);
    // Create-or-get: the same request again is the same sandbox; another snapshot conflicts.
    let (s, _) = rs
        .call_as(
            &key,
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "from-snap", "snapshot": snapshot}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, b) = rs
        .call_as(
            &key,
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "parent", "snapshot": snapshot}),
        )
        .await;
    assert_error(s, &b, 409, "SANDBOX_CONFLICT");

    let path = format!("/v1/snapshots/{snapshot}");
    let (s, b) = rs.call_as(&key, Method::DELETE, &path, Value::Null).await;
    assert_error(s, &b, 409, "SNAPSHOT_IN_USE");
    assert_eq!(
        b["context"]["sandboxes"],
        json!(["from-snap", "kid-a", "kid-b"])
    );
    for kid in ["kid-a", "kid-b", "from-snap"] {
        let r = rs
            .req_as(&key, Method::DELETE, &format!("/v1/sandboxes/{kid}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let r = rs.req_as(&key, Method::DELETE, &path).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let (s, b) = rs.call_as(&key, Method::GET, &path, Value::Null).await;
    assert_error(s, &b, 404, "SNAPSHOT_NOT_FOUND");

    // The parent still stands on the frozen layer; once it is gone, so is every layer.
    assert_eq!(
        out(&rs, &key, "parent", "stat -c %s /workspace/big").await,
        "1073741824\n"
    );
    let layers = rs.data_dir.join("layers");
    assert_eq!(std::fs::read_dir(&layers).unwrap().count(), 1);
    let r = rs
        .req_as(&key, Method::DELETE, "/v1/sandboxes/parent")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        std::fs::read_dir(&layers).unwrap().count(),
        0,
        "unused layers are deleted"
    );
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_snapshot_chain_is_squashed_past_the_depth_limit() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let key = tenant(&rs, "chain").await;
    rs.create_as(&key, json!({"id": "c"})).await;
    let mut first = String::new();
    let depth = sandpit_runtime::layers::MAX_DEPTH + 3;
    for i in 0..depth {
        // Each round: a new file, the previous one deleted (a whiteout in the next layer),
        // and one file rewritten.
        out(
            &rs,
            &key,
            "c",
            &format!(
                "echo {i} > /workspace/f{i} && rm -f /workspace/f{} && echo {i} > /workspace/last",
                i.wrapping_sub(1)
            ),
        )
        .await;
        let (s, b) = rs
            .call_as(
                &key,
                Method::POST,
                "/v1/sandboxes/c/snapshots",
                json!({"name": format!("round {i}")}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        if i == 0 {
            first = b["id"].as_str().unwrap().to_owned();
        }
    }
    // The sandbox's stack stays within the limit.
    let stacks: Vec<usize> = std::fs::read_dir(rs.data_dir.join("sandboxes"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("layers")).ok())
        .map(|s| s.lines().count())
        .collect();
    assert_eq!(stacks.len(), 1);
    assert!(
        (1..=sandpit_runtime::layers::MAX_DEPTH).contains(&stacks[0]),
        "stack of {} layers",
        stacks[0]
    );
    let last = depth - 1;
    assert_eq!(
        out(&rs, &key, "c", "ls /workspace; cat /workspace/last").await,
        format!("f{last}\nlast\n{last}\n"),
        "squashed layers show what the chain showed (deletions included)"
    );
    // The first snapshot keeps its own state.
    rs.create_as(&key, json!({"id": "old", "snapshot": first}))
        .await;
    assert_eq!(
        out(&rs, &key, "old", "ls /workspace; cat /workspace/last").await,
        "f0\nlast\n0\n"
    );
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_snapshot_attacks_and_quota() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let alpha = tenant(&rs, "alpha").await;
    let beta = tenant(&rs, "beta").await;
    let (s, b) = rs
        .call(
            Method::PUT,
            "/v1/tenants/alpha/quota",
            json!({"sandboxes": 3}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    for (key, secret) in [(&alpha, "alpha-secret"), (&beta, "beta-data")] {
        rs.create_as(key, json!({"id": "box"})).await;
        out(&rs, key, "box", &format!("echo {secret} > /workspace/s")).await;
    }
    let (s, b) = rs
        .call_as(
            &alpha,
            Method::POST,
            "/v1/sandboxes/box/snapshots",
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let snap = b["id"].as_str().unwrap().to_owned();

    // beta cannot see, read, delete or use alpha's snapshot.
    let path = format!("/v1/snapshots/{snap}");
    let (s, b) = rs.call_as(&beta, Method::GET, &path, Value::Null).await;
    assert_error(s, &b, 404, "SNAPSHOT_NOT_FOUND");
    let (s, b) = rs.call_as(&beta, Method::DELETE, &path, Value::Null).await;
    assert_error(s, &b, 404, "SNAPSHOT_NOT_FOUND");
    let (s, b) = rs
        .call_as(&beta, Method::GET, "/v1/snapshots", Value::Null)
        .await;
    assert_eq!((s, b["snapshots"].clone()), (200, json!([])));
    let (s, b) = rs
        .call_as(
            &beta,
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "steal", "snapshot": snap}),
        )
        .await;
    assert_error(s, &b, 404, "SNAPSHOT_NOT_FOUND");
    let (s, b) = rs
        .call_as(&beta, Method::GET, "/v1/sandboxes/steal", Value::Null)
        .await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
    // beta's "box" is its own: snapshotting or forking it never reaches alpha's files.
    let (s, b) = rs
        .call_as(
            &beta,
            Method::POST,
            "/v1/sandboxes/box/fork",
            json!({"ids": ["bk"]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        out(&rs, &beta, "bk", "cat /workspace/s").await,
        "beta-data\n"
    );
    // An id alpha does not have is not found for beta's key either way.
    let (s, b) = rs
        .call_as(&alpha, Method::POST, "/v1/sandboxes/bk/fork", json!({}))
        .await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
    let (s, b) = rs
        .call_as(
            &alpha,
            Method::POST,
            "/v1/sandboxes/bk/snapshots",
            json!({}),
        )
        .await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");

    // Bad input.
    for (body, why) in [
        (json!({"count": 0}), "count 0"),
        (json!({"count": 33}), "count above the cap"),
        (json!({"count": 2, "ids": ["x"]}), "count and ids disagree"),
        (json!({"ids": ["x", "x"]}), "duplicate ids"),
        (json!({"ids": ["box"]}), "the parent's own id"),
        (json!({"ids": ["-bad"]}), "an invalid id"),
        (json!({"cnt": 1}), "an unknown field"),
    ] {
        let (s, b) = rs
            .call_as(&alpha, Method::POST, "/v1/sandboxes/box/fork", body)
            .await;
        assert_error(s, &b, 400, "VALIDATION_FAILED");
        eprintln!("refused {why}: {}", b["message"]);
    }
    let (s, b) = rs
        .call_as(
            &alpha,
            Method::POST,
            "/v1/sandboxes/box/snapshots",
            json!({"name": "bad\u{7}name"}),
        )
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");

    // alpha's quota is 3 sandboxes: "box" + 2 is the most a fork can reach; 3 children are
    // refused as a whole, leaving no child and no snapshot behind.
    let (s, b) = rs
        .call_as(
            &alpha,
            Method::POST,
            "/v1/sandboxes/box/fork",
            json!({"count": 3}),
        )
        .await;
    assert_error(s, &b, 429, "QUOTA_EXCEEDED");
    let (_, b) = rs
        .call_as(&alpha, Method::GET, "/v1/sandboxes", Value::Null)
        .await;
    assert_eq!(b["sandboxes"].as_array().unwrap().len(), 1, "{b}");
    let (_, b) = rs
        .call_as(&alpha, Method::GET, "/v1/snapshots", Value::Null)
        .await;
    assert_eq!(b["snapshots"].as_array().unwrap().len(), 1, "{b}");
    let (s, b) = rs
        .call_as(
            &alpha,
            Method::POST,
            "/v1/sandboxes/box/fork",
            json!({"count": 2}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    for kid in b["sandboxes"].as_array().unwrap() {
        let kid = kid["id"].as_str().unwrap();
        assert_eq!(
            out(&rs, &alpha, kid, "cat /workspace/s").await,
            "alpha-secret\n"
        );
    }

    // Sandboxes whose writable layer cannot be frozen say so.
    rs.create_as(&beta, json!({"id": "eph", "ephemeral": true}))
        .await;
    let (s, b) = rs
        .call_as(
            &beta,
            Method::POST,
            "/v1/sandboxes/eph/snapshots",
            json!({}),
        )
        .await;
    assert_error(s, &b, 400, "SNAPSHOT_UNSUPPORTED");
    rs.create_as(&beta, json!({"id": "disk", "limits": {"diskMb": 32}}))
        .await;
    let (s, b) = rs
        .call_as(&beta, Method::POST, "/v1/sandboxes/disk/fork", json!({}))
        .await;
    assert_error(s, &b, 400, "SNAPSHOT_UNSUPPORTED");
    if Real::tiers().contains(&sandpit_protocol::control::Isolation::Gvisor) {
        rs.create_as(&beta, json!({"id": "gv", "isolation": "gvisor"}))
            .await;
        let (s, b) = rs
            .call_as(&beta, Method::POST, "/v1/sandboxes/gv/snapshots", json!({}))
            .await;
        assert_error(s, &b, 400, "SNAPSHOT_UNSUPPORTED");
        assert!(b["message"].as_str().unwrap().contains("isolation"), "{b}");
    }
    rs.stop().await;
}
