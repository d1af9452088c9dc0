//! The egress proxy from the host side: requests sent straight to a sandbox's `egress.sock`,
//! "outside" servers on loopback known by names the proxy is told to resolve.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sandpit_protocol::control::{EgressDecision, NetworkMode, SecretSpec};
use sandpit_protocol::netpolicy::EgressPolicy;
use sandpit_server::egress::{self, Egress, EgressConfig};
use sandpit_store::SandboxNetwork;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};

/// An "outside" test server on a loopback address: counts TCP connections and keeps the
/// headers of every request; answers `hello from <name>`. With `tls`, it speaks HTTPS with a
/// certificate for `tls` signed by its own CA.
pub struct Upstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<Mutex<Vec<(String, http::HeaderMap)>>>,
    /// PEM of the CA that signed the server's certificate (TLS servers).
    pub ca_pem: Option<String>,
}

/// How an [`Upstream`] answers.
type Responder = Arc<dyn Fn(&http::Uri) -> Response<Full<Bytes>> + Send + Sync>;

impl Upstream {
    pub async fn start(ip: &str, name: &str, tls: Option<&str>) -> Upstream {
        let body = format!("hello from {name}\n");
        let respond: Responder =
            Arc::new(move |_| Response::new(Full::new(Bytes::from(body.clone()))));
        Self::serve(ip, tls, respond).await
    }

    /// Serves the files under `root` (a dumb HTTP git server, a package index), `index.html`
    /// for paths ending in `/`; over HTTPS for host `tls` when given.
    pub async fn files(ip: &str, root: &Path, tls: Option<&str>) -> Upstream {
        let root = root.to_path_buf();
        let respond: Responder = Arc::new(move |uri| {
            let rel = uri.path().trim_start_matches('/');
            let file = match rel.is_empty() || rel.ends_with('/') {
                true => root.join(rel).join("index.html"),
                false => root.join(rel),
            };
            let html = file.extension().is_some_and(|e| e == "html");
            match std::fs::read(&file) {
                Ok(bytes) if !rel.split('/').any(|c| c == "..") => {
                    let mut r = Response::new(Full::new(Bytes::from(bytes)));
                    if html {
                        // pip reads index pages only with an HTML content type.
                        r.headers_mut()
                            .insert(http::header::CONTENT_TYPE, "text/html".parse().unwrap());
                    }
                    r
                }
                _ => {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
                    *r.status_mut() = http::StatusCode::NOT_FOUND;
                    r
                }
            }
        });
        Self::serve(ip, tls, respond).await
    }

    async fn serve(ip: &str, tls: Option<&str>, respond: Responder) -> Upstream {
        let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (acceptor, ca_pem) = match tls {
            Some(host) => {
                let (acceptor, ca) = tls_acceptor(host);
                (Some(acceptor), Some(ca))
            }
            None => (None, None),
        };
        let (conns, reqs) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let (reqs, respond, acceptor) = (reqs.clone(), respond.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (reqs, respond) = (reqs.clone(), respond.clone());
                        async move {
                            let target = req.uri().to_string();
                            reqs.lock().unwrap().push((target, req.headers().clone()));
                            Ok::<_, std::convert::Infallible>(respond(req.uri()))
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            connections,
            requests,
            ca_pem,
        }
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn last_header(&self, name: &str) -> Option<String> {
        let requests = self.requests.lock().unwrap();
        let (_, headers) = requests.last()?;
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA and a server certificate for `host` signed by it.
fn tls_acceptor(host: &str) -> (tokio_rustls::TlsAcceptor, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "egress test upstream CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca_cert.pem(),
    )
}

/// A TLS client trusting only `ca_pem`.
pub fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Attaches the proxy of `sandbox` the way a local driver shows it to its sandbox: its files
/// in `run_dir`, and `run_dir/egress.sock` handing every connection to the proxy.
fn attach_in(
    egress: &Egress,
    tenant: &str,
    sandbox: &str,
    run_dir: &Path,
    rootfs: &Path,
    net: &SandboxNetwork,
) {
    let attached = egress.attach(tenant, sandbox, rootfs, net).unwrap();
    std::fs::create_dir_all(run_dir).unwrap();
    for (name, contents) in &attached.files {
        std::fs::write(run_dir.join(name), contents).unwrap();
    }
    let socket = run_dir.join("egress.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let proxy = attached.proxy;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            proxy.accept(stream);
        }
    });
}

/// An attached sandbox proxy in a temp run dir.
struct Proxy {
    egress: Egress,
    run_dir: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

const SANDBOX: &str = "egress-test-0123456789ab";
const TENANT: &str = "egress-tenant";

fn policy(mode: NetworkMode, allow: &[&str]) -> EgressPolicy {
    let allow = allow.iter().map(|entry| entry.parse().unwrap()).collect();
    EgressPolicy::new(mode, allow)
}

fn network(
    policy: EgressPolicy,
    secrets: &[(&str, &str, &[&str], Option<&str>)],
) -> SandboxNetwork {
    let specs: BTreeMap<String, SecretSpec> = secrets
        .iter()
        .map(|(name, value, hosts, header)| {
            (
                name.to_string(),
                SecretSpec {
                    value: value.to_string(),
                    hosts: hosts.iter().map(|h| h.to_string()).collect(),
                    header: header.map(str::to_owned),
                },
            )
        })
        .collect();
    SandboxNetwork {
        policy,
        secrets: egress::merge_secrets(&[], &specs).unwrap(),
        ca: Some(egress::generate_ca(SANDBOX).unwrap()),
        operator_policy: false,
    }
}

impl Proxy {
    async fn start(config: EgressConfig, net: &SandboxNetwork) -> Proxy {
        let tmp = tempfile::tempdir().unwrap();
        let run_dir = tmp.path().join("run");
        let rootfs = tmp.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc/ssl/certs")).unwrap();
        std::fs::write(
            rootfs.join("etc/ssl/certs/ca-certificates.crt"),
            "# image bundle\n",
        )
        .unwrap();
        let egress = Egress::new(&config).unwrap();
        attach_in(&egress, TENANT, SANDBOX, &run_dir, &rootfs, net);
        Proxy {
            egress,
            run_dir,
            _tmp: tmp,
        }
    }

    async fn sender(&self) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let unix = UnixStream::connect(self.run_dir.join("egress.sock"))
            .await
            .unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(unix))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        sender
    }

