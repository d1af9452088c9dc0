//! Which destinations a sandbox may reach, and which secrets go to which host.

use std::net::IpAddr;

use http::HeaderName;
use http::StatusCode;
use ipnet::IpNet;
use sandpit_protocol::control::{NetworkMode, NetworkPolicy};
use sandpit_store::StoredSecret;

/// A host pattern: `example.com` (that name only) or `*.example.com` (any name below it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    Exact(String),
    /// The suffix with its leading dot (`.example.com`).
    Below(String),
}

impl DomainPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let p = normalize_host(pattern);
        let (below, name) = match p.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, p.as_str()),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "{pattern:?} is neither a domain pattern (example.com, *.example.com) nor a CIDR"
            ));
        }
        Ok(if below {
            DomainPattern::Below(format!(".{name}"))
        } else {
            DomainPattern::Exact(name.to_owned())
        })
    }

    /// `host` must be normalized ([`normalize_host`]).
    pub fn matches(&self, host: &str) -> bool {
        match self {
            DomainPattern::Exact(name) => host == name,
            DomainPattern::Below(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

/// Lower case, no trailing dot, no IPv6 brackets.
pub fn normalize_host(host: &str) -> String {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// `10.0.0.0/8`, or a bare address (a single host).
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net.trunc());
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

/// `::ffff:a.b.c.d` is checked as `a.b.c.d`.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Why the proxy refused, as the HTTP answer tells it.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    pub fn forbidden(host: &str, reason: impl std::fmt::Display) -> Self {
        Refusal {
            status: StatusCode::FORBIDDEN,
            message: format!("sandpit egress proxy refused {host}: {reason}"),
        }
    }

    pub fn bad_gateway(host: &str, reason: impl std::fmt::Display) -> Self {
        Refusal {
            status: StatusCode::BAD_GATEWAY,
            message: format!("sandpit egress proxy could not reach {host}: {reason}"),
        }
    }

    pub fn bad_request(reason: impl std::fmt::Display) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            message: format!("sandpit egress proxy: {reason}"),
        }
    }
}

/// A secret ready for injection.
#[derive(Debug, Clone)]
pub struct Secret {
    pub name: String,
    pub value: String,
    pub placeholder: String,
    pub hosts: Vec<DomainPattern>,
    pub header: Option<HeaderName>,
}

/// A sandbox's policy and secrets, compiled.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub mode: NetworkMode,
    pub domains: Vec<DomainPattern>,
    pub cidrs: Vec<IpNet>,
    pub secrets: Vec<Secret>,
}

/// Checks a policy as given on the API.
pub fn validate_policy(policy: &NetworkPolicy) -> Result<(Vec<DomainPattern>, Vec<IpNet>), String> {
    let (mut domains, mut cidrs) = (Vec::new(), Vec::new());
    for entry in &policy.allow {
        match parse_cidr(entry) {
            Some(net) => cidrs.push(net),
            None => domains.push(DomainPattern::parse(entry)?),
        }
    }
    Ok((domains, cidrs))
}

/// An env var name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_secret_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 128
}

/// Compiles one stored secret; errors name the secret.
pub fn compile_secret(s: &StoredSecret) -> Result<Secret, String> {
    if !valid_secret_name(&s.name) {
        return Err(format!(
            "secret name {:?} must be an env var name ([A-Za-z_][A-Za-z0-9_]*)",
            s.name
        ));
    }
    if s.value.is_empty() || http::HeaderValue::from_str(&s.value).is_err() {
        return Err(format!(
            "secret {}: the value must be non-empty printable text (it goes into a header)",
            s.name
        ));
    }
    if s.hosts.is_empty() {
        return Err(format!(
            "secret {}: hosts must name at least one host",
            s.name
        ));
    }
    let hosts = s
        .hosts
        .iter()
        .map(|h| DomainPattern::parse(h).map_err(|e| format!("secret {}: {e}", s.name)))
        .collect::<Result<Vec<_>, _>>()?;
    let header = s
        .header
        .as_deref()
        .map(|h| {
            HeaderName::try_from(h)
                .map_err(|_| format!("secret {}: {h:?} is not a header name", s.name))
        })
        .transpose()?;
    Ok(Secret {
        name: s.name.clone(),
        value: s.value.clone(),
        placeholder: s.placeholder.clone(),
        hosts,
        header,
    })
}

