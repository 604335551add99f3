//! The client's own address behind trusted proxies (`server.trusted_proxies`): a
//! connection from a trusted proxy is taken to come from the address that proxy names
//! last in `X-Forwarded-For`, and so on through every trusted hop. Connections from any
//! other peer are taken at their TCP address, whatever they claim.

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
    /// trusted. An entry that is not an address ends the walk at the last good one, and
    /// a chain of trusted hops only is taken at its first (leftmost) address.
    pub fn client_address(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let (Some(forwarded_for), true) = (forwarded_for, self.trusts(peer)) else {
            return peer;
        };
        let mut client = peer;
        for hop in forwarded_for.rsplit(',') {
            let Ok(hop) = hop.trim().parse::<IpAddr>() else {
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
        for wrong in ["10.0.0.0/33", "proxy.local", "10.0.0.0/x", "::/129"] {
            let error = TrustedProxies::parse(&[wrong.to_owned()]).expect_err(wrong);
            assert!(error.contains(wrong), "{error}");
        }
    }
}