    /// `GET <url>` through the proxy (absolute form) with extra headers: status and body.
    async fn get(&self, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut sender = self.sender().await;
        let mut req = Request::get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// `CONNECT target`: the status, the body of a refusal, and the tunnel when accepted.
    async fn connect(
        &self,
        target: &str,
    ) -> (u16, String, Option<TokioIo<hyper::upgrade::Upgraded>>) {
        let mut sender = self.sender().await;
        let req = Request::connect(target)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        if status != 200 {
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            return (status, String::from_utf8_lossy(&body).into_owned(), None);
        }
        let upgraded = hyper::upgrade::on(resp).await.unwrap();
        (status, String::new(), Some(TokioIo::new(upgraded)))
    }

    /// HTTPS `GET https://<host>:<port>/` through CONNECT, trusting `ca_pem` only.
    async fn https_get(
        &self,
        host: &str,
        port: u16,
        sni: &str,
        ca_pem: &str,
    ) -> Result<(u16, String), String> {
        let (status, body, tunnel) = self.connect(&format!("{host}:{port}")).await;
        let Some(tunnel) = tunnel else {
            return Err(format!("CONNECT {status}: {body}"));
        };
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let tls = tls_connector(ca_pem)
            .connect(name, tunnel)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let req = Request::get("/secure").header("host", format!("{host}:{port}"));
        let resp = sender
            .send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Replaces the sandbox's policy (no secrets).
    fn set_policy(&self, mode: NetworkMode, allow: &[&str]) {
        self.egress
            .update(TENANT, SANDBOX, &network(policy(mode, allow), &[]))
            .unwrap();
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.run_dir.join("ca.crt")).unwrap()
    }
}

fn resolving(names: &[(&str, &str)]) -> EgressConfig {
    EgressConfig {
        resolve: names
            .iter()
            .map(|(n, ip)| (n.to_string(), ip.parse().unwrap()))
            .collect(),
        // Loopback (where test servers listen) is taken out of the always-blocked ranges;
        // the "forbidden" 127.0.0.2 is an operator block.
        blocked: vec!["127.0.0.2/32".parse().unwrap()],
        unblocked: vec!["127.0.0.0/8".parse().unwrap()],
        ..EgressConfig::default()
    }
}

#[tokio::test]
async fn allowlisted_hosts_are_reached_and_others_refused_clearly() {
    let up = Upstream::start("127.0.0.1", "api", None).await;
    let port = up.addr.port();
    let config = resolving(&[
        ("api.example.test", "127.0.0.1"),
        ("other.example.test", "127.0.0.1"),
    ]);
    let net = network(policy(NetworkMode::Allowlist, &["api.example.test"]), &[]);
    let proxy = Proxy::start(config, &net).await;
    // The CA files are for the run dir; the bundle is the image's plus the CA.
    let bundle = std::fs::read_to_string(proxy.run_dir.join("ca-bundle.crt")).unwrap();
    assert!(bundle.starts_with("# image bundle\n") && bundle.ends_with(&proxy.ca_pem()));

    let (status, body) = proxy
        .get(&format!("http://api.example.test:{port}/x?y=1"), &[])
        .await;
    assert_eq!((status, body.as_str()), (200, "hello from api\n"));
    assert_eq!(up.requests.lock().unwrap()[0].0, "/x?y=1");
    assert_eq!(
        up.last_header("host").as_deref(),
        Some(&*format!("api.example.test:{port}"))
    );

    let (status, body) = proxy
        .get(&format!("http://other.example.test:{port}/"), &[])
        .await;
    assert_eq!(status, 403, "{body}");
    // A machine-readable denial naming the rule.
    let denial: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(denial["error"], "EGRESS_DENIED", "{body}");
    assert_eq!(denial["host"], "other.example.test", "{body}");
    assert_eq!(denial["port"], port, "{body}");
    assert_eq!(denial["rule"], "allow-list", "{body}");
    assert_eq!(denial["reason"], "host not in allow-list", "{body}");
    let (status, body) = proxy.get(&format!("http://127.0.0.1:{port}/"), &[]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("address not in allow-list"), "{body}");
    let (status, body, _) = proxy.connect(&format!("other.example.test:{port}")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("host not in allow-list"), "{body}");
    // Not a proxy request at all.
    let (status, body) = proxy.get("/just-a-path", &[]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn blocked_addresses_are_never_reached_by_name_or_address() {
    let forbidden = Upstream::start("127.0.0.2", "forbidden", None).await;
    let port = forbidden.addr.port();
    let config = resolving(&[("rebind.example.test", "127.0.0.2")]);
    let net = network(policy(NetworkMode::Allowlist, &["*.example.test"]), &[]);
    let proxy = Proxy::start(config.clone(), &net).await;
    let (status, body) = proxy
        .get(&format!("http://rebind.example.test:{port}/"), &[])
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("address 127.0.0.2 in operator block 127.0.0.2/32"),
        "{body}"
    );
    let (status, body, _) = proxy.connect(&format!("rebind.example.test:{port}")).await;
    assert_eq!(status, 403, "{body}");
    // Full mode lets any name through, never to a blocked address.
    proxy.set_policy(NetworkMode::Full, &[]);
    let (status, body) = proxy.get(&format!("http://127.0.0.2:{port}/"), &[]).await;
    assert_eq!(status, 403, "{body}");
    let (status, _, _) = proxy.connect(&format!("[::ffff:127.0.0.2]:{port}")).await;
    assert_eq!(status, 403);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(forbidden.connection_count(), 0);

    // ATTACK: a policy naming the blocked CIDR (even everything) does not open an operator
    // block, whoever set it (before, an allowed CIDR won over every block).
    for allow in [&["127.0.0.2/32"][..], &["0.0.0.0/0", "::/0"]] {
        for by_operator in [false, true] {
            let mut net = network(policy(NetworkMode::Allowlist, allow), &[]);
            net.operator_policy = by_operator;
            proxy.egress.update(TENANT, SANDBOX, &net).unwrap();
            let (status, body) = proxy.get(&format!("http://127.0.0.2:{port}/"), &[]).await;
            assert_eq!(status, 403, "{allow:?} {by_operator}: {body}");
            assert!(body.contains("operator block"), "{body}");
        }
    }
    assert_eq!(forbidden.connection_count(), 0);
}

/// ATTACK (issue 9): a tenant's `allow: ["0.0.0.0/0", "::/0"]` reached a listener on the host's
/// loopback through the proxy. With the default blocks loopback and metadata stay closed to
/// every policy, and the denial names the range.
#[tokio::test]
async fn a_tenant_allowing_everything_reaches_no_always_blocked_range() {
    let host_local = Upstream::start("127.0.0.1", "host-local", None).await;
    let port = host_local.addr.port();
    let config = EgressConfig {
        resolve: [(
            "rebind.example.test".to_string(),
            "127.0.0.1".parse().unwrap(),
        )]
        .into(),
        ..EgressConfig::default()
    };
    let everything = policy(
        NetworkMode::Allowlist,
        &["0.0.0.0/0", "::/0", "*.example.test"],
    );
    let mut net = network(everything, &[]);
    let proxy = Proxy::start(config, &net).await;
    for by_operator in [false, true] {
        net.operator_policy = by_operator;
        proxy.egress.update(TENANT, SANDBOX, &net).unwrap();
        for target in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            format!("http://rebind.example.test:{port}/"),
        ] {
            let (status, body) = proxy.get(&target, &[]).await;
            assert_eq!(status, 403, "{target}: {body}");
            let denial: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(denial["rule"], "always-blocked", "{body}");
            assert_eq!(
                denial["reason"],
                "address 127.0.0.1 in always-blocked range loopback (127.0.0.0/8)"
            );
        }
        let (status, body, _) = proxy.connect(&format!("127.0.0.1:{port}")).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("always-blocked range loopback"), "{body}");
        let (status, body) = proxy
            .get("http://169.254.169.254/latest/meta-data/", &[])
            .await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("link-local (cloud metadata)"), "{body}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(host_local.connection_count(), 0);
}

/// Private ranges: a tenant's allow-list cannot open them, a policy set by the operator can.
/// (127.0.0.3 stands in for a private network: the test config declares it private.)
#[tokio::test]
async fn only_the_operator_grants_a_private_range() {
    let internal = Upstream::start("127.0.0.3", "internal", None).await;
    let url = format!("http://127.0.0.3:{}/", internal.addr.port());
    let mut config = resolving(&[]);
    config.private = vec!["127.0.0.3/32".parse().unwrap()];
    let mut net = network(policy(NetworkMode::Allowlist, &["0.0.0.0/0"]), &[]);
    let proxy = Proxy::start(config, &net).await;
    let (status, body) = proxy.get(&url, &[]).await;
    assert_eq!(status, 403, "{body}");
    let denial: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(denial["rule"], "operator-only", "{body}");
    assert!(body.contains("only the operator can grant"), "{body}");
    net.operator_policy = true;
    proxy.egress.update(TENANT, SANDBOX, &net).unwrap();
    let (status, body) = proxy.get(&url, &[]).await;
    assert_eq!((status, body.as_str()), (200, "hello from internal\n"));

    // The server config's grant to the tenant opens it for the tenant's own policy too, and
    // only for that tenant.
    net.operator_policy = false;
    let mut config = resolving(&[]);
    config.private = vec!["127.0.0.3/32".parse().unwrap()];
    config.grants = [(TENANT.to_string(), vec!["127.0.0.3/32".parse().unwrap()])].into();
    let granted = Proxy::start(config, &net).await;
    let (status, body) = granted.get(&url, &[]).await;
    assert_eq!((status, body.as_str()), (200, "hello from internal\n"));
    let rootfs = granted._tmp.path().join("rootfs");
    attach_in(
        &granted.egress,
        "other-tenant",
        SANDBOX,
        &granted.run_dir,
        &rootfs,
        &net,
    );
    let (status, body) = granted.get(&url, &[]).await;
    assert_eq!(status, 403, "{body}");
}

/// The egress log records allowed and denied requests with the bytes that flowed, and a
/// CONNECT refusal says why in its status line too.
#[tokio::test]
async fn the_egress_log_shows_decisions_and_bytes() {
    let up = Upstream::start("127.0.0.1", "api", None).await;
    let port = up.addr.port();
    let config = resolving(&[("api.example.test", "127.0.0.1")]);
    let net = network(policy(NetworkMode::Allowlist, &["api.example.test"]), &[]);
    let proxy = Proxy::start(config, &net).await;
    let (status, _) = proxy
        .get(&format!("http://api.example.test:{port}/logged"), &[])
        .await;
    assert_eq!(status, 200);
    let (status, _) = proxy
        .get(&format!("http://denied.example.test:{port}/"), &[])
        .await;
    assert_eq!(status, 403);
    // The status line of a refused CONNECT names the reason (raw, as curl sees it).
    let mut raw = UnixStream::connect(proxy.run_dir.join("egress.sock"))
        .await
        .unwrap();
    raw.write_all(
        b"CONNECT denied.example.test:443 HTTP/1.1\r\nhost: denied.example.test:443\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 403 Egress Denied: host not in allow-list\r\n"),
        "{answer}"
    );

