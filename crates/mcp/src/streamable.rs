//! The streamable HTTP transport, for the server to mount at `/mcp` behind its API-key check.
//! Each request's tools act with that request's bearer key.

use http::HeaderMap;
use rmcp::RoleServer;
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::SandpitMcp;

/// The MCP endpoint's tower service. `base_url` is the API the tools call (the server itself,
/// on loopback); cancelling `shutdown` ends open MCP sessions and streams.
pub fn http_service(
    base_url: &str,
    shutdown: CancellationToken,
) -> Result<StreamableHttpService<SandpitMcp, LocalSessionManager>, reqwest::Error> {
    let handler = SandpitMcp::with_bearer_keys(base_url)?;
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown)
        // rmcp's Host check protects unauthenticated servers on localhost from DNS rebinding;
        // here every request needs an API key a rebinding page cannot know, and the server is
        // reached by whatever name it is deployed under.
        .disable_allowed_hosts();
    Ok(StreamableHttpService::new(
        move || Ok(handler.for_new_session()),
        LocalSessionManager::default().into(),
        config,
    ))
}

/// The bearer key of the HTTP request a tool call or `initialize` came in.
pub(crate) fn request_key(ctx: &RequestContext<RoleServer>) -> Option<&str> {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|parts| bearer(&parts.headers))
}

pub(crate) fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The key of an `Authorization: Bearer <key>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn bearer_keys_are_read_from_the_authorization_header() {
        assert_eq!(bearer(&headers("Bearer sp_abc")), Some("sp_abc"));
        assert_eq!(bearer(&headers("bearer  sp_abc ")), Some("sp_abc"));
        assert_eq!(bearer(&headers("Basic dXNlcjpwdw==")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