impl Rules {
    pub fn compile(policy: &NetworkPolicy, secrets: &[StoredSecret]) -> Result<Rules, String> {
        let (domains, cidrs) = validate_policy(policy)?;
        let secrets = secrets
            .iter()
            .map(compile_secret)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rules {
            mode: policy.mode,
            domains,
            cidrs,
            secrets,
        })
    }

    /// May the sandbox ask for `host` (normalized) at all? Decided before any resolution.
    pub fn check_host(&self, host: &str) -> Result<(), Refusal> {
        match self.mode {
            NetworkMode::None => Err(Refusal::forbidden(
                host,
                "the sandbox's network policy is none (no outbound access)",
            )),
            NetworkMode::Full => Ok(()),
            NetworkMode::Allowlist => match host.parse::<IpAddr>() {
                Ok(ip) if self.in_cidrs(ip) => Ok(()),
                Ok(_) => Err(Refusal::forbidden(
                    host,
                    "direct connections to IP addresses are refused (no allowed CIDR contains it)",
                )),
                Err(_) if self.domains.iter().any(|d| d.matches(host)) => Ok(()),
                Err(_) => Err(Refusal::forbidden(host, "not in the allowlist")),
            },
        }
    }

    /// May the proxy connect to `ip`, an address `host` resolved to? CIDRs the policy allows
    /// explicitly win over the block list.
    pub fn check_addr(&self, host: &str, ip: IpAddr, blocked: &[IpNet]) -> Result<(), Refusal> {
        let ip = canonical_ip(ip);
        if self.in_cidrs(ip) || !blocked.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        Err(Refusal::forbidden(
            host,
            format!("it resolves to a blocked address {ip}"),
        ))
    }

    fn in_cidrs(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.cidrs.iter().any(|net| net.contains(&ip))
    }

    /// Secrets bound to `host` (normalized).
    pub fn secrets_for(&self, host: &str) -> Vec<&Secret> {
        self.secrets
            .iter()
            .filter(|s| s.hosts.iter().any(|p| p.matches(host)))
            .collect()
    }
}

/// The addresses blocked unless a policy allows their CIDR: loopback, private, CGNAT,
/// link-local (cloud metadata), unspecified, benchmarking, multicast and reserved ranges.
pub fn default_blocked() -> Vec<IpNet> {
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(mode: NetworkMode, allow: &[&str]) -> Rules {
        let policy = NetworkPolicy {
            mode,
            allow: allow.iter().map(|s| s.to_string()).collect(),
        };
        Rules::compile(&policy, &[]).unwrap()
    }

    #[test]
    fn patterns_match_names_and_subdomains() {
        let exact = DomainPattern::parse("Example.COM.").unwrap();
        assert!(exact.matches("example.com"));
        assert!(!exact.matches("a.example.com"));
        let below = DomainPattern::parse("*.example.com").unwrap();
        assert!(below.matches("a.example.com") && below.matches("b.a.example.com"));
        assert!(!below.matches("example.com") && !below.matches("badexample.com"));
        for bad in ["", "*", "a..b", "exa mple.com", "*.", "a/b"] {
            assert!(DomainPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn allowlist_decides_by_name_and_cidr() {
        let r = rules(NetworkMode::Allowlist, &["*.example.com", "10.1.0.0/16"]);
        assert!(r.check_host("api.example.com").is_ok());
        let e = r.check_host("example.org").unwrap_err();
        assert!(e.message.contains("not in the allowlist"), "{}", e.message);
        assert!(r.check_host("10.1.2.3").is_ok());
        assert!(r.check_host("10.2.0.1").is_err());
        let blocked = default_blocked();
        assert!(
            r.check_addr("x", "10.1.9.9".parse().unwrap(), &blocked)
                .is_ok()
        );
        let e = r
            .check_addr("x", "::ffff:127.0.0.1".parse().unwrap(), &blocked)
            .unwrap_err();
        assert!(
            e.message.contains("blocked address 127.0.0.1"),
            "{}",
            e.message
        );
        assert!(
            r.check_addr("x", "169.254.169.254".parse().unwrap(), &blocked)
                .is_err()
        );
        assert!(
            r.check_addr("x", "93.184.216.34".parse().unwrap(), &blocked)
                .is_ok()
        );
        assert!(
            rules(NetworkMode::None, &[])
                .check_host("example.com")
                .is_err()
        );
        assert!(rules(NetworkMode::Full, &[]).check_host("1.2.3.4").is_ok());
    }

    #[test]
    fn secrets_are_validated_and_bound_to_hosts() {
        let mut s = StoredSecret {
            name: "API_TOKEN".into(),
            value: "Bearer x".into(),
            hosts: vec!["*.example.com".into()],
            header: Some("Authorization".into()),
            placeholder: "p".into(),
        };
        let policy = NetworkPolicy::default();
        let r = Rules::compile(&policy, std::slice::from_ref(&s)).unwrap();
        assert_eq!(r.secrets_for("api.example.com").len(), 1);
        assert!(r.secrets_for("example.org").is_empty());
        s.value = "a\nb".into();
        assert!(Rules::compile(&policy, std::slice::from_ref(&s)).is_err());
        s.value = "v".into();
        s.name = "1BAD".into();
        assert!(Rules::compile(&policy, std::slice::from_ref(&s)).is_err());
    }
}
