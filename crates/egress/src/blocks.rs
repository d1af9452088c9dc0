//! The address ranges above every sandbox's policy: the operator's `--egress-block` list, this
//! host's own addresses and the built-in reserved ranges ([`sandpit_protocol::netrange`], the
//! same definition the `full` mode's firewall uses). A tenant's allow-list opens none of them;
//! the operator's grants open only the private ones.

use std::net::IpAddr;

use ipnet::IpNet;
use sandpit_protocol::netrange::{self, RangeClass};

use super::decision::Denial;

/// The operator's view of which addresses no sandbox reaches on its own.
#[derive(Debug, Clone, Default)]
pub struct AddressBlocks {
    /// `--egress-block`: never reachable, whatever any policy says.
    pub operator: Vec<IpNet>,
    /// This host's interface addresses: services bound to `0.0.0.0` listen on them.
    pub host: Vec<IpAddr>,
    /// Ranges the operator declares grant-only besides the built-in private ones.
    pub private: Vec<IpNet>,
    /// Ranges taken out of the built-in classes (and the host's addresses): a server config
    /// knob for tests, whose upstream servers listen on loopback. Not a CLI flag.
    pub unblocked: Vec<IpNet>,
}

impl AddressBlocks {
    /// The operator's blocks, the host's addresses and declared private ranges. Host addresses
    /// in `unblocked`, or in an always-blocked range (whose name says more), are left out.
    pub fn new(
        operator: Vec<IpNet>,
        host: Vec<IpAddr>,
        private: Vec<IpNet>,
        unblocked: Vec<IpNet>,
    ) -> Self {
        let host = host
            .into_iter()
            .map(netrange::canonical_ip)
            .filter(|ip| !unblocked.iter().any(|net| net.contains(ip)))
            .filter(|ip| {
                netrange::classify(*ip).is_none_or(|(_, r)| r.class != RangeClass::AlwaysBlocked)
            })
            .collect();
        AddressBlocks {
            operator,
            host,
            private,
            unblocked,
        }
    }

    /// May a sandbox whose operator-granted ranges are `granted` connect to `ip`? Order: the
    /// operator's blocks, the host's addresses, declared private ranges, then the built-in
    /// classes; public addresses pass.
    pub fn check(&self, ip: IpAddr, granted: &[IpNet]) -> Result<(), Denial> {
        let ip = netrange::canonical_ip(ip);
        let within = |nets: &[IpNet]| nets.iter().find(|net| net.contains(&ip)).copied();
        if let Some(net) = within(&self.operator) {
            return Err(Denial::OperatorBlock { ip, net });
        }
        if self.host.contains(&ip) {
            return Err(Denial::HostAddress { ip });
        }
        let private = match within(&self.private) {
            Some(net) => Some((net, "private (operator-declared)")),
            None if within(&self.unblocked).is_some() => None,
            None => match netrange::classify(ip) {
                Some((net, range)) if range.class == RangeClass::AlwaysBlocked => {
                    return Err(Denial::AlwaysBlocked {
                        ip,
                        net,
                        name: range.name,
                    });
                }
                Some((net, range)) => Some((net, range.name)),
                None => None,
            },
        };
        match private {
            Some((net, name)) if within(granted).is_none() => {
                Err(Denial::OperatorOnly { ip, net, name })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn rule(blocks: &AddressBlocks, ip: &str, granted: &[&str]) -> &'static str {
        match blocks.check(ip.parse().unwrap(), &nets(granted)) {
            Ok(()) => "ok",
            Err(d) => d.rule(),
        }
    }

    #[test]
    fn operator_blocks_and_always_blocked_ranges_win_over_every_grant() {
        let blocks = AddressBlocks::new(
            nets(&["203.0.113.0/24", "8.8.8.0/24"]),
            vec!["192.0.2.10".parse().unwrap()],
            Vec::new(),
            Vec::new(),
        );
        let all = ["0.0.0.0/0", "::/0"];
        assert_eq!(rule(&blocks, "127.0.0.1", &all), "always-blocked");
        assert_eq!(rule(&blocks, "::ffff:127.0.0.1", &all), "always-blocked");
        assert_eq!(rule(&blocks, "169.254.169.254", &all), "always-blocked");
        assert_eq!(rule(&blocks, "::1", &all), "always-blocked");
        assert_eq!(rule(&blocks, "8.8.8.8", &all), "operator-block");
        assert_eq!(rule(&blocks, "203.0.113.5", &all), "operator-block");
        assert_eq!(rule(&blocks, "192.0.2.10", &all), "host-address");
        // Private: only with a grant.
        assert_eq!(rule(&blocks, "10.1.2.3", &[]), "operator-only");
        assert_eq!(rule(&blocks, "10.1.2.3", &["10.1.0.0/16"]), "ok");
        assert_eq!(rule(&blocks, "fd00::1", &[]), "operator-only");
        assert_eq!(rule(&blocks, "93.184.216.34", &[]), "ok");
    }

    #[test]
    fn declared_private_and_unblocked_ranges() {
        let blocks = AddressBlocks::new(
            nets(&["127.0.0.2/32"]),
            vec!["127.0.0.1".parse().unwrap()],
            nets(&["127.0.0.3/32"]),
            nets(&["127.0.0.0/8"]),
        );
        assert!(
            blocks.host.is_empty(),
            "unblocked host addresses are dropped"
        );
        assert_eq!(rule(&blocks, "127.0.0.1", &[]), "ok");
        assert_eq!(
            rule(&blocks, "127.0.0.2", &["127.0.0.0/8"]),
            "operator-block"
        );
        assert_eq!(rule(&blocks, "127.0.0.3", &[]), "operator-only");
        assert_eq!(rule(&blocks, "127.0.0.3", &["127.0.0.3/32"]), "ok");
    }
}
