//! [`AgentClient`]: the only way the server talks to a sandbox's agent. Every connection comes
//! from the sandbox's driver ([`AgentConnector`]), so nothing here knows whether the agent
//! listens on a Unix socket of this host or somewhere else; every exchange is HTTP/1.1 on a
//! fresh connection (a connect costs tens of microseconds, less than a pool's bookkeeping, and
//! a fresh connection is never a stale one left by a sandbox that slept).
//!
//! * [`AgentClient::send`] / [`AgentClient::send_on`]: any request; the answer's body streams
//!   (SSE included) and a `101` answer can be upgraded (the connection task keeps upgrades);
//! * [`AgentClient::get_json`], [`AgentClient::post_json`]: small JSON calls;
//! * [`AgentClient::upgrade`]: a byte pipe (`/tunnel/{port}`) through an HTTP upgrade;
//! * [`AgentClient::is_gone`]: whether the agent has exited (nothing accepts connections).

use std::io::ErrorKind;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use sandpit_protocol::ErrorResponse;
use sandpit_runtime::{AgentConnector, AgentStream};

/// The `Host` the agent is addressed by.
const AGENT_HOST: &str = "sandbox";
/// Largest error body read when an upgrade is refused.
const MAX_ERROR_BODY: usize = 16 << 10;

/// How a call to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("sandbox agent is not reachable")]
    Connect(#[source] std::io::Error),
    #[error("handshake with the sandbox agent failed")]
    Handshake(#[source] hyper::Error),
    #[error("sandbox agent did not answer")]
    NoAnswer(#[source] hyper::Error),
    #[error("{path}: sandbox agent answered {status}")]
    Status { path: String, status: StatusCode },
    #[error("{path}: reading the sandbox agent's answer failed")]
    Body {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{path}: the sandbox agent's answer is not the expected JSON")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// The agent answered an upgrade request without upgrading (e.g. nothing listens on the
    /// port); `message` is its error message.
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
    #[error("upgrading the connection to the sandbox agent failed")]
    Upgrade(#[source] hyper::Error),
}

impl AgentError {
    /// The message with its causes (`a: b: c`), for error answers and logs.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            out.push_str(": ");
            out.push_str(&cause.to_string());
            source = cause.source();
        }
        out
    }

    /// Whether the agent is gone (its sandbox stopped or died) rather than slow or confused.
    pub fn agent_gone(&self) -> bool {
        matches!(self, AgentError::Connect(e) if is_gone(e))
    }
}

/// A connect error that says nothing accepts connections any more.
fn is_gone(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound)
}

/// Talks to one run of a sandbox's agent. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentClient {
    agent: Arc<dyn AgentConnector>,
}

impl AgentClient {
    pub fn new(agent: Arc<dyn AgentConnector>) -> Self {
        AgentClient { agent }
    }

    /// A fresh connection to the agent.
    pub async fn connect(&self) -> Result<AgentStream, AgentError> {
        self.agent.connect().await.map_err(AgentError::Connect)
    }

    /// Whether the agent has exited: nothing accepts connections. (A failed exchange alone does
    /// not say so; a live agent that dropped one connection keeps running.)
    pub async fn is_gone(&self) -> bool {
        matches!(self.agent.connect().await, Err(e) if is_gone(&e))
    }

