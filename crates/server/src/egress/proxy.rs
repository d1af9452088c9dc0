//! The HTTP proxy one sandbox talks to: absolute-form requests and CONNECT, decided by the
//! sandbox's [`Rules`], with secrets injected into requests to the hosts they are bound to.

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use sandpit_protocol::throttle::Throttle;

use super::Shared;
use super::decision::Refusal;
use super::log::{Counted, EgressLog};
use super::policy::{Rules, normalize_host};
use super::tls::{Hello, MAX_HELLO, SandboxCa, parse_hello};

/// A connection to a destination, its bytes counted into the sandbox's egress log.
type Upstream = Counted<TcpStream>;

type ProxyBody = BoxBody<Bytes, hyper::Error>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a tunnel waits for the client's first bytes of a TLS handshake to intercept.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// The proxy of one sandbox.
pub struct SandboxProxy {
    pub(super) sandbox: String,
    pub(super) shared: Arc<Shared>,
    pub(super) rules: RwLock<Arc<Rules>>,
    pub(super) ca: Option<Arc<SandboxCa>>,
    /// Where every decision and its bytes go.
    pub(super) log: Arc<EgressLog>,
    /// Cancelled when the sandbox sleeps or is destroyed: every connection ends.
    pub(super) cancel: CancellationToken,
    /// Bounds the sandbox's open connections (tunnels included): they hold host descriptors.
    pub(super) connections: Arc<Semaphore>,
    /// The same bound for all sandboxes of the tenant together.
    pub(super) tenant_connections: Arc<Semaphore>,
    /// Every log line this sandbox can trigger (refusals, limits, tunnel errors) goes through
    /// it: a connect loop costs the server's log a few lines per window.
    pub(super) log_throttle: Throttle,
}

/// A connection from a sandbox's egress bridge, however its driver carries it.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientIo for T {}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy)]
enum Over {
    Sandbox,
    Tenant,
}

impl Over {
    fn what(self) -> &'static str {
        match self {
            Over::Sandbox => "this sandbox",
            Over::Tenant => "this tenant's sandboxes",
        }
    }
}

