//! Cluster mode: nodes (`sandpit node`) run the sandboxes; control-plane replicas
//! (`sandpit serve --store postgres://… --cluster-dir DIR`) share PostgreSQL and reach every
//! sandbox through [`remote::RemoteDriver`]. See docs/cluster.md.

pub mod node;
pub mod pki;
pub mod remote;
pub mod wire;

use std::path::Path;
use std::sync::Arc;

use sandpit_protocol::ErrorCode;
use sandpit_protocol::control::NodeList;
use sandpit_store::{NodeRecord, Store};

use crate::error::{ApiError, ApiResult};
use crate::lifecycle::now_ms;

/// What a control-plane replica holds in cluster mode.
pub struct ControlPlane {
    ca: pki::ClusterCa,
    store: Arc<dyn Store>,
    pub driver: Arc<remote::RemoteDriver>,
}

impl ControlPlane {
    /// Loads the cluster dir's CA and makes this replica's client certificate.
    pub fn load(dir: &Path, store: Arc<dyn Store>) -> Result<Self, pki::PkiError> {
        let ca = pki::ClusterCa::load(dir)?;
        let driver = Arc::new(remote::RemoteDriver::new(
            store.clone(),
            ca.client_config()?,
        ));
        Ok(ControlPlane { ca, store, driver })
    }

    /// `POST /v1/cluster/join`: checks the token, issues the node's certificate and records the
    /// node (a known id with a new boot id is a restarted node: it reconciled its sandboxes
    /// away, and the next request to each starts it again on that node).
    pub async fn join(&self, join: wire::JoinRequest) -> ApiResult<wire::JoinResponse> {
        if !self.ca.token_matches(&join.token) {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "invalid join token (see DIR/join-token of `sandpit cluster init`)",
            ));
        }
        if !pki::valid_node_id(&join.node_id) {
            return Err(ApiError::validation(format!(
                "invalid node id {:?}: 1 to 50 characters a-z, 0-9 and -, not starting with -",
                join.node_id
            )));
        }
        if join.address.parse::<std::net::SocketAddr>().is_err()
            && join
                .address
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(ApiError::validation(format!(
                "invalid node address {:?}: expected host:port",
                join.address
            )));
        }
        let certificate = self.ca.issue_node(&join.node_id, &join.csr).map_err(|e| {
            ApiError::validation(format!(
                "the certificate request cannot be signed: {}",
                sandpit_protocol::ErrorChain(&e)
            ))
        })?;
        let now = now_ms();
        self.store
            .put_node(&NodeRecord {
                id: join.node_id.clone(),
                address: join.address.clone(),
                boot_id: join.boot_id.clone(),
                capacity: serde_json::to_string(&join.capacity).unwrap_or_default(),
                last_heartbeat_ms: now,
                registered_at_ms: now,
            })
            .await?;
        tracing::info!(node = %join.node_id, address = %join.address, "node joined");
        self.driver.heartbeat().await;
        Ok(wire::JoinResponse {
            certificate,
            ca: self.ca.ca_pem().to_owned(),
        })
    }

    pub async fn nodes(&self) -> ApiResult<NodeList> {
        Ok(NodeList {
            nodes: self.driver.list().await?,
        })
    }
}