    let page = proxy.egress.log_page(SANDBOX);
    assert_eq!(page.entries.len(), 3, "{page:?}");
    let (ok, denied, tunnel) = (&page.entries[0], &page.entries[1], &page.entries[2]);
    assert_eq!(
        (ok.host.as_str(), ok.port, ok.kind.as_str()),
        ("api.example.test", port, "http")
    );
    assert_eq!(ok.decision, EgressDecision::Allowed);
    assert!(ok.reason.is_none());
    // Up: at least the request line; down: at least the body.
    assert!(
        ok.bytes_up > "GET /logged HTTP/1.1\r\n".len() as u64,
        "{ok:?}"
    );
    assert!(ok.bytes_down > "hello from api\n".len() as u64, "{ok:?}");
    assert_eq!(denied.decision, EgressDecision::Denied);
    assert_eq!(denied.rule.as_deref(), Some("allow-list"));
    assert_eq!(denied.reason.as_deref(), Some("host not in allow-list"));
    assert_eq!((denied.bytes_up, denied.bytes_down), (0, 0));
    assert_eq!((tunnel.kind.as_str(), tunnel.port), ("connect", 443));
    assert_eq!(tunnel.decision, EgressDecision::Denied);
}

#[tokio::test]
async fn policy_changes_apply_at_once_and_detach_stops_serving() {
    let up = Upstream::start("127.0.0.1", "api", None).await;
    let url = format!("http://api.example.test:{}/", up.addr.port());
    let config = resolving(&[("api.example.test", "127.0.0.1")]);
    let proxy = Proxy::start(config, &network(EgressPolicy::default(), &[])).await;
    let (status, body) = proxy.get(&url, &[]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("network policy is none"), "{body}");
    proxy.set_policy(NetworkMode::Allowlist, &["api.example.test"]);
    assert_eq!(proxy.get(&url, &[]).await.0, 200);
    proxy.set_policy(NetworkMode::Allowlist, &["x.example.test"]);
    assert_eq!(proxy.get(&url, &[]).await.0, 403);
    proxy.egress.detach(SANDBOX);
    // The bridge's socket is the driver's (gone when the sandbox stops); a connection it
    // still hands over is closed unanswered.
    let mut unix = UnixStream::connect(proxy.run_dir.join("egress.sock"))
        .await
        .unwrap();
    let request = format!("GET {url} HTTP/1.1\r\nhost: api.example.test\r\n\r\n");
    let _ = unix.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), unix.read_to_end(&mut answer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a detached proxy answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn secrets_replace_placeholders_only_for_their_hosts() {
    let api = Upstream::start("127.0.0.1", "api", None).await;
    let other = Upstream::start("127.0.0.1", "other", None).await;
    let config = resolving(&[
        ("api.example.test", "127.0.0.1"),
        ("other.example.test", "127.0.0.1"),
    ]);
    let net = network(
        policy(NetworkMode::Allowlist, &["*.example.test"]),
        &[
            ("API_TOKEN", "s3cret-value", &["api.example.test"], None),
            ("API_KEY", "k3y", &["api.example.test"], Some("x-api-key")),
        ],
    );
    let placeholder = net
        .secrets
        .iter()
        .find(|s| s.name == "API_TOKEN")
        .unwrap()
        .placeholder
        .clone();
    assert!(
        placeholder.starts_with("sandpit-secret-API_TOKEN-"),
        "{placeholder}"
    );
    let proxy = Proxy::start(config, &net).await;
    let auth = format!("Bearer {placeholder}");
    let (status, _) = proxy
        .get(
            &format!("http://api.example.test:{}/", api.addr.port()),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        api.last_header("authorization").as_deref(),
        Some("Bearer s3cret-value")
    );
    assert_eq!(api.last_header("x-api-key").as_deref(), Some("k3y"));
    let (status, _) = proxy
        .get(
            &format!("http://other.example.test:{}/", other.addr.port()),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(other.last_header("authorization"), Some(auth));
    assert_eq!(other.last_header("x-api-key"), None);
}

#[tokio::test]
async fn https_to_a_secret_host_is_intercepted_and_other_https_tunnelled_untouched() {
    let secure = Upstream::start("127.0.0.1", "secure", Some("secure.example.test")).await;
    let plain = Upstream::start("127.0.0.1", "plain", Some("plain.example.test")).await;
    let tmp = tempfile::tempdir().unwrap();
    let roots = tmp.path().join("upstream-ca.pem");
    std::fs::write(&roots, secure.ca_pem.as_ref().unwrap()).unwrap();
    let mut config = resolving(&[
        ("secure.example.test", "127.0.0.1"),
        ("plain.example.test", "127.0.0.1"),
    ]);
    config.extra_roots = vec![roots];
    let net = network(
        policy(NetworkMode::Allowlist, &["*.example.test"]),
        &[(
            "TOKEN",
            "tls-s3cret",
            &["secure.example.test"],
            Some("authorization"),
        )],
    );
    let proxy = Proxy::start(config, &net).await;
    let sandbox_ca = proxy.ca_pem();
    let port = secure.addr.port();
    let pport = plain.addr.port();
    let (secure_ca, plain_ca) = (
        secure.ca_pem.clone().unwrap(),
        plain.ca_pem.clone().unwrap(),
    );
    let (sec, pla) = ("secure.example.test", "plain.example.test");
    // (CONNECT host, port, SNI, trusted CA, the body, or None for a TLS failure)
    let cases = [
        // Intercepted: the sandbox sees a certificate of its own CA, the server gets the secret.
        (sec, port, sec, &sandbox_ca, Some("hello from secure\n")),
        // The real server's certificate does not verify against the sandbox's view.
        (sec, port, sec, &secure_ca, None),
        // No secret bound: an end-to-end tunnel, the client verifies the real server.
        (pla, pport, pla, &plain_ca, Some("hello from plain\n")),
        // A ClientHello naming another host than the CONNECT target never reaches a server.
        (pla, pport, "evil.example.test", &plain_ca, None),
    ];
    for (host, port, sni, ca, want) in cases {
        let got = proxy.https_get(host, port, sni, ca).await;
        match want {
            Some(body) => assert_eq!(got, Ok((200, body.to_owned()))),
            None => assert!(got.as_ref().is_err_and(|e| e.contains("TLS")), "{got:?}"),
        }
    }
    assert_eq!(
        secure.last_header("authorization").as_deref(),
        Some("tls-s3cret")
    );
    assert_eq!(plain.last_header("authorization"), None);
    assert_eq!(plain.request_count(), 1);

    // A broken ClientHello ends the tunnel, intercepted or not; nothing reaches a server.
    for (host, port) in [(sec, port), (pla, pport)] {
        let (status, _, tunnel) = proxy.connect(&format!("{host}:{port}")).await;
        assert_eq!(status, 200);
        let mut tunnel = tunnel.unwrap();
        tunnel
            .write_all(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0])
            .await
            .unwrap();
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), tunnel.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?} {rest:?}");
    }
    assert_eq!(plain.request_count(), 1);
    assert_eq!(secure.request_count(), 1);
}

