//! The virtual-IP to peer table and the per-packet decision where a packet goes.
//!
//! Pure and immutable: the control plane builds a new [`PeerTable`] and publishes it whole; the
//! data plane only reads it, so lookups take no locks.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::Relaxed};

use crate::keepalive::{self, Key};
use crate::packet::{self, Malformed};
use crate::prefix::{Prefix, PrefixMap};
use crate::stats::{KeepaliveRefusal, Traffic};

/// A peer's real address, the source port it was last seen sending from when a NAT between
/// it and us rewrote its configured port, and when it was last heard there.
#[derive(Debug)]
pub struct Endpoint {
    configured: SocketAddr,
    /// The port replies go to instead of the configured one; 0 while none was learned.
    learned_port: AtomicU16,
    /// When a datagram was last accepted from the current address (milliseconds on the data
    /// plane's clock, at [`HEARD_GRANULARITY_MS`]); 0 while never.
    last_heard: AtomicU64,
    /// The highest authenticated keepalive counter accepted from this peer.
    last_counter: AtomicU64,
    /// What was sent to and received from the peer; the next table's endpoint for the same
    /// address takes over the same counters.
    traffic: Arc<Traffic>,
}

/// `last_heard` is written at most this often per peer, so that the data plane's threads do
/// not fight over its cache line on every packet.
const HEARD_GRANULARITY_MS: u64 = 100;

/// How the source check treats a datagram from another port of a peer's IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roaming {
    /// The current address stays in force while it was heard within this time (`--roam-hold`).
    pub hold_ms: u64,
    /// A shared key is set: only an authenticated keepalive moves a peer.
    pub keyed: bool,
}

impl Endpoint {
    fn new(configured: SocketAddr) -> Self {
        Self {
            configured,
            learned_port: AtomicU16::new(0),
            last_heard: AtomicU64::new(0),
            last_counter: AtomicU64::new(0),
            traffic: Arc::default(),
        }
    }

    /// The address the operator configured for the peer.
    pub fn configured(&self) -> SocketAddr {
        self.configured
    }

    /// The peer's traffic counters.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// An accepted datagram (or plain keepalive) from `source`, an address of this peer's IP, at
    /// `now` (milliseconds, never 0). From the current address it is heard. With a key nothing
    /// else moves the peer: only an authenticated keepalive does. Without one, the configured
    /// address takes the peer back at once (the operator named it), and another port takes it
    /// only once the current address has been silent for the hold time (which starts when the
    /// table is published), so that whoever else shares the peer's IP cannot take an active
    /// peer's traffic.
    fn observe(&self, source: SocketAddr, now: u64, roaming: Roaming) -> Admission {
        let current = self.current();
        if source == current {
            self.heard(now);
            return Admission::Accepted;
        }
        let silent_for = now.saturating_sub(self.last_heard.load(Relaxed));
        if roaming.keyed || (source != self.configured && silent_for < roaming.hold_ms) {
            return Admission::AcceptedMoveRefused { current, from: source };
        }
        self.move_to(source.port(), now);
        Admission::AcceptedFromNewPort { configured: self.configured, now: source }
    }

    fn heard(&self, now: u64) {
        let last = self.last_heard.load(Relaxed);
        if last == 0 || now.saturating_sub(last) >= HEARD_GRANULARITY_MS {
            self.last_heard.store(now, Relaxed);
        }
    }

    /// Where to send to now: the configured address, with the learned port if there is one.
    pub fn current(&self) -> SocketAddr {
        match self.learned_port.load(Relaxed) {
            0 => self.configured,
            port => SocketAddr::new(self.configured.ip(), port),
        }
    }

    /// Sends to `port` from now on, heard at `now`.
    fn move_to(&self, port: u16, now: u64) {
        let value = if port == self.configured.port() { 0 } else { port };
        self.learned_port.store(value, Relaxed);
        self.last_heard.store(now, Relaxed);
    }

    /// Takes over what `old` (the same peer in the previous table) learned, where it is newer
    /// than what this one knows: merging twice, or after the data plane wrote to either, loses
    /// nothing.
    fn merge_from(&self, old: &Endpoint) {
        self.last_counter.fetch_max(old.last_counter.load(Relaxed), Relaxed);
        let heard = old.last_heard.load(Relaxed);
        if heard > self.last_heard.load(Relaxed) {
            self.learned_port.store(old.learned_port.load(Relaxed), Relaxed);
            self.last_heard.store(heard, Relaxed);
        }
    }
}

