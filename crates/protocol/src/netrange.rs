//! The one definition of the address ranges a sandbox never reaches on its own. The server's
//! egress proxy checks every address a name resolves to against it, and the runtime's
//! `full`-mode nftables rules are built from it, so both layers refuse the same ranges.

use std::net::IpAddr;
use std::sync::LazyLock;

pub use ipnet::IpNet;

/// Who may open a reserved range for a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeClass {
    /// This host and its link: loopback, link-local (cloud metadata), unspecified, multicast,
    /// reserved and broadcast. No policy opens it, the operator's included.
    AlwaysBlocked,
    /// Private and special-purpose networks (RFC 1918, CGNAT, unique local, benchmarking,
    /// documentation). Only the operator grants them (a policy set with the admin key, or the
    /// server's per-tenant grants); a tenant's own allow-list never does.
    OperatorOnly,
}

/// One reserved range, with the name refusals give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservedRange {
    pub cidr: &'static str,
    pub name: &'static str,
    pub class: RangeClass,
}

const fn range(cidr: &'static str, name: &'static str, class: RangeClass) -> ReservedRange {
    ReservedRange { cidr, name, class }
}

use RangeClass::{AlwaysBlocked, OperatorOnly};

/// Every reserved range. IPv4-mapped IPv6 addresses are checked as their IPv4 address.
pub const RESERVED_RANGES: &[ReservedRange] = &[
    range("0.0.0.0/8", "this network", AlwaysBlocked),
    range("127.0.0.0/8", "loopback", AlwaysBlocked),
    range(
        "169.254.0.0/16",
        "link-local (cloud metadata)",
        AlwaysBlocked,
    ),
    range("224.0.0.0/4", "multicast", AlwaysBlocked),
    range("240.0.0.0/4", "reserved (with broadcast)", AlwaysBlocked),
    range("::/128", "unspecified", AlwaysBlocked),
    range("::1/128", "loopback", AlwaysBlocked),
    range("fe80::/10", "link-local", AlwaysBlocked),
    range("ff00::/8", "multicast", AlwaysBlocked),
    range("10.0.0.0/8", "private", OperatorOnly),
    range(
        "100.64.0.0/10",
        "shared address space (CGNAT)",
        OperatorOnly,
    ),
    range("172.16.0.0/12", "private", OperatorOnly),
    range("192.0.0.0/24", "IETF protocol assignments", OperatorOnly),
    range("192.0.2.0/24", "documentation", OperatorOnly),
    range("192.168.0.0/16", "private", OperatorOnly),
    range("198.18.0.0/15", "benchmarking", OperatorOnly),
    range("198.51.100.0/24", "documentation", OperatorOnly),
    range("203.0.113.0/24", "documentation", OperatorOnly),
    range("fc00::/7", "unique local", OperatorOnly),
];

static PARSED: LazyLock<Vec<(IpNet, &'static ReservedRange)>> = LazyLock::new(|| {
    RESERVED_RANGES
        .iter()
        .filter_map(|r| r.cidr.parse().ok().map(|net| (net, r)))
        .collect()
});

/// The reserved ranges of one class, parsed.
pub fn ranges(class: RangeClass) -> impl Iterator<Item = (IpNet, &'static ReservedRange)> {
    PARSED
        .iter()
        .copied()
        .filter(move |(_, r)| r.class == class)
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; other addresses unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The reserved range `ip` is in, if any, with its network.
pub fn classify(ip: IpAddr) -> Option<(IpNet, &'static ReservedRange)> {
    let ip = canonical_ip(ip);
    PARSED.iter().copied().find(|(net, _)| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(ip: &str) -> Option<RangeClass> {
        classify(ip.parse().unwrap()).map(|(_, r)| r.class)
    }

    #[test]
    fn every_range_parses_and_classes_do_not_overlap() {
        assert_eq!(PARSED.len(), RESERVED_RANGES.len());
        for (a, ra) in PARSED.iter() {
            for (b, rb) in PARSED.iter() {
                if ra.class != rb.class {
                    assert!(!a.contains(b) && !b.contains(a), "{a} overlaps {b}");
                }
            }
        }
    }

    #[test]
    fn addresses_are_classified() {
        assert_eq!(class_of("127.0.0.1"), Some(AlwaysBlocked));
        assert_eq!(class_of("::ffff:127.0.0.1"), Some(AlwaysBlocked));
        assert_eq!(class_of("169.254.169.254"), Some(AlwaysBlocked));
        assert_eq!(class_of("255.255.255.255"), Some(AlwaysBlocked));
        assert_eq!(class_of("::1"), Some(AlwaysBlocked));
        assert_eq!(class_of("10.1.2.3"), Some(OperatorOnly));
        assert_eq!(class_of("192.168.1.1"), Some(OperatorOnly));
        assert_eq!(class_of("198.51.100.7"), Some(OperatorOnly));
        assert_eq!(class_of("fd00::1"), Some(OperatorOnly));
        assert_eq!(class_of("93.184.216.34"), None);
        assert_eq!(class_of("2606:4700::1"), None);
        let (net, r) = classify("127.9.9.9".parse().unwrap()).unwrap();
        assert_eq!(
            (net.to_string().as_str(), r.name),
            ("127.0.0.0/8", "loopback")
        );
    }
}