/// Opens `n` connections to the proxy socket in `run_dir`; each is `Some(status line)` when the
/// proxy answered at once (a limit), `None` when it was accepted (the connection is kept).
async fn open_idle(run_dir: &Path, n: usize, kept: &mut Vec<UnixStream>) -> Vec<Option<String>> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    for _ in 0..n {
        let mut stream = UnixStream::connect(run_dir.join("egress.sock"))
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
            Ok(Ok(len)) => out.push(Some(
                String::from_utf8_lossy(&buf[..len])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            )),
            _ => {
                out.push(None);
                kept.push(stream);
            }
        }
    }
    out
}

/// Open connections are capped per sandbox and, across its sandboxes, per tenant; another
/// tenant is unaffected.
#[tokio::test]
async fn connections_are_capped_per_sandbox_and_per_tenant() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let egress = Egress::new(&EgressConfig {
        max_connections_per_sandbox: 2,
        max_connections_per_tenant: 3,
        ..EgressConfig::default()
    })
    .unwrap();
    let net = network(policy(NetworkMode::None, &[]), &[]);
    let dir = |name: &str| tmp.path().join(name);
    attach_in(&egress, "t", "a", &dir("a"), &rootfs, &net);
    attach_in(&egress, "t", "b", &dir("b"), &rootfs, &net);
    attach_in(&egress, "u", "c", &dir("c"), &rootfs, &net);
    let mut kept = Vec::new();
    let over = Some("HTTP/1.1 503 Service Unavailable".to_owned());
    assert_eq!(
        open_idle(&dir("a"), 3, &mut kept).await,
        [None, None, over.clone()],
        "sandbox limit"
    );
    assert_eq!(
        open_idle(&dir("b"), 2, &mut kept).await,
        [None, over.clone()],
        "tenant limit"
    );
    assert_eq!(
        open_idle(&dir("c"), 2, &mut kept).await,
        [None, None],
        "another tenant"
    );
    // Closing one of a's connections frees a slot of the tenant.
    drop(kept.remove(0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(open_idle(&dir("b"), 1, &mut kept).await, [None]);
}

/// Upstream roots that are not PEM certificates are a clear start-up error.
#[test]
fn bad_extra_roots_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("junk.pem");
    std::fs::write(&path, "not a certificate").unwrap();
    let config = EgressConfig {
        extra_roots: vec![path],
        ..EgressConfig::default()
    };
    let err = Egress::new(&config).err().unwrap().to_string();
    assert!(err.contains("junk.pem"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// End to end: curl and git inside a real sandbox, through the agent's bridge at 127.0.0.1:3128.

pub(crate) mod e2e {
    use reqwest::Method;
    use serde_json::{Value, json};

    use super::super::assert_error;
    use super::super::e2e::Real;
    use super::*;

    /// The sandbox's `exec` result: exit code, stdout, stderr.
    pub(crate) async fn run(rs: &Real, id: &str, command: &str) -> (i64, String, String) {
        let out = rs.exec(id, command).await;
        let text = |k: &str| out[k].as_str().unwrap_or_default().to_owned();
        (
            out["exitCode"].as_i64().unwrap_or(-1),
            text("stdout"),
            text("stderr"),
        )
    }

    /// The stdout of a command that must succeed.
    pub(crate) async fn run_ok(rs: &Real, id: &str, command: &str) -> String {
        let (code, out, err) = run(rs, id, command).await;
        assert_eq!(code, 0, "{command}: {err}");
        out
    }

    /// `curl`'s stdout for `url` with the HTTP status appended (" 403").
    async fn curl_status(rs: &Real, id: &str, url: &str) -> String {
        run(rs, id, &format!("curl -sS -w ' %{{http_code}}' {url}"))
            .await
            .1
    }

    /// Creates a sandbox, which must succeed; returns its info.
    pub(crate) async fn create(rs: &Real, body: Value) -> Value {
        let (s, b) = rs.call(Method::POST, "/v1/sandboxes", body).await;
        assert_eq!(s, 201, "{b}");
        b
    }

    async fn patch(rs: &Real, id: &str, body: Value) -> Value {
        let (s, b) = rs
            .call(Method::PATCH, &format!("/v1/sandboxes/{id}"), body)
            .await;
        assert_eq!(s, 200, "{b}");
        b
    }

    fn config_names(config: &mut sandpit_server::ServeConfig, names: &[(&str, IpAddr)]) {
        for (name, ip) in names {
            config.egress_resolve.insert(name.to_string(), *ip);
        }
        // Loopback stays reachable for the test servers, except the "forbidden" 127.0.0.2
        // (an operator block).
        config.egress_blocked = vec!["127.0.0.2/32".parse().unwrap()];
        config.egress_unblocked = vec!["127.0.0.0/8".parse().unwrap()];
    }

    /// `curl` inside sandbox `id` as the holder of `key`, through the proxy for every host
    /// (127.0.0.1 included, which `no_proxy` would keep inside): stdout with the status.
    async fn curl_as(rs: &Real, key: &str, id: &str, url: &str) -> String {
        let command = format!("curl -sS --noproxy '' --max-time 10 -w ' %{{http_code}}' {url}");
        let (s, out) = rs.exec_as(key, id, &command).await;
        assert_eq!(s, 200, "{out}");
        out["stdout"].as_str().unwrap_or_default().to_owned()
    }

    /// ATTACK (issue 9) through the public API: a tenant key sets `allow: ["0.0.0.0/0",
    /// "::/0"]`. Before, any allowed CIDR won over every block, so its sandbox reached a
    /// listener on the host's loopback and the operator's `--egress-block` range. Now both are
    /// refused with a reason naming the rule, a private range opens only for the admin key,
    /// and the egress log (tenant-scoped) shows allowed and denied requests with bytes.
    #[tokio::test(flavor = "multi_thread")]
    async fn serial_attack_tenant_allow_all_opens_no_block_and_the_log_shows_it() {
        let host_local = Upstream::start("127.0.0.1", "host-local", None).await;
        let blocked = Upstream::start("127.0.0.2", "operator-blocked", None).await;
        let private = Upstream::start("127.0.0.3", "private", None).await;
        let Some(rs) = Real::start_with(|c| {
            // Default reserved ranges (loopback closed); 127.0.0.2 is the operator's block,
            // 127.0.0.3 stands in for a private network.
            c.egress_blocked = vec!["127.0.0.2/32".parse().unwrap()];
            c.egress_private = vec!["127.0.0.3/32".parse().unwrap()];
        })
        .await
        else {
            return;
        };
        let tenant = rs.create_key("egress-tenant").await;
        let id = "egress-allow-all";
        let everything = json!({"id": id,
            "network": {"mode": "allowlist", "allow": ["0.0.0.0/0", "::/0"]}});
        let (s, b) = rs
            .call_as(&tenant, Method::POST, "/v1/sandboxes", everything)
            .await;
        assert_eq!(s, 201, "{b}");

        let loopback = format!("http://127.0.0.1:{}/", host_local.addr.port());
        let out = curl_as(&rs, &tenant, id, &loopback).await;
        assert!(out.ends_with(" 403"), "{out}");
        let body: Value = serde_json::from_str(out.trim_end_matches(" 403")).unwrap();
        assert_eq!(body["error"], "EGRESS_DENIED", "{out}");
        assert_eq!(body["rule"], "always-blocked", "{out}");
        assert_eq!(
            body["reason"],
            "address 127.0.0.1 in always-blocked range loopback (127.0.0.0/8)"
        );
        let out = curl_as(
            &rs,
            &tenant,
            id,
            &format!("http://127.0.0.2:{}/", blocked.addr.port()),
        )
        .await;
        assert!(
            out.contains("operator block 127.0.0.2/32") && out.ends_with(" 403"),
            "{out}"
        );
        let private_url = format!("http://127.0.0.3:{}/", private.addr.port());
        let out = curl_as(&rs, &tenant, id, &private_url).await;
        assert!(
            out.contains("\"rule\":\"operator-only\"") && out.ends_with(" 403"),
            "{out}"
        );
        // HTTPS (CONNECT) gets a 403 at once, not a hang.
        let (s, out) = rs
            .exec_as(
                &tenant,
                id,
                &format!(
                    "curl -sS --noproxy '' --max-time 10 https://127.0.0.1:{}/",
                    host_local.addr.port()
                ),
            )
            .await;
        assert_eq!(s, 200);
        assert!(out["stderr"].as_str().unwrap().contains("403"), "{out}");

        // The admin key (the operator) grants the private range to its own sandbox.
        let (s, b) = rs
            .call(
                Method::POST,
                "/v1/sandboxes",
                json!({"id": "egress-operator",
                    "network": {"mode": "allowlist", "allow": ["127.0.0.3/32"]}}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let admin = rs.key.clone();
        let out = curl_as(&rs, &admin, "egress-operator", &private_url).await;
        assert_eq!(out, "hello from private\n 200");
        // ... but not loopback, even when it asks for everything.
        patch(
            &rs,
            "egress-operator",
            json!({"network": {"mode": "allowlist", "allow": ["0.0.0.0/0"]}}),
        )
        .await;
        let out = curl_as(&rs, &admin, "egress-operator", &loopback).await;
        assert!(
            out.contains("always-blocked") && out.ends_with(" 403"),
            "{out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(host_local.connection_count(), 0);
        assert_eq!(blocked.connection_count(), 0);
        assert_eq!(private.connection_count(), 1);

        // The tenant's log: its denials; the operator's log: the allowed request with bytes.
        let (s, log) = rs
            .call_as(
                &tenant,
                Method::GET,
                &format!("/v1/sandboxes/{id}/egress-log"),
                Value::Null,
            )
            .await;
        assert_eq!(s, 200, "{log}");
        let entries = log["entries"].as_array().unwrap();
        let rules: Vec<&str> = entries.iter().filter_map(|e| e["rule"].as_str()).collect();
        assert_eq!(
            rules,
            [
                "always-blocked",
                "operator-block",
                "operator-only",
                "always-blocked"
            ],
            "{log}"
        );
        assert!(entries.iter().all(|e| e["decision"] == "denied"), "{log}");
        assert_eq!(entries[3]["kind"], "connect", "{log}");
        let (s, log) = rs
            .call(
                Method::GET,
                "/v1/sandboxes/egress-operator/egress-log",
                Value::Null,
            )
            .await;
        assert_eq!(s, 200, "{log}");
        let first = &log["entries"][0];
        assert_eq!(first["decision"], "allowed", "{log}");
        assert_eq!(first["host"], "127.0.0.3", "{log}");
        assert!(first["bytesUp"].as_u64().unwrap() > 0, "{log}");
        assert!(first["bytesDown"].as_u64().unwrap() > 0, "{log}");
        assert_eq!(log["entries"][1]["decision"], "denied", "{log}");
        // Tenant-scoped: another tenant's sandbox is not found.
        let (s, b) = rs
            .call_as(
                &tenant,
                Method::GET,
                "/v1/sandboxes/egress-operator/egress-log",
                Value::Null,
            )
            .await;
        assert_error(s, &b, 404, "SANDBOX_NOT_FOUND");
        rs.stop().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn serial_egress_allowlist_blocks_and_runtime_changes_from_inside_a_sandbox() {
        let api = Upstream::start("127.0.0.1", "api", None).await;
        let other = Upstream::start("127.0.0.1", "other", None).await;
        let forbidden = Upstream::start("127.0.0.2", "forbidden", None).await;
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for tier in Real::tiers() {
            let Some(rs) = Real::start_tier_with(tier, |c| {
                config_names(
                    c,
                    &[
                        ("api.example.test", lo),
                        ("other.example.test", lo),
                        ("rebind.example.test", "127.0.0.2".parse().unwrap()),
                    ],
                )
            })
            .await
            else {
                return;
            };
            let b = create(
                &rs,
                json!({"id": "egress-e2e", "network": {"mode": "allowlist",
                    "allow": ["api.example.test", "rebind.example.test"]}}),
            )
            .await;
            assert_eq!(b["network"]["allow"][1], "rebind.example.test", "{b}");
            let id = "egress-e2e";
            let api_url = format!("http://api.example.test:{}/", api.addr.port());
            let other_url = format!("http://other.example.test:{}/", other.addr.port());

            let (_, idle) = rs
                .call(
                    Method::GET,
                    &format!("/v1/sandboxes/{id}/usage"),
                    Value::Null,
                )
                .await;
            assert_eq!(
                run_ok(&rs, id, &format!("curl -sS {api_url}")).await,
                "hello from api\n"
            );
            // The request's bytes count in the sandbox's usage (request up, answer down).
            let (_, used) = rs
                .call(
                    Method::GET,
                    &format!("/v1/sandboxes/{id}/usage"),
                    Value::Null,
                )
                .await;
            let grew = |field: &str| used[field].as_u64() > idle[field].as_u64();
            assert!(
                grew("networkBytesUp") && grew("networkBytesDown"),
                "{idle} → {used}"
            );
            assert!(used["networkBytesDown"].as_u64() >= Some(15), "{used}");

            // Refused with a body that says why (plain HTTP) or a 403 to CONNECT (HTTPS).
            let out = curl_status(&rs, id, &other_url).await;
            assert!(
                out.contains("host not in allow-list") && out.ends_with(" 403"),
                "{out}"
            );
            let https_other = format!("https://other.example.test:{}/", other.addr.port());
            let (code, _, err) = run(&rs, id, &format!("curl -sS {https_other}")).await;
            assert_ne!(code, 0);
            assert!(err.contains("403"), "{err}");

            // The forbidden server is reached neither by a name resolving to it nor by address,
            // through the proxy or around it.
            let fport = forbidden.addr.port();
            let out = curl_status(&rs, id, &format!("http://rebind.example.test:{fport}/")).await;
            assert!(
                out.contains("operator block 127.0.0.2/32") && out.ends_with(" 403"),
                "{out}"
            );
            let out = curl_status(&rs, id, &format!("http://127.0.0.2:{fport}/")).await;
            assert!(out.ends_with(" 403"), "{out}");
            let (code, _, _) = run(
                &rs,
                id,
                &format!("curl -sS --noproxy '*' --max-time 3 http://127.0.0.2:{fport}/"),
            )
            .await;
            assert_ne!(code, 0);
            assert_eq!(forbidden.connection_count(), 0);

            // A runtime change applies to the running sandbox at once.
            let b = patch(
                &rs,
                id,
                json!({"network": {"mode": "allowlist", "allow": ["other.example.test"]}}),
            )
            .await;
            assert_eq!(b["network"]["allow"], json!(["other.example.test"]), "{b}");
            assert_eq!(
                run_ok(&rs, id, &format!("curl -sS {other_url}")).await,
                "hello from other\n"
            );
            let out = curl_status(&rs, id, &api_url).await;
            assert!(out.ends_with(" 403"), "{out}");
            patch(&rs, id, json!({"network": {"mode": "none"}})).await;
            let (_, out, _) = run(&rs, id, &format!("curl -sS {other_url}")).await;
            assert!(out.contains("network policy is none"), "{out}");
            // After a sleep and wake the stored policy holds.
            let (s, _) = rs
                .call(Method::POST, &format!("/v1/sandboxes/{id}/stop"), json!({}))
                .await;
            assert_eq!(s, 200);
            patch(
                &rs,
                id,
                json!({"network": {"mode": "allowlist", "allow": ["api.example.test"]}}),
            )
            .await;
            assert_eq!(
                run_ok(&rs, id, &format!("curl -sS {api_url}")).await,
                "hello from api\n"
            );
            assert_eq!(forbidden.connection_count(), 0);
            rs.stop().await;
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn serial_egress_secrets_reach_servers_but_not_the_sandbox() {
        let api = Upstream::start("127.0.0.1", "api", None).await;
        let secure = Upstream::start("127.0.0.1", "secure", Some("secure.example.test")).await;
        let tmp = tempfile::tempdir().unwrap();
        let roots = tmp.path().join("upstream-ca.pem");
        std::fs::write(&roots, secure.ca_pem.as_ref().unwrap()).unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let Some(rs) = Real::start_with(|c| {
            config_names(c, &[("api.example.test", lo), ("secure.example.test", lo)]);
            c.egress_extra_roots = vec![roots.clone()];
        })
        .await
        else {
            return;
        };
        let b = create(
            &rs,
            json!({"id": "egress-secrets",
            "network": {"mode": "allowlist", "allow": ["*.example.test"]},
            "secrets": {
                "API_TOKEN": {"value": "http-s3cret", "hosts": ["api.example.test"]},
                "SECURE_TOKEN": {"value": "Bearer tls-s3cret",
                    "hosts": ["secure.example.test"], "header": "Authorization"}
            }}),
        )
        .await;
        assert!(
            !b.to_string().contains("s3cret"),
            "secret values are never returned: {b}"
        );
        assert_eq!(b["secrets"][0]["name"], "API_TOKEN", "{b}");
        let id = "egress-secrets";

        let api_url = format!("http://api.example.test:{}/", api.addr.port());
        run_ok(
            &rs,
            id,
            &format!("curl -sS -H \"Authorization: token $API_TOKEN\" {api_url}"),
        )
        .await;
        assert_eq!(
            api.last_header("authorization").as_deref(),
            Some("token http-s3cret")
        );

        // HTTPS: curl trusts the sandbox CA through CURL_CA_BUNDLE, the proxy the real server.
        let secure_url = format!("https://secure.example.test:{}/", secure.addr.port());
        assert_eq!(
            run_ok(&rs, id, &format!("curl -sS {secure_url}")).await,
            "hello from secure\n"
        );
        assert_eq!(
            secure.last_header("authorization").as_deref(),
            Some("Bearer tls-s3cret")
        );
        // Two requests on one intercepted connection go over one kept-alive upstream
        // connection; Python through SSL_CERT_FILE and the proxy variables.
        let connections = secure.connection_count();
        let out = run_ok(&rs, id, &format!("curl -sS {secure_url} {secure_url}")).await;
        assert_eq!(out, "hello from secure\nhello from secure\n");
        assert_eq!(secure.connection_count(), connections + 1);
        let py = format!(
            "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"{secure_url}\").read().decode(), end=\"\")'"
        );
        assert_eq!(run_ok(&rs, id, &py).await, "hello from secure\n");
        assert_eq!(secure.request_count(), 4);
        // The certificate curl saw was made by the sandbox's CA.
        let (_, _, err) = run(&rs, id, &format!("curl -sSv -o /dev/null {secure_url}")).await;
        assert!(err.contains("sandpit egress CA"), "{err}");

        // Inside, only placeholders.
        let out = run_ok(
            &rs,
            id,
            "env; tr '\\0' '\\n' < /proc/self/environ; cat /proc/1/environ 2>/dev/null | tr '\\0' '\\n'",
        )
        .await;
        assert!(!out.contains("s3cret"), "{out}");
        assert!(out.contains("API_TOKEN=sandpit-secret-API_TOKEN-"), "{out}");
        let (_, out, _) = run(
            &rs,
            id,
            "grep -rs s3cret /run/sandpit /etc /workspace; echo done",
        )
        .await;
        assert_eq!(out, "done\n");

        // Secrets changed at runtime: a new one is usable at once, a kept one keeps its
        // placeholder, a removed one is gone from the env and no longer injected.
        let (_, before, _) = run(&rs, id, "echo $API_TOKEN").await;
        let b = patch(
            &rs,
            id,
            json!({"secrets": {
                "API_TOKEN": {"value": "http-s3cret-2", "hosts": ["api.example.test"]},
                "NEW_TOKEN": {"value": "new-s3cret", "hosts": ["api.example.test"],
                    "header": "x-new"}}}),
        )
        .await;
        assert_eq!(b["secrets"].as_array().unwrap().len(), 2, "{b}");
        let (_, after, _) = run(&rs, id, "echo $API_TOKEN; echo ${SECURE_TOKEN:-unset}").await;
        assert_eq!(after, format!("{before}unset\n"));
        let out = run_ok(
            &rs,
            id,
            &format!("echo $NEW_TOKEN; curl -sS -H \"Authorization: token $API_TOKEN\" {api_url}"),
        )
        .await;
        assert!(out.starts_with("sandpit-secret-NEW_TOKEN-"), "{out}");
        assert_eq!(
            api.last_header("authorization").as_deref(),
            Some("token http-s3cret-2")
        );
        assert_eq!(api.last_header("x-new").as_deref(), Some("new-s3cret"));
        // No secret bound any more: tunnelled, so the sandbox sees the real certificate (which
        // its bundle does not trust; -k) and the server gets no credential.
        run_ok(&rs, id, &format!("curl -sSk {secure_url}")).await;
        assert_eq!(secure.last_header("authorization"), None);
        rs.stop().await;
    }

    /// Secrets and the sandbox CA's key are encrypted in the database, and a restarted server
    /// decrypts them: the secret still reaches its host, over HTTP and intercepted HTTPS.
    #[tokio::test(flavor = "multi_thread")]
    async fn serial_egress_secrets_are_encrypted_at_rest_and_injected_after_a_restart() {
        let api = Upstream::start("127.0.0.1", "api", None).await;
        let secure = Upstream::start("127.0.0.1", "secure", Some("secure.example.test")).await;
        let tmp = tempfile::Builder::new().prefix("sps").tempdir().unwrap();
        let roots = tmp.path().join("upstream-ca.pem");
        std::fs::write(&roots, secure.ca_pem.as_ref().unwrap()).unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let data_dir = tmp.path().join("d");
        let tweak = |c: &mut sandpit_server::ServeConfig| {
            config_names(c, &[("api.example.test", lo), ("secure.example.test", lo)]);
            c.egress_extra_roots = vec![roots.clone()];
        };
        let Some(rs) = Real::start_on_with(&data_dir, tweak).await else {
            return;
        };
        let value = format!("rest-s3cret-{}", std::process::id());
        create(
            &rs,
            json!({"id": "egress-rest", "network": {"mode": "allowlist", "allow": ["*.example.test"]},
                "secrets": {
                    "API_TOKEN": {"value": value, "hosts": ["api.example.test"]},
                    "SECURE_TOKEN": {"value": value, "hosts": ["secure.example.test"],
                        "header": "x-token"}}}),
        )
        .await;
        let api_url = format!("http://api.example.test:{}/", api.addr.port());
        let secure_url = format!("https://secure.example.test:{}/", secure.addr.port());
        let use_secrets = format!(
            "curl -sS -H \"Authorization: token $API_TOKEN\" {api_url} && curl -sS {secure_url}"
        );
        run_ok(&rs, "egress-rest", &use_secrets).await;
        assert_eq!(
            api.last_header("authorization"),
            Some(format!("token {value}"))
        );
        rs.stop().await;

        let mut bytes = Vec::new();
        for name in ["sandpit.db", "sandpit.db-wal", "sandpit.db-shm"] {
            bytes.extend(std::fs::read(data_dir.join(name)).unwrap_or_default());
        }
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"*.example.test"), "not the database of this test?");
        assert!(!has(value.as_bytes()), "secret value in the database file");
        assert!(!has(b"PRIVATE KEY"), "CA private key in the database file");

        let rs = Real::start_on_with(&data_dir, tweak).await.unwrap();
        let before = (api.request_count(), secure.request_count());
        run_ok(&rs, "egress-rest", &use_secrets).await;
        assert_eq!(
            (api.request_count(), secure.request_count()),
            (before.0 + 1, before.1 + 1)
        );
        assert_eq!(
            api.last_header("authorization"),
            Some(format!("token {value}"))
        );
        assert_eq!(secure.last_header("x-token"), Some(value.clone()));
        rs.stop().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn serial_egress_git_checkout_over_http_through_the_allowlist() {
        let tmp = tempfile::tempdir().unwrap();
        let git = |args: &[&str], dir: &Path| {
            let out = std::process::Command::new("git")
                .args(args)
                .current_dir(dir)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("HOME", tmp.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}: {out:?}");
        };
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&["init", "-q", "-b", "main"], &work);
        std::fs::write(work.join("README.md"), "through the egress proxy\n").unwrap();
        git(&["add", "README.md"], &work);
        git(
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@e",
                "commit",
                "-qm",
                "first",
            ],
            &work,
        );
        let served = tmp.path().join("served");
        std::fs::create_dir_all(&served).unwrap();
        git(&["clone", "-q", "--bare", "../work", "repo.git"], &served);
        git(&["update-server-info"], &served.join("repo.git"));
        let server = Upstream::files("127.0.0.1", &served, None).await;

        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let Some(rs) = Real::start_with(|c| config_names(c, &[("git.example.test", lo)])).await
        else {
            return;
        };
        let id = "egress-git";
        create(
            &rs,
            json!({"id": id, "network": {"mode": "allowlist", "allow": ["git.example.test"]}}),
        )
        .await;
        let url = format!("http://git.example.test:{}/repo.git", server.addr.port());
        let (s, b) = rs
            .call(
                Method::POST,
                &format!("/v1/sandboxes/{id}/api/git/checkout"),
                json!({"repoUrl": url, "targetDir": "/workspace/repo"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["branch"], "main", "{b}");
        assert_eq!(
            run_ok(&rs, id, "cat /workspace/repo/README.md").await,
            "through the egress proxy\n"
        );

        // Not allowlisted: the clone fails with the proxy's reason.
        patch(
            &rs,
            id,
            json!({"network": {"mode": "allowlist", "allow": ["x.example.test"]}}),
        )
        .await;
        let (s, b) = rs
            .call(
                Method::POST,
                &format!("/v1/sandboxes/{id}/api/git/checkout"),
                json!({"repoUrl": url, "targetDir": "/workspace/again"}),
            )
            .await;
        assert_ne!(s, 200, "{b}");
        assert!(b.to_string().contains("403"), "{b}");
        rs.stop().await;
    }
}

/// The control plane's side with the fake driver: validation, reported state, no values.
#[tokio::test]
async fn network_and_secrets_on_create_and_patch_are_validated_and_reported_without_values() {
    use reqwest::Method;
    use serde_json::json;

    let ts = super::TestServer::start().await;
    for (body, needle) in [
        (
            json!({"id": "n1", "network": {"mode": "allowlist", "allow": ["exa mple.com"]}}),
            "network",
        ),
        (json!({"id": "n1", "network": {"mode": "open"}}), ""),
        (
            json!({"id": "n1", "secrets": {"1BAD": {"value": "v", "hosts": ["a.test"]}}}),
            "env var name",
        ),
        (
            json!({"id": "n1", "secrets": {"T": {"value": "v", "hosts": []}}}),
            "at least one host",
        ),
        (
            json!({"id": "n1", "secrets": {"T": {"value": "a\nb", "hosts": ["a.test"]}}}),
            "printable",
        ),
        (
            json!({"id": "n1", "secrets": {"T": {"value": "v", "hosts": ["a.test"],
                "header": "bad header"}}}),
            "header",
        ),
    ] {
        let (status, b) = ts.json(Method::POST, "/v1/sandboxes", body.clone()).await;
        assert_eq!(status, 400, "{body}: {b}");
        assert!(b.to_string().contains(needle), "{body}: {b}");
    }
    // Nothing was created by the refused requests.
    assert_eq!(ts.get("/v1/sandboxes/n1").await.0, 404);

    let (status, b) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "n1",
                "network": {"mode": "allowlist", "allow": ["*.example.com", "10.1.0.0/16"]},
                "secrets": {"TOKEN": {"value": "v3ry-s3cret", "hosts": ["api.example.com"],
                    "header": "Authorization"}}}),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(
        b["network"],
        json!({"mode": "allowlist", "allow": ["*.example.com", "10.1.0.0/16"]})
    );
    assert_eq!(
        b["secrets"],
        json!([{"name": "TOKEN", "hosts": ["api.example.com"], "header": "Authorization"}])
    );
    let (_, got) = ts.get("/v1/sandboxes/n1").await;
    assert_eq!(got["secrets"], b["secrets"]);
    let (_, list) = ts.get("/v1/sandboxes").await;
    assert!(!list.to_string().contains("s3cret"), "{list}");
    assert_eq!(list["sandboxes"][0]["network"]["mode"], "allowlist");

    let (status, b) = ts
        .json(
            Method::PATCH,
            "/v1/sandboxes/n1",
            json!({"network": {"mode": "full"}, "secrets": {}}),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["network"], json!({"mode": "full", "allow": []}));
    assert_eq!(b["secrets"], json!([]));
    // Defaults for a sandbox created without either.
    let (_, b) = ts
        .json(Method::POST, "/v1/sandboxes", json!({"id": "n2"}))
        .await;
    assert_eq!(b["network"], json!({"mode": "none", "allow": []}));
    assert_eq!(b["secrets"], json!([]));
}

/// A WebSocket echo server over TLS for `host`; records the `Authorization` of each handshake.
// tungstenite's handshake callback type has a large error variant; not ours to shrink.
#[allow(clippy::result_large_err)]
async fn wss_echo(host: &str) -> (SocketAddr, String, Arc<Mutex<Vec<Option<String>>>>) {
    use futures::{SinkExt, StreamExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (acceptor, ca_pem) = tls_acceptor(host);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen2.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let record = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                              resp| {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap_or_default().to_owned());
                    seen.lock().unwrap().push(auth);
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tls, record).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, ca_pem, seen)
}

#[tokio::test]
async fn websockets_pass_through_an_intercepted_connection_with_the_secret() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let (addr, upstream_ca, seen) = wss_echo("ws.example.test").await;
    let tmp = tempfile::tempdir().unwrap();
    let roots = tmp.path().join("ca.pem");
    std::fs::write(&roots, &upstream_ca).unwrap();
    let mut config = resolving(&[("ws.example.test", "127.0.0.1")]);
    config.extra_roots = vec![roots];
    let net = network(
        policy(NetworkMode::Allowlist, &["ws.example.test"]),
        &[(
            "WS_TOKEN",
            "Bearer ws-s3cret",
            &["ws.example.test"],
            Some("authorization"),
        )],
    );
    let proxy = Proxy::start(config, &net).await;
    let target = format!("ws.example.test:{}", addr.port());
    let (status, body, tunnel) = proxy.connect(&target).await;
    assert_eq!(status, 200, "{body}");
    let name = ServerName::try_from("ws.example.test".to_owned()).unwrap();
    let tls = tls_connector(&proxy.ca_pem())
        .connect(name, tunnel.unwrap())
        .await
        .unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(format!("wss://{target}/echo"), tls)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    for text in ["one", "two"] {
        ws.send(Message::text(text)).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), text);
    }
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Some("Bearer ws-s3cret".to_owned())]
    );
}

