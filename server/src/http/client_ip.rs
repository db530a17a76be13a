//! Who the client is, network-wise: the TCP peer, or — only when the peer is one of
//! `server.trusted_proxies` — the address the proxy reports in `X-Forwarded-For`.
//! A header a client writes itself never decides its rate-limit bucket, its
//! recorded sign-in address or whether it used TLS.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;

pub use crate::config::net::{parse_ranges, IpRange};

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

/// The client's address as text, as rate limits and audit records key it
/// (`"unknown"` when there is none).
pub fn client_addr(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[IpRange]) -> String {
    client_ip(peer, headers, trusted).map(|ip| ip.to_string()).unwrap_or_else(|| "unknown".into())
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
