//! IP prefixes and the longest-prefix-match map the peer table routes with.
//!
//! Pure: parsing, masking and lookups, shared by the peer table, the hosts parser, the command
//! line and netlink.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP prefix such as `10.20.0.0/16`; a plain address is a prefix of full length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// The (masked) network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

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
        let (addr, len) = parse_cidr(text)?;
        let prefix = Self { addr: mask(addr, len), len };
        if prefix.addr != addr {
            return Err(format!("`{text}` has host bits set (did you mean {prefix}?)"));
        }
        Ok(prefix)
    }
}

/// Splits `ADDR` or `ADDR/LEN` into the address (as written, host bits kept) and the length
/// (the full length when none is given); errors quote `text`. Shared by [`Prefix`] and the
/// addresses put on the device (`--address`), which keep their host bits.
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (addr_text, len_text) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text.parse().map_err(|_| format!("`{text}` is not an IP address or prefix"))?;
    let len = match len_text {
        None => max_len(addr),
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|&l| l <= max_len(addr))
            .ok_or_else(|| format!("`{text}` has a bad prefix length"))?,
    };
    Ok((addr, len))
}

impl From<Ipv4Addr> for Prefix {
    /// The /32 prefix of one address.
    fn from(addr: Ipv4Addr) -> Self {
        Self { addr: IpAddr::V4(addr), len: 32 }
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
    pub fn entry_count(&self) -> usize {
        self.v4.iter().map(|(_, m)| m.len()).sum::<usize>()
            + self.v6.iter().map(|(_, m)| m.len()).sum::<usize>()
    }

    /// Every prefix with its value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Prefix, &V)> {
        let v4 = self.v4.iter().flat_map(|(len, m)| {
            m.iter().map(|(&a, v)| (Prefix { addr: IpAddr::V4(Ipv4Addr::from(a)), len: *len }, v))
        });
        let v6 = self.v6.iter().flat_map(|(len, m)| {
            m.iter().map(|(&a, v)| (Prefix { addr: IpAddr::V6(Ipv6Addr::from(a)), len: *len }, v))
        });
        v4.chain(v6)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(text: &str) -> Prefix {
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
        assert_eq!(map.entry_count(), 5);
    }

    #[test]
    fn insert_replaces_an_existing_prefix() {
        let mut map = PrefixMap::default();
        map.insert(prefix("10.0.0.1"), 1);
        map.insert(prefix("10.0.0.1/32"), 2);
        assert_eq!(map.entry_count(), 1);
        assert_eq!(map.lookup("10.0.0.1".parse().unwrap()), Some(&2));
    }
}
