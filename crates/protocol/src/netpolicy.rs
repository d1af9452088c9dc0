//! A sandbox's network policy, parsed once. [`NetworkPolicy`] is the wire form (an allow-list of
//! strings); [`EgressPolicy`] is the same policy after parsing: every entry a [`HostPattern`]
//! with an optional port, or a CIDR. The server parses a request's policy into it at the API edge and hands the typed value
//! to the egress proxy and to the driver's `full`-mode firewall, neither of which parses text.
//! It (de)serializes as the wire form, so stored policies read back already typed.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::control::{NetworkMode, NetworkPolicy};

/// Lower case, no trailing dot, no IPv6 brackets: the form host names are compared in.
pub fn normalize_host(host: &str) -> String {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// `10.0.0.0/8` (host bits cleared), or a bare address (that one host).
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net.trunc());
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

/// A host pattern: `example.com` (that name only) or `*.example.com` (any name below it, not
/// the name itself). Always a valid, normalized DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// The name, normalized ([`normalize_host`]).
    name: String,
    /// `*.name`: names below it.
    below: bool,
}

impl HostPattern {
    /// Parses `example.com` or `*.example.com` (any case, a trailing dot allowed).
    pub fn parse(pattern: &str) -> Result<Self, HostPatternError> {
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
            return Err(HostPatternError {
                pattern: pattern.to_owned(),
            });
        }
        Ok(HostPattern {
            name: name.to_owned(),
            below,
        })
    }

    /// Whether `host` (normalized, [`normalize_host`]) matches.
    pub fn matches(&self, host: &str) -> bool {
        if !self.below {
            return host == self.name;
        }
        host.len() > self.name.len() + 1
            && host.ends_with(&self.name)
            && host.as_bytes()[host.len() - self.name.len() - 1] == b'.'
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.below {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

/// Text that is not a host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPatternError {
    pub pattern: String,
}

impl fmt::Display for HostPatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a host name pattern (example.com, *.example.com)",
            self.pattern
        )
    }
}

impl std::error::Error for HostPatternError {}

/// One entry of an allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// A host name pattern, on one port or any: decides requests by name (egress proxy only).
    Host {
        pattern: HostPattern,
        /// `example.com:443`: that port only; `None`: any port.
        port: Option<u16>,
    },
    /// A network (host bits cleared): decides connections to addresses in it.
    Cidr(IpNet),
}

impl AllowEntry {
    /// Whether this entry lets the proxy ask for `host` (normalized) on `port`. A CIDR entry
    /// allows addresses, not names.
    pub fn allows_host(&self, host: &str, port: u16) -> bool {
        match self {
            AllowEntry::Host {
                pattern,
                port: only,
            } => pattern.matches(host) && only.is_none_or(|only| only == port),
            AllowEntry::Cidr(_) => false,
        }
    }
}

impl FromStr for AllowEntry {
    type Err = AllowEntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(net) = parse_cidr(s) {
            return Ok(AllowEntry::Cidr(net));
        }
        let error = || AllowEntryError {
            entry: s.to_owned(),
        };
        // A port is a suffix of digits; what is left must be a host pattern (an IPv6 address
        // never gets here: parse_cidr took it).
        let (name, port) = match s.rsplit_once(':') {
            Some((name, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(error)?;
                (name, Some(port))
            }
            None => (s, None),
        };
        // An address with a port would be a name no request can match (addresses are checked
        // against CIDRs): refuse it rather than keep a dead entry.
        if name.parse::<IpAddr>().is_ok() {
            return Err(error());
        }
        let pattern = HostPattern::parse(name).map_err(|_| error())?;
        Ok(AllowEntry::Host { pattern, port })
    }
}

impl From<IpNet> for AllowEntry {
    fn from(net: IpNet) -> Self {
        AllowEntry::Cidr(net.trunc())
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowEntry::Host {
                pattern,
                port: None,
            } => pattern.fmt(f),
            AllowEntry::Host {
                pattern,
                port: Some(port),
            } => write!(f, "{pattern}:{port}"),
            AllowEntry::Cidr(net) => net.fmt(f),
        }
    }
}

/// Text that is neither a host pattern nor a CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntryError {
    pub entry: String,
}

impl fmt::Display for AllowEntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is neither a host name pattern with an optional port (example.com, \
             *.example.com, example.com:443) nor a CIDR (10.1.0.0/16, 2001:db8::/32, 203.0.113.7)",
            self.entry
        )
    }
}

impl std::error::Error for AllowEntryError {}

/// A wire policy whose allow-list has an entry that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// Position of the entry in `allow`.
    pub index: usize,
    pub source: AllowEntryError,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "allow[{}]", self.index)
    }
}

