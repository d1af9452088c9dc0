//! Cluster mode on one machine, loopback only: PostgreSQL from Debian, three `sandpit node`
//! processes (own data dirs, uid ranges and cgroups) and two control-plane replicas
//! (`sandpit serve --store postgres://… --cluster-dir`).

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use sandpit_client::{Client, ClientError, ExecOptions};
use sandpit_protocol::ErrorCode;
use sandpit_protocol::control::{CreateSandboxRequest, NodeList, NodeState};
use sandpit_store::test_postgres::TestPostgres;
use tokio_tungstenite::tungstenite::Message;

use super::support::{Served, free_port, images_dir_or_skip, raw_get, sandpit};

/// One `sandpit node` child process; killed (SIGKILL) on drop.
struct NodeProc {
    child: Option<Child>,
    id: String,
    args: Vec<String>,
    log: PathBuf,
    cgroup_root: String,
}

impl NodeProc {
    fn start(index: u32, root: &Path, images: &Path, join: &str, token: &str) -> NodeProc {
        let id = format!("node-{index}");
        let data_dir = root.join(&id);
        std::fs::create_dir_all(&data_dir).unwrap();
        let cgroup_root = format!("/sandpit-clustertest-{}-{index}", std::process::id());
        let args = vec![
            "node".to_owned(),
            "--listen".to_owned(),
            format!("127.0.0.1:{}", free_port()),
            "--health-listen".to_owned(),
            format!("127.0.0.1:{}", free_port()),
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
            "--images-dir".to_owned(),
            images.display().to_string(),
            "--join".to_owned(),
            join.to_owned(),
            "--token".to_owned(),
            token.to_owned(),
            "--node-id".to_owned(),
            id.clone(),
            // Disjoint uid ranges and cgroups: three nodes share this host.
            "--first-uid".to_owned(),
            (1_000_000_000 + index * 100_000_000).to_string(),
            "--cgroup-root".to_owned(),
            cgroup_root.clone(),
            "--max-sandboxes".to_owned(),
            "40".to_owned(),
        ];
        let mut node = NodeProc {
            child: None,
            log: data_dir.join("node.log"),
            id,
            args,
            cgroup_root,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let log = || {
            File::options()
                .create(true)
                .append(true)
                .open(&self.log)
                .unwrap()
        };
        let child = Command::new(env!("CARGO_BIN_EXE_sandpit"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log())
            .stderr(log())
            .spawn()
            .unwrap();
        self.child = Some(child);
        // The log is appended to across restarts: wait for one more banner.
        let banners = self.log().matches("serving its API").count();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log().matches("serving its API").count() == banners {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("sandpit node exited ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "node not up:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn arg(&self, name: &str) -> &str {
        let at = self.args.iter().position(|a| a == name).unwrap();
        &self.args[at + 1]
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: the node stops its sandboxes and removes its cgroups.
    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sandbox cgroups of this node now (the pids hierarchy).
    fn sandbox_cgroups(&self) -> usize {
        let dir = Path::new("/sys/fs/cgroup/pids").join(self.cgroup_root.trim_start_matches('/'));
        std::fs::read_dir(dir)
            .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
            .unwrap_or(0)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn nodes_of(replica: &Served) -> NodeList {
    let answer = raw_get(&replica.url, "/v1/nodes", Some(&replica.key));
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    // Chunked or not: the JSON object is between the first `{` and the last `}`.
    let (start, end) = (body.find('{').unwrap(), body.rfind('}').unwrap());
    serde_json::from_str(&body[start..=end]).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

fn api_code(e: &ClientError) -> Option<ErrorCode> {
    match e {
        ClientError::Api(r) => Some(r.code),
        _ => None,
    }
}

#[test]
fn serial_cluster_three_nodes_two_replicas() {
    let Some(images) = images_dir_or_skip("serial_cluster_three_nodes_two_replicas") else {
        return;
    };
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.url();
    let root = tempfile::tempdir().unwrap();
    let cluster = root.path().join("cluster");

    // cluster init: the CA and token in 0600 files, the token printed.
    let out = sandpit()
        .args(["cluster", "init", "--dir"])
        .arg(&cluster)
        .assert()
        .success();
    let token = String::from_utf8(out.get_output().stdout.clone())
        .unwrap()
        .trim()
        .to_owned();
    assert!(token.starts_with("sandpit-join-"), "{token}");
    for name in ["ca.pem", "ca-key.pem", "join-token"] {
        let mode = std::fs::metadata(cluster.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    assert_eq!(
        std::fs::read_to_string(cluster.join("join-token"))
            .unwrap()
            .trim(),
        token
    );
    sandpit()
        .args(["cluster", "init", "--dir"])
        .arg(&cluster)
        .assert()
        .failure();

    // Two replicas on one database; they share the data key and the admin key.
    let cluster_arg = cluster.display().to_string();
    let serve_args = [
        "--store",
        url.as_str(),
        "--cluster-dir",
        cluster_arg.as_str(),
    ];
    let r1_dir = root.path().join("replica-1");
    let r2_dir = root.path().join("replica-2");
    std::fs::create_dir_all(&r1_dir).unwrap();
    std::fs::create_dir_all(&r2_dir).unwrap();
    let mut r1 = Served::start_in(&images, &r1_dir, &serve_args);
    for shared in ["secrets.key", "admin.key"] {
        std::fs::copy(r1_dir.join(shared), r2_dir.join(shared)).unwrap();
    }
    let r2 = Served::start_in(&images, &r2_dir, &serve_args);

    // A wrong token is refused at once.
    let bad = sandpit()
        .args(["node", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(root.path().join("intruder"))
        .arg("--images-dir")
        .arg(&images)
        .args(["--join", &r1.url, "--token", "sandpit-join-wrong"])
        .args(["--cgroup-root", "/sandpit-clustertest-intruder"])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&bad.get_output().stderr).into_owned();
    assert!(stderr.contains("refused the join"), "{stderr}");

    let started = Instant::now();
    let mut nodes: Vec<NodeProc> = (0..3)
        .map(|i| {
            let join = if i == 2 { &r2.url } else { &r1.url };
            NodeProc::start(i, root.path(), &images, join, &token)
        })
        .collect();
    wait_for("three ready nodes", Duration::from_secs(10), || {
        let list = nodes_of(&r2);
        list.nodes.len() == 3 && list.nodes.iter().all(|n| n.state == NodeState::Ready)
    });
    // The health endpoint for kubelet probes is plain HTTP.
    let health = raw_get(
        &format!("http://{}", nodes[0].arg("--health-listen")),
        "/healthz",
        None,
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c1 = Client::new(&r1.url, &r1.key).unwrap();
        let c2 = Client::new(&r2.url, &r2.key).unwrap();

        // The node API refuses a client without the cluster's certificate.
        refuses_without_certificate(nodes[0].arg("--listen"), &cluster).await;

        // Tenant keys cannot list nodes.
        let tenant = c1.create_key("cluster-tenant").await.unwrap();
        let answer = raw_get(&r2.url, "/v1/nodes", Some(&tenant.key));
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

        // 30 sandboxes through either replica spread over the three nodes.
        let mut placed: BTreeMap<String, String> = BTreeMap::new();
        for i in 0..30 {
            let client = if i % 2 == 0 { &c1 } else { &c2 };
            let id = format!("cl-{i}");
            let info = client
                .create(&CreateSandboxRequest {
                    id: Some(id.clone()),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("create {id}: {e}"));
            placed.insert(id, info.node.expect("create names the node"));
        }
        let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
        for node in placed.values() {
            *per_node.entry(node).or_default() += 1;
        }
        assert_eq!(per_node.len(), 3, "{per_node:?}");
        assert!(per_node.values().all(|&n| n <= 12), "{per_node:?}");
        let listed = nodes_of(&r1);
        for n in &listed.nodes {
            assert_eq!(n.sandboxes as usize, per_node[n.id.as_str()], "{listed:?}");
        }
        // get through the other replica names the same node.
        assert_eq!(
            c2.get("cl-0").await.unwrap().node,
            Some(placed["cl-0"].clone())
        );

        // exec and files through the replica that did not create the sandbox.
        for (id, made_by, other) in [("cl-0", &c1, &c2), ("cl-1", &c2, &c1)] {
            let r = other
                .sandbox(id)
                .exec("echo -n from-$(hostname)", &ExecOptions::default())
                .await
                .unwrap();
            assert!(r.success && r.stdout.starts_with("from-cl-"), "{r:?}");
            other
                .sandbox(id)
                .write_file("/workspace/note.txt", id)
                .await
                .unwrap();
            let read = made_by
                .sandbox(id)
                .read_file("/workspace/note.txt")
                .await
                .unwrap();
            assert_eq!(read.content, id);
        }
        // The egress CA bundle the node builds from its copy of the image: the image's
        // bundle, then the sandbox CA (the control plane sends only the CA).
        let bundle = c2
            .sandbox("cl-0")
            .exec(
                "grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt \"$SSL_CERT_FILE\"; \
                 n=$(wc -c < /run/sandpit/ca.crt); \
                 tail -c \"$n\" \"$SSL_CERT_FILE\" | cmp -s - /run/sandpit/ca.crt && echo ca-last",
                &ExecOptions::default(),
            )
            .await
            .unwrap();
        let counts: Vec<usize> = bundle
            .stdout
            .lines()
            .filter_map(|l| l.rsplit(':').next()?.parse().ok())
            .collect();
        assert!(
            counts.len() == 2 && counts[0] > 10 && counts[1] == counts[0] + 1,
            "{bundle:?}"
        );
        assert!(bundle.stdout.ends_with("ca-last\n"), "{bundle:?}");
        // A terminal (WebSocket upgrade through the replica and the node's tunnel).
        pty_echo(&c2, "cl-0").await;
        // A preview URL exposed through one replica serves through the other.
        preview_through(&c1, &r2.url, "cl-1").await;

        // kill -9 the node of cl-0: down within the heartbeat window.
        let victim = placed["cl-0"].clone();
        let k = nodes.iter().position(|n| n.id == victim).unwrap();
        nodes[k].kill9();
        let down_after = wait_for("the killed node down", Duration::from_secs(15), || {
            nodes_of(&r2)
                .nodes
                .iter()
                .any(|n| n.id == victim && n.state == NodeState::Down)
        });
        eprintln!("node {victim} down after {down_after:?}");
        let lost = c2
            .sandbox("cl-0")
            .exec("true", &ExecOptions::default())
            .await
            .unwrap_err();
        assert_eq!(api_code(&lost), Some(ErrorCode::NodeUnavailable), "{lost}");
        for i in 30..36 {
            let client = if i % 2 == 0 { &c1 } else { &c2 };
            let info = client
                .create(&CreateSandboxRequest {
                    id: Some(format!("cl-{i}")),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_ne!(info.node.as_deref(), Some(victim.as_str()));
        }

        // It comes back: it reconciled (none of its sandboxes' cgroups left), rejoined, and
        // its sandboxes start again on it with their files.
        nodes[k].spawn();
        assert_eq!(
            nodes[k].sandbox_cgroups(),
            0,
            "orphan cgroups after restart"
        );
        wait_for("the node ready again", Duration::from_secs(10), || {
            nodes_of(&r1)
                .nodes
                .iter()
                .any(|n| n.id == victim && n.state == NodeState::Ready)
        });
        // The replicas' pooled connections to the killed process are dead: the next call
        // opens a new one at once (no connect or call timeout).
        let t = Instant::now();
        let read = c1
            .sandbox("cl-0")
            .read_file("/workspace/note.txt")
            .await
            .unwrap();
        assert_eq!(read.content, "cl-0");
        let first_call = t.elapsed();
        eprintln!("first call after the node restart took {first_call:?}");
        assert!(first_call < Duration::from_millis(2500), "{first_call:?}");
        assert_eq!(c1.get("cl-0").await.unwrap().node, Some(victim.clone()));
        assert_eq!(nodes[k].sandbox_cgroups(), 1);

        // kill -9 of another node and its restart at once (before any heartbeat notices): a
        // replica that used it a moment ago holds pooled connections to the dead process, and
        // its next request still succeeds at once, on a new connection.
        let (other_id, other_node) = placed
            .iter()
            .find(|(_, node)| **node != victim)
            .map(|(id, node)| (id.clone(), node.clone()))
            .unwrap();
        let j = nodes.iter().position(|n| n.id == other_node).unwrap();
        let warm = c2
            .sandbox(&other_id)
            .exec("echo warm", &ExecOptions::default())
            .await
            .unwrap();
        assert_eq!(warm.stdout, "warm\n");
        nodes[j].kill9();
        nodes[j].spawn();
        let t = Instant::now();
        let again = c2
            .sandbox(&other_id)
            .exec("echo again", &ExecOptions::default())
            .await
            .unwrap();
        let took = t.elapsed();
        eprintln!("first exec after an immediate node restart took {took:?}");
        assert_eq!(again.stdout, "again\n");
        assert!(took < Duration::from_millis(2500), "{took:?}");

        // kill -9 a replica mid-request: the retry on the other succeeds, nothing is lost.
        let slow = {
            let c1 = c1.clone();
            tokio::spawn(async move {
                c1.sandbox("cl-2")
                    .exec("sleep 3; echo late", &ExecOptions::default())
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        r1.kill9();
        assert!(slow.await.unwrap().is_err());
        let retried = c2
            .sandbox("cl-2")
            .exec("echo retried", &ExecOptions::default())
            .await
            .unwrap();
        assert_eq!(retried.stdout, "retried\n");
        let all = c2.list_all().await.unwrap();
        assert_eq!(all.len(), 36, "{all:?}");
        let read = c2
            .sandbox("cl-1")
            .read_file("/workspace/note.txt")
            .await
            .unwrap();
        assert_eq!(read.content, "cl-1");
    });
    eprintln!("cluster test body took {:?}", started.elapsed());
    drop(nodes);
    drop(r2);
}

/// A TLS client with no certificate, and one with a certificate of another CA, are refused by
/// the node API; nothing of the API answers them.
async fn refuses_without_certificate(addr: &str, cluster: &Path) {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(cluster.join("ca.pem")).unwrap();
    roots
        .add(CertificateDer::from_pem_slice(&ca).unwrap())
        .unwrap();
    let foreign_key = rcgen::KeyPair::generate().unwrap();
    let mut foreign =
        rcgen::CertificateParams::new(vec!["control-plane.sandpit.cluster".into()]).unwrap();
    foreign.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let foreign = foreign.self_signed(&foreign_key).unwrap();
    let configs = [
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![foreign.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(foreign_key.serialize_der().into()),
            )
            .unwrap(),
    ];
    for config in configs {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("node-0.node.sandpit.cluster").unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        // TLS 1.3: the client's handshake may "finish" before the server checks its
        // certificate; the refusal then shows on the first read.
        let outcome = async {
            let mut tls = connector.connect(name, tcp).await?;
            tls.write_all(b"GET /v1/node/status HTTP/1.1\r\nHost: node\r\n\r\n")
                .await?;
            let mut answer = Vec::new();
            tls.read_to_end(&mut answer).await?;
            std::io::Result::Ok(answer)
        }
        .await;
        match outcome {
            Err(_) => {}
            Ok(answer) => assert!(
                answer.is_empty(),
                "the node API answered a client without the cluster certificate: {}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
}

/// Starts a web server in sandbox `id` and exposes its port through `client`; the preview
/// URL's host, sent to the replica at `other`, answers with the sandbox's file.
async fn preview_through(client: &Client, other: &str, id: &str) {
    let sandbox = client.sandbox(id);
    let r = sandbox
        .exec(
            "cd /workspace && (setsid nohup python3 -m http.server 8000 >/dev/null 2>&1 &) && echo ok",
            &ExecOptions::default(),
        )
        .await
        .unwrap();
    assert!(r.success, "{r:?}");
    let exposed = sandbox
        .expose_port(8000, &sandpit_client::ExposeOptions::default())
        .await
        .unwrap();
    let host = exposed
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let other = other.to_owned();
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut tcp = TcpStream::connect(other.trim_start_matches("http://")).unwrap();
            write!(
                tcp,
                "GET /note.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut answer = String::new();
            let _ = tcp.read_to_string(&mut answer);
            // Python's server answers HTTP/1.0; the proxy passes its status line on.
            if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
                assert!(answer.ends_with(&id), "{answer}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "preview through the other replica: {answer}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .unwrap();
}

/// Opens sandbox `id`'s terminal through `client`'s server and runs a command in it.
async fn pty_echo(client: &Client, id: &str) {
    let url = client.sandbox(id).terminal_url(None, 80, 24).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut sent = false;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no PTY answer: {:?}", String::from_utf8_lossy(&seen)))
            .expect("closed")
            .unwrap();
        if let Message::Binary(b) = frame {
            seen.extend_from_slice(&b);
        }
        let text = String::from_utf8_lossy(&seen);
        if !sent && text.contains("# ") {
            ws.send(Message::Binary(b"echo $((6*7))-pty\r".to_vec().into()))
                .await
                .unwrap();
            sent = true;
        }
        if text.contains("42-pty") {
            return;
        }
    }
}
