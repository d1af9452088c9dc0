//! The `full` network mode's firewall: nftables rules loaded into a sandbox's network
//! namespace by the host (sandbox root has no `CAP_NET_ADMIN` there, so it cannot change them).
//!
//! User-mode networking (slirp4netns) opens the sandbox's connections from the host's network
//! namespace, so without rules a sandbox could reach the host's own addresses, private networks
//! and cloud metadata. Two tables hold the same decisions:
//! - `inet sandpit`, hook `output`: what sockets send. Refused TCP gets a reset, the rest an ICMP
//!   error, so clients fail fast.
//! - `netdev sandpit`, hook `egress` on the tap device: what leaves towards slirp, including raw
//!   frames written with `AF_PACKET` (sandbox root keeps `CAP_NET_RAW`), which skip `output`.
//!
//! Order: always refused ([`deny_v4`]: the always-blocked ranges of
//! [`sandpit_protocol::netrange`], slirp's gateway, the operator's blocks and the host's own
//! addresses), slirp's DNS allowed, the policy's CIDRs allowed (the server passes only operator
//! grants), then the operator-only ranges ([`block_v4`]) refused; everything else (public
//! addresses) passes. The ranges are the egress proxy's, from the one table in the protocol
//! crate. IPv6 is not routed by slirp here and is refused outright.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use sandpit_protocol::netpolicy::EgressPolicy;
use sandpit_protocol::netrange::{self, RangeClass};

/// The tap device slirp4netns creates inside the sandbox.
pub const TAP_DEVICE: &str = "tap0";
/// slirp's gateway: the host, refused (`--disable-host-loopback` refuses it too).
pub const SLIRP_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// slirp's DNS forwarder, the only private address a `full` sandbox can reach by default.
pub const SLIRP_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// What sandboxes get as `/etc/resolv.conf`.
pub const RESOLV_CONF: &str = "nameserver 10.0.2.3\n";

/// The IPv4 members of `nets` (IPv6 is refused outright in `full` mode).
fn v4(nets: impl IntoIterator<Item = IpNet>) -> impl Iterator<Item = Ipv4Net> {
    nets.into_iter().filter_map(|net| match net {
        IpNet::V4(v4) => Some(v4),
        IpNet::V6(_) => None,
    })
}

/// The IPv4 reserved ranges of one class.
fn reserved_v4(class: RangeClass) -> impl Iterator<Item = Ipv4Net> {
    v4(netrange::ranges(class).map(|(net, _)| net))
}

/// The operator's ranges (server config); IPv6 entries are ignored here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorRanges {
    /// `--egress-block`: refused whatever the policy.
    pub blocked: Vec<IpNet>,
    /// `--egress-private`: refused unless an operator-granted CIDR allows them.
    pub private: Vec<IpNet>,
}

/// Refused even when the policy names them: the always-blocked ranges (this host's loopback,
/// link-local with cloud metadata, multicast, reserved, broadcast), slirp's gateway (the host),
/// and the operator's blocks.
pub fn deny_v4(operator: &OperatorRanges) -> Vec<Ipv4Net> {
    reserved_v4(RangeClass::AlwaysBlocked)
        .chain(std::iter::once(Ipv4Net::from(SLIRP_GATEWAY)))
        .chain(v4(operator.blocked.iter().copied()))
        .collect()
}

/// Refused unless an operator-granted CIDR allows them: private, CGNAT, benchmarking,
/// documentation and other special-purpose ranges, and the operator's declared private ones.
pub fn block_v4(operator: &OperatorRanges) -> Vec<Ipv4Net> {
    reserved_v4(RangeClass::OperatorOnly)
        .chain(v4(operator.private.iter().copied()))
        .collect()
}

/// The IPv4 CIDRs of a policy's allow-list (host patterns and IPv6 are not for this layer).
pub fn allowed_v4(policy: &EgressPolicy) -> Vec<Ipv4Net> {
    v4(policy.cidrs()).collect()
}

/// IPv4 addresses of this host's interfaces (from `/proc/net/fib_trie`, which lists each local
/// address as a `/32 host LOCAL` leaf under its `|-- a.b.c.d` line).
pub fn host_addresses() -> Vec<Ipv4Addr> {
    let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in trie.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.parse().ok();
        } else if line.contains("/32 host LOCAL")
            && let Some(addr) = last
            && !found.contains(&addr)
        {
            found.push(addr);
        }
    }
    found
}

fn set(name: &str, elements: &[String]) -> String {
    let elements = if elements.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }};", elements.join(", "))
    };
    format!("  set {name} {{ type ipv4_addr; flags interval; auto-merge;{elements} }}\n")
}

fn table(family: &str, head: &str, sets: &str, rules: &[String]) -> String {
    let mut out = format!(
        "table {family} sandpit {{}}\ndelete table {family} sandpit\ntable {family} sandpit {{\n{sets}  chain filter {{\n    {head}\n"
    );
    for rule in rules {
        out.push_str("    ");
        out.push_str(rule);
        out.push('\n');
    }
    out.push_str("  }\n}\n");
    out
}

