//! Which destinations a sandbox may reach, and which secrets go to which host: a sandbox's
//! typed policy ([`EgressPolicy`], parsed by the control plane) with its operator grants and
//! secrets, as the proxy decides by it.

use std::net::IpAddr;

use http::HeaderName;
use ipnet::IpNet;
use sandpit_protocol::control::NetworkMode;
use sandpit_protocol::netpolicy::{EgressPolicy, HostPattern, HostPatternError};
use sandpit_protocol::netrange::canonical_ip;

use super::blocks::AddressBlocks;
use super::decision::Denial;

/// A secret ready for injection: the sandbox sees `placeholder`, the hosts get `value`.
#[derive(Debug, Clone)]
pub struct Secret {
    pub name: String,
    pub value: String,
    pub placeholder: String,
    pub hosts: Vec<HostPattern>,
    /// A header set to the value on every request to the hosts.
    pub header: Option<HeaderName>,
}

/// A secret that cannot be injected as given.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret name {name:?} must be an env var name ([A-Za-z_][A-Za-z0-9_]*)")]
    Name { name: String },
    #[error("secret {name}: the value must be non-empty printable text (it goes into a header)")]
    Value { name: String },
    #[error("secret {name}: hosts must name at least one host")]
    NoHosts { name: String },
    #[error("secret {name}: hosts")]
    Host {
        name: String,
        #[source]
        source: HostPatternError,
    },
    #[error("secret {name}: {header:?} is not a header name")]
    Header { name: String, header: String },
}

/// An env var name: `[A-Za-z_][A-Za-z0-9_]*`.
fn valid_secret_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 128
}