    /// Sends `request` on a fresh connection and returns the head of the answer; its body
    /// streams as the agent writes it.
    pub async fn send<B>(&self, request: Request<B>) -> Result<Response<Incoming>, AgentError>
    where
        B: http_body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = self.connect().await?;
        Self::send_on(stream, request).await
    }

    /// Like [`AgentClient::send`] on a connection the caller opened (to tell a failed connect
    /// from a failed exchange).
    pub async fn send_on<B>(
        stream: AgentStream,
        request: Request<B>,
    ) -> Result<Response<Incoming>, AgentError>
    where
        B: http_body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(AgentError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "agent connection ended with an error");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(AgentError::NoAnswer)
    }

    /// `GET path` as JSON of at most `max_bytes`; any status but 200 is an error.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        max_bytes: usize,
    ) -> Result<T, AgentError> {
        let request = Request::get(path)
            .header(header::HOST, AGENT_HOST)
            .body(Empty::<Bytes>::new())
            .map_err(|e| body_error(path, e))?;
        let response = self.send(request).await?;
        let body = read_ok(path, response, max_bytes).await?;
        serde_json::from_slice(&body).map_err(|source| AgentError::Json {
            path: path.to_owned(),
            source,
        })
    }

    /// `POST path` with `body` as JSON; any status but 2xx is an error. The answer is drained.
    pub async fn post_json<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<(), AgentError> {
        let json = serde_json::to_vec(body).map_err(|source| AgentError::Json {
            path: path.to_owned(),
            source,
        })?;
        let request = Request::post(path)
            .header(header::HOST, AGENT_HOST)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .map_err(|e| body_error(path, e))?;
        let response = self.send(request).await?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(AgentError::Status {
                path: path.to_owned(),
                status,
            })
        }
    }

    /// Asks the agent to upgrade `GET path` to `protocol` and returns the byte pipe. An answer
    /// other than `101` is [`AgentError::Refused`] with the agent's message.
    pub async fn upgrade(&self, path: &str, protocol: &str) -> Result<Upgraded, AgentError> {
        let request = Request::get(path)
            .header(header::HOST, AGENT_HOST)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, protocol)
            .body(Empty::<Bytes>::new())
            .map_err(|e| body_error(path, e))?;
        let mut response = self.send(request).await?;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return hyper::upgrade::on(&mut response)
                .await
                .map_err(AgentError::Upgrade);
        }
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<ErrorResponse>(&body)
            .map(|e| e.message)
            .unwrap_or_else(|_| format!("{path}: upgrade refused with {status}"));
        Err(AgentError::Refused { status, message })
    }
}

fn body_error(path: &str, e: impl std::error::Error + Send + Sync + 'static) -> AgentError {
    AgentError::Body {
        path: path.to_owned(),
        source: Box::new(e),
    }
}

