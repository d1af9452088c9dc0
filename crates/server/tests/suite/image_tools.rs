//! The default image's everyday tools (issue 10 item 12), run in a real sandbox through the
//! server: ripgrep, gcc + make, sqlite3, requests, zip/unzip, less, vi; and `pip install` from a
//! package index reached through the egress proxy with TLS interception. Needs what the `e2e`
//! tests need (root, the agent, the default image in `$SANDPIT_IMAGES_DIR`).

use std::net::IpAddr;

use base64::Engine;
use reqwest::Method;
use serde_json::json;

use super::e2e::Real;
use super::egress::Upstream;
use super::egress::e2e::{create, run, run_ok};

const INDEX_HOST: &str = "pypi.example.test";

#[tokio::test(flavor = "multi_thread")]
async fn serial_image_tools_work_in_a_sandbox() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let id = "image-tools";
    create(&rs, json!({"id": id})).await;

    let rg = run_ok(
        &rs,
        id,
        "printf 'a\\nneedle here\\n' > /tmp/f && rg -n needle /tmp/f",
    )
    .await;
    assert_eq!(rg, "2:needle here\n");
    assert!(
        run_ok(&rs, id, "rg --version")
            .await
            .starts_with("ripgrep ")
    );

    let hello = run_ok(
        &rs,
        id,
        "mkdir -p /tmp/c && cd /tmp/c \
         && printf '#include <stdio.h>\\nint main(void) { puts(\"hello from gcc\"); return 0; }\\n' > hello.c \
         && printf 'hello: hello.c\\n\\tgcc -O2 -o hello hello.c\\n' > Makefile \
         && make -s && ./hello",
    )
    .await;
    assert_eq!(hello, "hello from gcc\n");

    let sql =
        "sqlite3 :memory: 'create table t(x); insert into t values (41); select x + 1 from t;'";
    assert_eq!(run_ok(&rs, id, sql).await, "42\n");

    let requests = run_ok(
        &rs,
        id,
        "python3 -c 'import requests; print(requests.__name__)'",
    )
    .await;
    assert_eq!(requests, "requests\n");

    let zip = run_ok(
        &rs,
        id,
        "mkdir -p /tmp/z/d && head -c 200000 /dev/urandom > /tmp/z/d/blob && cd /tmp/z \
         && zip -qr a.zip d && mkdir out && cd out && unzip -q ../a.zip \
         && cmp d/blob ../d/blob && echo same",
    )
    .await;
    assert_eq!(zip, "same\n");

    // No terminal: less copies its input; vi edits a file in ex mode.
    assert_eq!(run_ok(&rs, id, "echo paged | less").await, "paged\n");
    let vi =
        "printf 'hello\\n' > /tmp/v && vi -es -c '%s/hello/edited/' -c 'wq' /tmp/v && cat /tmp/v";
    assert_eq!(run_ok(&rs, id, vi).await, "edited\n");
    assert!(run_ok(&rs, id, "command -v nano").await.ends_with("nano\n"));
    rs.stop().await;
}

