//! Bucket mounts end to end: a real sandbox, a real S3 server on loopback
//! (`sandpit-s3-test-server`: s3s + s3s-fs), objects put and read from outside with a plain S3
//! client (curl's SigV4). The credentials must never be visible inside the sandbox.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use sandpit_s3_test_server::S3TestServer;
use serde_json::{Value, json};

use super::e2e::Real;
use super::{assert_error, eventually};

const BUCKET: &str = "mount-bucket";

fn put_object(s3: &S3TestServer, key: &str, body: &[u8]) {
    let mut child = s3
        .curl()
        .args(["-X", "PUT", "--data-binary", "@-"])
        .arg(format!("{}/{BUCKET}/{key}", s3.endpoint))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "PUT {key}: {out:?}");
}

fn get_object(s3: &S3TestServer, key: &str) -> Option<Vec<u8>> {
    let out = s3
        .curl()
        .arg(format!("{}/{BUCKET}/{key}", s3.endpoint))
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

/// Host processes whose command line mentions `needle` (the s3fs of a data dir).
fn host_processes(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let argv0 = text.split(' ').next().unwrap_or_default();
        if argv0.ends_with("s3fs") && text.contains(needle) {
            found.push(text);
        }
    }
    found
}

fn host_mounts_mention(needle: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .contains(needle)
}

