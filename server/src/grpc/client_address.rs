//! Who is calling: the peer address, or — when the peer is a configured
//! trusted proxy — the address it forwarded in `x-forwarded-for`.
//!
//! `x-forwarded-for` is a list, one address appended per hop. Only hops
//! added by trusted proxies can be believed, so the list is read from the
//! right, skipping trusted proxies; the first other address is the client.
//! From an untrusted peer the header is ignored: anyone can send one.

use std::net::{IpAddr, SocketAddr};

use tonic::metadata::MetadataMap;

/// The caller's address as recorded on sessions and used by the
/// per-address login limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientAddress {
    /// The client's IP, if known.
    pub ip: Option<IpAddr>,
    /// For display and audit: `ip:port` of a direct peer, or the forwarded IP.
    pub display: String,
}

/// Works out the caller's address from the peer and the metadata.
pub(crate) fn client_address(peer: Option<SocketAddr>, metadata: &MetadataMap, trusted: &[IpAddr]) -> ClientAddress {
    let Some(peer) = peer else { return ClientAddress { ip: None, display: String::new() } };
    if !trusted.contains(&peer.ip()) {
        return ClientAddress { ip: Some(peer.ip()), display: peer.to_string() };
    }
    let hops: Vec<&str> = metadata
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return ClientAddress { ip: Some(ip), display: ip.to_string() },
            // A hop that is not an address cannot be trusted, nor anything
            // left of it: the proxy itself is the best we know.
            Err(_) => break,
        }
    }
    ClientAddress { ip: Some(peer.ip()), display: peer.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(forwarded: &[&str]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for value in forwarded {
            map.append("x-forwarded-for", value.parse().expect("ascii"));
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn the_header_is_ignored_from_an_untrusted_peer() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().expect("addr");
        let found = client_address(Some(peer), &metadata(&["203.0.113.7"]), &[ip("10.0.0.1")]);
        assert_eq!(found, ClientAddress { ip: Some(ip("10.0.0.9")), display: "10.0.0.9:5000".into() });
    }

    #[test]
    fn a_trusted_proxy_is_believed_and_trusted_hops_are_skipped() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().expect("addr");
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        // A client-supplied spoof on the left stays unused: the rightmost
        // untrusted hop is the one the first trusted proxy saw.
        let found = client_address(Some(peer), &metadata(&["198.51.100.1, 203.0.113.7", "10.0.0.2"]), &trusted);
        assert_eq!(found.ip, Some(ip("203.0.113.7")));
        let junk = client_address(Some(peer), &metadata(&["not-an-ip"]), &trusted);
        assert_eq!(junk.ip, Some(ip("10.0.0.1")));
        let none = client_address(Some(peer), &metadata(&[]), &trusted);
        assert_eq!(none.ip, Some(ip("10.0.0.1")));
    }
}