/// Answers a connection over a limit and closes it.
async fn too_many(mut stream: Box<dyn ClientIo>, over: Over) {
    let body = format!(
        "sandpit egress proxy: too many open connections from {}\n",
        over.what()
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
}

/// A sandbox's connection with its slots under the sandbox's and the tenant's limits; they
/// are freed when the connection (or the tunnel it became) is dropped.
struct Permitted {
    stream: Box<dyn ClientIo>,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl AsyncRead for Permitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Permitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl SandboxProxy {
    fn rules(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether a line about this sandbox may be logged now (see [`Throttle`]).
    fn may_log(&self) -> bool {
        self.log_throttle.allow(|suppressed| {
            tracing::warn!(sandbox = %self.sandbox, suppressed, "similar egress messages about this sandbox suppressed");
        })
    }

    /// Logs what the throttle still holds back (the proxy is going away).
    pub(super) fn report_suppressed(&self) {
        let suppressed = self.log_throttle.flush();
        if suppressed > 0 {
            tracing::warn!(sandbox = %self.sandbox, suppressed, "similar egress messages about this sandbox suppressed");
        }
    }

    /// Both slots of a new connection, or the limit that is full.
    fn permits(&self) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), Over> {
        let sandbox = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Over::Sandbox)?;
        let tenant = self
            .tenant_connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Over::Tenant)?;
        Ok((sandbox, tenant))
    }

    /// Serves one connection from the sandbox on its own task (until it ends or the proxy is
    /// cancelled), or answers 503 when the sandbox or its tenant has too many open.
    pub(super) fn accept(self: &Arc<Self>, stream: Box<dyn ClientIo>) {
        if self.cancel.is_cancelled() {
            return;
        }
        let permits = match self.permits() {
            Ok(permits) => permits,
            Err(over) => {
                if self.may_log() {
                    tracing::warn!(sandbox = %self.sandbox, limit = over.what(), "egress connection limit reached");
                }
                tokio::spawn(too_many(stream, over));
                return;
            }
        };
        let stream = Permitted {
            stream,
            _permits: permits,
        };
        let proxy = self.clone();
        tokio::spawn(async move {
            let cancel = proxy.cancel.clone();
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = proxy.serve_connection(stream) => {}
            }
        });
    }

    async fn serve_connection(self: Arc<Self>, stream: Permitted) {
        let proxy = self.clone();
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await;
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let connect = req.method() == Method::CONNECT;
        let port = req
            .uri()
            .authority()
            .map(|a| a.port_u16().unwrap_or(if connect { 443 } else { 80 }));
        let result = if connect {
            self.connect(req).await
        } else {
            self.forward_plain(req).await
        };
        result.unwrap_or_else(|refusal| {
            if self.may_log() {
                tracing::info!(sandbox = %self.sandbox, status = %refusal.status(), reason = %refusal.reason(), "egress refused");
            }
            refusal_response(&refusal, port)
        })
    }

    /// [`Self::connect_checked`], logged: an allowed connection's entry counts its bytes.
    async fn open(&self, host: &str, port: u16, kind: &'static str) -> Result<Upstream, Refusal> {
        match self.connect_checked(host, port).await {
            Ok(stream) => Ok(Counted::new(stream, self.log.allowed(host, port, kind))),
            Err(refusal) => {
                self.log.refused(host, port, kind, &refusal);
                Err(refusal)
            }
        }
    }

    /// Policy check, resolution, block check on every resolved address, connect: the proxy
    /// connects to exactly the address it checked (no second lookup to rebind).
    async fn connect_checked(&self, host: &str, port: u16) -> Result<TcpStream, Refusal> {
        let rules = self.rules();
        rules
            .check_host(host)
            .map_err(|denial| Refusal::denied(host, denial))?;
        let addrs = self.resolve(host, port).await?;
        let mut last = Refusal::bad_gateway(host, "it resolves to no address");
        for ip in addrs {
            if let Err(denial) = rules.check_addr(ip, &self.shared.blocks) {
                last = Refusal::denied(host, denial);
                continue;
            }
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((ip, port))).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => last = Refusal::bad_gateway(host, format!("{ip}:{port}: {e}")),
                Err(_) => last = Refusal::bad_gateway(host, format!("{ip}:{port}: timed out")),
            }
        }
        Err(last)
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, Refusal> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if let Some(ip) = self.shared.resolve.get(host) {
            return Ok(vec![*ip]);
        }
        let found = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Refusal::bad_gateway(host, format!("cannot resolve it: {e}")))?;
        Ok(found.map(|a| a.ip()).collect())
    }

    /// An absolute-form request (`GET http://host/path`), forwarded as origin-form.
    async fn forward_plain(
        &self,
        mut req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let uri = req.uri().clone();
        let Some(authority) = uri.authority() else {
            return Err(Refusal::bad_request(
                "this is an HTTP proxy: send absolute-form requests (http://host/path) or CONNECT",
            ));
        };
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(Refusal::bad_request(
                "only http:// URLs are proxied this way; use CONNECT for https",
            ));
        }
        let host = normalize_host(authority.host());
        let port = authority.port_u16().unwrap_or(80);
        let stream = self.open(&host, port, "http").await?;
        prepare_request(&mut req, authority, &self.rules(), &host);
        send_over(stream, req, &host, self.cancel.clone()).await
    }

    /// `CONNECT host:port`: decided and connected before answering 200, so refusals and
    /// unreachable hosts get a clear status.
    async fn connect(
        self: &Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let Some(authority) = req.uri().authority().cloned() else {
            return Err(Refusal::bad_request("CONNECT needs a host:port target"));
        };
        let host = normalize_host(authority.host());
        let port = authority.port_u16().unwrap_or(443);
        let upstream = self.open(&host, port, "connect").await?;
        let proxy = self.clone();
        tokio::spawn(async move {
            let cancel = proxy.cancel.clone();
            let tunnel = async {
                let client = match hyper::upgrade::on(req).await {
                    Ok(upgraded) => TokioIo::new(upgraded),
                    Err(e) => {
                        tracing::debug!(error = %e, "CONNECT upgrade failed");
                        return;
                    }
                };
                if let Err(e) = proxy.tunnel(client, upstream, &host, port).await
                    && proxy.may_log()
                {
                    tracing::info!(sandbox = %proxy.sandbox, host = %host, error = %e, "egress tunnel ended");
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tunnel => {}
            }
        });
        Ok(Response::new(empty()))
    }

    /// Relays a CONNECT tunnel. A TLS ClientHello must name the CONNECT host (no fronting);
    /// hosts with secrets bound are intercepted when the sandbox has a CA.
    async fn tunnel<C>(
        self: &Arc<Self>,
        client: C,
        mut upstream: Upstream,
        host: &str,
        port: u16,
    ) -> std::io::Result<()>
    where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let intercept = match &self.ca {
            Some(ca) if !self.rules().secrets_for(host).is_empty() => Some(ca.clone()),
            _ => None,
        };
        let (mut client_read, mut client_write) = tokio::io::split(client);
        if let Some(ca) = intercept {
            // TLS clients speak first: wait for the hello before anything else.
            let first = tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut client_read))
                .await
                .map_err(|_| std::io::Error::other("no TLS hello from the client"))??;
            match parse_hello(&first) {
                Hello::Tls(sni) => {
                    check_sni(sni.as_deref(), host)?;
                    let client = Prefixed {
                        prefix: first,
                        pos: 0,
                        inner: client_read.unsplit(client_write),
                    };
                    return self.intercept(client, upstream, ca, host, port).await;
                }
                Hello::Invalid => {
                    return Err(std::io::Error::other("unparseable TLS ClientHello"));
                }
                Hello::NotTls | Hello::Incomplete => {
                    upstream.write_all(&first).await?;
                    let mut client = client_read.unsplit(client_write);
                    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
                    return Ok(());
                }
            }
        }
        // Pass-through. The server may speak first, so relay downstream at once and check the
        // client's first bytes before any reach upstream.
        let (mut up_read, mut up_write) = tokio::io::split(upstream);
        let down = async {
            tokio::io::copy(&mut up_read, &mut client_write).await?;
            client_write.shutdown().await
        };
        let up = async {
            let first = read_hello(&mut client_read).await?;
            match parse_hello(&first) {
                Hello::Tls(sni) => check_sni(sni.as_deref(), host)?,
                Hello::Invalid => return Err(std::io::Error::other("unparseable TLS ClientHello")),
                Hello::NotTls | Hello::Incomplete => {}
            }
            up_write.write_all(&first).await?;
            tokio::io::copy(&mut client_read, &mut up_write).await?;
            up_write.shutdown().await
        };
        // Either side failing (a refused hello above all) ends both.
        tokio::try_join!(down, up).map(|_| ())
    }

    /// Terminates the sandbox's TLS with a leaf of its CA and forwards each request over a
    /// verified TLS connection to the real host, with secrets injected.
    async fn intercept<C>(
        self: &Arc<Self>,
        client: C,
        upstream: Upstream,
        ca: Arc<SandboxCa>,
        host: &str,
        port: u16,
    ) -> std::io::Result<()>
    where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = ca.server_config(host).map_err(std::io::Error::other)?;
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(client);
        let tls = tokio::time::timeout(HELLO_TIMEOUT, accept)
            .await
            .map_err(|_| std::io::Error::other("TLS handshake with the sandbox timed out"))??;
        let slot = Arc::new(tokio::sync::Mutex::new(UpstreamSlot {
            tcp: Some(upstream),
            sender: None,
        }));
        let proxy = self.clone();
        let host = host.to_owned();
        let service = service_fn(move |req: Request<Incoming>| {
            let (proxy, host, slot) = (proxy.clone(), host.clone(), slot.clone());
            async move {
                let result = proxy.forward_tls(req, &slot, &host, port).await;
                Ok::<_, Infallible>(result.unwrap_or_else(|r| refusal_response(&r, Some(port))))
            }
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tls), service)
            .with_upgrades()
            .await
            .map_err(std::io::Error::other)
    }

    /// One intercepted request. The policy is checked again for every request, so a runtime
    /// change applies to open tunnels too. The upstream TLS connection is kept alive and
    /// reused; the first one rides on the TCP connection made at CONNECT time, later ones
    /// resolve and check addresses anew.
    async fn forward_tls(
        &self,
        mut req: Request<Incoming>,
        slot: &tokio::sync::Mutex<UpstreamSlot>,
        host: &str,
        port: u16,
    ) -> Result<Response<ProxyBody>, Refusal> {
        if let Err(denial) = self.rules().check_host(host) {
            let refusal = Refusal::denied(host, denial);
            self.log.refused(host, port, "connect", &refusal);
            return Err(refusal);
        }
        let authority = if port == 443 {
            Authority::try_from(host)
        } else {
            Authority::try_from(format!("{host}:{port}"))
        }
        .map_err(|e| Refusal::bad_request(format!("bad host {host:?}: {e}")))?;
        prepare_request(&mut req, &authority, &self.rules(), host);
        let upgrade = is_upgrade(req.headers());
        let mut slot = slot.lock().await;
        let kept = match slot.sender.take() {
            Some(mut sender) if !upgrade => {
                let ready = tokio::time::timeout(Duration::from_secs(1), sender.ready()).await;
                matches!(ready, Ok(Ok(()))).then_some(sender)
            }
            _ => None,
        };
        let mut sender = match kept {
            Some(sender) => sender,
            None => {
                let tcp = match slot.tcp.take() {
                    Some(tcp) => tcp,
                    None => self.open(host, port, "connect").await?,
                };
                let name =
                    rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
                        Refusal::bad_request(format!("{host:?} is not a TLS server name: {e}"))
                    })?;
                let connect = tokio_rustls::TlsConnector::from(self.shared.upstream_tls.clone())
                    .connect(name, tcp);
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                    .await
                    .map_err(|_| Refusal::bad_gateway(host, "TLS handshake timed out"))?
                    .map_err(|e| Refusal::bad_gateway(host, format!("TLS: {e}")))?;
                handshake(tls, host).await?
            }
        };
        let response = send(&mut sender, req, host, self.cancel.clone()).await?;
        if !upgrade {
            slot.sender = Some(sender);
        }
        Ok(response)
    }
}