#[tokio::test]
async fn a_sandbox_keeps_at_most_256_connections_open() {
    let up = Upstream::start("127.0.0.1", "api", None).await;
    let config = resolving(&[("api.example.test", "127.0.0.1")]);
    let net = network(policy(NetworkMode::Allowlist, &["api.example.test"]), &[]);
    let proxy = Proxy::start(config, &net).await;
    let socket = proxy.run_dir.join("egress.sock");
    let mut open = Vec::new();
    for _ in 0..256 {
        open.push(UnixStream::connect(&socket).await.unwrap());
    }
    let mut extra = UnixStream::connect(&socket).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("too many open connections"),
        "{answer}"
    );
    // A closed connection frees its slot.
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = UnixStream::connect(&socket).await.unwrap();
    let request = format!(
        "GET http://api.example.test:{}/ HTTP/1.1\r\nhost: api.example.test\r\nconnection: close\r\n\r\n",
        up.addr.port()
    );
    again.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), again.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello from api\n"),
        "{answer}"
    );
}

/// An entry with a port allows its host on that port only, for plain HTTP and `CONNECT` alike;
/// another port of the same host is refused with its own rule. Before: every port of an allowed
/// host was open.
#[tokio::test]
async fn a_host_entry_with_a_port_opens_that_port_only() {
    let up = Upstream::start("127.0.0.1", "api", None).await;
    let other = Upstream::start("127.0.0.1", "admin", None).await;
    let (port, other_port) = (up.addr.port(), other.addr.port());
    let config = resolving(&[("api.example.test", "127.0.0.1")]);
    let allow = format!("api.example.test:{port}");
    let net = network(policy(NetworkMode::Allowlist, &[&allow]), &[]);
    let proxy = Proxy::start(config, &net).await;
    let (status, body) = proxy
        .get(&format!("http://api.example.test:{port}/"), &[])
        .await;
    assert_eq!((status, body.as_str()), (200, "hello from api\n"));
    let (status, body) = proxy
        .get(&format!("http://api.example.test:{other_port}/"), &[])
        .await;
    assert_eq!(status, 403, "{body}");
    let denial: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(denial["rule"], "allow-list-port", "{body}");
    assert_eq!(
        denial["reason"],
        format!("port {other_port} of this host not in allow-list"),
        "{body}"
    );
    let (status, body, _) = proxy
        .connect(&format!("api.example.test:{other_port}"))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("allow-list-port"), "{body}");
    let (status, _, tunnel) = proxy.connect(&format!("api.example.test:{port}")).await;
    assert_eq!(status, 200);
    assert!(tunnel.is_some());
    assert_eq!(
        other.connections.load(Ordering::SeqCst),
        0,
        "the other port was never connected to"
    );
}

