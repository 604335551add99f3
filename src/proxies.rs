//! The client's own address behind trusted proxies (`server.trusted_proxies`): a
//! connection from a trusted proxy is taken to come from the address that proxy names
//! last in `X-Forwarded-For`, and so on through every trusted hop. Connections from any
//! other peer are taken at their TCP address, whatever they claim.
//!
//! List only proxies that append the address they saw to `X-Forwarded-For` (nginx's
//! `$proxy_add_x_forwarded_for`, every cloud load balancer): a trusted host that passes
//! the header on unchanged lets its clients name any address.

use std::net::IpAddr;

/// One trusted address, or a network of them (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    fn parse(text: &str) -> Result<Network, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or a network like 10.0.0.0/8"))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {bits}"))?,
        };
        // An IPv4-mapped network (::ffff:10.0.0.0/104) is the IPv4 network it maps, as the
        // addresses it is compared with are.
        if let (IpAddr::V6(v6), true) = (address, prefix >= 96)
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            return Ok(Network {
                address: IpAddr::V4(v4),
                prefix: prefix - 96,
            });
        }
        Ok(Network { address, prefix })
    }

    fn contains(&self, address: IpAddr) -> bool {
        // An IPv4 client seen through an IPv6 socket (::ffff:a.b.c.d) is that IPv4 client.
        let address = address.to_canonical();
        match (self.address, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<Network>,
}

impl TrustedProxies {
    /// Parses `server.trusted_proxies`; the error names the entry that is wrong.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        let networks = entries
            .iter()
            .map(|entry| Network::parse(entry))
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { networks })
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.networks
            .iter()
            .any(|network| network.contains(address))
    }

    /// The client's address: `peer` itself unless it is trusted; then, from the right
    /// of `forwarded_for` (each proxy appends the address it saw), the first address not
    /// trusted. An entry that is not an address (with or without a port) ends the walk at
    /// the last good one, and a chain of trusted hops only is taken at its first
    /// (leftmost) address. IPv4-mapped IPv6 addresses are answered as IPv4.
    pub fn client_address(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = peer.to_canonical();
        let (Some(forwarded_for), true) = (forwarded_for, self.trusts(peer)) else {
            return peer;
        };
        let mut client = peer;
        for hop in forwarded_for.rsplit(',') {
            let Some(hop) = parse_hop(hop) else {
                metrics::counter!("playtree_forwarded_for_invalid_total").increment(1);
                break;
            };
            client = hop;
            if !self.trusts(hop) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, or an address with a port as some load
/// balancers write it (`203.0.113.9:5123`, `[2001:db8::1]:443`, `[2001:db8::1]`).
fn parse_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let address = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| {
            text.parse::<std::net::SocketAddr>()
                .ok()
                .map(|addr| addr.ip())
        })
        .or_else(|| text.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(address.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn proxies(entries: &[&str]) -> TrustedProxies {
        let entries: Vec<String> = entries.iter().map(|entry| entry.to_string()).collect();
        TrustedProxies::parse(&entries).expect("valid")
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_nobody_else_may() {
        let trusted = proxies(&["10.0.0.0/8", "192.168.1.7"]);
        let chain = Some("203.0.113.9, 10.1.2.3");
        assert_eq!(
            trusted.client_address(ip("10.9.9.9"), chain),
            ip("203.0.113.9"),
            "through two trusted hops to the client"
        );
        assert_eq!(
            trusted.client_address(ip("198.51.100.1"), chain),
            ip("198.51.100.1"),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(
            trusted.client_address(ip("192.168.1.7"), Some("6.6.6.6, 203.0.113.9")),
            ip("203.0.113.9"),
            "what the client itself put in front of the header is not believed"
        );
        assert_eq!(
            trusted.client_address(ip("192.168.1.7"), None),
            ip("192.168.1.7"),
            "no header: the proxy's own address"
        );
        assert_eq!(
            trusted.client_address(ip("10.0.0.1"), Some("garbage, 203.0.113.9")),
            ip("203.0.113.9")
        );
        assert_eq!(
            trusted.client_address(ip("10.0.0.1"), Some("203.0.113.9, garbage")),
            ip("10.0.0.1"),
            "an entry that is not an address stops the walk"
        );
        assert_eq!(
            trusted.client_address(ip("::ffff:10.0.0.1"), Some("203.0.113.9")),
            ip("203.0.113.9"),
            "an IPv4-mapped peer is its IPv4 address"
        );
        assert_eq!(
            trusted.client_address(ip("10.0.0.1"), Some("203.0.113.9:5123")),
            ip("203.0.113.9"),
            "a port is not part of the address"
        );
        assert_eq!(
            trusted.client_address(ip("10.0.0.1"), Some("[2001:db8::1]:443, 10.0.0.2")),
            ip("2001:db8::1")
        );
        assert_eq!(
            trusted.client_address(ip("10.0.0.1"), Some("::ffff:203.0.113.9")),
            ip("203.0.113.9"),
            "an IPv4-mapped client is its IPv4 address"
        );
        assert_eq!(
            TrustedProxies::default().client_address(ip("10.0.0.1"), chain),
            ip("10.0.0.1"),
            "no trusted proxies: every header is ignored"
        );
    }

    #[test]
    fn networks_parse_or_say_what_is_wrong() {
        let v6 = proxies(&["fd00::/8", "::1"]);
        assert!(v6.trusts(ip("fd12::1")));
        assert!(v6.trusts(ip("::1")));
        assert!(!v6.trusts(ip("fe80::1")));
        assert!(proxies(&["0.0.0.0/0"]).trusts(ip("8.8.8.8")));
        let mapped = proxies(&["::ffff:10.0.0.0/104"]);
        assert!(
            mapped.trusts(ip("10.1.2.3")),
            "a mapped network is its IPv4 one"
        );
        assert!(!mapped.trusts(ip("11.0.0.1")));
        for wrong in ["10.0.0.0/33", "proxy.local", "10.0.0.0/x", "::/129"] {
            let error = TrustedProxies::parse(&[wrong.to_owned()]).expect_err(wrong);
            assert!(error.contains(wrong), "{error}");
        }
    }
}