/// `pip install` from an HTTPS index on the host's loopback, reached the way a sandbox reaches
/// PyPI: through the egress proxy, allowlisted by policy. A secret bound to the index host makes
/// the proxy intercept TLS, so pip succeeds only by trusting the sandbox's CA (the index's own
/// certificate is trusted by the proxy alone); the index sees the injected credential. Once
/// the policy no longer allows the host, pip fails and nothing reaches the index.
#[tokio::test(flavor = "multi_thread")]
async fn serial_image_pip_installs_through_the_egress_proxy() {
    let served = tempfile::tempdir().unwrap();
    let index = Upstream::files("127.0.0.1", served.path(), Some(INDEX_HOST)).await;
    let roots = served.path().join("index-ca.pem");
    std::fs::write(&roots, index.ca_pem.as_ref().unwrap()).unwrap();
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let Some(rs) = Real::start_with(|c| {
        c.egress_resolve.insert(INDEX_HOST.to_owned(), lo);
        c.egress_unblocked = vec!["127.0.0.0/8".parse().unwrap()];
        c.egress_extra_roots = vec![roots.clone()];
    })
    .await
    else {
        return;
    };
    let id = "image-pip";
    create(
        &rs,
        json!({"id": id,
            "network": {"mode": "allowlist", "allow": [INDEX_HOST]},
            "secrets": {"PYPI_TOKEN": {"value": "Bearer index-s3cret", "hosts": [INDEX_HOST],
                "header": "Authorization"}}}),
    )
    .await;

    // The wheel is made with the image's own zip, then served by the index on the host.
    let wheel = "sandpit_hello-0.1-py3-none-any.whl";
    // `&&` chains, not `set -e`: that would end the session's shell on a failure.
    let make_wheel = format!(
        "rm -rf /tmp/w && mkdir -p /tmp/w/sandpit_hello /tmp/w/sandpit_hello-0.1.dist-info \
         && cd /tmp/w && echo 'GREETING = \"hello from a wheel\"' > sandpit_hello/__init__.py \
         && printf 'Metadata-Version: 2.1\\nName: sandpit-hello\\nVersion: 0.1\\n' \
           > sandpit_hello-0.1.dist-info/METADATA \
         && printf 'Wheel-Version: 1.0\\nGenerator: sandpit-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n' \
           > sandpit_hello-0.1.dist-info/WHEEL \
         && printf 'sandpit_hello/__init__.py,,\\nsandpit_hello-0.1.dist-info/METADATA,,\\nsandpit_hello-0.1.dist-info/WHEEL,,\\nsandpit_hello-0.1.dist-info/RECORD,,\\n' \
           > sandpit_hello-0.1.dist-info/RECORD \
         && zip -qr /tmp/{wheel} sandpit_hello sandpit_hello-0.1.dist-info && base64 -w0 /tmp/{wheel}"
    );
    let encoded = run_ok(&rs, id, &make_wheel).await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .unwrap();
    std::fs::create_dir_all(served.path().join("files")).unwrap();
    std::fs::write(served.path().join("files").join(wheel), bytes).unwrap();
    let project = served.path().join("simple/sandpit-hello");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("index.html"),
        format!("<html><body><a href=\"../../files/{wheel}\">{wheel}</a></body></html>\n"),
    )
    .unwrap();

    let url = format!("https://{INDEX_HOST}:{}/simple/", index.addr.port());
    let pip = format!("pip install --retries 0 --timeout 20 --index-url {url} sandpit-hello");
    let (code, out, err) = run(&rs, id, &pip).await;
    assert_eq!(code, 0, "{out}{err}");
    // pip.conf: sandbox root is the normal user.
    assert!(!err.contains("as the 'root' user"), "{err}");
    assert_eq!(
        run_ok(
            &rs,
            id,
            "cd / && python3 -c 'import sandpit_hello; print(sandpit_hello.GREETING)'"
        )
        .await,
        "hello from a wheel\n"
    );
    assert_eq!(
        index.last_header("authorization").as_deref(),
        Some("Bearer index-s3cret"),
        "pip's requests went through the intercepting proxy"
    );

    // The policy decides: not allowlisted any more, the proxy refuses pip's connection (pip
    // reports only that it found nothing).
    let (s, b) = rs
        .call(
            Method::PATCH,
            &format!("/v1/sandboxes/{id}"),
            json!({"network": {"mode": "allowlist", "allow": ["other.example.test"]}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let requests = index.request_count();
    let (code, out, err) = run(
        &rs,
        id,
        &format!("pip download --no-deps -d /tmp/dl --retries 0 --timeout 20 --index-url {url} sandpit-hello"),
    )
    .await;
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("No matching distribution"), "{out}{err}");
    assert_eq!(index.request_count(), requests, "nothing reached the index");
    rs.stop().await;
}
