//! The PROXY protocol version 2 header an L4 route may send to its upstream before the
//! client's bytes, so the replica learns the client's address (SPEC §7: "the client's address
//! is preserved where the platform allows (PROXY protocol optional per route)").
//!
//! Pure: turns two socket addresses into bytes; it does not write to sockets. The encoding
//! itself is the `ppp` crate's (ADR 0022); this module only decides the address family. Only
//! the binary version 2 with command PROXY over TCP (`STREAM`) is produced, without TLVs.

use std::net::{IpAddr, SocketAddr};

use ppp::v2::{Builder, Command, Protocol, Version};

/// The PROXY v2 header for a TCP connection from `client` accepted on `listener` (the
/// address and port the client connected to).
///
/// Both addresses are carried in one family: IPv4 when both are IPv4 (IPv4-mapped IPv6
/// addresses from a dual-stack listener count as IPv4), otherwise IPv6 with any IPv4 address
/// mapped (`::ffff:a.b.c.d`).
pub fn proxy_v2(client: SocketAddr, listener: SocketAddr) -> Vec<u8> {
    let addresses = same_family(client, listener);
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
        .build()
        // Cannot fail: `build` only refuses payloads longer than u16::MAX bytes, and two
        // addresses with ports are at most 36.
        .expect("a PROXY v2 header without TLVs fits its length field")
}

/// Puts both addresses into one family, preferring IPv4 (see [`proxy_v2`]).
fn same_family(client: SocketAddr, listener: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |addr: SocketAddr| SocketAddr::new(addr.ip().to_canonical(), addr.port());
    let (client, listener) = (canonical(client), canonical(listener));
    if client.is_ipv4() == listener.is_ipv4() {
        return (client, listener);
    }
    let v6 = |addr: SocketAddr| match addr.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), addr.port()),
        IpAddr::V6(_) => addr,
    };
    (v6(client), v6(listener))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 12-byte signature that starts every v2 header (haproxy proxy-protocol.txt §2.2).
    const SIGNATURE: [u8; 12] = [
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
    ];

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_layout_matches_the_spec() {
        let header = proxy_v2(addr("192.0.2.10:51234"), addr("10.0.0.1:8080"));
        let mut expected = SIGNATURE.to_vec();
        expected.extend([
            0x21, // version 2, command PROXY
            0x11, // AF_INET, STREAM
            0x00, 0x0C, // 12 address bytes follow
            192, 0, 2, 10, // source address
            10, 0, 0, 1, // destination address
            0xC8, 0x22, // source port 51234
            0x1F, 0x90, // destination port 8080
        ]);
        assert_eq!(header, expected);
    }

    #[test]
    fn ipv6_layout_matches_the_spec() {
        let header = proxy_v2(addr("[2001:db8::1]:443"), addr("[2001:db8::2]:9000"));
        assert_eq!(&header[..12], &SIGNATURE);
        assert_eq!(header[12], 0x21);
        assert_eq!(header[13], 0x21, "AF_INET6, STREAM");
        assert_eq!(&header[14..16], &[0x00, 36]);
        assert_eq!(header.len(), 16 + 36);
        let mut src = [0u8; 16];
        src[..2].copy_from_slice(&[0x20, 0x01]);
        src[2..4].copy_from_slice(&[0x0d, 0xb8]);
        src[15] = 1;
        let mut dst = src;
        dst[15] = 2;
        assert_eq!(&header[16..32], &src);
        assert_eq!(&header[32..48], &dst);
        assert_eq!(&header[48..50], &443u16.to_be_bytes());
        assert_eq!(&header[50..52], &9000u16.to_be_bytes());
    }

    #[test]
    fn mapped_ipv4_from_a_dual_stack_listener_is_sent_as_ipv4() {
        let header = proxy_v2(
            addr("[::ffff:192.0.2.10]:1000"),
            addr("[::ffff:10.0.0.1]:80"),
        );
        assert_eq!(header[13], 0x11);
        assert_eq!(&header[16..24], &[192, 0, 2, 10, 10, 0, 0, 1]);
    }

    #[test]
    fn mixed_families_are_sent_as_ipv6_with_the_ipv4_side_mapped() {
        let (client, listener) = same_family(addr("192.0.2.10:1000"), addr("[2001:db8::2]:80"));
        assert_eq!(client, addr("[::ffff:192.0.2.10]:1000"));
        assert_eq!(listener, addr("[2001:db8::2]:80"));
        let header = proxy_v2(addr("192.0.2.10:1000"), addr("[2001:db8::2]:80"));
        assert_eq!(header[13], 0x21);
        assert_eq!(
            &header[16..32],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 10]
        );
    }
}
