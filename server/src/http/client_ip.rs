//! Who the client is, network-wise: the TCP peer, or — only when the peer is one of
//! `server.trusted_proxies` — the address the proxy reports in `X-Forwarded-For`.
//! A header a client writes itself never decides its rate-limit bucket, its
//! recorded sign-in address or whether it used TLS.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;

/// An address range such as `10.0.0.0/8`, `127.0.0.1` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    base: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr.trim().parse::<IpAddr>().ok()?, Some(prefix.trim().parse::<u8>().ok()?)),
            None => (text.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { base: addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32u32),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (u128::from(u32::from(v4)), 32),
                None => (u128::from(v6), 128),
            },
        };
        let ((base, width), (candidate, candidate_width)) = (bits(self.base), bits(ip));
        if width != candidate_width {
            return false;
        }
        let host_bits = width - u32::from(self.prefix);
        let mask = if host_bits >= 128 { 0 } else { u128::MAX << host_bits };
        (base & mask) == (candidate & mask)
    }
}

/// Parse the configured list; invalid entries are reported by settings validation.
pub fn parse_ranges(entries: &[String]) -> Vec<IpRange> {
    entries.iter().filter_map(|e| IpRange::parse(e)).collect()
}

pub fn is_trusted(peer: Option<SocketAddr>, trusted: &[IpRange]) -> bool {
    peer.is_some_and(|peer| trusted.iter().any(|range| range.contains(peer.ip())))
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which
/// case the right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[IpRange]) -> Option<IpAddr> {
    let peer_ip = peer.map(|p| p.ip());
    if !is_trusted(peer, trusted) {
        return peer_ip;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse::<IpAddr>().ok())
        .collect();
    forwarded.into_iter().rev().find(|ip| !trusted.iter().any(|range| range.contains(*ip))).or(peer_ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(actix_web::http::header::HeaderName::from_static("x-forwarded-for"), xff.parse().unwrap());
        map
    }

    #[test]
    fn ranges_match_by_prefix() {
        let range = IpRange::parse("10.1.0.0/16").unwrap();
        assert!(range.contains("10.1.200.3".parse().unwrap()));
        assert!(!range.contains("10.2.0.1".parse().unwrap()));
        assert!(IpRange::parse("127.0.0.1").unwrap().contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(IpRange::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        assert!(IpRange::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(IpRange::parse("10.0.0.0/33").is_none());
        assert!(IpRange::parse("proxy.local").is_none());
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let trusted = parse_ranges(&["10.0.0.0/8".into()]);
        let via_proxy = Some("10.0.0.5:4000".parse().unwrap());
        let direct = Some("203.0.113.9:4000".parse().unwrap());
        // A client-written entry on the left is ignored; the proxy appended the real one.
        let h = headers("1.2.3.4, 198.51.100.7, 10.0.0.9");
        assert_eq!(client_ip(via_proxy, &h, &trusted), Some("198.51.100.7".parse().unwrap()));
        assert_eq!(client_ip(direct, &h, &trusted), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(client_ip(via_proxy, &HeaderMap::new(), &trusted), Some("10.0.0.5".parse().unwrap()));
    }
}