impl Secret {
    /// Checks and compiles one secret as the control plane keeps it.
    pub fn new(
        name: &str,
        value: &str,
        placeholder: &str,
        hosts: &[String],
        header: Option<&str>,
    ) -> Result<Secret, SecretError> {
        let name_owned = || name.to_owned();
        if !valid_secret_name(name) {
            return Err(SecretError::Name { name: name_owned() });
        }
        if value.is_empty() || http::HeaderValue::from_str(value).is_err() {
            return Err(SecretError::Value { name: name_owned() });
        }
        if hosts.is_empty() {
            return Err(SecretError::NoHosts { name: name_owned() });
        }
        let hosts = hosts
            .iter()
            .map(|h| {
                HostPattern::parse(h).map_err(|source| SecretError::Host {
                    name: name_owned(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let header = header
            .map(|h| {
                HeaderName::try_from(h).map_err(|_| SecretError::Header {
                    name: name_owned(),
                    header: h.to_owned(),
                })
            })
            .transpose()?;
        Ok(Secret {
            name: name_owned(),
            value: value.to_owned(),
            placeholder: placeholder.to_owned(),
            hosts,
            header,
        })
    }
}

/// What one sandbox's proxy decides by.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub policy: EgressPolicy,
    /// CIDRs that may open private ranges: the operator's grants (the policy's own CIDRs when
    /// the admin key set it, the tenant's grants in the server config). Always-blocked ranges
    /// and operator blocks stay closed regardless.
    pub granted: Vec<IpNet>,
    pub secrets: Vec<Secret>,
}

impl Rules {
    /// May the sandbox ask for `host` (normalized) on `port` at all? Decided before any
    /// resolution.
    pub fn check_host(&self, host: &str, port: u16) -> Result<(), Denial> {
        match self.policy.mode {
            NetworkMode::None => Err(Denial::NoNetwork),
            NetworkMode::Full => Ok(()),
            NetworkMode::Allowlist => match host.parse::<IpAddr>() {
                Ok(ip) if self.in_cidrs(ip) => Ok(()),
                Ok(_) => Err(Denial::AddressNotAllowed),
                Err(_) if self.policy.allows_host(host, port) => Ok(()),
                Err(_) if self.policy.names_host(host) => Err(Denial::PortNotAllowed { port }),
                Err(_) => Err(Denial::NotAllowed),
            },
        }
    }

    /// May the proxy connect to `ip`, an address the host resolved to? The operator's blocks
    /// decide; the policy only contributes its operator grants.
    pub fn check_addr(&self, ip: IpAddr, blocks: &AddressBlocks) -> Result<(), Denial> {
        blocks.check(ip, &self.granted)
    }

    fn in_cidrs(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.policy.cidrs().any(|net| net.contains(&ip))
    }

    /// Secrets bound to `host` (normalized).
    pub fn secrets_for(&self, host: &str) -> Vec<&Secret> {
        self.secrets
            .iter()
            .filter(|s| s.hosts.iter().any(|p| p.matches(host)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandpit_protocol::control::NetworkPolicy;

    fn policy(mode: NetworkMode, allow: &[&str]) -> EgressPolicy {
        let wire = NetworkPolicy {
            mode,
            allow: allow.iter().map(|s| s.to_string()).collect(),
        };
        EgressPolicy::try_from(&wire).unwrap()
    }

    fn rules(mode: NetworkMode, allow: &[&str]) -> Rules {
        Rules {
            policy: policy(mode, allow),
            ..Rules::default()
        }
    }

    #[test]
    fn allowlist_decides_by_name_and_cidr() {
        let r = rules(
            NetworkMode::Allowlist,
            &["*.example.com", "93.184.0.0/16", "git.example.org:8443"],
        );
        assert!(r.check_host("api.example.com", 443).is_ok());
        assert!(
            r.check_host("api.example.com", 22).is_ok(),
            "no port: any port"
        );
        assert_eq!(r.check_host("example.org", 80), Err(Denial::NotAllowed));
        assert!(r.check_host("git.example.org", 8443).is_ok());
        assert_eq!(
            r.check_host("git.example.org", 443),
            Err(Denial::PortNotAllowed { port: 443 })
        );
        assert!(r.check_host("93.184.2.3", 80).is_ok());
        assert_eq!(r.check_host("10.2.0.1", 80), Err(Denial::AddressNotAllowed));
        assert_eq!(
            rules(NetworkMode::None, &[]).check_host("example.com", 80),
            Err(Denial::NoNetwork)
        );
        assert!(
            rules(NetworkMode::Full, &[])
                .check_host("1.2.3.4", 80)
                .is_ok()
        );
    }

    #[test]
    fn only_granted_cidrs_open_private_ranges() {
        let blocks = AddressBlocks::default();
        let tenant = rules(NetworkMode::Allowlist, &["0.0.0.0/0", "::/0"]);
        let operator = Rules {
            granted: vec!["10.1.0.0/16".parse().unwrap()],
            ..tenant.clone()
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            tenant
                .check_addr(ip("10.1.9.9"), &blocks)
                .unwrap_err()
                .rule(),
            "operator-only"
        );
        assert!(operator.check_addr(ip("10.1.9.9"), &blocks).is_ok());
        for r in [&tenant, &operator] {
            let e = r.check_addr(ip("::ffff:127.0.0.1"), &blocks).unwrap_err();
            assert_eq!(
                e.to_string(),
                "address 127.0.0.1 in always-blocked range loopback (127.0.0.0/8)"
            );
            assert!(r.check_addr(ip("169.254.169.254"), &blocks).is_err());
            assert!(r.check_addr(ip("93.184.216.34"), &blocks).is_ok());
        }
    }

    #[test]
    fn secrets_are_validated_and_bound_to_hosts() {
        let hosts = ["*.example.com".to_owned()];
        let new = |name: &str, value: &str, header: Option<&str>| {
            Secret::new(name, value, "p", &hosts, header)
        };
        let secret = new("API_TOKEN", "Bearer x", Some("Authorization")).unwrap();
        let r = Rules {
            secrets: vec![secret],
            ..Rules::default()
        };
        assert_eq!(r.secrets_for("api.example.com").len(), 1);
        assert!(r.secrets_for("example.org").is_empty());
        assert!(matches!(
            new("T", "a\nb", None),
            Err(SecretError::Value { .. })
        ));
        assert!(matches!(
            new("1BAD", "v", None),
            Err(SecretError::Name { .. })
        ));
        assert!(matches!(
            new("T", "v", Some("bad header")),
            Err(SecretError::Header { .. })
        ));
        assert!(matches!(
            Secret::new("T", "v", "p", &[], None),
            Err(SecretError::NoHosts { .. })
        ));
        let e = Secret::new("T", "v", "p", &["a b".to_owned()], None).unwrap_err();
        assert_eq!(e.to_string(), "secret T: hosts");
        assert_eq!(
            std::error::Error::source(&e).unwrap().to_string(),
            "\"a b\" is not a host name pattern (example.com, *.example.com)"
        );
    }
}