/// The nft script (`nft -f -`) for a `full` sandbox: atomically replaces both tables.
pub fn nft_script(allow: &[Ipv4Net], host: &[Ipv4Addr], operator: &OperatorRanges) -> String {
    let strings = |nets: &[Ipv4Net]| nets.iter().map(Ipv4Net::to_string).collect::<Vec<_>>();
    let mut deny = strings(&deny_v4(operator));
    deny.extend(host.iter().map(|a| a.to_string()));
    let allow = strings(allow);
    let block = strings(&block_v4(operator));
    let sets = format!(
        "{}{}{}",
        set("deny", &deny),
        set("allow", &allow),
        set("block", &block)
    );
    let dns = format!("ip daddr {SLIRP_DNS} meta l4proto {{ tcp, udp }} th dport 53 accept");
    let refuse = |set: &str| {
        [
            format!("ip daddr @{set} meta l4proto tcp reject with tcp reset"),
            format!("ip daddr @{set} reject with icmpx admin-prohibited"),
        ]
    };
    let mut output = vec![
        "oif \"lo\" accept".to_string(),
        "meta nfproto ipv6 reject with icmpx admin-prohibited".to_string(),
    ];
    output.extend(refuse("deny"));
    output.push(dns.clone());
    output.push("ip daddr @allow accept".to_string());
    output.extend(refuse("block"));
    let egress = vec![
        "meta protocol != { ip, arp } drop".to_string(),
        "ip daddr @deny drop".to_string(),
        dns,
        "ip daddr @allow accept".to_string(),
        "ip daddr @block drop".to_string(),
    ];
    let mut script = table(
        "inet",
        "type filter hook output priority 0; policy accept;",
        &sets,
        &output,
    );
    script.push_str(&table(
        "netdev",
        &format!("type filter hook egress device \"{TAP_DEVICE}\" priority 0; policy accept;"),
        &sets,
        &egress,
    ));
    script
}

/// Whether `addr` is one a `full` sandbox may reach under `allow` (the rules' decision, for
/// documentation and tests).
pub fn reachable(
    addr: IpAddr,
    allow: &[Ipv4Net],
    host: &[Ipv4Addr],
    operator: &OperatorRanges,
) -> bool {
    // An IPv4-mapped IPv6 address is refused with the rest of IPv6 (the `ipv6` rule).
    let IpAddr::V4(v4) = addr else {
        return false;
    };
    let within = |net: &Ipv4Net| net.contains(&v4);
    if host.contains(&v4) || deny_v4(operator).iter().any(within) {
        return false;
    }
    if v4 == SLIRP_DNS || allow.iter().any(within) {
        return true;
    }
    !block_v4(operator).iter().any(within)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandpit_protocol::control::{NetworkMode, NetworkPolicy};

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn only_the_policys_ipv4_cidrs_reach_the_rules() {
        let policy = EgressPolicy::try_from(NetworkPolicy {
            mode: NetworkMode::Full,
            allow: vec![
                "api.example.com".into(),
                "10.9.0.1/30".into(),
                "2001:db8::/32".into(),
            ],
        })
        .unwrap();
        assert_eq!(allowed_v4(&policy), vec![net("10.9.0.0/30")]);
    }

    #[test]
    fn decisions() {
        let host = [Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(198, 51, 100, 7)];
        let allow = [net("10.9.0.0/30")];
        let operator = OperatorRanges {
            blocked: nets(&["8.8.4.0/24", "2001:db8::/32"]),
            private: nets(&["9.9.9.0/24"]),
        };
        let ok = |a: &str| reachable(a.parse().unwrap(), &allow, &host, &operator);
        assert!(ok("10.9.0.2"), "allowed CIDR");
        assert!(!ok("10.9.0.1"), "host address inside an allowed CIDR");
        assert!(!ok("10.9.0.5"), "private outside the allowed CIDR");
        assert!(!ok("10.0.2.2"), "slirp gateway");
        assert!(ok("10.0.2.3"), "slirp DNS");
        assert!(!ok("127.0.0.1"));
        assert!(!ok("169.254.169.254"));
        assert!(!ok("192.168.1.1"));
        assert!(!ok("100.64.0.1"));
        assert!(!ok("198.51.100.7"), "host's public address");
        assert!(ok("1.1.1.1"), "public");
        assert!(!ok("8.8.4.4"), "operator block");
        assert!(!ok("9.9.9.9"), "operator-declared private");
        assert!(!ok("203.0.113.9"), "documentation");
        assert!(!ok("::1"));
        // Always-blocked ranges stay closed even inside an allowed CIDR.
        let everything = [net("0.0.0.0/0")];
        let ok_all = |a: &str| reachable(a.parse().unwrap(), &everything, &host, &operator);
        assert!(ok_all("10.1.1.1") && ok_all("192.168.1.1") && ok_all("9.9.9.9"));
        for never in [
            "127.0.0.1",
            "169.254.169.254",
            "10.0.2.2",
            "8.8.4.4",
            "10.9.0.1",
        ] {
            assert!(!ok_all(never), "{never}");
        }
    }

    #[test]
    fn script_shape() {
        let script = nft_script(
            &[net("10.9.0.0/30")],
            &[Ipv4Addr::new(192, 0, 2, 10)],
            &OperatorRanges {
                blocked: nets(&["8.8.4.0/24"]),
                private: nets(&["9.9.9.0/24"]),
            },
        );
        assert!(script.contains("9.9.9.0/24"));
        assert!(script.contains("8.8.4.0/24"));
        assert!(
            script.contains("203.0.113.0/24"),
            "documentation ranges are blocked"
        );
        assert!(script.contains("delete table inet sandpit"));
        assert!(script.contains("delete table netdev sandpit"));
        assert!(script.contains("elements = { 10.9.0.0/30 }"));
        assert!(script.contains("192.0.2.10"));
        assert!(script.contains("hook egress device \"tap0\""));
        // The allow rule sits between the deny and block rules.
        let (d, a, b) = (
            script.find("@deny").unwrap(),
            script.find("@allow").unwrap(),
            script.find("@block").unwrap(),
        );
        assert!(d < a && a < b);
        let empty = nft_script(&[], &[], &OperatorRanges::default());
        assert!(empty.contains("set allow { type ipv4_addr; flags interval; auto-merge; }"));
    }
}
