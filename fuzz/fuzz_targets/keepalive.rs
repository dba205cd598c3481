//! The authenticated keepalive parser: whatever the bytes, `open` never panics; what it accepts
//! is exactly what `seal` builds for the sender and counter it read, and what `seal` builds for
//! any sender and counter it accepts.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use udptun::keepalive::{self, Key};

fuzz_target!(|data: &[u8]| {
    let key = Key::from_bytes([0x5a; keepalive::KEY_LEN]);
    if let Ok(opened) = keepalive::open(&key, data) {
        assert_eq!(&keepalive::seal(&key, opened.sender, opened.counter)[..], data, "not canonical");
    }
    if data.len() >= 24 {
        let mut sender = [0u8; 16];
        sender.copy_from_slice(&data[..16]);
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&data[16..24]);
        let sender = IpAddr::V6(Ipv6Addr::from(sender)).to_canonical();
        let counter = u64::from_be_bytes(counter);
        let sealed = keepalive::seal(&key, sender, counter);
        assert_eq!(sealed[0], keepalive::KIND);
        assert_eq!(keepalive::open(&key, &sealed), Ok(keepalive::Keepalive { sender, counter }));
    }
});
