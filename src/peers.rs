//! The virtual-IP to peer table and the per-packet decision where a packet goes.
//!
//! Pure and immutable: the control plane builds a new [`PeerTable`] and publishes it whole; the
//! data plane only reads it, so lookups take no locks.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::packet;

/// An IP prefix such as `10.20.0.0/16`; a plain address is a prefix of full length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// Whether this prefix names one single address.
    pub fn is_host(&self) -> bool {
        self.len == max_len(self.addr)
    }
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_bits_v4(len))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_bits_v6(len))),
    }
}

fn mask_bits_v4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask_bits_v6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() { write!(f, "{}", self.addr) } else { write!(f, "{}/{}", self.addr, self.len) }
    }
}

impl FromStr for Prefix {
    type Err = String;

    /// Parses `ADDR` or `ADDR/LEN`; host bits set under the mask are an error, since they
    /// usually mean a typo.
    fn from_str(text: &str) -> Result<Self, String> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr =
            addr_text.parse().map_err(|_| format!("`{text}` is not an IP address or prefix"))?;
        let len = match len_text {
            None => max_len(addr),
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max_len(addr))
                .ok_or_else(|| format!("`{text}` has a bad prefix length"))?,
        };
        let prefix = Self { addr: mask(addr, len), len };
        if prefix.addr != addr {
            return Err(format!("`{text}` has host bits set (did you mean {prefix}?)"));
        }
        Ok(prefix)
    }
}

/// A longest-prefix-match map: one hash map per prefix length in use, probed longest first,
/// so a lookup costs one hash probe per distinct length (one, for a table of host addresses).
#[derive(Debug)]
pub struct PrefixMap<V> {
    v4: Vec<(u8, HashMap<u32, V>)>,
    v6: Vec<(u8, HashMap<u128, V>)>,
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        Self { v4: Vec::new(), v6: Vec::new() }
    }
}

impl<V> PrefixMap<V> {
    /// Inserts or replaces the value for `prefix`.
    pub fn insert(&mut self, prefix: Prefix, value: V) {
        match prefix.addr {
            IpAddr::V4(a) => insert_len(&mut self.v4, prefix.len, u32::from(a), value),
            IpAddr::V6(a) => insert_len(&mut self.v6, prefix.len, u128::from(a), value),
        }
    }

    /// The value of the longest prefix that contains `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&V> {
        match addr {
            IpAddr::V4(a) => {
                let key = u32::from(a);
                self.v4.iter().find_map(|(len, m)| m.get(&(key & mask_bits_v4(*len))))
            }
            IpAddr::V6(a) => {
                let key = u128::from(a);
                self.v6.iter().find_map(|(len, m)| m.get(&(key & mask_bits_v6(*len))))
            }
        }
    }

    /// Number of prefixes held.
    pub fn len(&self) -> usize {
        self.v4.iter().map(|(_, m)| m.len()).sum::<usize>()
            + self.v6.iter().map(|(_, m)| m.len()).sum::<usize>()
    }

    /// Whether any IPv6 prefix is present.
    pub fn has_v6(&self) -> bool {
        !self.v6.is_empty()
    }
}

fn insert_len<K: std::hash::Hash + Eq, V>(maps: &mut Vec<(u8, HashMap<K, V>)>, len: u8, key: K, value: V) {
    let index = match maps.binary_search_by(|(l, _)| len.cmp(l)) {
        Ok(i) => i,
        Err(i) => {
            maps.insert(i, (len, HashMap::new()));
            i
        }
    };
    maps[index].1.insert(key, value);
}

/// Where packets go: the one remote of a one-to-one tunnel, or a map from inner prefixes to
/// real peer addresses for one-to-many.
#[derive(Debug)]
pub enum PeerTable {
    /// Every packet goes to this one peer.
    Single(SocketAddr),
    /// Packets go to the peer of the longest prefix containing their destination.
    Map(PrefixMap<SocketAddr>),
}

/// What to do with one packet read from the TUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it, unchanged, as one UDP datagram to this address.
    Send(SocketAddr),
    /// No peer has its destination: answer with an ICMP unreachable into the TUN.
    Unreachable,
    /// Drop it without a word: IPv6 with no IPv6 entry (router solicitations and the like),
    /// or bytes that are not an IP packet.
    Ignore,
}

