//! Preview URLs: exposing ports of a sandbox (`/v1/sandboxes/{id}/ports`).

use reqwest::Method;
use sandpit_protocol::control::{ExposePortRequest, ExposedPort, ExposedPortList};

use crate::client::check_id;
use crate::error::Result;
use crate::sandbox::SandboxHandle;

/// Options of [`SandboxHandle::expose_port`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExposeOptions {
    /// A label for the port (shown in listings).
    pub name: Option<String>,
    /// The URL's token (`[a-z0-9_]{1,16}`); random when absent. Exposing an exposed port with
    /// a new token rotates it: URLs with the old token stop working.
    pub token: Option<String>,
}

impl ExposeOptions {
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
}

impl SandboxHandle {
    /// Exposes `port` (1024–65535) of the sandbox at a preview URL
    /// (`http://{port}-{id}-{hash}-{token}.{domain}:{port}/`), which the server proxies, WebSockets
    /// included, to whatever listens on that port inside the sandbox.
    pub async fn expose_port(&self, port: u16, options: &ExposeOptions) -> Result<ExposedPort> {
        let body = ExposePortRequest {
            port,
            name: options.name.clone(),
            token: options.token.clone(),
        };
        let request = self
            .client()
            .request(Method::POST, &self.ports_path()?)
            .json(&body);
        self.client().json(request).await
    }

    /// Withdraws the preview URL of `port`; requests to it are answered 410.
    pub async fn unexpose_port(&self, port: u16) -> Result<()> {
        let path = format!("{}/{port}", self.ports_path()?);
        let request = self.client().request(Method::DELETE, &path);
        self.client().send(request).await?.bytes().await?;
        Ok(())
    }

    /// The exposed ports and their URLs.
    pub async fn exposed_ports(&self) -> Result<Vec<ExposedPort>> {
        let request = self.client().request(Method::GET, &self.ports_path()?);
        let list: ExposedPortList = self.client().json(request).await?;
        Ok(list.ports)
    }

    /// Whether `port` is exposed (stale exposures included: see [`ExposedPort::stale`]).
    pub async fn is_port_exposed(&self, port: u16) -> Result<bool> {
        Ok(self.exposed_ports().await?.iter().any(|p| p.port == port))
    }

    fn ports_path(&self) -> Result<String> {
        check_id(self.id())?;
        Ok(format!("/v1/sandboxes/{}/ports", self.id()))
    }
}