/// A bad allow-list entry is refused at the API edge, on create and on PATCH alike, with one
/// code (`VALIDATION_FAILED`), a message naming the entry by position, and the entry in the
/// context; nothing is stored. Good entries are reported as parsed.
#[tokio::test]
async fn a_bad_allow_list_entry_gets_one_clear_error_at_the_api_edge() {
    use reqwest::Method;
    use serde_json::json;

    let ts = super::TestServer::start().await;
    let shape = "is neither a host name pattern with an optional port (example.com, \
                 *.example.com, example.com:443) nor a CIDR (10.1.0.0/16, 2001:db8::/32, 203.0.113.7)";
    let cases = [
        (json!(["a.test", "exa mple.com"]), 1, "exa mple.com"),
        (json!(["10.0.0.0/33"]), 0, "10.0.0.0/33"),
        (json!(["a.test", "b.test", ""]), 2, ""),
        (json!(["https://a.test/"]), 0, "https://a.test/"),
        (json!(["*.*.a.test"]), 0, "*.*.a.test"),
        (json!(["fe80::/129"]), 0, "fe80::/129"),
        (json!(["a.test:0"]), 0, "a.test:0"),
        (json!(["203.0.113.7:80"]), 0, "203.0.113.7:80"),
    ];
    let check = |b: &serde_json::Value, index: usize, entry: &str| {
        assert_eq!(b["code"], "VALIDATION_FAILED", "{b}");
        assert_eq!(
            b["message"],
            format!("network.allow[{index}]: {entry:?} {shape}"),
            "{b}"
        );
        assert_eq!(b["context"]["field"], format!("network.allow[{index}]"));
        assert_eq!(b["context"]["value"], entry);
    };
    for (allow, index, entry) in &cases {
        let body = json!({"id": "bad", "network": {"mode": "allowlist", "allow": allow}});
        let (status, b) = ts.json(Method::POST, "/v1/sandboxes", body).await;
        assert_eq!(status, 400, "{b}");
        check(&b, *index, entry);
    }
    assert_eq!(ts.get("/v1/sandboxes/bad").await.0, 404, "nothing created");

    let good =
        json!({"mode": "allowlist", "allow": ["Api.Example.COM.", "10.1.2.3/16", "203.0.113.7"]});
    let (status, b) = ts
        .json(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "ok", "network": good}),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    let parsed =
        json!({"mode": "allowlist", "allow": ["api.example.com", "10.1.0.0/16", "203.0.113.7/32"]});
    assert_eq!(b["network"], parsed);
    for (allow, index, entry) in &cases {
        let body = json!({"network": {"mode": "full", "allow": allow}});
        let (status, b) = ts.json(Method::PATCH, "/v1/sandboxes/ok", body).await;
        assert_eq!(status, 400, "{b}");
        check(&b, *index, entry);
    }
    let (_, b) = ts.get("/v1/sandboxes/ok").await;
    assert_eq!(b["network"], parsed, "a refused PATCH changes nothing");
}

