//! sandpit's MCP server: sandbox tools for AI agents (Claude, Cursor, agent frameworks) over the
//! Model Context Protocol, built on [`rmcp`] and on the public API through
//! [`sandpit_client`], so an agent can do exactly what its API key allows.
//!
//! * [`serve_stdio`]: `sandpit mcp`, one MCP client on stdin/stdout acting with one key.
//! * [`http_service`]: streamable HTTP, mounted by the server at `/mcp`; every request acts
//!   with the bearer key it carries, so a tenant's agent sees only that tenant's sandboxes.
//!
//! Tools (see `docs/mcp.md`): `create_sandbox`, `list_sandboxes`, `exec`, `run_code`,
//! `read_file`, `write_file`, `list_files`, `edit_file`, `start_process`, `process_logs`,
//! `expose_port`, `destroy_sandbox`. Failures are MCP tool errors carrying the protocol's error
//! code and message ([`ToolError`]).

mod code;
mod edit;
mod error;
mod exec;
mod follow;
mod output;
mod params;
mod streamable;
mod tools;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rmcp::RoleServer;
use rmcp::handler::server::tool::ToolRouter;
use rmcp::service::RequestContext;
use sandpit_client::protocol::ErrorCode;
use sandpit_client::{Client, SandboxHandle};

pub use error::ToolError;
pub use streamable::http_service;

/// A sandbox known to exist: the SHA-256 of the key that sees it, and its id.
type KnownSandbox = ([u8; 32], String);

/// Where the API key of a tool call comes from.
#[derive(Clone)]
enum KeySource {
    /// stdio: the one key `sandpit mcp` was started with.
    Fixed(Arc<str>),
    /// HTTP: the `Authorization: Bearer` key of each request.
    Bearer,
}

/// The MCP server handler: the tools, the API they call, and the code contexts they keep.
#[derive(Clone)]
pub struct SandpitMcp {
    base_url: Arc<str>,
    http: reqwest::Client,
    keys: KeySource,
    contexts: Arc<code::Contexts>,
    /// Sandboxes known to exist, by key digest and id, so that only the first call on a
    /// sandbox pays for the existence check.
    known: Arc<Mutex<HashSet<KnownSandbox>>>,
    /// HTTP: SHA-256 of the key that opened this MCP session. Later requests of the session
    /// must carry the same key, so a session id that leaks is no use with another key.
    session_owner: Arc<OnceLock<[u8; 32]>>,
    tool_router: ToolRouter<SandpitMcp>,
}

impl SandpitMcp {
    fn new(base_url: &str, keys: KeySource) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(SandpitMcp {
            base_url: base_url.trim_end_matches('/').into(),
            http,
            keys,
            contexts: Arc::default(),
            known: Arc::default(),
            session_owner: Arc::default(),
            tool_router: SandpitMcp::tool_router(),
        })
    }

    /// A handler acting with `api_key` on the server at `base_url` (the stdio transport).
    pub fn with_key(base_url: &str, api_key: &str) -> Result<Self, reqwest::Error> {
        SandpitMcp::new(base_url, KeySource::Fixed(api_key.into()))
    }

    /// A handler acting with each HTTP request's bearer key (the streamable HTTP transport).
    pub fn with_bearer_keys(base_url: &str) -> Result<Self, reqwest::Error> {
        SandpitMcp::new(base_url, KeySource::Bearer)
    }

    /// The handler of a new MCP session: shares the code contexts, owns nothing yet.
    fn for_new_session(&self) -> Self {
        SandpitMcp {
            session_owner: Arc::default(),
            ..self.clone()
        }
    }

    /// The API key this call acts with. Over HTTP, the request's own key, which must be the
    /// one that opened the session.
    fn api_key(&self, ctx: &RequestContext<RoleServer>) -> Result<String, ToolError> {
        match &self.keys {
            KeySource::Fixed(key) => Ok(key.to_string()),
            KeySource::Bearer => {
                let key = streamable::request_key(ctx).ok_or(ToolError::NoKey)?;
                let digest = streamable::key_digest(key);
                if *self.session_owner.get_or_init(|| digest) != digest {
                    return Err(ToolError::ForeignSession);
                }
                Ok(key.to_owned())
            }
        }
    }

    /// A handle on the caller's sandbox `id`, which must exist. The API would create a sandbox
    /// on first use of an unknown id; a model's mistyped or invented id must not silently make
    /// new sandboxes (as with the CLI), so it gets `SANDBOX_NOT_FOUND` and a hint instead.
    async fn existing_sandbox(
        &self,
        ctx: &RequestContext<RoleServer>,
        id: &str,
    ) -> Result<SandboxHandle, ToolError> {
        let client = self.client(ctx)?;
        if !self.is_known(ctx, id) {
            match client.get(id).await {
                Ok(_) => self.remember(ctx, id, true),
                Err(e) if e.code() == Some(ErrorCode::SandboxNotFound) => {
                    return Err(ToolError::NoSandbox(id.to_owned()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(client.sandbox(id))
    }

    fn known_entry(&self, ctx: &RequestContext<RoleServer>, id: &str) -> Option<KnownSandbox> {
        let key = self.api_key(ctx).ok()?;
        Some((streamable::key_digest(&key), id.to_owned()))
    }

    fn is_known(&self, ctx: &RequestContext<RoleServer>, id: &str) -> bool {
        let entry = self.known_entry(ctx, id);
        match (entry, self.known.lock()) {
            (Some(entry), Ok(known)) => known.contains(&entry),
            _ => false,
        }
    }

    /// Records that the caller's sandbox `id` exists (or, after a destroy, no longer does).
    fn remember(&self, ctx: &RequestContext<RoleServer>, id: &str, exists: bool) {
        if let (Some(entry), Ok(mut known)) = (self.known_entry(ctx, id), self.known.lock()) {
            if exists {
                known.insert(entry);
            } else {
                known.remove(&entry);
            }
        }
    }

    /// Records the key that opens an HTTP session (at `initialize`).
    fn open_session(&self, ctx: &RequestContext<RoleServer>) {
        if let (KeySource::Bearer, Some(key)) = (&self.keys, streamable::request_key(ctx)) {
            let _ = self.session_owner.set(streamable::key_digest(key));
        }
    }

    /// A client of the API acting with this call's key (cheap: the connection pool is shared).
    fn client(&self, ctx: &RequestContext<RoleServer>) -> Result<Client, ToolError> {
        Ok(Client::with_http_client(
            self.http.clone(),
            &*self.base_url,
            self.api_key(ctx)?,
        ))
    }
}

/// Serves one MCP client on stdin/stdout until it disconnects, acting with `api_key` on the
/// server at `base_url`. Nothing else may write to stdout meanwhile.
pub async fn serve_stdio(base_url: &str, api_key: &str) -> Result<(), ServeError> {
    use rmcp::ServiceExt;
    let handler = SandpitMcp::with_key(base_url, api_key)?;
    let service = handler
        .serve(rmcp::transport::stdio())
        .await
        .map_err(Box::new)?;
    service.waiting().await?;
    Ok(())
}

/// Why [`serve_stdio`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("building the HTTP client")]
    Http(#[from] reqwest::Error),
    #[error("MCP handshake with the client failed")]
    Initialize(#[from] Box<rmcp::service::ServerInitializeError>),
    #[error("the MCP service task failed")]
    Task(#[from] tokio::task::JoinError),
}
