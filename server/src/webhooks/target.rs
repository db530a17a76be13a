//! Where a webhook may be sent: URL rules and the SSRF check on resolved addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use url::{Host, Url};

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Unresolvable(String),
}

/// An http(s) URL with a host and no credentials.
pub fn parse(raw: &str) -> Result<Url, TargetError> {
    let raw = raw.trim();
    if raw.len() > MAX_URL_LEN {
        return Err(TargetError::Invalid(format!("the URL is longer than {MAX_URL_LEN} characters")));
    }
    let url = Url::parse(raw).map_err(|e| TargetError::Invalid(format!("not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::Invalid("the URL must be http or https".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Invalid("the URL must not contain credentials".into()));
    }
    if url.host().is_none() {
        return Err(TargetError::Invalid("the URL has no host".into()));
    }
    Ok(url)
}

/// The addresses `url` resolves to, refused if any is internal (unless allowed).
pub async fn resolve(url: &Url, allow_private: bool) -> Result<Vec<SocketAddr>, TargetError> {
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(Host::Domain(domain)) => {
            let lookup = tokio::net::lookup_host((domain, port));
            match tokio::time::timeout(Duration::from_secs(5), lookup).await {
                Ok(Ok(addrs)) => addrs.collect(),
                Ok(Err(e)) => return Err(TargetError::Unresolvable(format!("{domain} does not resolve: {e}"))),
                Err(_) => return Err(TargetError::Unresolvable(format!("resolving {domain} timed out"))),
            }
        }
        None => return Err(TargetError::Invalid("the URL has no host".into())),
    };
    if addrs.is_empty() {
        return Err(TargetError::Unresolvable("the host has no addresses".into()));
    }
    if !allow_private {
        if let Some(addr) = addrs.iter().find(|a| is_internal(a.ip())) {
            return Err(TargetError::Refused(format!(
                "the URL resolves to {}, a loopback, private or link-local address",
                addr.ip()
            )));
        }
    }
    Ok(addrs)
}

/// Loopback, private, link-local, shared (CGNAT), unspecified, broadcast, multicast,
/// documentation, benchmarking, reserved and transition addresses: nothing a public
/// webhook should reach. Checked against the IANA IPv4 and IPv6 Special-Purpose
/// Address Registries; blocks whose addresses are "globally reachable" there but
/// are no legitimate webhook target (AS112, AMT, IETF protocol assignments) are
/// refused as well.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            is_internal_v6(v6)
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network" 0.0.0.0/8
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0.0/24
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast 192.88.99.0/24 (deprecated)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
        || a >= 240 // reserved 240.0.0.0/4
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || s[..6] == [0; 6] // IPv4-compatible ::/96 (deprecated; reaches v4 hosts)
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 64:ff9b::/96 and local-use 64:ff9b:1::/48
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] <= 1) // discard-only 100::/64, dummy 100:0:0:1::/64
        || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments 2001::/23 (Teredo 2001::/32 included)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
        || s[0] == 0x2002 // 6to4 2002::/16: tunnels to any IPv4 address, internal ones included
        || (s[0] == 0x3fff && s[1] < 0x1000) // documentation 3fff::/20
        || s[0] == 0x5f00 // SRv6 SIDs 5f00::/16
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            // Issue 18: transition and tunnelling prefixes that reach IPv4 hosts.
            "::127.0.0.1",
            "::10.0.0.1",
            "::8.8.8.8",
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "64:ff9b:1::a00:1",
            "64:ff9b::7f00:1",
            // The rest of the special-purpose registries.
            "192.88.99.1",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
            "100::1",
            "100:0:0:1::1",
            "2001:2::1",
            "2001:db8::1",
            "3fff::1",
            "5f00::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "2001:4860:4860::8888", "2a00:1450::1"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_need_http_and_no_credentials() {
        assert!(parse("https://example.com/hook").is_ok());
        assert!(parse("ftp://example.com/").is_err());
        assert!(parse("https://user:pw@example.com/").is_err());
        assert!(parse("not a url").is_err());
    }
}