impl std::error::Error for PolicyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A network policy with its allow-list parsed. Serialized as [`NetworkPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "NetworkPolicy", into = "NetworkPolicy")]
pub struct EgressPolicy {
    pub mode: NetworkMode,
    /// In the order given.
    pub allow: Vec<AllowEntry>,
}

impl EgressPolicy {
    pub fn new(mode: NetworkMode, allow: Vec<AllowEntry>) -> Self {
        EgressPolicy { mode, allow }
    }

    /// Whether a host entry of the allow-list lets the proxy ask for `host` (normalized) on
    /// `port`.
    pub fn allows_host(&self, host: &str, port: u16) -> bool {
        self.allow.iter().any(|entry| entry.allows_host(host, port))
    }

    /// Whether a host entry names `host` (normalized) on some port.
    pub fn names_host(&self, host: &str) -> bool {
        self.allow.iter().any(|entry| match entry {
            AllowEntry::Host { pattern, .. } => pattern.matches(host),
            AllowEntry::Cidr(_) => false,
        })
    }

    /// The CIDRs of the allow-list.
    pub fn cidrs(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.allow.iter().filter_map(|entry| match entry {
            AllowEntry::Cidr(net) => Some(*net),
            AllowEntry::Host { .. } => None,
        })
    }
}

impl TryFrom<&NetworkPolicy> for EgressPolicy {
    type Error = PolicyError;

    fn try_from(wire: &NetworkPolicy) -> Result<Self, PolicyError> {
        let allow = wire
            .allow
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                entry
                    .parse()
                    .map_err(|source| PolicyError { index, source })
            })
            .collect::<Result<_, _>>()?;
        Ok(EgressPolicy {
            mode: wire.mode,
            allow,
        })
    }
}

impl TryFrom<NetworkPolicy> for EgressPolicy {
    type Error = PolicyError;

    fn try_from(wire: NetworkPolicy) -> Result<Self, PolicyError> {
        EgressPolicy::try_from(&wire)
    }
}

impl From<&EgressPolicy> for NetworkPolicy {
    fn from(policy: &EgressPolicy) -> Self {
        NetworkPolicy {
            mode: policy.mode,
            allow: policy.allow.iter().map(AllowEntry::to_string).collect(),
        }
    }
}

impl From<EgressPolicy> for NetworkPolicy {
    fn from(policy: EgressPolicy) -> Self {
        NetworkPolicy::from(&policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(allow: &[&str]) -> NetworkPolicy {
        NetworkPolicy {
            mode: NetworkMode::Allowlist,
            allow: allow.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn patterns_match_names_and_subdomains() {
        let exact = HostPattern::parse("Example.COM.").unwrap();
        assert!(exact.matches("example.com"));
        assert!(!exact.matches("a.example.com"));
        let below = HostPattern::parse("*.example.com").unwrap();
        assert!(below.matches("a.example.com") && below.matches("b.a.example.com"));
        assert!(!below.matches("example.com") && !below.matches("badexample.com"));
        for bad in ["", "*", "a..b", "exa mple.com", "*.", "a/b", "*.*.a"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entries_parse_into_hosts_and_cidrs() {
        let policy = EgressPolicy::try_from(&wire(&[
            "*.Example.com",
            "api.example.org.",
            "10.1.2.3/16",
            "203.0.113.7",
            "2001:db8::1/32",
            "::1",
            "git.example.net:8443",
        ]))
        .unwrap();
        let shown = NetworkPolicy::from(&policy).allow;
        assert_eq!(
            shown,
            [
                "*.example.com",
                "api.example.org",
                "10.1.0.0/16",
                "203.0.113.7/32",
                "2001:db8::/32",
                "::1/128",
                "git.example.net:8443",
            ]
        );
        let cidrs: Vec<String> = policy.cidrs().map(|n| n.to_string()).collect();
        assert_eq!(
            cidrs[..3],
            ["10.1.0.0/16", "203.0.113.7/32", "2001:db8::/32"]
        );
        assert!(
            policy.allows_host("a.example.com", 1) && policy.allows_host("api.example.org", 80)
        );
        assert!(policy.allows_host("git.example.net", 8443));
        assert!(
            !policy.allows_host("git.example.net", 443) && policy.names_host("git.example.net")
        );
        assert!(!policy.allows_host("example.com", 443) && !policy.names_host("example.com"));
    }

    #[test]
    fn a_bad_entry_is_named_by_position() {
        for (allow, index, entry) in [
            (&["a.test", "exa mple.com"][..], 1, "exa mple.com"),
            (&["10.0.0.0/33"][..], 0, "10.0.0.0/33"),
            (&["a.test", "b.test", ""][..], 2, ""),
            (&["http://a.test/"][..], 0, "http://a.test/"),
            (&["a.test:0"][..], 0, "a.test:0"),
            (&["a.test:65536"][..], 0, "a.test:65536"),
            (&["a.test:"][..], 0, "a.test:"),
            (&["10.0.0.0/8:80"][..], 0, "10.0.0.0/8:80"),
            (&["203.0.113.7:80"][..], 0, "203.0.113.7:80"),
        ] {
            let e = EgressPolicy::try_from(&wire(allow)).unwrap_err();
            assert_eq!((e.index, e.source.entry.as_str()), (index, entry));
            assert_eq!(e.to_string(), format!("allow[{index}]"));
            assert!(
                std::error::Error::source(&e)
                    .unwrap()
                    .to_string()
                    .starts_with(&format!("{entry:?} is neither a host name pattern"))
            );
        }
    }

    #[test]
    fn serde_is_the_wire_form_and_refuses_bad_entries() {
        let json = r#"{"mode":"allowlist","allow":["*.example.com","10.1.0.0/16"]}"#;
        let policy: EgressPolicy = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&policy).unwrap(), json);
        assert_eq!(
            NetworkPolicy::from(&policy),
            wire(&["*.example.com", "10.1.0.0/16"])
        );
        let bad = r#"{"mode":"allowlist","allow":["a b"]}"#;
        assert!(serde_json::from_str::<EgressPolicy>(bad).is_err());
        assert_eq!(
            serde_json::from_str::<EgressPolicy>("{}").unwrap(),
            EgressPolicy::default()
        );
    }
}
