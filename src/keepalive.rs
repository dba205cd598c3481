//! Authenticated keepalives: with a shared key (`--key`), a keepalive proves which peer sent it,
//! so that only the peer itself can move where its traffic goes.
//!
//! The datagram, 44 bytes:
//!
//! ```text
//!  0       1       4                        20             28                 44
//!  | 0x01  | 0 0 0 | sender (16 bytes)      | counter (8)  | MAC (16 bytes)   |
//! ```
//!
//! - byte 0 is 0x01: an IP packet starts with 0x4_ or 0x6_, so the two cannot be confused (and
//!   kernel FOU drops it as a bad IP header);
//! - *sender* is the sending node's tunnel address (IPv4 as `::ffff:a.b.c.d`), looked up in the
//!   receiver's table like a packet's inner source, so peers behind one IP are told apart;
//! - *counter* (big-endian) increases strictly per sender; it starts from the sender's clock in
//!   microseconds, so it keeps increasing across restarts. The receiver refuses any counter not
//!   above the last one it accepted from that peer (a replay);
//! - *MAC* is BLAKE2s-256 keyed with the shared key over bytes 0..28, truncated to 16 bytes.
//!
//! Pure: no clock, no randomness; the caller brings both.

use std::net::{IpAddr, Ipv6Addr};

use blake2::Blake2sMac256;
use blake2::digest::{KeyInit, Mac};

/// The first byte of an authenticated keepalive.
pub const KIND: u8 = 0x01;
/// The length of an authenticated keepalive.
pub const LEN: usize = 44;
/// The length of the shared key.
pub const KEY_LEN: usize = 32;
const SIGNED_LEN: usize = 28;
const MAC_LEN: usize = 16;

/// The shared key, 32 bytes, written as 64 hex digits in the key file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key of these bytes (from a random source, for `udptun genkey`).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Reads a key file's text: 64 hex digits, surrounding white space allowed.
    pub fn parse(text: &str) -> Result<Self, String> {
        let hex = text.trim();
        if hex.len() != 2 * KEY_LEN || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "expected {} hex digits (make one with `udptun genkey`), found {} characters",
                2 * KEY_LEN,
                hex.len()
            ));
        }
        let mut bytes = [0u8; KEY_LEN];
        for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let text = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            *byte = u8::from_str_radix(text, 16).map_err(|e| e.to_string())?;
        }
        if bytes == [0; KEY_LEN] {
            return Err("the key is all zeros".into());
        }
        Ok(Self(bytes))
    }

    /// The key as the key file holds it.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn mac(&self, signed: &[u8]) -> Blake2sMac256 {
        // A 32-byte key is always a valid BLAKE2s key.
        let mut mac = <Blake2sMac256 as KeyInit>::new(&self.0.into());
        mac.update(signed);
        mac
    }
}

/// What a keepalive that passed its MAC says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// The sending node's tunnel address.
    pub sender: IpAddr,
    /// Its counter: strictly above any the receiver accepted before from that peer.
    pub counter: u64,
}

/// Why a datagram that starts like a keepalive is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not [`LEN`] bytes, or reserved bytes set.
    Malformed,
    /// The MAC does not match: another key, or forged.
    Forged,
}

/// Builds the keepalive `sender` sends with `counter`.
pub fn seal(key: &Key, sender: IpAddr, counter: u64) -> [u8; LEN] {
    let mut datagram = [0u8; LEN];
    datagram[0] = KIND;
    let sender = match sender {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    datagram[4..20].copy_from_slice(&sender.octets());
    datagram[20..28].copy_from_slice(&counter.to_be_bytes());
    let tag = key.mac(&datagram[..SIGNED_LEN]).finalize().into_bytes();
    datagram[SIGNED_LEN..].copy_from_slice(&tag[..MAC_LEN]);
    datagram
}

/// Checks a datagram whose first byte is [`KIND`] and reads it.
pub fn open(key: &Key, datagram: &[u8]) -> Result<Keepalive, Refused> {
    let Ok(datagram) = <&[u8; LEN]>::try_from(datagram) else { return Err(Refused::Malformed) };
    if datagram[0] != KIND || datagram[1..4] != [0, 0, 0] {
        return Err(Refused::Malformed);
    }
    let (signed, tag) = datagram.split_at(SIGNED_LEN);
    key.mac(signed).verify_truncated_left(tag).map_err(|_| Refused::Forged)?;
    let mut sender = [0u8; 16];
    sender.copy_from_slice(&signed[4..20]);
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&signed[20..28]);
    Ok(Keepalive { sender: Ipv6Addr::from(sender).to_canonical(), counter: u64::from_be_bytes(counter) })
}

/// The next counter to send after `last`, given the sender's clock: at least one more than
/// `last`, and at least the clock, so that a restarted sender does not start below what its
/// peers have seen.
pub fn next_counter(last: u64, clock_micros: u64) -> u64 {
    last.saturating_add(1).max(clock_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Key {
        Key::from_bytes([byte; KEY_LEN])
    }

    #[test]
    fn a_sealed_keepalive_opens_with_the_same_key_only() {
        let sender: IpAddr = "192.168.100.1".parse().unwrap();
        let datagram = seal(&key(7), sender, 42);
        assert_eq!(datagram[0], KIND);
        assert_eq!(open(&key(7), &datagram), Ok(Keepalive { sender, counter: 42 }));
        assert_eq!(open(&key(8), &datagram), Err(Refused::Forged));
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(open(&key(7), &seal(&key(7), v6, 1)).map(|k| k.sender), Ok(v6));
    }

    #[test]
    fn any_changed_bit_is_refused() {
        let datagram = seal(&key(7), "10.0.0.1".parse().unwrap(), 1 << 40);
        for byte in 0..LEN {
            for bit in 0..8 {
                let mut changed = datagram;
                changed[byte] ^= 1 << bit;
                assert!(open(&key(7), &changed).is_err(), "byte {byte} bit {bit}");
            }
        }
        // The kind and the reserved bytes are checked before the MAC is computed.
        for byte in 0..4 {
            let mut changed = datagram;
            changed[byte] ^= 0x80;
            assert_eq!(open(&key(7), &changed), Err(Refused::Malformed), "byte {byte}");
        }
        assert_eq!(open(&key(7), &datagram[..LEN - 1]), Err(Refused::Malformed));
        assert_eq!(open(&key(7), &[datagram.as_slice(), &[0]].concat()), Err(Refused::Malformed));
        assert_eq!(open(&key(7), &[]), Err(Refused::Malformed));
    }

    #[test]
    fn counters_increase_across_restarts() {
        assert_eq!(next_counter(0, 1_000), 1_000);
        assert_eq!(next_counter(1_000, 1_000), 1_001, "the clock did not move");
        assert_eq!(next_counter(5_000, 1_000), 5_001, "the clock went back");
        assert_eq!(next_counter(u64::MAX, 0), u64::MAX);
    }

    #[test]
    fn key_files_are_64_hex_digits() {
        let k = key(0xab);
        assert_eq!(Key::parse(&format!("  {}\n", k.to_hex())), Ok(k));
        assert_eq!(Key::parse(&k.to_hex().to_uppercase()), Ok(k));
        for bad in ["", "abc", &"g".repeat(64), &"0".repeat(64), &"ab".repeat(33), "é".repeat(32).as_str()] {
            assert!(Key::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format!("{k:?}"), "Key(..)", "a key is never logged");
    }
}
