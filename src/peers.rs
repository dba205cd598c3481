//! The virtual-IP to peer table and the per-packet decision where a packet goes.
//!
//! Pure and immutable: the control plane builds a new [`PeerTable`] and publishes it whole; the
//! data plane only reads it, so lookups take no locks.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU16, Ordering::Relaxed};

use crate::packet;

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

/// A peer's real address, and the source port it was last seen sending from when a NAT between
/// it and us rewrote its configured port.
#[derive(Debug)]
pub struct Endpoint {
    configured: SocketAddr,
    /// The port replies go to instead of the configured one; 0 while none was learned.
    learned_port: AtomicU16,
}

impl Endpoint {
    fn new(configured: SocketAddr) -> Self {
        Self { configured, learned_port: AtomicU16::new(0) }
    }

    fn observe(&self, source: SocketAddr) -> Admission {
        if self.learn(source.port()) {
            Admission::AcceptedFromNewPort { configured: self.configured, now: self.current() }
        } else {
            Admission::Accepted
        }
    }

    /// Where to send to now: the configured address, with the learned port if there is one.
    pub fn current(&self) -> SocketAddr {
        match self.learned_port.load(Relaxed) {
            0 => self.configured,
            port => SocketAddr::new(self.configured.ip(), port),
        }
    }

    /// Remembers that the peer sends from `port` (writes only on change, so that the data
    /// plane's readers keep their cache line). Returns whether it changed.
    fn learn(&self, port: u16) -> bool {
        let value = if port == self.configured.port() { 0 } else { port };
        let changed = self.learned_port.load(Relaxed) != value;
        if changed {
            self.learned_port.store(value, Relaxed);
        }
        changed
    }
}

/// Where packets go, and from where they may come: the one remote of a one-to-one tunnel, or a
/// map from inner prefixes to real peers for one-to-many. Immutable but for the ports learned
/// from peers behind NAT.
#[derive(Debug)]
pub struct PeerTable {
    /// Distinct peer addresses; the routes refer to them by index.
    endpoints: Vec<Endpoint>,
    /// `None` for one-to-one (everything goes to endpoint 0).
    routes: Option<PrefixMap<u32>>,
    /// For each peer IP, its endpoint if that is the only one with this IP (keepalives carry no
    /// inner address, so only then do they say whose port changed).
    by_ip: HashMap<IpAddr, Option<u32>>,
}