/// Where packets go, and from where they may come: the one remote of a one-to-one tunnel, or a
/// map from inner prefixes to real peers for one-to-many. Immutable but for what peers teach it
/// (their ports behind NAT, when they were last heard, their keepalive counters).
#[derive(Debug)]
pub struct PeerTable {
    /// Distinct peer addresses; the routes refer to them by index.
    endpoints: Vec<Endpoint>,
    /// `None` for one-to-one (everything goes to endpoint 0).
    routes: Option<PrefixMap<u32>>,
    /// For each peer IP, its endpoint if that is the only one with this IP (plain keepalives
    /// carry no inner address, so only then can they move a peer).
    by_ip: HashMap<IpAddr, Option<u32>>,
    /// The endpoint of each configured address whose IP several peers share: a plain keepalive
    /// from there is that peer's (one hash probe, however many peers share the IP).
    shared_ip_peers: HashMap<SocketAddr, u32>,
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
    /// From another port of that peer's IP, while the peer's current address is active (or a
    /// key is set): delivered, but replies still go to `current`.
    AcceptedMoveRefused {
        /// Where replies still go.
        current: SocketAddr,
        /// Where this one came from.
        from: SocketAddr,
    },
    /// Not from the peer its inner source maps to (or its inner source maps to none).
    Rejected,
}

/// What an authenticated keepalive did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepaliveOutcome {
    /// From the peer's current address: it was heard.
    Heard,
    /// The peer moved: replies go to `now` from here on.
    Moved {
        /// The peer's configured address.
        configured: SocketAddr,
        /// Where replies go now.
        now: SocketAddr,
    },
    /// Refused (forged, replayed, from an unknown sender, or no key to check it with).
    Refused(KeepaliveRefusal),
}

/// What one datagram received from the UDP socket is, as [`PeerTable::receive`] judges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A plain keepalive (an empty datagram): what it did to the peer at its source.
    Keepalive(Admission),
    /// An authenticated keepalive, or a datagram that claims to be one (it starts with
    /// [`keepalive::KIND`], which no IP packet does).
    AuthenticatedKeepalive(KeepaliveOutcome),
    /// Not one whole IP packet: dropped.
    Malformed(Malformed),
    /// Not from the peer its inner source address maps to: dropped.
    Rejected,
    /// An IP packet to write into the TUN, from that peer (`None` only with `any_source`, from
    /// no peer), and what it did to the peer's address.
    Deliver(Admission, Option<PeerId>),
}

/// The rules [`PeerTable::receive`] applies, from the command line.
#[derive(Clone, Copy, Debug)]
pub struct Reception<'a> {
    /// The shared key authenticated keepalives are checked with (`--key`).
    pub key: Option<&'a Key>,
    /// Accept packets whatever their outer source (`--accept-any-source`).
    pub any_source: bool,
    /// When a datagram from another port of a peer's IP moves the peer.
    pub roaming: Roaming,
}

/// Which peer of a table a packet is for or from (valid for that table only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerId(u32);

#[cfg(test)]
impl PeerId {
    /// Any id, for tests of code that only carries it.
    pub(crate) fn for_tests(id: u32) -> Self {
        Self(id)
    }
}

/// What to do with one packet read from the TUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it, unchanged, as one UDP datagram to this address, the current one of this peer.
    Send(SocketAddr, PeerId),
    /// No peer has its destination: answer with an ICMP unreachable into the TUN.
    Unreachable,
    /// Drop it without a word: IPv6 with no IPv6 entry (router solicitations and the like),
    /// or bytes that are not an IP packet.
    Ignore,
}

