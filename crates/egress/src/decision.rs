//! Why the egress proxy refused: typed denials with a stable rule name, and the answers the
//! program inside the sandbox gets (403 with a JSON body naming the rule, never a hang).

use std::net::IpAddr;

use http::StatusCode;
use ipnet::IpNet;
use sandpit_protocol::ErrorCode;

/// A policy decision against a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The sandbox's network mode is `none`.
    NoNetwork,
    /// A name no domain pattern of the allow-list matches.
    NotAllowed,
    /// A name the allow-list names on other ports only.
    PortNotAllowed { port: u16 },
    /// An IP address no CIDR of the allow-list contains.
    AddressNotAllowed,
    /// In the operator's `--egress-block` list.
    OperatorBlock { ip: IpAddr, net: IpNet },
    /// One of this host's own addresses.
    HostAddress { ip: IpAddr },
    /// In a built-in always-blocked range (loopback, link-local, ...).
    AlwaysBlocked {
        ip: IpAddr,
        net: IpNet,
        name: &'static str,
    },
    /// In a private range the operator has not granted to this sandbox.
    OperatorOnly {
        ip: IpAddr,
        net: IpNet,
        name: &'static str,
    },
}

impl Denial {
    /// Stable machine-readable name of the rule that refused.
    pub fn rule(&self) -> &'static str {
        match self {
            Denial::NoNetwork => "network-none",
            Denial::NotAllowed => "allow-list",
            Denial::PortNotAllowed { .. } => "allow-list-port",
            Denial::AddressNotAllowed => "allow-list-address",
            Denial::OperatorBlock { .. } => "operator-block",
            Denial::HostAddress { .. } => "host-address",
            Denial::AlwaysBlocked { .. } => "always-blocked",
            Denial::OperatorOnly { .. } => "operator-only",
        }
    }
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denial::NoNetwork => f.write_str("network policy is none (no outbound access)"),
            Denial::NotAllowed => f.write_str("host not in allow-list"),
            Denial::PortNotAllowed { port } => {
                write!(f, "port {port} of this host not in allow-list")
            }
            Denial::AddressNotAllowed => f.write_str(
                "address not in allow-list (direct connections to an IP address need a CIDR that contains it)",
            ),
            Denial::OperatorBlock { ip, net } => {
                write!(f, "address {ip} in operator block {net}")
            }
            Denial::HostAddress { ip } => write!(f, "address {ip} is one of the host's own"),
            Denial::AlwaysBlocked { ip, net, name } => {
                write!(f, "address {ip} in always-blocked range {name} ({net})")
            }
            Denial::OperatorOnly { ip, net, name } => write!(
                f,
                "address {ip} in {name} range {net}, which only the operator can grant"
            ),
        }
    }
}

/// Why the proxy did not relay a request.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The policy refused the destination: 403 `EGRESS_DENIED`.
    Denied { host: String, denial: Denial },
    /// Allowed, but the destination could not be reached: 502.
    Unreachable { host: String, reason: String },
    /// Not a request the proxy can relay: 400.
    BadRequest(String),
}

impl Refusal {
    pub fn denied(host: &str, denial: Denial) -> Self {
        Refusal::Denied {
            host: host.to_owned(),
            denial,
        }
    }

    pub fn bad_gateway(host: &str, reason: impl std::fmt::Display) -> Self {
        Refusal::Unreachable {
            host: host.to_owned(),
            reason: reason.to_string(),
        }
    }

    pub fn bad_request(reason: impl std::fmt::Display) -> Self {
        Refusal::BadRequest(reason.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Denied { .. } => StatusCode::FORBIDDEN,
            Refusal::Unreachable { .. } => StatusCode::BAD_GATEWAY,
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The denial, when the policy refused.
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            Refusal::Denied { denial, .. } => Some(denial),
            _ => None,
        }
    }

    /// The short reason, as the egress log and the body give it.
    pub fn reason(&self) -> String {
        match self {
            Refusal::Denied { denial, .. } => denial.to_string(),
            Refusal::Unreachable { reason, .. } | Refusal::BadRequest(reason) => reason.clone(),
        }
    }

    /// The answer's body: for a denial, JSON naming the rule
    /// (`{"error":"EGRESS_DENIED","host":...,"rule":...,"reason":...,"message":...}`); for the
    /// rest, a line of text.
    pub fn body(&self, port: Option<u16>) -> (String, &'static str) {
        match self {
            Refusal::Denied { host, denial } => {
                let body = serde_json::json!({
                    "error": ErrorCode::EgressDenied.as_str(),
                    "host": host,
                    "port": port,
                    "rule": denial.rule(),
                    "reason": denial.to_string(),
                    "message": format!("sandpit egress proxy refused {host}: {denial}"),
                });
                (format!("{body}\n"), "application/json")
            }
            Refusal::Unreachable { host, reason } => (
                format!("sandpit egress proxy could not reach {host}: {reason}\n"),
                "text/plain; charset=utf-8",
            ),
            Refusal::BadRequest(reason) => (
                format!("sandpit egress proxy: {reason}\n"),
                "text/plain; charset=utf-8",
            ),
        }
    }
}