fn check_sni(sni: Option<&str>, host: &str) -> std::io::Result<()> {
    match sni.map(normalize_host) {
        Some(name) if name != host => Err(std::io::Error::other(format!(
            "TLS server name {name:?} does not match the CONNECT host {host:?}"
        ))),
        _ => Ok(()),
    }
}

/// Reads until the first TLS record is complete (or, for anything else, the first bytes).
async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 4096];
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if parse_hello(&buf) != Hello::Incomplete || buf.len() >= MAX_HELLO {
            return Ok(buf);
        }
    }
}

/// Origin-form target, `Host` from the authority actually connected to, no hop-by-hop or
/// proxy headers, and the host's secrets injected.
fn prepare_request(req: &mut Request<Incoming>, authority: &Authority, rules: &Rules, host: &str) {
    let secrets = rules.secrets_for(host);
    let mut target = req
        .uri()
        .path_and_query()
        .map(PathAndQuery::as_str)
        .unwrap_or("/")
        .to_owned();
    for s in &secrets {
        if target.contains(&s.placeholder) {
            target = target.replace(&s.placeholder, &s.value);
        }
    }
    if let Ok(uri) = Uri::builder().path_and_query(target).build() {
        *req.uri_mut() = uri;
    }
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
        headers.insert(header::HOST, value);
    }
    for s in &secrets {
        for value in headers.values_mut() {
            let Ok(text) = value.to_str() else { continue };
            if text.contains(&s.placeholder)
                && let Ok(replaced) = HeaderValue::from_str(&text.replace(&s.placeholder, &s.value))
            {
                *value = replaced;
            }
        }
        if let (Some(name), Ok(value)) = (&s.header, HeaderValue::from_str(&s.value)) {
            headers.insert(name.clone(), value);
        }
    }
}

