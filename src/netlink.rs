//! The netlink edge: puts addresses on the device, brings it up and adds routes through it,
//! as `ip addr add`, `ip link set up` and `ip route add` would, without running them. Errors
//! carry the kernel's reason.

use std::ffi::CString;
use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// An address with its prefix length, as on an interface (`192.168.100.1/24`): host bits stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length of the attached network.
    pub len: u8,
}

impl std::str::FromStr for InterfaceAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, len) = crate::prefix::parse_cidr(text)?;
        Ok(Self { addr, len })
    }
}

fn family(addr: IpAddr) -> AddressFamily {
    if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 }
}

/// A route netlink socket that sends one request at a time and waits for its answer.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
}

impl Netlink {
    /// Opens a route netlink socket.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self { socket, sequence: 0 })
    }

    /// The interface index of `name`.
    pub fn index(name: &str) -> io::Result<u32> {
        let name = CString::new(name).map_err(|_| io::Error::other("interface name has a NUL"))?;
        // SAFETY: a valid NUL-terminated string.
        match unsafe { libc::if_nametoindex(name.as_ptr()) } {
            0 => Err(io::Error::last_os_error()),
            index => Ok(index),
        }
    }

    /// Adds `address` to interface `index` (`ip addr add`).
    pub fn add_address(&mut self, index: u32, address: InterfaceAddress) -> io::Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = family(address.addr);
        message.header.prefix_len = address.len;
        message.header.index = index;
        message.attributes.push(AddressAttribute::Local(address.addr));
        message.attributes.push(AddressAttribute::Address(address.addr));
        self.request(RouteNetlinkMessage::NewAddress(message), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Sets interface `index` up (`ip link set up`).
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(message), 0)
    }

    /// Adds a route to `addr`/`len` through interface `index` (`ip route add ... dev`).
    pub fn add_route(&mut self, index: u32, addr: IpAddr, len: u8) -> io::Result<()> {
        let mut message = RouteMessage::default();
        message.header.address_family = family(addr);
        message.header.destination_prefix_length = len;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Static;
        message.header.scope = RouteScope::Link;
        message.header.kind = RouteType::Unicast;
        message.attributes.push(RouteAttribute::Destination(match addr {
            IpAddr::V4(a) => RouteAddress::Inet(a),
            IpAddr::V6(a) => RouteAddress::Inet6(a),
        }));
        message.attributes.push(RouteAttribute::Oif(index));
        self.request(RouteNetlinkMessage::NewRoute(message), NLM_F_CREATE | NLM_F_EXCL)
    }

    fn request(&mut self, payload: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.sequence += 1;
        let mut message = NetlinkMessage::from(payload);
        message.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        message.header.sequence_number = self.sequence;
        message.finalize();
        let mut buffer = vec![0u8; message.buffer_len()];
        message.serialize(&mut buffer);
        self.socket.send(&buffer, 0)?;

        let mut reply = vec![0u8; 8192];
        loop {
            let len = self.socket.recv(&mut &mut reply[..], 0)?;
            let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[..len])
                .map_err(|e| io::Error::other(format!("bad netlink answer: {e}")))?;
            if answer.header.sequence_number != self.sequence {
                continue;
            }
            return match answer.payload {
                NetlinkPayload::Error(error) if error.code.is_some() => Err(error.to_io()),
                _ => Ok(()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_addresses_keep_host_bits() {
        let a: InterfaceAddress = "192.168.100.1/24".parse().unwrap();
        assert_eq!((a.addr.to_string(), a.len), ("192.168.100.1".into(), 24));
        let b: InterfaceAddress = "fd00::1/64".parse().unwrap();
        assert_eq!(b.len, 64);
        assert_eq!("10.0.0.1".parse::<InterfaceAddress>().unwrap().len, 32);
        for bad in ["10.0.0.1/33", "x/24", "10.0.0.1/", "fd00::1/200"] {
            assert!(bad.parse::<InterfaceAddress>().is_err(), "{bad}");
        }
    }
}