/// The whole body of a `200` answer, at most `max_bytes`.
async fn read_ok(
    path: &str,
    response: Response<Incoming>,
    max_bytes: usize,
) -> Result<Bytes, AgentError> {
    if response.status() != StatusCode::OK {
        return Err(AgentError::Status {
            path: path.to_owned(),
            status: response.status(),
        });
    }
    http_body_util::Limited::new(response.into_body(), max_bytes)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|source| AgentError::Body {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::{get, post};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An agent served over in-memory duplex streams: each `connect` is a new connection to
    /// `app`; `gone` makes connects fail like those to an exited agent.
    #[derive(Debug)]
    struct Duplex {
        app: Router,
        gone: bool,
        connects: Mutex<usize>,
    }

    #[async_trait::async_trait]
    impl AgentConnector for Duplex {
        async fn connect(&self) -> std::io::Result<AgentStream> {
            *self.connects.lock().unwrap() += 1;
            if self.gone {
                return Err(std::io::Error::from(ErrorKind::ConnectionRefused));
            }
            let (client, server) = tokio::io::duplex(64 << 10);
            let service = hyper_util::service::TowerToHyperService::new(self.app.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(server), service)
                    .with_upgrades()
                    .await;
            });
            Ok(Box::new(client))
        }
    }

    fn client(app: Router) -> (AgentClient, Arc<Duplex>) {
        let agent = Arc::new(Duplex {
            app,
            gone: false,
            connects: Mutex::new(0),
        });
        (AgentClient::new(agent.clone()), agent)
    }

    fn agent() -> Router {
        Router::new()
            .route(
                "/api/activity",
                get(|| async { axum::Json(serde_json::json!({"busy": true})) }),
            )
            .route("/big", get(|| async { "x".repeat(1000) }))
            .route("/broken", get(|| async { "not json" }))
            .route(
                "/missing",
                get(|| async { (StatusCode::NOT_FOUND, "no such thing") }),
            )
            .route(
                "/api/env",
                post(|body: String| async move {
                    if body.contains("\"A\"") {
                        StatusCode::OK
                    } else {
                        StatusCode::BAD_REQUEST
                    }
                }),
            )
            .route("/tunnel/{port}", get(tunnel))
    }

    /// Upgrades to an echo pipe on port 80; refuses other ports like the agent does.
    async fn tunnel(
        axum::extract::Path(port): axum::extract::Path<u16>,
        mut request: axum::extract::Request,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        if port != 80 {
            let body = serde_json::json!({
                "code": "INVALID_PORT", "message": format!("nothing listens on port {port}"),
                "context": {}, "httpStatus": 502, "timestamp": "t"
            });
            return (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response();
        }
        let on = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let mut io = TokioIo::new(on.await.unwrap());
            let mut buf = [0u8; 5];
            io.read_exact(&mut buf).await.unwrap();
            io.write_all(&buf).await.unwrap();
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "sandpit-tunnel")
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn json_calls_use_one_connection_each() {
        let (client, agent) = client(agent());
        let v: serde_json::Value = client.get_json("/api/activity", 1024).await.unwrap();
        assert_eq!(v["busy"], true);
        client
            .post_json("/api/env", &serde_json::json!({"env": {"A": "1"}}))
            .await
            .unwrap();
        assert_eq!(*agent.connects.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn failures_are_typed() {
        let (client, _) = client(agent());
        let status = client
            .get_json::<serde_json::Value>("/missing", 1024)
            .await
            .unwrap_err();
        assert!(
            matches!(&status, AgentError::Status { status, .. } if *status == StatusCode::NOT_FOUND),
            "{status:?}"
        );
        let big = client
            .get_json::<serde_json::Value>("/big", 100)
            .await
            .unwrap_err();
        assert!(matches!(big, AgentError::Body { .. }), "{big:?}");
        let json = client
            .get_json::<serde_json::Value>("/broken", 1024)
            .await
            .unwrap_err();
        assert!(matches!(json, AgentError::Json { .. }), "{json:?}");
        let refused = client
            .post_json("/api/env", &serde_json::json!({}))
            .await
            .unwrap_err();
        assert!(matches!(refused, AgentError::Status { .. }), "{refused:?}");
        assert!(!refused.agent_gone());
        assert!(!client.is_gone().await);
    }

    #[tokio::test]
    async fn a_gone_agent_is_told_apart() {
        let agent = Arc::new(Duplex {
            app: Router::new(),
            gone: true,
            connects: Mutex::new(0),
        });
        let client = AgentClient::new(agent);
        assert!(client.is_gone().await);
        let err = client
            .get_json::<serde_json::Value>("/api/activity", 1024)
            .await
            .unwrap_err();
        assert!(err.agent_gone(), "{err:?}");
    }

    #[tokio::test]
    async fn upgrades_give_a_byte_pipe_or_the_agents_refusal() {
        let (client, _) = client(agent());
        let pipe = client
            .upgrade("/tunnel/80", "sandpit-tunnel")
            .await
            .unwrap();
        let mut io = TokioIo::new(pipe);
        io.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        io.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        let refused = client
            .upgrade("/tunnel/81", "sandpit-tunnel")
            .await
            .unwrap_err();
        match refused {
            AgentError::Refused { status, message } => {
                assert_eq!(status, StatusCode::BAD_GATEWAY);
                assert_eq!(message, "nothing listens on port 81");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn streamed_bodies_arrive_as_written() {
        let app = Router::new().route(
            "/api/stream",
            get(|| async {
                let events = futures::stream::iter(["data: 1\n\n", "data: 2\n\n"])
                    .map(|e| Ok::<_, std::convert::Infallible>(Bytes::from(e)));
                axum::body::Body::from_stream(events)
            }),
        );
        let (client, _) = client(app);
        let request = Request::get("/api/stream")
            .header(header::HOST, AGENT_HOST)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let mut body = client.send(request).await.unwrap().into_body();
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                got.push(data);
            }
        }
        assert_eq!(got.concat(), b"data: 1\n\ndata: 2\n\n");
    }

    use futures::StreamExt as _;
}