/// The outcome of the source check on one received packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// From the peer its inner source maps to.
    Accepted,
    /// From that peer, but from a new port: replies go to `now` from here on (a NAT rewrote
    /// the peer's port, or it moved).
    AcceptedFromNewPort {
        /// The peer's configured address.
        configured: SocketAddr,
        /// Where replies go now.
        now: SocketAddr,
    },
    /// Not from the peer its inner source maps to (or its inner source maps to none).
    Rejected,
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
    /// A one-to-one table: every packet goes to `peer`.
    pub fn single(peer: SocketAddr) -> Self {
        Self::build(vec![Endpoint::new(peer)], None)
    }

    /// A one-to-many table from (prefix, peer) pairs; a later pair for the same prefix wins.
    pub fn from_entries(entries: impl IntoIterator<Item = (Prefix, SocketAddr)>) -> Self {
        let mut endpoints = Vec::new();
        let mut index_of: HashMap<SocketAddr, u32> = HashMap::new();
        let mut routes = PrefixMap::default();
        for (prefix, peer) in entries {
            let index = *index_of.entry(peer).or_insert_with(|| {
                endpoints.push(Endpoint::new(peer));
                (endpoints.len() - 1) as u32
            });
            routes.insert(prefix, index);
        }
        Self::build(endpoints, Some(routes))
    }

    fn build(endpoints: Vec<Endpoint>, routes: Option<PrefixMap<u32>>) -> Self {
        let mut by_ip: HashMap<IpAddr, Option<u32>> = HashMap::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            by_ip
                .entry(endpoint.configured.ip())
                .and_modify(|unique| *unique = None)
                .or_insert(Some(index as u32));
        }
        Self { endpoints, routes, by_ip }
    }

    /// The endpoint serving inner address `addr`.
    fn endpoint_for(&self, addr: IpAddr) -> Option<&Endpoint> {
        match &self.routes {
            None => self.endpoints.first(),
            Some(routes) => routes.lookup(addr).map(|&i| &self.endpoints[i as usize]),
        }
    }

    /// Decides where `packet` (one IP packet from the TUN) goes.
    pub fn route(&self, packet: &[u8]) -> Verdict {
        let Some(dst) = packet::destination(packet) else { return Verdict::Ignore };
        match (self.endpoint_for(dst), &self.routes) {
            (Some(endpoint), _) => Verdict::Send(endpoint.current()),
            (None, Some(routes)) if dst.is_ipv6() && !routes.has_v6() => Verdict::Ignore,
            (None, _) => Verdict::Unreachable,
        }
    }

    /// The source check: whether `packet` (already checked to be one IP packet), received from
    /// `source`, comes from the real address the table maps its inner source address to. An
    /// accepted packet from another port than configured teaches the table that port (the peer
    /// is behind a NAT). With `any_source` every packet is accepted, and still teaches ports.
    pub fn admit(&self, packet: &[u8], source: SocketAddr, any_source: bool) -> Admission {
        let endpoint = packet::source(packet).and_then(|inner| self.endpoint_for(inner));
        match endpoint {
            Some(endpoint) if endpoint.configured.ip() == source.ip() => endpoint.observe(source),
            _ if any_source => Admission::Accepted,
            _ => Admission::Rejected,
        }
    }

    /// A keepalive came from `source`: if exactly one peer has that IP, learn its port.
    pub fn keepalive_from(&self, source: SocketAddr) -> Admission {
        match self.by_ip.get(&source.ip()) {
            Some(Some(index)) => self.endpoints[*index as usize].observe(source),
            _ => Admission::Rejected,
        }
    }

    /// Every distinct peer, at the address packets go to now (for keepalives).
    pub fn peers(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.endpoints.iter().map(Endpoint::current)
    }

    /// Takes over the ports `old` learned for peers this table has too, so that a reload does
    /// not cut off peers behind NAT.
    pub fn inherit_learned(&self, old: &PeerTable) {
        for endpoint in &self.endpoints {
            if let Some(previous) = old.endpoints.iter().find(|e| e.configured == endpoint.configured) {
                endpoint.learned_port.store(previous.learned_port.load(Relaxed), Relaxed);
            }
        }
    }

    /// The number of route entries (1 for one-to-one).
    pub fn entry_count(&self) -> usize {
        self.routes.as_ref().map_or(1, PrefixMap::entry_count)
    }

    /// The number of distinct peers.
    pub fn peer_count(&self) -> usize {
        self.endpoints.len()
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

    #[test]
    fn single_peer_takes_everything() {
        let table = PeerTable::single(peer("192.0.2.1:7777"));
        let v6 = udp_v6("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), b"x");
        assert_eq!(table.route(&v6), Verdict::Send(peer("192.0.2.1:7777")));
        assert_eq!(
            table.route(&echo_request_v4([1, 1, 1, 1], [2, 2, 2, 2])),
            Verdict::Send(peer("192.0.2.1:7777"))
        );
    }

    #[test]
    fn map_routes_by_destination_and_answers_unmapped() {
        let table = PeerTable::from_entries([(prefix("192.168.100.2"), peer("192.0.2.2:7777"))]);
        let to_2 = echo_request_v4([192, 168, 100, 1], [192, 168, 100, 2]);
        let to_3 = echo_request_v4([192, 168, 100, 1], [192, 168, 100, 3]);
        assert_eq!(table.route(&to_2), Verdict::Send(peer("192.0.2.2:7777")));
        assert_eq!(table.route(&to_3), Verdict::Unreachable);
        assert_eq!(table.route(&[]), Verdict::Ignore);
    }

    #[test]
    fn ipv6_is_ignored_quietly_unless_the_map_has_ipv6() {
        let v6 = udp_v6("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), b"x");
        let v4_only = PeerTable::from_entries([(prefix("192.168.100.2"), peer("192.0.2.2:7777"))]);
        assert_eq!(v4_only.route(&v6), Verdict::Ignore);
        let with_v6 = PeerTable::from_entries([(prefix("fd00::9"), peer("192.0.2.9:7777"))]);
        assert_eq!(with_v6.route(&v6), Verdict::Unreachable);
    }

    fn overlay() -> PeerTable {
        PeerTable::from_entries([
            (prefix("192.168.100.1"), peer("192.0.2.1:7777")),
            (prefix("192.168.100.2"), peer("192.0.2.2:7777")),
            (prefix("10.77.0.0/24"), peer("192.0.2.2:7777")),
        ])
    }

    #[test]
    fn source_check_accepts_only_the_mapped_real_address() {
        let table = overlay();
        let from_2 = echo_request_v4([192, 168, 100, 2], [192, 168, 100, 1]);
        let from_lan = echo_request_v4([10, 77, 0, 9], [192, 168, 100, 1]);
        let from_unknown = echo_request_v4([192, 168, 100, 9], [192, 168, 100, 1]);
        use Admission::{Accepted, Rejected};
        assert_eq!(table.admit(&from_2, peer("192.0.2.2:7777"), false), Accepted);
        assert_eq!(
            table.admit(&from_lan, peer("192.0.2.2:7777"), false),
            Accepted,
            "prefix behind a gateway"
        );
        assert_eq!(
            table.admit(&from_2, peer("192.0.2.1:7777"), false),
            Rejected,
            "spoofed: .2 from .1's host"
        );
        assert_eq!(table.admit(&from_2, peer("198.51.100.1:7777"), false), Rejected, "spoofed from outside");
        assert_eq!(
            table.admit(&from_unknown, peer("192.0.2.2:7777"), false),
            Rejected,
            "inner source unmapped"
        );
        assert_eq!(
            table.admit(&from_unknown, peer("198.51.100.1:7777"), true),
            Accepted,
            "--accept-any-source"
        );
        let single = PeerTable::single(peer("192.0.2.1:7777"));
        assert_eq!(single.admit(&from_unknown, peer("192.0.2.1:7777"), false), Accepted);
        assert_eq!(single.admit(&from_unknown, peer("192.0.2.7:7777"), false), Rejected);
    }

    #[test]
    fn a_rewritten_source_port_is_learned_and_replies_follow_it() {
        let table = overlay();
        let from_2 = echo_request_v4([192, 168, 100, 2], [192, 168, 100, 1]);
        let to_2 = echo_request_v4([192, 168, 100, 1], [192, 168, 100, 2]);
        assert_eq!(
            table.admit(&from_2, peer("192.0.2.2:40000"), false),
            Admission::AcceptedFromNewPort {
                configured: peer("192.0.2.2:7777"),
                now: peer("192.0.2.2:40000")
            }
        );
        assert_eq!(table.admit(&from_2, peer("192.0.2.2:40000"), false), Admission::Accepted);
        assert_eq!(table.route(&to_2), Verdict::Send(peer("192.0.2.2:40000")));
        // The gateway's subnet shares the endpoint, so it follows too.
        assert_eq!(
            table.route(&echo_request_v4([1, 1, 1, 1], [10, 77, 0, 5])),
            Verdict::Send(peer("192.0.2.2:40000"))
        );
        // Back to the configured port.
        assert_ne!(table.admit(&from_2, peer("192.0.2.2:7777"), false), Admission::Rejected);
        assert_eq!(table.route(&to_2), Verdict::Send(peer("192.0.2.2:7777")));
    }

    #[test]
    fn keepalives_teach_ports_only_when_the_ip_is_unambiguous() {
        let table = PeerTable::from_entries([
            (prefix("192.168.100.1"), peer("192.0.2.1:7777")),
            (prefix("192.168.100.2"), peer("192.0.2.2:7777")),
            (prefix("192.168.100.3"), peer("192.0.2.2:7778")),
        ]);
        assert_ne!(table.keepalive_from(peer("192.0.2.1:50000")), Admission::Rejected);
        assert_eq!(
            table.keepalive_from(peer("192.0.2.2:50001")),
            Admission::Rejected,
            "two peers at that IP"
        );
        assert_eq!(table.keepalive_from(peer("198.51.100.1:1")), Admission::Rejected);
        let ports: Vec<u16> = table.peers().map(|p| p.port()).collect();
        assert_eq!(ports, vec![50000, 7777, 7778]);
        assert_eq!(table.peer_count(), 3);
    }

    #[test]
    fn entries_count_prefixes_of_both_families_and_one_to_one_is_one() {
        let table = PeerTable::from_entries([
            (prefix("192.168.100.1"), peer("192.0.2.1:7777")),
            (prefix("10.20.0.0/16"), peer("192.0.2.1:7777")),
            (prefix("fd00::/64"), peer("192.0.2.2:7777")),
        ]);
        assert_eq!((table.entry_count(), table.peer_count()), (3, 2));
        assert_eq!(PeerTable::single(peer("192.0.2.1:7777")).entry_count(), 1);
        assert_eq!(PeerTable::from_entries([]).entry_count(), 0);
    }

    #[test]
    fn a_new_table_inherits_learned_ports_of_unchanged_peers() {
        let old = overlay();
        old.keepalive_from(peer("192.0.2.1:50000"));
        let new = PeerTable::from_entries([
            (prefix("192.168.100.1"), peer("192.0.2.1:7777")),
            (prefix("192.168.100.3"), peer("192.0.2.3:7777")),
        ]);
        new.inherit_learned(&old);
        let to_1 = echo_request_v4([192, 168, 100, 3], [192, 168, 100, 1]);
        assert_eq!(new.route(&to_1), Verdict::Send(peer("192.0.2.1:50000")));
    }
}
