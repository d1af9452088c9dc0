//! Preview URLs: ports inside a sandbox reachable at
//! `{scheme}://{port}-{sandbox label}-{token}.{domain}:{listen port}/`.
//!
//! The sandbox label is the sandbox's internal id (`{id lowercased}-{12 hex}`, the hash over
//! this data dir's secret instance id, the tenant and the id): unique across tenants, so two
//! tenants with the same sandbox id never share a URL, whatever tokens they pick. The index is
//! keyed by `(label, port)` with one exposure each: a URL names exactly one sandbox of one
//! tenant, and only that tenant's API calls can change what it serves.
//!
//! * [`api`]: `POST|GET /v1/sandboxes/{id}/ports`, `DELETE /v1/sandboxes/{id}/ports/{port}`;
//! * [`proxy`]: the Host-routed reverse proxy in front of every other route;
//! * [`tunnel`]: pooled upstream connections through the agent's `/tunnel/{port}` upgrade.
//!
//! Like the seed (reference §3.6), an exposure is two things: a durable authorization (port +
//! token, in the store) and an activation bound to one run of the sandbox (in memory only).
//! A wrong token or an unexposed port answers 404 `INVALID_TOKEN`; an authorized URL whose
//! sandbox is asleep, was destroyed, or restarted since the port was exposed answers 410
//! `STALE_PREVIEW_URL` and does not wake it. Everything a request needs is in memory: no store
//! query on the request path.

pub mod api;
pub mod proxy;
mod tunnel;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sandpit_store::{ExposedPortRecord, Store};

use crate::lifecycle::Manager;

/// How preview URLs look.
#[derive(Debug, Clone)]
pub struct PreviewConfig {
    /// Parent domain of preview hosts (`localhost`: resolves to loopback with no DNS set-up).
    pub domain: String,
    /// `http`, or `https` behind a TLS-terminating front proxy.
    pub scheme: String,
    /// Port in the URLs (omitted when it is the scheme's default).
    pub port: u16,
}

impl PreviewConfig {
    /// The URL of `port` of the sandbox whose label (internal id) is `label`, with `token`.
    pub fn url(&self, port: u16, label: &str, token: &str) -> String {
        let default_port = match self.scheme.as_str() {
            "https" => 443,
            _ => 80,
        };
        let suffix = if self.port == default_port {
            String::new()
        } else {
            format!(":{}", self.port)
        };
        format!(
            "{}://{port}-{}-{token}.{}{suffix}/",
            self.scheme,
            label.to_ascii_lowercase(),
            self.domain
        )
    }

    /// `(port, sandbox label lowercased, token)` of a preview Host header, or `None` for other
    /// hosts.
    fn parse_host<'h>(&self, host: &'h str) -> Option<(u16, String, &'h str)> {
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let (label, domain) = name.split_once('.')?;
        if !domain.eq_ignore_ascii_case(&self.domain) {
            return None;
        }
        let (port, rest) = label.split_once('-')?;
        let (label, token) = rest.rsplit_once('-')?;
        // The seed's rule: 4-5 digits (exposable ports are 1024-65535).
        if !(4..=5).contains(&port.len()) || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let port = port.parse::<u16>().ok()?;
        if label.is_empty() || token.is_empty() {
            return None;
        }
        Some((port, label.to_ascii_lowercase(), token))
    }
}

/// One exposed port.
#[derive(Debug, Clone)]
struct Exposure {
    record: ExposedPortRecord,
    /// The sandbox's label in URLs: its internal id.
    label: String,
    /// The run of the sandbox it was exposed in; `None` once the server restarted.
    run: Option<u64>,
}

impl Exposure {
    /// Whether its URL serves now, `run` being the sandbox's current run (`None`: asleep).
    fn is_live(&self, run: Option<u64>) -> bool {
        run.is_some() && self.run == run
    }
}

/// The exposures, indexed by `(sandbox label, port)`: one each, since a label names one
/// sandbox of one tenant.
type Index = HashMap<(String, u16), Exposure>;

/// Preview state shared by the API handlers and the proxy.
pub struct Previews {
    config: PreviewConfig,
    manager: Arc<Manager>,
    index: RwLock<Index>,
    upstream: tunnel::Upstream,
}

