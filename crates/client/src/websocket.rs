//! WebSocket credentials: single-use tickets (`POST /v1/sandboxes/{id}/ws-ticket`) and the
//! terminal URL built with one, for clients that cannot send the `Authorization` header.

use reqwest::Method;
use sandpit_protocol::control::WsTicket;

use crate::client::check_id;
use crate::error::{ClientError, Result};
use crate::sandbox::SandboxHandle;

impl SandboxHandle {
    /// A single-use credential for one WebSocket upgrade of this sandbox (`?ticket=`, valid 60 s):
    /// for a browser or any client that cannot send the `Authorization` header.
    pub async fn ws_ticket(&self) -> Result<WsTicket> {
        check_id(self.id())?;
        let path = format!("/v1/sandboxes/{}/ws-ticket", self.id());
        let request = self.client().request(Method::POST, &path);
        self.client().json(request).await
    }

    /// The `ws(s)://…/ws/pty` URL of session `session_id`'s terminal (`None`: the default
    /// session) with a fresh ticket: hand it to xterm.js or any WebSocket client (no key in it).
    pub async fn terminal_url(
        &self,
        session_id: Option<&str>,
        cols: u16,
        rows: u16,
    ) -> Result<String> {
        let ticket = self.ws_ticket().await?;
        let mut url = self.ws_url("/ws/pty")?;
        url.query_pairs_mut()
            .append_pair("sessionId", session_id.unwrap_or("default"))
            .append_pair("cols", &cols.to_string())
            .append_pair("rows", &rows.to_string())
            .append_pair("ticket", &ticket.ticket);
        Ok(url.into())
    }

    /// `ws(s)://…/v1/sandboxes/{id}{rest}` of this client's server.
    pub(crate) fn ws_url(&self, rest: &str) -> Result<reqwest::Url> {
        check_id(self.id())?;
        let base = self.client().base_url();
        let mut url = reqwest::Url::parse(base)
            .map_err(|e| ClientError::InvalidArgument(format!("server URL {base}: {e}")))?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|()| ClientError::InvalidArgument(format!("server URL {base}")))?;
        let path = format!(
            "{}/v1/sandboxes/{}{rest}",
            url.path().trim_end_matches('/'),
            self.id()
        );
        url.set_path(&path);
        Ok(url)
    }
}