/// Removes hop-by-hop headers; an upgrade (WebSocket) keeps `Connection: upgrade` and its
/// `Upgrade` header, which the next hop needs.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let upgrade = is_upgrade(headers)
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    strip_all_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

fn strip_all_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for name in listed {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// The upstream side of one intercepted connection.
struct UpstreamSlot {
    /// The connection made at CONNECT time, until the first request uses it.
    tcp: Option<Upstream>,
    /// A kept-alive HTTP connection to the host.
    sender: Option<Sender>,
}

type Sender = hyper::client::conn::http1::SendRequest<Incoming>;

/// An HTTP/1.1 client connection over `io`.
async fn handshake<S>(io: S, host: &str) -> Result<Sender, Refusal>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Refusal::bad_gateway(host, e))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// Sends one request over a fresh upstream connection and streams the answer back.
async fn send_over<S>(
    io: S,
    req: Request<Incoming>,
    host: &str,
    cancel: CancellationToken,
) -> Result<Response<ProxyBody>, Refusal>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut sender = handshake(io, host).await?;
    send(&mut sender, req, host, cancel).await
}

/// Sends one request and streams the answer back. A protocol switch (WebSocket) is spliced
/// both ways until either side ends or `cancel` fires.
async fn send(
    sender: &mut Sender,
    mut req: Request<Incoming>,
    host: &str,
    cancel: CancellationToken,
) -> Result<Response<ProxyBody>, Refusal> {
    let downstream = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let mut response = sender
        .send_request(req)
        .await
        .map_err(|e| Refusal::bad_gateway(host, e))?;
    strip_hop_by_hop(response.headers_mut());
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(downstream) = downstream
    {
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let splice = async {
                let (Ok(down), Ok(up)) = tokio::join!(downstream, upstream) else {
                    return;
                };
                let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = splice => {}
            }
        });
    }
    Ok(response.map(BodyExt::boxed))
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// The answer to a refused request: its status, a body naming the reason (JSON for a policy
/// denial) and, for a denial, a reason phrase that names it too (what a CONNECT client that
/// ignores bodies shows).
fn refusal_response(refusal: &Refusal, port: Option<u16>) -> Response<ProxyBody> {
    let (text, content_type) = refusal.body(port);
    let body = Full::new(Bytes::from(text))
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = refusal.status();
    if let Some(denial) = refusal.denial() {
        let phrase = format!("Egress Denied: {denial}");
        if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(phrase.into_bytes()) {
            response.extensions_mut().insert(phrase);
        }
    }
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("x-sandpit-egress", HeaderValue::from_static("refused"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A stream that first yields bytes already read from it.
struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
