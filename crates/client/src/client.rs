//! The control-plane client (`/v1/sandboxes`) and the HTTP plumbing shared with
//! [`SandboxHandle`].

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use sandpit_protocol::control::{
    CreateSandboxRequest, SandboxInfo, SandboxList, SandboxUsage, UpdateSandboxRequest,
    validate_sandbox_id,
};
use serde::de::DeserializeOwned;

use crate::error::{ClientError, Result, error_from_body};
use crate::sandbox::SandboxHandle;

/// One page request of [`Client::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Page size; the server picks a default when absent.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `key=value` label selectors; only sandboxes carrying all of them are listed.
    pub labels: Vec<String>,
}

/// A connection to one sandpit server. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    inner: Arc<Inner>,
}

struct Inner {
    base_url: String,
    api_key: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:7070`) using `api_key` as
    /// bearer token.
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self::with_http_client(http, base_url, api_key))
    }

    /// Like [`Client::new`] with a caller-configured `reqwest` client (timeouts, proxies...).
    pub fn with_http_client(
        http: reqwest::Client,
        base_url: impl Into<String>,
        api_key: impl Into<String>,
    ) -> Self {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        Client {
            http,
            inner: Arc::new(Inner {
                base_url,
                api_key: api_key.into(),
            }),
        }
    }

    /// The server URL this client talks to, without trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Creates a sandbox, or returns the existing one with the same id.
    pub async fn create(&self, request: &CreateSandboxRequest) -> Result<SandboxInfo> {
        if let Some(id) = &request.id {
            check_id(id)?;
        }
        self.json(self.request(Method::POST, "/v1/sandboxes").json(request))
            .await
    }

    /// The sandbox with this id (`SANDBOX_NOT_FOUND` if there is none).
    pub async fn get(&self, id: &str) -> Result<SandboxInfo> {
        self.json(self.request(Method::GET, &sandbox_path(id)?))
            .await
    }

    /// What the sandbox uses now: CPU time, memory, processes, disk and egress bytes (does not
    /// wake it).
    pub async fn usage(&self, id: &str) -> Result<SandboxUsage> {
        let path = format!("{}/usage", sandbox_path(id)?);
        self.json(self.request(Method::GET, &path)).await
    }

    /// One page of sandboxes.
    pub async fn list(&self, options: &ListOptions) -> Result<SandboxList> {
        let mut query = Vec::new();
        if let Some(limit) = options.limit {
            query.push(format!("limit={limit}"));
        }
        if let Some(cursor) = &options.cursor {
            query.push(format!("cursor={}", percent_encode(cursor)));
        }
        for label in &options.labels {
            query.push(format!("label={}", percent_encode(label)));
        }
        let mut path = String::from("/v1/sandboxes");
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        self.json(self.request(Method::GET, &path)).await
    }

    /// Every sandbox, following `next_cursor` until the last page.
    pub async fn list_all(&self) -> Result<Vec<SandboxInfo>> {
        self.list_labelled(&[]).await
    }

    /// Every sandbox carrying all the `key=value` labels, following `next_cursor`.
    pub async fn list_labelled(&self, labels: &[String]) -> Result<Vec<SandboxInfo>> {
        let mut all = Vec::new();
        let mut options = ListOptions {
            labels: labels.to_vec(),
            ..ListOptions::default()
        };
        loop {
            let page = self.list(&options).await?;
            all.extend(page.sandboxes);
            match page.next_cursor {
                // A server repeating a cursor would loop forever; stop instead.
                Some(next) if Some(&next) != options.cursor.as_ref() => options.cursor = Some(next),
                _ => return Ok(all),
            }
        }
    }

    /// Changes options of a sandbox (limits apply at its next start).
    pub async fn update(&self, id: &str, request: &UpdateSandboxRequest) -> Result<SandboxInfo> {
        self.json(
            self.request(Method::PATCH, &sandbox_path(id)?)
                .json(request),
        )
        .await
    }

    /// Puts a sandbox to sleep now; its files survive and the next call wakes it.
    pub async fn stop(&self, id: &str) -> Result<()> {
        let path = format!("{}/stop", sandbox_path(id)?);
        self.empty(self.request(Method::POST, &path)).await
    }

    /// Destroys a sandbox and its files.
    pub async fn destroy(&self, id: &str) -> Result<()> {
        self.empty(self.request(Method::DELETE, &sandbox_path(id)?))
            .await
    }

    /// A handle for the container API of one sandbox. The server creates the sandbox on the
    /// first call if it does not exist yet, and wakes it if it sleeps.
    pub fn sandbox(&self, id: impl Into<String>) -> SandboxHandle {
        SandboxHandle::new(self.clone(), id.into())
    }

    // -----------------------------------------------------------------------------------------
    // Plumbing shared with the sandbox handle.

    /// The API key, for requests made outside `reqwest` (WebSockets).
    pub(crate) fn api_key(&self) -> &str {
        &self.inner.api_key
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.inner.base_url))
            .bearer_auth(&self.inner.api_key)
    }

    /// Sends and returns the response if it is a success, the decoded error otherwise.
    pub(crate) async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await?;
        Err(error_from_body(status.as_u16(), &body))
    }

    pub(crate) async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T> {
        let body = self.send(request).await?.bytes().await?;
        serde_json::from_slice(&body).map_err(|e| {
            let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            ClientError::Decode(format!("{e} in {text:?}"))
        })
    }

    pub(crate) async fn empty(&self, request: RequestBuilder) -> Result<()> {
        self.send(request).await?.bytes().await?;
        Ok(())
    }
}

pub(crate) fn check_id(id: &str) -> Result<()> {
    validate_sandbox_id(id).map_err(ClientError::InvalidArgument)
}

fn sandbox_path(id: &str) -> Result<String> {
    check_id(id)?;
    Ok(format!("/v1/sandboxes/{id}"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_encoded() {
        assert_eq!(percent_encode("a b/c=d"), "a%20b%2Fc%3Dd");
        assert_eq!(percent_encode("abc-1_2.3~"), "abc-1_2.3~");
    }

    #[test]
    fn bad_ids_never_reach_the_wire() {
        assert!(matches!(
            sandbox_path("../x"),
            Err(ClientError::InvalidArgument(_))
        ));
        assert_eq!(sandbox_path("ok-1").unwrap(), "/v1/sandboxes/ok-1");
    }

    #[test]
    fn debug_hides_the_key() {
        let c = Client::new("http://127.0.0.1:1/", "secret").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:1");
        assert!(!format!("{c:?}").contains("secret"));
    }
}