fn mount_body(s3: &S3TestServer, path: &str, extra: Value) -> Value {
    let mut body = json!({
        "bucket": BUCKET,
        "mountPath": path,
        "endpoint": s3.endpoint,
        "credentials": {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key},
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn start(s3: &S3TestServer) -> Option<Real> {
    let endpoint = s3.endpoint.clone();
    Real::start_with(move |c| c.mount_endpoints = vec![endpoint]).await
}

fn stdout(out: &Value) -> &str {
    out["stdout"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_bucket_mount_roundtrip_sleep_wake_destroy() {
    let s3_dir = tempfile::tempdir().unwrap();
    let s3 = sandpit_s3_test_server::start(s3_dir.path()).unwrap();
    s3.create_bucket(BUCKET).unwrap();
    let Some(rs) = start(&s3).await else {
        return;
    };
    let needle = rs.data_dir.to_string_lossy().into_owned();
    let id = "e2e-mount";
    rs.create(json!({"id": id, "keepAlive": true})).await;
    put_object(&s3, "data/from-outside.txt", b"outside\n");
    put_object(&s3, "other/not-yours.txt", b"hidden\n");

    // prefix /data: only objects under data/ show, relative to it.
    let path = format!("/v1/sandboxes/{id}/mounts");
    let (s, b) = rs
        .call(
            Method::POST,
            &path,
            mount_body(&s3, "/mnt/b", json!({"prefix": "/data"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["mounted"], true, "{b}");
    assert!(!b.to_string().contains(&s3.secret_key), "{b}");

    let out = rs
        .exec(
            id,
            "cat /mnt/b/from-outside.txt; ls -a /mnt/b; stat -c '%u:%g' /mnt/b",
        )
        .await;
    assert_eq!(out["exitCode"], 0, "{out}");
    assert!(stdout(&out).starts_with("outside\n"), "{out}");
    assert!(!stdout(&out).contains("not-yours"), "{out}");
    assert!(!stdout(&out).contains("other"), "{out}");
    assert!(
        stdout(&out).ends_with("0:0\n"),
        "owned by the sandbox's root: {out}"
    );

    // Written inside → the object appears (under the prefix), owned by the sandbox's root.
    let out = rs
        .exec(
            id,
            "echo inside > /mnt/b/new.txt && mkdir -p /mnt/b/dir && echo deep > /mnt/b/dir/f && \
             stat -c '%u' /mnt/b/new.txt",
        )
        .await;
    assert_eq!(
        (out["exitCode"].as_i64(), stdout(&out)),
        (Some(0), "0\n"),
        "{out}"
    );
    assert_eq!(
        get_object(&s3, "data/new.txt").as_deref(),
        Some(&b"inside\n"[..])
    );
    assert_eq!(
        get_object(&s3, "data/dir/f").as_deref(),
        Some(&b"deep\n"[..])
    );
    // Put from outside after the mount → visible inside.
    put_object(&s3, "data/later.txt", b"later\n");
    let out = rs.exec(id, "cat /mnt/b/later.txt").await;
    assert_eq!(stdout(&out), "later\n", "{out}");

    // Read-only mount of the whole bucket: reads work, writes fail with EROFS.
    let (s, b) = rs
        .call(
            Method::POST,
            &path,
            mount_body(&s3, "/mnt/ro", json!({"readOnly": true})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let out = rs
        .exec(
            id,
            "cat /mnt/ro/data/from-outside.txt; echo x > /mnt/ro/data/w 2>&1; \
             touch /mnt/ro/t 2>&1; mkdir /mnt/ro/d 2>&1; rm /mnt/ro/data/new.txt 2>&1; true",
        )
        .await;
    // (bash reports the failed redirection on its own stderr)
    let text = format!(
        "{}{}",
        stdout(&out),
        out["stderr"].as_str().unwrap_or_default()
    );
    assert!(text.starts_with("outside\n"), "{out}");
    assert_eq!(text.matches("Read-only file system").count(), 4, "{out}");
    assert_eq!(get_object(&s3, "data/w"), None);
    assert!(get_object(&s3, "data/new.txt").is_some());

    // The secret is nowhere inside: no file, environment, argument. (The pattern reaches grep
    // in two halves joined through a pipe, so the search itself puts it in no argv; the
    // /proc/*/pagemap files are left out: they are hundreds of GiB of page-frame numbers,
    // never file or memory contents, and grep would read them for hours.)
    let secret = s3.secret_key.clone();
    // The same search finds a value that is there (a canary in an env var of a running process
    // and in a file), so an empty answer means absent, not a broken search.
    let canary = format!("canary-{}", std::process::id());
    let (c1, c2) = canary.split_at(canary.len() / 2);
    let out = rs
        .exec(
            id,
            &format!(
                "a='{c1}'; b='{c2}'; printf '%s%s' \"$a\" \"$b\" > /workspace/canary.txt; \
                 env CANARY=\"$a$b\" sleep 60 > /dev/null 2>&1 &"
            ),
        )
        .await;
    assert_eq!(out["exitCode"], 0, "{out}");
    let found = |value: &str| {
        let (first, second) = value.split_at(value.len() / 2);
        format!(
            "a='{first}'; b='{second}'; grep -rslF --exclude=pagemap \
             -f <(printf '%s%s' \"$a\" \"$b\") / /proc/*/environ /proc/*/cmdline; \
             echo \"rc=$?\""
        )
    };
    let out = rs.exec(id, &found(&canary)).await;
    assert!(stdout(&out).contains("/workspace/canary.txt\n"), "{out}");
    assert!(stdout(&out).contains("/environ\n"), "{out}");
    let out = rs.exec(id, &found(&secret)).await;
    // grep lists the files holding the secret: none (exit 1, or 2 for unreadable files).
    assert!(
        matches!(stdout(&out), "rc=1\n" | "rc=2\n"),
        "the secret is visible inside: {out}"
    );
    // ... and the listing never answers it.
    let (s, b) = rs.call(Method::GET, &path, Value::Null).await;
    assert_eq!(s, 200, "{b}");
    assert!(!b.to_string().contains(&secret), "{b}");
    let paths: Vec<(&str, bool)> = b["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap(),
                m["mounted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(paths, vec![("/mnt/b", true), ("/mnt/ro", true)], "{b}");
    // ... nor is it in the database in clear.
    for file in std::fs::read_dir(&rs.data_dir).unwrap().flatten() {
        if file.file_name().to_string_lossy().contains(".db") {
            let bytes = std::fs::read(file.path()).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&secret),
                "secret stored in clear in {:?}",
                file.path()
            );
        }
    }
    // s3fs runs on the host (outside the sandbox), and the host keeps no mount of it.
    assert_eq!(
        host_processes(&needle).len(),
        2,
        "{:?}",
        host_processes(&needle)
    );
    assert!(!host_mounts_mention(&needle), "host mount left");

    // Sleep: s3fs goes with the sandbox; wake: the mounts are back.
    let (s, b) = rs
        .call(Method::POST, &format!("/v1/sandboxes/{id}/stop"), json!({}))
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("sleeping")), "{b}");
    let gone = eventually(Duration::from_secs(5), || {
        let needle = needle.clone();
        async move { host_processes(&needle).is_empty() }
    });
    assert!(
        gone.await,
        "s3fs survived sleep: {:?}",
        host_processes(&needle)
    );
    let (_, b) = rs.call(Method::GET, &path, Value::Null).await;
    assert!(
        b["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["mounted"] == false),
        "{b}"
    );
    let out = rs
        .exec(id, "cat /mnt/b/new.txt; echo y > /mnt/ro/y 2>&1; true")
        .await;
    assert!(stdout(&out).starts_with("inside\n"), "{out}");
    assert!(
        out["stderr"]
            .as_str()
            .unwrap_or_default()
            .contains("Read-only file system"),
        "{out}"
    );

    // Unmount: gone inside and from the list; a second unmount says there is none.
    let r = rs
        .req_as(&rs.key, Method::DELETE, &format!("{path}?path=/mnt/ro"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let out = rs
        .exec(id, "grep -c ' /mnt/ro ' /proc/self/mountinfo; ls /mnt/ro")
        .await;
    assert_eq!(stdout(&out), "0\n", "{out}");
    let (s, b) = rs
        .call(Method::DELETE, &format!("{path}?path=/mnt/ro"), Value::Null)
        .await;
    assert_error(s, &b, 400, "INVALID_MOUNT_CONFIG");
    assert_eq!(host_processes(&needle).len(), 1);

    // Destroy: s3fs and every trace of the mount go.
    let (s, b) = rs
        .call(Method::DELETE, &format!("/v1/sandboxes/{id}"), Value::Null)
        .await;
    assert!(s == 200 || s == 204, "{s} {b}");
    let gone = eventually(Duration::from_secs(5), || {
        let needle = needle.clone();
        async move { host_processes(&needle).is_empty() }
    });
    assert!(gone.await, "s3fs survived destroy");
    assert!(!host_mounts_mention(&needle));
    let (s, b) = rs.call(Method::GET, &path, Value::Null).await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
    // The bucket keeps what was written.
    assert_eq!(
        get_object(&s3, "data/new.txt").as_deref(),
        Some(&b"inside\n"[..])
    );
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_bucket_mount_refusals_and_other_tenants() {
    let s3_dir = tempfile::tempdir().unwrap();
    let s3 = sandpit_s3_test_server::start(s3_dir.path()).unwrap();
    s3.create_bucket(BUCKET).unwrap();
    let Some(rs) = start(&s3).await else {
        return;
    };
    let id = "e2e-mount-x";
    let path = format!("/v1/sandboxes/{id}/mounts");
    rs.create(json!({"id": id, "keepAlive": true})).await;

    // Bad input: clear codes, nothing mounted.
    for (body, status, code) in [
        (
            mount_body(&s3, "relative", json!({})),
            400,
            "INVALID_MOUNT_CONFIG",
        ),
        (
            mount_body(&s3, "/proc/x", json!({})),
            400,
            "INVALID_MOUNT_CONFIG",
        ),
        (
            mount_body(&s3, "/mnt/a", json!({"endpoint": "http://127.0.0.1:1"})),
            400,
            "INVALID_MOUNT_CONFIG",
        ),
        (
            mount_body(
                &s3,
                "/mnt/a",
                json!({"endpoint": "https://169.254.169.254"}),
            ),
            400,
            "INVALID_MOUNT_CONFIG",
        ),
        (
            mount_body(&s3, "/mnt/a", json!({"credentials": null})),
            400,
            "MISSING_CREDENTIALS",
        ),
        (
            mount_body(
                &s3,
                "/mnt/a",
                json!({"s3fsOptions": ["passwd_file=/etc/shadow"]}),
            ),
            400,
            "VALIDATION_FAILED",
        ),
    ] {
        let (s, b) = rs.call(Method::POST, &path, body.clone()).await;
        assert_error(s, &b, status, code);
        assert!(!b.to_string().contains(&s3.secret_key), "{b}");
    }
    // Wrong secret: s3fs refuses; the answer carries neither secret.
    let wrong = "wrong-secret-0123456789";
    let mut body = mount_body(&s3, "/mnt/a", json!({}));
    body["credentials"]["secretAccessKey"] = json!(wrong);
    let (s, b) = rs.call(Method::POST, &path, body).await;
    assert_error(s, &b, 500, "S3FS_MOUNT_ERROR");
    assert!(!b.to_string().contains(wrong), "{b}");
    // Missing bucket.
    let mut body = mount_body(&s3, "/mnt/a", json!({}));
    body["bucket"] = json!("no-such-bucket");
    let (s, b) = rs.call(Method::POST, &path, body).await;
    assert_error(s, &b, 500, "S3FS_MOUNT_ERROR");
    let (_, b) = rs.call(Method::GET, &path, Value::Null).await;
    assert_eq!(b["mounts"], json!([]), "{b}");

    // A good mount; the same path again is refused.
    let (s, b) = rs
        .call(Method::POST, &path, mount_body(&s3, "/mnt/a", json!({})))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = rs
        .call(Method::POST, &path, mount_body(&s3, "/mnt/a/", json!({})))
        .await;
    assert_error(s, &b, 400, "INVALID_MOUNT_CONFIG");

    // Another tenant's key: cannot list, unmount or mount into it.
    let other = rs.create_key("tenant-other").await;
    let (s, b) = rs.call_as(&other, Method::GET, &path, Value::Null).await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
    let (s, b) = rs
        .call_as(
            &other,
            Method::DELETE,
            &format!("{path}?path=/mnt/a"),
            Value::Null,
        )
        .await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
    let (s, b) = rs
        .call_as(
            &other,
            Method::POST,
            &path,
            mount_body(&s3, "/mnt/z", json!({})),
        )
        .await;
    assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
    // The owner's mount is untouched.
    let out = rs.exec(id, "grep -c ' /mnt/a ' /proc/self/mountinfo").await;
    assert_eq!(stdout(&out), "1\n", "{out}");
    rs.stop().await;
}

/// The per-sandbox cap (`--max-mounts-per-sandbox`): one mount more is refused with
/// `TOO_MANY_MOUNTS` before any s3fs starts; other sandboxes are not affected; unmounting frees
/// a place.
#[tokio::test(flavor = "multi_thread")]
async fn serial_e2e_bucket_mount_cap_per_sandbox() {
    let s3_dir = tempfile::tempdir().unwrap();
    let s3 = sandpit_s3_test_server::start(s3_dir.path()).unwrap();
    s3.create_bucket(BUCKET).unwrap();
    let endpoint = s3.endpoint.clone();
    let Some(rs) = Real::start_with(move |c| {
        c.mount_endpoints = vec![endpoint];
        c.max_mounts_per_sandbox = 2;
    })
    .await
    else {
        return;
    };
    let needle = rs.data_dir.to_string_lossy().into_owned();
    let (id, other) = ("e2e-mount-cap", "e2e-mount-cap-2");
    rs.create(json!({"id": id, "keepAlive": true})).await;
    rs.create(json!({"id": other, "keepAlive": true})).await;
    let path = format!("/v1/sandboxes/{id}/mounts");
    for m in ["/mnt/m0", "/mnt/m1"] {
        let (s, b) = rs
            .call(Method::POST, &path, mount_body(&s3, m, json!({})))
            .await;
        assert_eq!(s, 201, "{b}");
    }
    assert_eq!(host_processes(&needle).len(), 2);
    let (s, b) = rs
        .call(Method::POST, &path, mount_body(&s3, "/mnt/m2", json!({})))
        .await;
    assert_error(s, &b, 409, "TOO_MANY_MOUNTS");
    assert_eq!(b["context"]["max"], 2, "{b}");
    assert_eq!(b["context"]["mounts"], 2, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("--max-mounts-per-sandbox"),
        "{b}"
    );
    // Nothing was started or recorded for the refused mount.
    assert_eq!(host_processes(&needle).len(), 2);
    let (_, list) = rs.call(Method::GET, &path, Value::Null).await;
    assert_eq!(list["mounts"].as_array().unwrap().len(), 2, "{list}");
    let out = rs
        .exec(id, "grep -c ' /mnt/m2 ' /proc/self/mountinfo")
        .await;
    assert_eq!(stdout(&out), "0\n", "{out}");

    // The cap is per sandbox.
    let (s, b) = rs
        .call(
            Method::POST,
            &format!("/v1/sandboxes/{other}/mounts"),
            mount_body(&s3, "/mnt/m0", json!({})),
        )
        .await;
    assert_eq!(s, 201, "{b}");

    // Unmounting frees a place.
    let (s, b) = rs
        .call(Method::DELETE, &format!("{path}?path=/mnt/m0"), Value::Null)
        .await;
    assert!(s == 204 || s == 200, "{s} {b}");
    let (s, b) = rs
        .call(Method::POST, &path, mount_body(&s3, "/mnt/m2", json!({})))
        .await;
    assert_eq!(s, 201, "{b}");
    let out = rs
        .exec(id, "grep -c ' /mnt/m2 ' /proc/self/mountinfo")
        .await;
    assert_eq!(stdout(&out), "1\n", "{out}");
    rs.stop().await;
}
