//! Property tests of the pure core against naive models.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use udptun::hosts;
use udptun::packet;
use udptun::peers::{Prefix, PrefixMap};

/// RFC 1071 the slow way: 64-bit sum of padded 16-bit words, folded once at the end.
fn naive_checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for (i, byte) in data.iter().enumerate() {
        sum += if i % 2 == 0 { u64::from(*byte) << 8 } else { u64::from(*byte) };
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn v4_prefix() -> impl Strategy<Value = Prefix> {
    // Few distinct networks so that prefixes nest and overlap often.
    (0u32..16, 0u8..=32).prop_map(|(net, len)| {
        let addr = Ipv4Addr::from((10 << 24) | (net << 12) | (net << 4));
        let masked = u32::from(addr) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        format!("{}/{len}", Ipv4Addr::from(masked)).parse().unwrap()
    })
}

fn contains(prefix: &Prefix, addr: Ipv4Addr) -> bool {
    let IpAddr::V4(net) = prefix.addr() else { return false };
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix.prefix_len())).unwrap_or(0);
    u32::from(addr) & mask == u32::from(net)
}

proptest! {
    #[test]
    fn checksum_matches_the_naive_sum(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
        prop_assert_eq!(packet::checksum(&data), naive_checksum(&data));
    }

    #[test]
    fn prefix_lookup_matches_a_linear_scan(
        entries in proptest::collection::vec((v4_prefix(), any::<u16>()), 0..40),
        queries in proptest::collection::vec((0u32..16, any::<u16>()), 1..40),
    ) {
        let mut map = PrefixMap::default();
        for (prefix, value) in &entries {
            map.insert(*prefix, *value);
        }
        for (net, host) in queries {
            let addr = Ipv4Addr::from((10 << 24) | (net << 12) | u32::from(host & 0xfff));
            // Longest matching prefix; for equal prefixes the last insertion wins.
            let expected = entries
                .iter()
                .enumerate()
                .filter(|(_, (p, _))| contains(p, addr))
                .max_by_key(|(i, (p, _))| (p.prefix_len(), *i))
                .map(|(_, (_, v))| *v);
            prop_assert_eq!(map.lookup(IpAddr::V4(addr)).copied(), expected, "{}", addr);
        }
    }

    #[test]
    fn hosts_documents_round_trip(
        entries in proptest::collection::hash_map(v4_prefix(), ("[a-z][a-z0-9-]{0,20}(\\.[a-z]{2,5})?", 1u16..), 0..30),
        quoted in any::<bool>(),
    ) {
        let entries: Vec<_> = entries.into_iter().collect();
        let body: Vec<String> = entries
            .iter()
            .map(|(prefix, (host, port))| {
                if quoted {
                    format!("\"{prefix}\": {{ \"host\": \"{host}\", \"port\": {port} }}")
                } else {
                    format!("'{prefix}' : {{ host : '{host}', port : {port} }}")
                }
            })
            .collect();
        let text = format!("{{ nodes : {{\n{}\n}} }}", body.join(",\n"));
        let parsed = hosts::parse(&text).unwrap();
        let got: Vec<(Prefix, String, u16)> = parsed.into_iter().map(|e| (e.prefix, e.host, e.port)).collect();
        let want: Vec<(Prefix, String, u16)> = entries.into_iter().map(|(p, (h, port))| (p, h, port)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn any_bytes_are_checked_without_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        if packet::check(&data).is_ok() {
            prop_assert!(packet::source(&data).is_some() && packet::destination(&data).is_some());
        }
    }
}
