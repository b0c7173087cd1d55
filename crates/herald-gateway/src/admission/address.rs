//! The client's address: the TCP peer, or behind a trusted proxy the nearest untrusted
//! address in `X-Forwarded-For`; and the key per-address limits count it under.

use axum::http::HeaderMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Why a trusted-proxy entry is not an address or CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CidrError {
    /// Not an IP address.
    #[error("expected an IP address or a CIDR such as 10.0.0.0/8")]
    Address,
    /// The prefix length is longer than the address.
    #[error("the prefix length is too long for the address")]
    Prefix,
}

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `fd00::/8` or a single address.
    pub(crate) fn parse(text: &str) -> Result<Self, CidrError> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| CidrError::Prefix)?)),
            None => (text, None),
        };
        let net = addr
            .parse::<IpAddr>()
            .map_err(|_| CidrError::Address)?
            .to_canonical();
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(CidrError::Prefix);
        }
        Ok(Self { net, prefix })
    }

    /// Whether `ip` is in this network.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Trusts these networks.
    pub(crate) fn new(networks: Vec<Cidr>) -> Self {
        Self(networks)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client's address for a request from `peer`. Only a trusted peer's
    /// `X-Forwarded-For` counts, read from the right (the entry the nearest proxy
    /// added) past every trusted proxy: entries further left were written by whoever
    /// sent the request and can be anything. An unreadable entry ends the walk at the
    /// last address known good.
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.into_iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The key an address is counted under: IPv4 addresses one by one, IPv6 by their /64,
/// the block one host is usually given (counting single IPv6 addresses would let one
/// host take as many as it likes).
pub(crate) fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::{Cidr, CidrError, TrustedProxies, limit_key};
    use axum::http::{HeaderMap, HeaderValue};
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn cidrs_parse_and_contain() {
        let n = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(n.contains(ip("10.200.1.1")));
        assert!(n.contains(ip("::ffff:10.1.1.1")));
        assert!(!n.contains(ip("11.0.0.1")));
        assert!(!n.contains(ip("::1")));
        let one = Cidr::parse("127.0.0.1").expect("address");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = Cidr::parse("fd00::/8").expect("cidr");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("8.8.8.8"))
        );
        assert_eq!(Cidr::parse("10.0.0.0/33"), Err(CidrError::Prefix));
        assert_eq!(Cidr::parse("proxy.local"), Err(CidrError::Address));
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_peer() {
        let proxies = TrustedProxies::new(vec![Cidr::parse("10.0.0.0/8").expect("cidr")]);
        let h = xff(&["203.0.113.7"]);
        assert_eq!(
            proxies.client_ip(ip("198.51.100.1"), &h),
            ip("198.51.100.1")
        );
        assert_eq!(proxies.client_ip(ip("10.0.0.5"), &h), ip("203.0.113.7"));
        // The nearest untrusted entry wins over whatever the client wrote further left.
        let h = xff(&["1.2.3.4, 203.0.113.7", "10.0.0.9"]);
        assert_eq!(proxies.client_ip(ip("10.0.0.5"), &h), ip("203.0.113.7"));
        // Ports and IPv6 entries; garbage stops the walk at the last good address.
        let h = xff(&["[2001:db8::1]:4711"]);
        assert_eq!(proxies.client_ip(ip("10.0.0.5"), &h), ip("2001:db8::1"));
        let h = xff(&["203.0.113.7, junk"]);
        assert_eq!(proxies.client_ip(ip("10.0.0.5"), &h), ip("10.0.0.5"));
        // A trusted peer without the header is itself the client.
        assert_eq!(
            proxies.client_ip(ip("10.0.0.5"), &HeaderMap::new()),
            ip("10.0.0.5")
        );
        // No trusted proxies: the header is never read.
        let h = xff(&["203.0.113.7"]);
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.5"), &h),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn ipv6_addresses_are_counted_by_their_64() {
        assert_eq!(limit_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("2001:db8:1:2::ff")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(limit_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }
}