impl Previews {
    /// Loads the recorded exposures; none is active until its port is exposed again.
    pub async fn load(config: PreviewConfig, manager: Arc<Manager>) -> anyhow::Result<Self> {
        let mut index = Index::new();
        for record in manager.store().exposed_ports().await? {
            let label = manager.internal_id_of(&record.tenant, &record.sandbox_id);
            index.insert(
                (label.clone(), record.port),
                Exposure {
                    record,
                    label,
                    run: None,
                },
            );
        }
        Ok(Previews {
            config,
            manager,
            index: RwLock::new(index),
            upstream: tunnel::Upstream::new(),
        })
    }

    pub fn config(&self) -> &PreviewConfig {
        &self.config
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.manager.store()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The label of sandbox `(tenant, id)` in preview URLs.
    fn label(&self, tenant: &str, id: &str) -> String {
        self.manager.internal_id_of(tenant, id)
    }

    /// The exposure a preview host names, if its token matches.
    fn find(&self, label: &str, port: u16, token: &str) -> Option<Exposure> {
        let index = self.read();
        index
            .get(&(label.to_owned(), port))
            .filter(|e| constant_time_eq(e.record.token.as_bytes(), token.as_bytes()))
            .cloned()
    }

    /// Cluster mode: the exposure a preview host names, from the store (exposed through
    /// another replica); kept in the index once found.
    async fn find_stored(&self, label: &str, port: u16, token: &str) -> Option<Exposure> {
        let records = self.store().exposed_ports().await.ok()?;
        let record = records
            .into_iter()
            .find(|r| r.port == port && self.label(&r.tenant, &r.sandbox_id) == label)?;
        if !constant_time_eq(record.token.as_bytes(), token.as_bytes()) {
            return None;
        }
        let exposure = Exposure {
            label: label.to_owned(),
            record,
            run: None,
        };
        self.put(exposure.clone());
        Some(exposure)
    }

    /// Exposures of one sandbox of one tenant.
    fn of_sandbox(&self, tenant: &str, id: &str) -> Vec<Exposure> {
        let label = self.label(tenant, id);
        let index = self.read();
        let mut found: Vec<Exposure> = index
            .iter()
            .filter(|((l, _), _)| *l == label)
            .map(|(_, e)| e.clone())
            .collect();
        found.sort_by_key(|e| e.record.port);
        found
    }

    /// Records (replacing) an exposure in the index.
    fn put(&self, exposure: Exposure) {
        let key = (exposure.label.clone(), exposure.record.port);
        self.write().insert(key, exposure);
    }

    /// Removes an exposure from the index.
    fn remove(&self, tenant: &str, id: &str, port: u16) {
        let key = (self.label(tenant, id), port);
        self.write().remove(&key);
    }
}

/// Compares tokens without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(port: u16) -> PreviewConfig {
        PreviewConfig {
            domain: "localhost".into(),
            scheme: "http".into(),
            port,
        }
    }

    #[test]
    fn urls_follow_the_seed_format() {
        assert_eq!(
            config(7070).url(8080, "my-box-0123456789ab", "abc_1"),
            "http://8080-my-box-0123456789ab-abc_1.localhost:7070/"
        );
        let https = PreviewConfig {
            domain: "preview.example.com".into(),
            scheme: "https".into(),
            port: 443,
        };
        assert_eq!(
            https.url(3000, "a", "t"),
            "https://3000-a-t.preview.example.com/"
        );
    }

    #[test]
    fn hosts_parse_into_port_id_and_token() {
        let c = config(7070);
        assert_eq!(
            c.parse_host("8080-My-Box-abc_1.localhost:7070"),
            Some((8080, "my-box".into(), "abc_1"))
        );
        assert_eq!(
            c.parse_host("8080-a-t.LOCALHOST"),
            Some((8080, "a".into(), "t"))
        );
        for other in [
            "localhost:7070",
            "127.0.0.1:7070",
            "8080-a-t.example.com",
            "8080-a.localhost",
            "80-a-t.localhost",
            "999999-a-t.localhost",
            "x8080-a-t.localhost",
            "8080--t.localhost",
            "8080-a-.localhost",
        ] {
            assert_eq!(c.parse_host(other), None, "{other}");
        }
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
