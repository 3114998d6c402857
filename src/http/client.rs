//! Who is calling, for the request log and the audit log: the client's IP address and user
//! agent. The address is the TCP peer's, unless the peer is one of `--trusted-proxies`: then
//! `X-Forwarded-For` is read from the right, skipping trusted proxies, and the first address
//! that is not one is the client (anyone can write the header; only what a trusted proxy
//! appended is believed).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

/// The longest user agent kept; longer ones are cut.
const MAX_USER_AGENT: usize = 512;

/// An address block: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for IpBlock {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not an IP address or a CIDR block like 10.0.0.0/8");
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(bad)?,
            None => bits,
        };
        Ok(IpBlock { network, prefix })
    }
}

impl IpBlock {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The proxies whose `X-Forwarded-For` is believed (`--trusted-proxies`); none by default.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpBlock>);

impl TrustedProxies {
    pub fn new(blocks: Vec<IpBlock>) -> Self {
        TrustedProxies(blocks)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|block| block.contains(ip))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        // Several header lines are one list, in order.
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            // A hop that is not an address ends the walk: the last trusted one is all we know.
            let Some(ip) = parse_hop(hop.trim()) else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// `1.2.3.4`, `2001:db8::1`, or either with a port (`1.2.3.4:5678`, `[2001:db8::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The caller's address and user agent, as the `observe` middleware found them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// From the peer address (absent in in-process tests) and the headers.
    pub fn read(proxies: &TrustedProxies, peer: Option<IpAddr>, headers: &HeaderMap) -> Self {
        let user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| {
                // Visible ASCII only (`to_str`), so a byte index is a character boundary.
                ua[..ua.len().min(MAX_USER_AGENT)].to_string()
            })
            .filter(|ua| !ua.is_empty());
        ClientInfo {
            ip: peer.map(|peer| proxies.client_ip(peer, headers).to_string()),
            user_agent,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientInfo>()
            .cloned()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn blocks_parse_and_match() {
        let block: IpBlock = "10.0.0.0/8".parse().unwrap();
        assert!(block.contains(ip("10.200.1.1")));
        assert!(!block.contains(ip("11.0.0.1")));
        assert!(block.contains(ip("::ffff:10.1.2.3")), "mapped IPv4");
        let one: IpBlock = "2001:db8::1".parse().unwrap();
        assert!(one.contains(ip("2001:db8::1")) && !one.contains(ip("2001:db8::2")));
        let all: IpBlock = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("::1")));
        for bad in ["10.0.0.0/33", "proxy", "10.0.0/8", "::/129", ""] {
            assert!(bad.parse::<IpBlock>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let forged = headers(&["6.6.6.6, 203.0.113.7"]);
        // An untrusted peer's header is ignored.
        assert_eq!(
            proxies.client_ip(ip("198.51.100.1"), &forged),
            ip("198.51.100.1")
        );
        // A trusted proxy appended the real client; what the client wrote before is not it.
        assert_eq!(
            proxies.client_ip(ip("10.0.0.2"), &forged),
            ip("203.0.113.7")
        );
        // Chains of trusted proxies are skipped, across header lines and with ports.
        let chain = headers(&["203.0.113.7:5123", "10.0.0.9"]);
        assert_eq!(proxies.client_ip(ip("10.0.0.2"), &chain), ip("203.0.113.7"));
        // No header, or garbage: the nearest address we know.
        assert_eq!(
            proxies.client_ip(ip("10.0.0.2"), &headers(&[])),
            ip("10.0.0.2")
        );
        let garbage = headers(&["unknown, 10.0.0.3"]);
        assert_eq!(proxies.client_ip(ip("10.0.0.2"), &garbage), ip("10.0.0.3"));
        // None trusted: the header is never read.
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(ip("10.0.0.2"), &forged), ip("10.0.0.2"));
    }
}