impl Verdict {
    /// Where the packet goes, if it is sent.
    #[cfg(test)]
    pub(crate) fn destination(self) -> Option<SocketAddr> {
        match self {
            Verdict::Send(to, _) => Some(to),
            _ => None,
        }
    }
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
        let mut shared_ip_peers: HashMap<SocketAddr, u32> = HashMap::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            let index = index as u32;
            match by_ip.get_mut(&endpoint.configured.ip()) {
                None => drop(by_ip.insert(endpoint.configured.ip(), Some(index))),
                Some(unique) => {
                    if let Some(first) = unique.take() {
                        shared_ip_peers.insert(endpoints[first as usize].configured, first);
                    }
                    shared_ip_peers.insert(endpoint.configured, index);
                }
            }
        }
        Self { endpoints, routes, by_ip, shared_ip_peers }
    }

    /// The endpoint serving inner address `addr`.
    fn endpoint_for(&self, addr: IpAddr) -> Option<(PeerId, &Endpoint)> {
        let index = match &self.routes {
            None => 0,
            Some(routes) => *routes.lookup(addr)?,
        };
        Some((PeerId(index), self.endpoints.get(index as usize)?))
    }

    /// The peer `id` names, if it is of this table.
    pub fn peer(&self, id: PeerId) -> Option<&Endpoint> {
        self.endpoints.get(id.0 as usize)
    }

    /// The inbound decision for one datagram received from `source` at `now`, as
    /// [`Self::route`] is the outbound one: a keepalive is applied to the table; anything else
    /// must be one whole IP packet ([`packet::check`]) from the peer its inner source maps to
    /// ([`Self::admit`]).
    pub fn receive(&self, datagram: &[u8], source: SocketAddr, now: u64, rules: Reception) -> Inbound {
        match datagram.first() {
            None => Inbound::Keepalive(self.keepalive_from(source, now, rules.roaming)),
            Some(&keepalive::KIND) => Inbound::AuthenticatedKeepalive(match rules.key {
                None => KeepaliveOutcome::Refused(KeepaliveRefusal::NoKey),
                Some(key) => match keepalive::open(key, datagram) {
                    Ok(k) => self.authenticated_keepalive(k.sender, k.counter, source, now),
                    Err(_) => KeepaliveOutcome::Refused(KeepaliveRefusal::Forged),
                },
            }),
            Some(_) => match packet::check(datagram) {
                Err(reason) => Inbound::Malformed(reason),
                Ok(_) => match self.admit(datagram, source, rules.any_source, now, rules.roaming) {
                    (Admission::Rejected, _) => Inbound::Rejected,
                    (admission, peer) => Inbound::Deliver(admission, peer),
                },
            },
        }
    }

    /// Decides where `packet` (one IP packet from the TUN) goes.
    pub fn route(&self, packet: &[u8]) -> Verdict {
        let Some(dst) = packet::destination(packet) else { return Verdict::Ignore };
        match (self.endpoint_for(dst), &self.routes) {
            (Some((id, endpoint)), _) => Verdict::Send(endpoint.current(), id),
            (None, Some(routes)) if dst.is_ipv6() && !routes.has_v6() => Verdict::Ignore,
            (None, _) => Verdict::Unreachable,
        }
    }

    /// The source check: whether `packet` (already checked to be one IP packet), received from
    /// `source` at `now`, comes from the real address the table maps its inner source address
    /// to (see [`Endpoint::observe`] for a port other than the current one), and which peer it
    /// is from. With `any_source` every packet is accepted (from a peer only if it passes).
    pub fn admit(
        &self,
        packet: &[u8],
        source: SocketAddr,
        any_source: bool,
        now: u64,
        roaming: Roaming,
    ) -> (Admission, Option<PeerId>) {
        let endpoint = packet::source(packet).and_then(|inner| self.endpoint_for(inner));
        match endpoint {
            Some((id, endpoint)) if endpoint.configured.ip() == source.ip() => {
                (endpoint.observe(source, now, roaming), Some(id))
            }
            _ if any_source => (Admission::Accepted, None),
            _ => (Admission::Rejected, None),
        }
    }

    /// A plain (empty) keepalive came from `source`: it is the keepalive of the one peer with
    /// that IP, or, when several share it, of the peer configured at exactly that address (a
    /// peer behind a shared IP whose port a NAT rewrote is heard by its data, or by
    /// authenticated keepalives). That peer was heard, or moves, as [`Self::admit`] says.
    pub fn keepalive_from(&self, source: SocketAddr, now: u64, roaming: Roaming) -> Admission {
        let index = match self.by_ip.get(&source.ip()) {
            Some(Some(index)) => Some(index),
            Some(None) => self.shared_ip_peers.get(&source),
            None => None,
        };
        match index.and_then(|&index| self.endpoints.get(index as usize)) {
            Some(endpoint) => {
                let admission = endpoint.observe(source, now, roaming);
                if matches!(admission, Admission::Accepted | Admission::AcceptedFromNewPort { .. }) {
                    endpoint.traffic.heard(now);
                }
                admission
            }
            None => Admission::Rejected,
        }
    }

    /// An authenticated keepalive (its MAC already checked) from `sender` (a tunnel address)
    /// with `counter`, received from `source` at `now`: if the table maps `sender` to a peer
    /// at `source`'s IP and the counter is new, that peer moves to `source` at once.
    pub fn authenticated_keepalive(
        &self,
        sender: IpAddr,
        counter: u64,
        source: SocketAddr,
        now: u64,
    ) -> KeepaliveOutcome {
        let unknown = KeepaliveOutcome::Refused(KeepaliveRefusal::UnknownSender);
        let Some((_, endpoint)) = self.endpoint_for(sender) else { return unknown };
        if endpoint.configured.ip() != source.ip() {
            return unknown;
        }
        if endpoint.last_counter.fetch_max(counter, Relaxed) >= counter {
            return KeepaliveOutcome::Refused(KeepaliveRefusal::Replayed);
        }
        endpoint.traffic.heard(now);
        if endpoint.current() == source {
            endpoint.heard(now);
            return KeepaliveOutcome::Heard;
        }
        endpoint.move_to(source.port(), now);
        KeepaliveOutcome::Moved { configured: endpoint.configured, now: source }
    }

    /// Every distinct peer, at the address packets go to now (for keepalives).
    pub fn peers(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.endpoints().map(Endpoint::current)
    }

    /// Every distinct peer, in the order they were configured.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter()
    }

    /// Takes over what `old` learned about peers this table has too (ports, when they were last
    /// heard, keepalive counters), so that a reload cuts off no peer behind NAT and reopens no
    /// replay window. Newer knowledge wins: call it again once this table is in force, to take
    /// over what the data plane taught the old one meanwhile.
    pub fn inherit_learned(&self, old: &PeerTable) {
        let by_address = old.by_configured_address();
        for endpoint in &self.endpoints {
            if let Some(previous) = by_address.get(&endpoint.configured) {
                endpoint.merge_from(previous);
            }
        }
    }

    /// Counts the traffic of peers `old` has too in the same counters as `old` does, so that
    /// what the data plane counts in either table, before or after the swap, is kept once.
    /// Call it before the table is published.
    pub fn share_traffic(&mut self, old: &PeerTable) {
        let by_address = old.by_configured_address();
        for endpoint in &mut self.endpoints {
            if let Some(previous) = by_address.get(&endpoint.configured) {
                endpoint.traffic = previous.traffic.clone();
            }
        }
    }

    fn by_configured_address(&self) -> HashMap<SocketAddr, &Endpoint> {
        self.endpoints.iter().map(|e| (e.configured, e)).collect()
    }

    /// Every peer with the inner prefixes that route to it (none for the one peer of a
    /// one-to-one table, which takes everything), in the order peers were configured: what
    /// `udptun show` and the per-peer metrics list.
    pub fn peers_with_prefixes(&self) -> Vec<(&Endpoint, Vec<Prefix>)> {
        let mut prefixes = vec![Vec::new(); self.endpoints.len()];
        if let Some(routes) = &self.routes {
            for (prefix, &index) in routes.iter() {
                if let Some(list) = prefixes.get_mut(index as usize) {
                    list.push(prefix);
                }
            }
        }
        self.endpoints
            .iter()
            .zip(prefixes)
            .map(|(endpoint, mut list)| {
                list.sort_unstable_by_key(|p| (p.addr(), p.prefix_len()));
                (endpoint, list)
            })
            .collect()
    }

    /// Starts the roaming hold at `now` for every peer never heard: until it has been silent
    /// that long since the table was published, no datagram from another port moves it (so a
    /// neighbour on its IP cannot take it in the first moments after a restart).
    pub fn start_holds(&self, now: u64) {
        for endpoint in &self.endpoints {
            let _ = endpoint.last_heard.compare_exchange(0, now, Relaxed, Relaxed);
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

    /// A moment on the data plane's clock, and roaming with no hold (ports move at once).
    const T0: u64 = 1_000;
    const FREE: Roaming = Roaming { hold_ms: 0, keyed: false };
    const HOLD: Roaming = Roaming { hold_ms: 15_000, keyed: false };
    const KEYED: Roaming = Roaming { hold_ms: 15_000, keyed: true };

    #[test]
    fn receive_sorts_datagrams_into_keepalives_malformed_rejected_and_delivered() {
        let at = peer("192.0.2.2:7777");
        let table = PeerTable::from_entries([(prefix("192.168.100.2"), at)]);
        let key = Key::from_bytes([7; keepalive::KEY_LEN]);
        let rules = Reception { key: None, any_source: false, roaming: FREE };
        let keyed = Reception { key: Some(&key), ..rules };
        let from_peer = echo_request_v4([192, 168, 100, 2], [192, 168, 100, 1]);
        let from_other = echo_request_v4([192, 168, 100, 3], [192, 168, 100, 1]);

        assert_eq!(table.receive(&[], at, T0, rules), Inbound::Keepalive(Admission::Accepted));
        let stranger = peer("198.51.100.9:7777");
        assert_eq!(table.receive(&[], stranger, T0, rules), Inbound::Keepalive(Admission::Rejected));

        let sealed = keepalive::seal(&key, "192.168.100.2".parse().unwrap(), 5);
        let refused = |reason| Inbound::AuthenticatedKeepalive(KeepaliveOutcome::Refused(reason));
        assert_eq!(table.receive(&sealed, at, T0, rules), refused(KeepaliveRefusal::NoKey));
        assert_eq!(
            table.receive(&sealed, at, T0, keyed),
            Inbound::AuthenticatedKeepalive(KeepaliveOutcome::Heard)
        );
        assert_eq!(table.receive(&sealed, at, T0, keyed), refused(KeepaliveRefusal::Replayed));
        let mut forged = sealed;
        forged[sealed.len() - 1] ^= 1;
        assert_eq!(table.receive(&forged, at, T0, keyed), refused(KeepaliveRefusal::Forged));

        assert_eq!(
            table.receive(&from_peer[..10], at, T0, rules),
            Inbound::Malformed(Malformed::BadHeaderLength)
        );
        assert_eq!(table.receive(&from_other, at, T0, rules), Inbound::Rejected);
        assert_eq!(table.receive(&from_peer, stranger, T0, rules), Inbound::Rejected);
        assert!(matches!(
            table.receive(&from_peer, at, T0, rules),
            Inbound::Deliver(Admission::Accepted, Some(_))
        ));
        let anyone = Reception { any_source: true, ..rules };
        assert_eq!(
            table.receive(&from_other, stranger, T0, anyone),
            Inbound::Deliver(Admission::Accepted, None)
        );
    }

    #[test]
    fn single_peer_takes_everything() {
        let table = PeerTable::single(peer("192.0.2.1:7777"));
        let v6 = udp_v6("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), b"x");
        assert_eq!(table.route(&v6).destination(), Some(peer("192.0.2.1:7777")));
        assert_eq!(
            table.route(&echo_request_v4([1, 1, 1, 1], [2, 2, 2, 2])).destination(),
            Some(peer("192.0.2.1:7777"))
        );
    }

    #[test]
    fn map_routes_by_destination_and_answers_unmapped() {
        let table = PeerTable::from_entries([(prefix("192.168.100.2"), peer("192.0.2.2:7777"))]);
        let to_2 = echo_request_v4([192, 168, 100, 1], [192, 168, 100, 2]);
        let to_3 = echo_request_v4([192, 168, 100, 1], [192, 168, 100, 3]);
        assert_eq!(table.route(&to_2).destination(), Some(peer("192.0.2.2:7777")));
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

    #[test]
    fn a_new_table_counts_traffic_in_the_old_tables_counters() {
        let old = overlay();
        let to_2 = echo_request_v4([192, 168, 100, 1], [192, 168, 100, 2]);
        let Verdict::Send(_, id) = old.route(&to_2) else { panic!("not sent") };
        old.peer(id).unwrap().traffic().add_sent(2, 168);
        let mut new = PeerTable::from_entries([
            (prefix("192.168.100.2"), peer("192.0.2.2:7777")),
            (prefix("192.168.100.3"), peer("192.0.2.3:7777")),
        ]);
        new.share_traffic(&old);
        let Verdict::Send(_, new_id) = new.route(&to_2) else { panic!("not sent") };
        let traffic = new.peer(new_id).unwrap().traffic();
        assert_eq!(traffic.sent_packets.load(Relaxed), 2);
        // What the data plane adds to the old table after the swap lands in the same counters.
        old.peer(id).unwrap().traffic().add_sent(1, 84);
        assert_eq!((traffic.sent_packets.load(Relaxed), traffic.sent_bytes.load(Relaxed)), (3, 252));
        let to_3 = echo_request_v4([192, 168, 100, 1], [192, 168, 100, 3]);
        let Verdict::Send(_, id_3) = new.route(&to_3) else { panic!("not sent") };
        assert_eq!(new.peer(id_3).unwrap().traffic().sent_packets.load(Relaxed), 0);
    }

    #[test]
    fn keepalives_and_admitted_packets_name_their_peer() {
        let table = overlay();
        let from_2 = echo_request_v4([192, 168, 100, 2], [192, 168, 100, 1]);
        let (admission, id) = table.admit(&from_2, peer("192.0.2.2:7777"), false, T0, FREE);
        assert_eq!(admission, Admission::Accepted);
        assert_eq!(table.peer(id.unwrap()).unwrap().configured(), peer("192.0.2.2:7777"));
        assert_eq!(table.admit(&from_2, peer("192.0.2.9:7777"), true, T0, FREE), (Admission::Accepted, None));
        table.keepalive_from(peer("192.0.2.1:7777"), T0 + 5, FREE);
        let heard: Vec<u64> = table.endpoints().map(|e| e.traffic().last_received_ms.load(Relaxed)).collect();
        assert_eq!(heard, [T0 + 5, 0]);
    }

    #[test]
    fn peers_are_listed_with_their_prefixes() {
        let table = overlay();
        let listed: Vec<(SocketAddr, Vec<String>)> = table
            .peers_with_prefixes()
            .into_iter()
            .map(|(e, p)| (e.configured(), p.iter().map(Prefix::to_string).collect()))
            .collect();
        assert_eq!(
            listed,
            [
                (peer("192.0.2.1:7777"), vec!["192.168.100.1".to_string()]),
                (peer("192.0.2.2:7777"), vec!["10.77.0.0/24".to_string(), "192.168.100.2".to_string()]),
            ]
        );
        let single = PeerTable::single(peer("192.0.2.1:7777"));
        assert_eq!(single.peers_with_prefixes()[0].1, Vec::<Prefix>::new());
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
        assert_eq!(table.admit(&from_2, peer("192.0.2.2:7777"), false, T0, FREE).0, Accepted);
        assert_eq!(
            table.admit(&from_lan, peer("192.0.2.2:7777"), false, T0, FREE).0,
            Accepted,
            "prefix behind a gateway"
        );
        assert_eq!(
            table.admit(&from_2, peer("192.0.2.1:7777"), false, T0, FREE).0,
            Rejected,
            "spoofed: .2 from .1's host"
        );
        assert_eq!(
            table.admit(&from_2, peer("198.51.100.1:7777"), false, T0, FREE).0,
            Rejected,
            "spoofed from outside"
        );
        assert_eq!(
            table.admit(&from_unknown, peer("192.0.2.2:7777"), false, T0, FREE).0,
            Rejected,
            "inner source unmapped"
        );
        assert_eq!(
            table.admit(&from_unknown, peer("198.51.100.1:7777"), true, T0, FREE).0,
            Accepted,
            "--accept-any-source"
        );
        let single = PeerTable::single(peer("192.0.2.1:7777"));
        assert_eq!(single.admit(&from_unknown, peer("192.0.2.1:7777"), false, T0, FREE).0, Accepted);
        assert_eq!(single.admit(&from_unknown, peer("192.0.2.7:7777"), false, T0, FREE).0, Rejected);
    }

    #[test]
    fn a_rewritten_source_port_is_learned_and_replies_follow_it() {
        let table = overlay();
        let from_2 = echo_request_v4([192, 168, 100, 2], [192, 168, 100, 1]);
        let to_2 = echo_request_v4([192, 168, 100, 1], [192, 168, 100, 2]);
        assert_eq!(
            table.admit(&from_2, peer("192.0.2.2:40000"), false, T0, FREE).0,
            Admission::AcceptedFromNewPort {
                configured: peer("192.0.2.2:7777"),
                now: peer("192.0.2.2:40000")
            }
        );
        assert_eq!(table.admit(&from_2, peer("192.0.2.2:40000"), false, T0, FREE).0, Admission::Accepted);
        assert_eq!(table.route(&to_2).destination(), Some(peer("192.0.2.2:40000")));
        // The gateway's subnet shares the endpoint, so it follows too.
        assert_eq!(
            table.route(&echo_request_v4([1, 1, 1, 1], [10, 77, 0, 5])).destination(),
            Some(peer("192.0.2.2:40000"))
        );
        // Back to the configured port.
        assert_ne!(table.admit(&from_2, peer("192.0.2.2:7777"), false, T0, FREE).0, Admission::Rejected);
        assert_eq!(table.route(&to_2).destination(), Some(peer("192.0.2.2:7777")));
    }

    #[test]
    fn keepalives_teach_ports_only_when_the_ip_is_unambiguous() {
        let table = PeerTable::from_entries([
            (prefix("192.168.100.1"), peer("192.0.2.1:7777")),
            (prefix("192.168.100.2"), peer("192.0.2.2:7777")),
            (prefix("192.168.100.3"), peer("192.0.2.2:7778")),
        ]);
        assert_ne!(table.keepalive_from(peer("192.0.2.1:50000"), T0, FREE), Admission::Rejected);
        assert_eq!(
            table.keepalive_from(peer("192.0.2.2:50001"), T0, FREE),
            Admission::Rejected,
            "two peers at that IP"
        );
        assert_eq!(table.keepalive_from(peer("198.51.100.1:1"), T0, FREE), Admission::Rejected);
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
        old.keepalive_from(peer("192.0.2.1:50000"), T0, FREE);
        let new = PeerTable::from_entries([
            (prefix("192.168.100.1"), peer("192.0.2.1:7777")),
            (prefix("192.168.100.3"), peer("192.0.2.3:7777")),
        ]);
        new.inherit_learned(&old);
        let to_1 = echo_request_v4([192, 168, 100, 3], [192, 168, 100, 1]);
        assert_eq!(new.route(&to_1).destination(), Some(peer("192.0.2.1:50000")));
    }

    #[test]
    fn an_active_peer_is_not_moved_by_another_port_of_its_ip() {
        let table = PeerTable::single(peer("192.0.2.2:7777"));
        let from_peer = echo_request_v4([192, 168, 100, 2], [192, 168, 100, 1]);
        let to_peer = echo_request_v4([192, 168, 100, 1], [192, 168, 100, 2]);
        assert_eq!(table.admit(&from_peer, peer("192.0.2.2:7777"), false, T0, HOLD).0, Admission::Accepted);
        // A neighbour on the peer's IP, 14.9 s later: delivered, but the peer stays.
        let neighbour = peer("192.0.2.2:40000");
        let refused = Admission::AcceptedMoveRefused { current: peer("192.0.2.2:7777"), from: neighbour };
        assert_eq!(table.admit(&from_peer, neighbour, false, T0 + 14_900, HOLD).0, refused);
        assert_eq!(table.keepalive_from(neighbour, T0 + 14_900, HOLD), refused);
        assert_eq!(table.route(&to_peer).destination(), Some(peer("192.0.2.2:7777")));
        // The peer is heard again (a keepalive): the hold starts over.
        assert_eq!(table.keepalive_from(peer("192.0.2.2:7777"), T0 + 14_950, HOLD), Admission::Accepted);
        assert_eq!(table.admit(&from_peer, neighbour, false, T0 + 29_000, HOLD).0, refused);
        // Silent for the whole hold: the first datagram from a new port moves it (a NAT rebinding).
        assert_eq!(
            table.admit(&from_peer, neighbour, false, T0 + 29_950, HOLD).0,
            Admission::AcceptedFromNewPort { configured: peer("192.0.2.2:7777"), now: neighbour }
        );
        assert_eq!(table.route(&to_peer).destination(), Some(neighbour));
    }

    #[test]
    fn the_hold_starts_when_the_table_is_published_and_a_key_moves_nothing_but_keepalives() {
        let from_peer = echo_request_v4([192, 168, 100, 2], [192, 168, 100, 1]);
        let nat = peer("192.0.2.2:40000");
        let table = PeerTable::single(peer("192.0.2.2:7777"));
        table.start_holds(T0);
        assert!(matches!(
            table.admit(&from_peer, nat, false, T0 + 14_000, HOLD).0,
            Admission::AcceptedMoveRefused { .. }
        ));
        assert!(matches!(
            table.admit(&from_peer, nat, false, T0 + 15_000, HOLD).0,
            Admission::AcceptedFromNewPort { .. }
        ));
        // The configured address takes it back at once, hold or not.
        assert!(matches!(
            table.admit(&from_peer, peer("192.0.2.2:7777"), false, T0 + 15_001, HOLD).0,
            Admission::AcceptedFromNewPort { .. }
        ));
        assert_eq!(table.peers().collect::<Vec<_>>(), vec![peer("192.0.2.2:7777")]);
        let table = PeerTable::single(peer("192.0.2.2:7777"));
        assert!(matches!(
            table.admit(&from_peer, nat, false, T0, KEYED).0,
            Admission::AcceptedMoveRefused { .. }
        ));
        assert!(matches!(
            table.keepalive_from(nat, T0 + 60_000, KEYED),
            Admission::AcceptedMoveRefused { .. }
        ));
        assert_eq!(table.peers().collect::<Vec<_>>(), vec![peer("192.0.2.2:7777")]);
        // Once an authenticated keepalive moved it, not even the configured address moves it back.
        let sender = IpAddr::from([192, 168, 100, 2]);
        assert!(matches!(table.authenticated_keepalive(sender, 1, nat, T0), KeepaliveOutcome::Moved { .. }));
        assert!(matches!(
            table.admit(&from_peer, peer("192.0.2.2:7777"), false, T0 + 60_000, KEYED).0,
            Admission::AcceptedMoveRefused { .. }
        ));
        assert_eq!(table.peers().collect::<Vec<_>>(), vec![nat]);
    }

    #[test]
    fn an_authenticated_keepalive_moves_its_sender_at_once_and_never_twice() {
        let table = overlay();
        let sender: IpAddr = "192.168.100.2".parse().unwrap();
        let moved = peer("192.0.2.2:40000");
        assert_eq!(
            table.authenticated_keepalive(sender, 10, moved, T0),
            KeepaliveOutcome::Moved { configured: peer("192.0.2.2:7777"), now: moved }
        );
        let to_2 = echo_request_v4([192, 168, 100, 1], [192, 168, 100, 2]);
        assert_eq!(table.route(&to_2).destination(), Some(moved));
        // A replay, even from another port, moves nothing.
        assert_eq!(
            table.authenticated_keepalive(sender, 10, peer("192.0.2.2:50000"), T0),
            KeepaliveOutcome::Refused(KeepaliveRefusal::Replayed)
        );
        assert_eq!(
            table.authenticated_keepalive(sender, 9, moved, T0),
            KeepaliveOutcome::Refused(KeepaliveRefusal::Replayed)
        );
        assert_eq!(table.authenticated_keepalive(sender, 11, moved, T0), KeepaliveOutcome::Heard);
        // Naming a peer whose IP is not the source's, or no peer at all.
        assert_eq!(
            table.authenticated_keepalive(sender, 12, peer("192.0.2.1:7777"), T0),
            KeepaliveOutcome::Refused(KeepaliveRefusal::UnknownSender)
        );
        assert_eq!(
            table.authenticated_keepalive("10.9.9.9".parse().unwrap(), 12, moved, T0),
            KeepaliveOutcome::Refused(KeepaliveRefusal::UnknownSender)
        );
        assert_eq!(table.route(&to_2).destination(), Some(moved));
        // A reload keeps the counter: the old keepalive stays a replay.
        let reloaded = overlay();
        reloaded.inherit_learned(&table);
        assert_eq!(
            reloaded.authenticated_keepalive(sender, 11, moved, T0),
            KeepaliveOutcome::Refused(KeepaliveRefusal::Replayed)
        );
    }

    #[test]
    fn keepalives_from_peers_that_share_an_ip_are_heard_but_move_none() {
        let table = PeerTable::from_entries([
            (prefix("192.168.100.2"), peer("192.0.2.2:7777")),
            (prefix("192.168.100.3"), peer("192.0.2.2:7778")),
        ]);
        table.start_holds(T0);
        let from_2 = echo_request_v4([192, 168, 100, 2], [192, 168, 100, 1]);
        // 14 s on, .2 keeps its address alive with keepalives alone.
        assert_eq!(table.keepalive_from(peer("192.0.2.2:7777"), T0 + 14_000, HOLD), Admission::Accepted);
        assert_eq!(table.keepalive_from(peer("192.0.2.2:40000"), T0 + 14_000, HOLD), Admission::Rejected);
        // So at 20 s a neighbour's packet with .2's source does not move it.
        assert!(matches!(
            table.admit(&from_2, peer("192.0.2.2:40000"), false, T0 + 20_000, HOLD).0,
            Admission::AcceptedMoveRefused { .. }
        ));
    }

    #[test]
    fn the_first_datagram_heard_starts_the_hold_at_once() {
        let table = PeerTable::single(peer("192.0.2.2:7777"));
        let from_peer = echo_request_v4([192, 168, 100, 2], [192, 168, 100, 1]);
        // Heard 50 ms into the data plane's clock, before any hold was started.
        assert_eq!(table.keepalive_from(peer("192.0.2.2:7777"), 50, HOLD), Admission::Accepted);
        assert!(matches!(
            table.admit(&from_peer, peer("192.0.2.2:40000"), false, 50 + 14_999, HOLD).0,
            Admission::AcceptedMoveRefused { .. }
        ));
    }

    #[test]
    fn inheriting_twice_keeps_the_newest_of_both_tables() {
        let old = overlay();
        let new = overlay();
        let sender: IpAddr = "192.168.100.2".parse().unwrap();
        new.inherit_learned(&old);
        // While the new table is being published, the data plane still writes to the old one.
        old.authenticated_keepalive(sender, 50, peer("192.0.2.2:40000"), T0);
        new.authenticated_keepalive(sender, 40, peer("192.0.2.2:7777"), T0 - 500);
        new.inherit_learned(&old);
        assert_eq!(
            new.authenticated_keepalive(sender, 50, peer("192.0.2.2:40000"), T0),
            KeepaliveOutcome::Refused(KeepaliveRefusal::Replayed)
        );
        let to_2 = echo_request_v4([192, 168, 100, 1], [192, 168, 100, 2]);
        assert_eq!(new.route(&to_2).destination(), Some(peer("192.0.2.2:40000")), "the later move wins");
        // Heard at the same moment in both: the table in force keeps what it has.
        let (old, new) = (overlay(), overlay());
        old.authenticated_keepalive(sender, 60, peer("192.0.2.2:50000"), T0);
        new.authenticated_keepalive(sender, 61, peer("192.0.2.2:40000"), T0);
        new.inherit_learned(&old);
        assert_eq!(new.route(&to_2).destination(), Some(peer("192.0.2.2:40000")));
    }
}