impl PeerTable {
    /// Decides where `packet` (one IP packet from the TUN) goes.
    pub fn route(&self, packet: &[u8]) -> Verdict {
        match self {
            PeerTable::Single(peer) => Verdict::Send(*peer),
            PeerTable::Map(map) => match packet::destination(packet) {
                None => Verdict::Ignore,
                Some(dst) => match map.lookup(dst) {
                    Some(peer) => Verdict::Send(*peer),
                    None if dst.is_ipv6() && !map.has_v6() => Verdict::Ignore,
                    None => Verdict::Unreachable,
                },
            },
        }
    }

    /// The number of peer entries (1 for one-to-one).
    pub fn len(&self) -> usize {
        match self {
            PeerTable::Single(_) => 1,
            PeerTable::Map(map) => map.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tests::{echo_request_v4, udp_v6};

    fn prefix(text: &str) -> Prefix {
        text.parse().unwrap()
    }

    fn peer(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn prefixes_parse_and_reject_bad_input() {
        assert_eq!(prefix("10.0.0.1").to_string(), "10.0.0.1");
        assert_eq!(prefix("10.20.0.0/16").to_string(), "10.20.0.0/16");
        assert_eq!(prefix("fd00::/64").to_string(), "fd00::/64");
        assert!(prefix("::1").is_host());
        for bad in ["", "10.0.0", "host.example", "10.0.0.0/33", "10.0.0.0/-1", "fd00::/129"] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad}");
        }
        let err = "10.20.1.0/16".parse::<Prefix>().unwrap_err();
        assert!(err.contains("did you mean 10.20.0.0/16"), "{err}");
    }

    #[test]
    fn longest_prefix_wins() {
        let mut map = PrefixMap::default();
        map.insert(prefix("10.0.0.0/8"), 1);
        map.insert(prefix("10.20.0.0/16"), 2);
        map.insert(prefix("10.20.0.7"), 3);
        map.insert(prefix("0.0.0.0/0"), 4);
        map.insert(prefix("fd00::/16"), 5);
        let at = |a: &str| map.lookup(a.parse().unwrap()).copied();
        assert_eq!(at("10.20.0.7"), Some(3));
        assert_eq!(at("10.20.9.9"), Some(2));
        assert_eq!(at("10.1.1.1"), Some(1));
        assert_eq!(at("192.0.2.1"), Some(4));
        assert_eq!(at("fd00::1"), Some(5));
        assert_eq!(at("fe80::1"), None);
        assert_eq!(map.len(), 5);
    }

    #[test]
    fn insert_replaces_an_existing_prefix() {
        let mut map = PrefixMap::default();
        map.insert(prefix("10.0.0.1"), 1);
        map.insert(prefix("10.0.0.1/32"), 2);
        assert_eq!(map.len(), 1);
        assert_eq!(map.lookup("10.0.0.1".parse().unwrap()), Some(&2));
    }

    #[test]
    fn single_peer_takes_everything() {
        let table = PeerTable::Single(peer("192.0.2.1:7777"));
        let v6 = udp_v6("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), b"x");
        assert_eq!(table.route(&v6), Verdict::Send(peer("192.0.2.1:7777")));
        assert_eq!(
            table.route(&echo_request_v4([1, 1, 1, 1], [2, 2, 2, 2])),
            Verdict::Send(peer("192.0.2.1:7777"))
        );
    }

    #[test]
    fn map_routes_by_destination_and_answers_unmapped() {
        let mut map = PrefixMap::default();
        map.insert(prefix("192.168.100.2"), peer("192.0.2.2:7777"));
        let table = PeerTable::Map(map);
        let to_2 = echo_request_v4([192, 168, 100, 1], [192, 168, 100, 2]);
        let to_3 = echo_request_v4([192, 168, 100, 1], [192, 168, 100, 3]);
        assert_eq!(table.route(&to_2), Verdict::Send(peer("192.0.2.2:7777")));
        assert_eq!(table.route(&to_3), Verdict::Unreachable);
        assert_eq!(table.route(&[]), Verdict::Ignore);
    }

    #[test]
    fn ipv6_is_ignored_quietly_unless_the_map_has_ipv6() {
        let v6 = udp_v6("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), b"x");
        let mut map = PrefixMap::default();
        map.insert(prefix("192.168.100.2"), peer("192.0.2.2:7777"));
        assert_eq!(PeerTable::Map(map).route(&v6), Verdict::Ignore);

        let mut map = PrefixMap::default();
        map.insert(prefix("fd00::9"), peer("192.0.2.9:7777"));
        assert_eq!(PeerTable::Map(map).route(&v6), Verdict::Unreachable);
    }
}