/// The proxy and the `full` mode's firewall decide from the one table of reserved ranges: every
/// IPv4 range of it is refused by both layers without a grant; with a grant of everything, the
/// always-blocked ones stay refused by both and the operator-only ones open in both. The
/// operator's blocks and the grants reach both layers as the same typed values.
#[test]
fn both_layers_refuse_the_same_ranges_from_the_one_table() {
    use sandpit_egress::AddressBlocks;
    use sandpit_protocol::netrange::{RESERVED_RANGES, RangeClass};
    use sandpit_runtime::network::{OperatorRanges, allowed_v4, reachable};

    let blocked: Vec<ipnet::IpNet> = vec!["8.8.4.0/24".parse().unwrap()];
    let proxy = AddressBlocks::new(blocked.clone(), Vec::new(), Vec::new(), Vec::new());
    let operator = OperatorRanges {
        blocked,
        private: Vec::new(),
    };
    // What the server hands the driver for a policy the operator set (`driver_policy`).
    let egress = Egress::new(&EgressConfig::default()).unwrap();
    let mut net = network(policy(NetworkMode::Full, &["0.0.0.0/0", "*.a.test"]), &[]);
    assert!(
        allowed_v4(&egress.driver_policy(TENANT, &net)).is_empty(),
        "a tenant's own CIDRs grant nothing"
    );
    net.operator_policy = true;
    let all_v4 = allowed_v4(&egress.driver_policy(TENANT, &net));
    assert_eq!(all_v4, vec!["0.0.0.0/0".parse::<ipnet::Ipv4Net>().unwrap()]);
    let all: Vec<ipnet::IpNet> = vec!["0.0.0.0/0".parse().unwrap()];

    let mut checked = 0;
    for range in RESERVED_RANGES {
        let ipnet::IpNet::V4(v4) = range.cidr.parse::<ipnet::IpNet>().unwrap() else {
            // IPv6: the proxy refuses by the table, the firewall refuses all IPv6.
            let ip = range.cidr.parse::<ipnet::IpNet>().unwrap().network();
            assert!(proxy.check(ip, &[]).is_err(), "{}", range.cidr);
            assert!(!reachable(ip, &[], &[], &operator), "{}", range.cidr);
            continue;
        };
        // The first and the last address of the range, and one inside.
        let inside = std::net::Ipv4Addr::from(u32::from(v4.network()) | 1);
        for addr in [v4.network(), inside, v4.broadcast()] {
            let ip = std::net::IpAddr::V4(addr);
            let what = format!("{addr} in {} ({})", range.cidr, range.name);
            assert!(proxy.check(ip, &[]).is_err(), "proxy: {what}");
            assert!(!reachable(ip, &[], &[], &operator), "firewall: {what}");
            let (by_proxy, by_firewall) = (
                proxy.check(ip, &all).is_ok(),
                reachable(ip, &all_v4, &[], &operator),
            );
            let opened = range.class == RangeClass::OperatorOnly;
            assert_eq!(by_proxy, opened, "proxy with a grant: {what}");
            assert_eq!(by_firewall, opened, "firewall with a grant: {what}");
            checked += 1;
        }
    }
    assert!(checked >= 3 * 14, "{checked}");
    // The operator's block and public addresses: the same answer in both layers.
    for (ip, open) in [("8.8.4.4", false), ("93.184.216.34", true)] {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        assert_eq!(proxy.check(ip, &all).is_ok(), open, "{ip}");
        assert_eq!(reachable(ip, &all_v4, &[], &operator), open, "{ip}");
    }
}
