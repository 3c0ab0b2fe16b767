//! Cryptokey routing for the userspace mesh: the table from AllowedIPs prefixes to peers,
//! answered by longest-prefix match. The same lookup picks the peer an outgoing packet is
//! encrypted for (by its destination) and checks that a decrypted packet came from the peer
//! allowed to send it (by its source).
//!
//! Pure and immutable: a new peer set builds a new table. IPv4 only, like the rest of jaco's
//! networking.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Prefixes → peer ids, one hash map per prefix length, longest first (at most 33 probes).
#[derive(Debug, Clone)]
pub(super) struct AllowedIps<T> {
    by_length: Vec<(u8, HashMap<u32, T>)>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        AllowedIps {
            by_length: Vec::new(),
        }
    }
}

impl<T: Copy> AllowedIps<T> {
    /// Builds the table; when two entries name the same prefix, the later one wins (as in
    /// WireGuard, where a prefix belongs to one peer only).
    pub(super) fn new(entries: impl IntoIterator<Item = (Ipv4Net, T)>) -> Self {
        let mut by_length: Vec<(u8, HashMap<u32, T>)> = Vec::new();
        for (net, id) in entries {
            let net = net.trunc();
            let length = net.prefix_len();
            let index = match by_length.iter().position(|(l, _)| *l == length) {
                Some(index) => index,
                None => {
                    by_length.push((length, HashMap::new()));
                    by_length.len() - 1
                }
            };
            by_length[index].1.insert(u32::from(net.network()), id);
        }
        by_length.sort_by_key(|(length, _)| std::cmp::Reverse(*length));
        AllowedIps { by_length }
    }

    /// The peer whose longest prefix contains `address`.
    pub(super) fn lookup(&self, address: Ipv4Addr) -> Option<T> {
        let address = u32::from(address);
        self.by_length.iter().find_map(|(length, map)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(*length)).unwrap_or(0);
            map.get(&(address & mask)).copied()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, u32)]) -> AllowedIps<u32> {
        AllowedIps::new(entries.iter().map(|(n, id)| (n.parse().unwrap(), *id)))
    }

    fn at(table: &AllowedIps<u32>, address: &str) -> Option<u32> {
        table.lookup(address.parse().unwrap())
    }

    #[test]
    fn the_longest_prefix_wins() {
        let t = table(&[
            ("10.244.0.0/16", 1),
            ("10.244.7.0/24", 2),
            ("10.244.7.9/32", 3),
        ]);
        assert_eq!(at(&t, "10.244.7.9"), Some(3));
        assert_eq!(at(&t, "10.244.7.10"), Some(2));
        assert_eq!(at(&t, "10.244.8.1"), Some(1));
        assert_eq!(at(&t, "10.245.0.1"), None);
    }

    #[test]
    fn an_empty_table_and_the_default_route() {
        assert_eq!(at(&table(&[]), "1.2.3.4"), None);
        let t = table(&[("0.0.0.0/0", 7), ("10.0.0.0/8", 8)]);
        assert_eq!(at(&t, "1.2.3.4"), Some(7));
        assert_eq!(at(&t, "10.1.2.3"), Some(8));
    }

    #[test]
    fn host_bits_are_ignored_and_a_repeated_prefix_goes_to_the_last_peer() {
        let t = table(&[("10.244.3.77/24", 1), ("10.244.3.0/24", 2)]);
        assert_eq!(at(&t, "10.244.3.1"), Some(2));
    }
}
