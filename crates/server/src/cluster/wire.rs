//! The node API's messages (JSON over mutually authenticated TLS) and the join request (JSON
//! to the control plane's `POST /v1/cluster/join`).

use sandpit_protocol::control::{Limits, NodeCapacity};
use sandpit_protocol::netpolicy::EgressPolicy;
use serde::{Deserialize, Serialize};

/// Path prefix of the node API.
pub const NODE_API: &str = "/v1/node";
/// The `Upgrade` protocol of a tunnel to a sandbox's agent.
pub const AGENT_UPGRADE: &str = "sandpit-agent";

/// `POST /v1/cluster/join` (on the control plane).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub token: String,
    pub node_id: String,
    /// `host:port` the control plane reaches the node API at.
    pub address: String,
    pub boot_id: String,
    /// PEM certificate signing request over the node's own key.
    pub csr: String,
    pub capacity: NodeCapacity,
}

/// The answer to a join: the node's certificate and the cluster CA.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    pub certificate: String,
    pub ca: String,
}

/// `GET /v1/node/status`: the heartbeat's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node_id: String,
    pub boot_id: String,
    pub capacity: NodeCapacity,
    /// Ids of the sandboxes running on the node now.
    pub running: Vec<String>,
}

/// A file for the sandbox's `/run/sandpit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireRunFile {
    pub name: String,
    /// Base64.
    pub contents: String,
    /// The node writes its own copy of the image's CA bundle before `contents` (the sandbox
    /// CA): the egress CA bundle, without sending the image's bundle (~200 KiB) at each start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_image_ca_bundle: bool,
}

/// `POST /v1/node/sandboxes/{id}/start`: the spec, less what cannot travel (the egress
/// endpoint, bucket mounts).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartRequest {
    pub image: String,
    pub limits: Limits,
    pub env: Vec<(String, String)>,
    pub ephemeral: bool,
    pub network: EgressPolicy,
    pub run_files: Vec<WireRunFile>,
}

/// The answer to a start: the run's id on the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartResponse {
    pub pid: u32,
}

/// `GET /v1/node/sandboxes/{id}/running`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningResponse {
    pub running: bool,
}

/// What kind of driver error a node answered (carried back into a `DriverError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeErrorKind {
    InvalidSpec,
    ImageNotFound,
    StartFailed,
    LimitsRefused,
    Unsupported,
    NotFound,
    Other,
}

/// A node API error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeError {
    pub kind: NodeErrorKind,
    pub message: String,
}
