//! Which destinations a sandbox may reach, and which secrets go to which host.

use std::net::IpAddr;

use http::HeaderName;
use ipnet::IpNet;
use sandpit_protocol::control::{NetworkMode, NetworkPolicy};
use sandpit_protocol::netrange::canonical_ip;
use sandpit_store::StoredSecret;

use super::blocks::AddressBlocks;
use super::decision::Denial;

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
    /// CIDRs that may open private ranges: the operator's grants (the policy's own CIDRs when
    /// the admin key set it, the tenant's grants in the server config). Always-blocked ranges
    /// and operator blocks stay closed regardless.
    pub granted: Vec<IpNet>,
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
    /// `granted`: the operator's grants of private ranges to this sandbox.
    pub fn compile(
        policy: &NetworkPolicy,
        secrets: &[StoredSecret],
        granted: Vec<IpNet>,
    ) -> Result<Rules, String> {
        let (domains, cidrs) = validate_policy(policy)?;
        let secrets = secrets
            .iter()
            .map(compile_secret)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rules {
            mode: policy.mode,
            domains,
            cidrs,
            granted,
            secrets,
        })
    }

    /// May the sandbox ask for `host` (normalized) at all? Decided before any resolution.
    pub fn check_host(&self, host: &str) -> Result<(), Denial> {
        match self.mode {
            NetworkMode::None => Err(Denial::NoNetwork),
            NetworkMode::Full => Ok(()),
            NetworkMode::Allowlist => match host.parse::<IpAddr>() {
                Ok(ip) if self.in_cidrs(ip) => Ok(()),
                Ok(_) => Err(Denial::AddressNotAllowed),
                Err(_) if self.domains.iter().any(|d| d.matches(host)) => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(mode: NetworkMode, allow: &[&str]) -> Rules {
        let policy = NetworkPolicy {
            mode,
            allow: allow.iter().map(|s| s.to_string()).collect(),
        };
        Rules::compile(&policy, &[], Vec::new()).unwrap()
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
        let r = rules(NetworkMode::Allowlist, &["*.example.com", "93.184.0.0/16"]);
        assert!(r.check_host("api.example.com").is_ok());
        assert_eq!(r.check_host("example.org"), Err(Denial::NotAllowed));
        assert!(r.check_host("93.184.2.3").is_ok());
        assert_eq!(r.check_host("10.2.0.1"), Err(Denial::AddressNotAllowed));
        assert_eq!(
            rules(NetworkMode::None, &[]).check_host("example.com"),
            Err(Denial::NoNetwork)
        );
        assert!(rules(NetworkMode::Full, &[]).check_host("1.2.3.4").is_ok());
    }

    #[test]
    fn only_granted_cidrs_open_private_ranges() {
        let policy = NetworkPolicy {
            mode: NetworkMode::Allowlist,
            allow: vec!["0.0.0.0/0".into(), "::/0".into()],
        };
        let blocks = AddressBlocks::default();
        let tenant = Rules::compile(&policy, &[], Vec::new()).unwrap();
        let operator = Rules::compile(&policy, &[], vec!["10.1.0.0/16".parse().unwrap()]).unwrap();
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
        let mut s = StoredSecret {
            name: "API_TOKEN".into(),
            value: "Bearer x".into(),
            hosts: vec!["*.example.com".into()],
            header: Some("Authorization".into()),
            placeholder: "p".into(),
        };
        let policy = NetworkPolicy::default();
        let r = Rules::compile(&policy, std::slice::from_ref(&s), Vec::new()).unwrap();
        assert_eq!(r.secrets_for("api.example.com").len(), 1);
        assert!(r.secrets_for("example.org").is_empty());
        s.value = "a\nb".into();
        assert!(Rules::compile(&policy, std::slice::from_ref(&s), Vec::new()).is_err());
        s.value = "v".into();
        s.name = "1BAD".into();
        assert!(Rules::compile(&policy, std::slice::from_ref(&s), Vec::new()).is_err());
    }
}
