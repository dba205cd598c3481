//! The UDP socket edge: batched sends with UDP GSO (`sendmmsg` + `UDP_SEGMENT`) and batched
//! receives with UDP GRO (`recvmmsg` + `UDP_GRO`), falling back cleanly where the kernel or the
//! path refuses them.
//!
//! Written against `libc` rather than `quinn-udp` because a tunnel needs other failure rules
//! than QUIC: quinn-udp turns GSO off for good on the first EINVAL, which an oversized segment
//! also returns, and forbids fragmentation, which would drop the large packets that the
//! original udptun (and kernel FOU) let the kernel fragment.

use std::io;
use std::marker::PhantomData;
use std::mem::{self, MaybeUninit};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::ops::Range;
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::batch::{self, Run};
use crate::peers::PeerId;

/// Socket buffer size asked for, so that bursts are absorbed instead of dropped.
const SOCKET_BUFFER_BYTES: usize = 8 << 20;
/// Largest payload the kernel may hand over in one GRO receive.
pub const GRO_BUFFER_BYTES: usize = 65_536;
/// Space for one `UDP_SEGMENT`/`UDP_GRO` control message (a u16 or int, padded).
const CMSG_BUFFER: usize = 64;

/// Opens the tunnel's UDP socket bound to `local`. An IPv6 unspecified address listens
/// dual-stack. With `reuse_port` several sockets share the port (one per data-plane thread).
pub fn bind(local: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
    if local.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    // Try the privileged sizes first (root or CAP_NET_ADMIN may exceed rmem_max), then the
    // ordinary ones, which the kernel caps silently.
    let size = SOCKET_BUFFER_BYTES as i32;
    if set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
        socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    }
    if set_int_option(&socket, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size).is_err() {
        socket.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    }
    socket.bind(&local.into())?;
    Ok(socket)
}

/// Attaches `steer::flow_program` to the reuseport group of `sockets` (all bound to one port,
/// in this order), so that datagrams are spread over them by the inner packet's flow instead
/// of the outer 4-tuple, which is the same for all of one peer's traffic.
pub fn steer_by_inner_flow(sockets: &[Socket]) -> io::Result<()> {
    let Some(first) = sockets.first() else { return Ok(()) };
    let count = u32::try_from(sockets.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut program = crate::steer::flow_program(count);
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: a valid fd and a sock_fprog pointing at `program`, which outlives the call (the
    // kernel copies it).
    let rc = unsafe {
        libc::setsockopt(
            first.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Fails with `AddrInUse` if another process holds `local`. Sockets opened with SO_REUSEPORT by
/// the same user would otherwise share the port silently with a second udptun.
pub fn ensure_port_free(local: SocketAddr) -> io::Result<()> {
    bind(local, false).map(drop)
}

/// Whether `ip` is still an address of this host (a socket can be bound to it).
pub fn address_usable(ip: IpAddr) -> bool {
    let probe = || -> io::Result<()> {
        let socket = Socket::new(Domain::for_address(SocketAddr::new(ip, 0)), Type::DGRAM, None)?;
        socket.bind(&SocketAddr::new(ip, 0).into())
    };
    !matches!(probe(), Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL))
}

/// Turns on UDP GRO; returns whether the kernel accepted it.
pub fn enable_gro(socket: &Socket) -> bool {
    set_int_option(socket, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok()
}

/// Whether the kernel accepts `UDP_SEGMENT` on this socket.
pub fn supports_gso(socket: &Socket) -> bool {
    set_int_option(socket, libc::SOL_UDP, libc::UDP_SEGMENT, 0).is_ok()
}

fn set_int_option(socket: &Socket, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: a valid fd and a pointer to an int of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Converts a peer address to what this socket sends to: IPv4 peers become v4-mapped on a
/// dual-stack IPv6 socket.
pub fn to_socket_family(peer: SocketAddr, socket_is_v6: bool) -> SocketAddr {
    match peer {
        SocketAddr::V4(v4) if socket_is_v6 => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        other => other,
    }
}

/// The canonical form of a sender's address: v4-mapped IPv6 back to IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// What became of one datagram handed to [`Batch::send`].
#[derive(Debug)]
pub struct SendFailure {
    /// Index of the datagram in the batch.
    pub index: usize,
    /// Why the kernel refused it.
    pub error: io::Error,
}

/// One datagram of a batch: where it goes, the peer whose counters it adds to, its length, and
/// where its bytes lie: up to two pieces (a split segment's header in the header arena and its
/// payload in the frame, or a whole packet), as `iovecs[first..first + pieces]` of the sender.
#[derive(Clone, Copy, Debug)]
pub struct Transmit {
    /// The destination.
    pub to: SocketAddr,
    /// The peer, for its counters.
    pub peer: PeerId,
    /// The datagram's length.
    pub len: usize,
    first: usize,
    pieces: usize,
}

/// Sends batches of datagrams with as few system calls as the kernel allows. One per thread;
/// it owns the list of transmits, which a [`Batch`] fills and sends.
pub struct Sender {
    /// Largest segment size still coalesced with GSO; 0 when GSO is off.
    gso_limit: usize,
    /// Messages that went out carrying more than one datagram (GSO): what the tests observe.
    #[cfg(test)]
    segmented_messages: u64,
    transmits: Vec<Transmit>,
    /// The pieces of every transmit, in order: a run's message gathers a contiguous stretch.
    /// They point into the data a [`Batch`] borrows and are cleared when the next one starts.
    iovecs: Vec<libc::iovec>,
    runs: Vec<Run>,
    addresses: Vec<SockAddr>,
    controls: Vec<[u8; CMSG_BUFFER]>,
    headers: Vec<libc::mmsghdr>,
}

impl Sender {
    /// A sender that uses GSO if `gso` is true.
    pub fn new(gso: bool) -> Self {
        Self {
            gso_limit: if gso { usize::MAX } else { 0 },
            #[cfg(test)]
            segmented_messages: 0,
            transmits: Vec::new(),
            iovecs: Vec::new(),
            runs: Vec::new(),
            addresses: Vec::new(),
            controls: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Starts an empty batch whose datagrams borrow bytes for `'d`: the borrow keeps them alive
    /// (and unchanged) for as long as the batch may hand them to the kernel.
    pub fn batch<'d>(&mut self) -> Batch<'_, 'd> {
        self.transmits.clear();
        self.iovecs.clear();
        Batch { sender: self, data: PhantomData }
    }

    /// How many messages the kernel accepted that carried several datagrams (`UDP_SEGMENT`);
    /// datagrams sent one by one after a GSO failure do not count.
    #[cfg(test)]
    fn segmented_messages(&self) -> u64 {
        self.segmented_messages
    }

    /// One `sendmmsg` for the runs from `first` on; returns how many went out.
    fn send_runs(&mut self, socket: &Socket, first: usize) -> io::Result<usize> {
        let runs = &self.runs[first..];
        self.addresses.clear();
        self.addresses.extend(runs.iter().map(|r| SockAddr::from(self.transmits[r.start].to)));
        self.controls.resize(runs.len(), [0; CMSG_BUFFER]);
        self.headers.clear();
        for (i, run) in runs.iter().enumerate() {
            let (head, tail) = (self.transmits[run.start], self.transmits[run.start + run.count - 1]);
            // The run's datagrams' pieces are consecutive: the kernel cuts their concatenation
            // at the segment size.
            let iovecs = &self.iovecs[head.first..tail.first + tail.pieces];
            let mut header = message(&self.addresses[i], iovecs);
            if run.count > 1 {
                set_segment_size(&mut header, &mut self.controls[i], run.segment_size as u16);
            }
            self.headers.push(libc::mmsghdr { msg_hdr: header, msg_len: 0 });
        }
        loop {
            // SAFETY: headers point into buffers that live until this call returns (the iovecs'
            // targets are borrowed by the batch that called this).
            let sent = unsafe {
                libc::sendmmsg(socket.as_raw_fd(), self.headers.as_mut_ptr(), self.headers.len() as u32, 0)
            };
            if sent >= 0 {
                return Ok(sent as usize);
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }

    /// Handles a run the kernel refused: GSO errors fall back to one datagram per send;
    /// anything else is the datagrams' own failure.
    fn recover(
        &mut self,
        socket: &Socket,
        run: Run,
        error: io::Error,
        on_failure: &mut dyn FnMut(SendFailure),
    ) {
        if run.count > 1 {
            if let Some(limit) =
                gso_limit_after_refusal(error.raw_os_error(), run.segment_size, self.gso_limit)
            {
                self.gso_limit = limit;
                if limit == 0 {
                    tracing::info!(
                        "UDP GSO turned off: the outgoing device cannot offload checksums ({error})"
                    );
                } else {
                    tracing::info!(
                        "UDP GSO: datagrams of {} bytes or more are sent one by one from now on ({error})",
                        run.segment_size
                    );
                }
            }
            for index in run.start..run.start + run.count {
                let transmit = self.transmits[index];
                let iovecs = &self.iovecs[transmit.first..transmit.first + transmit.pieces];
                if let Err(error) = send_one(socket, &SockAddr::from(transmit.to), iovecs) {
                    on_failure(SendFailure { index, error });
                }
            }
        } else {
            on_failure(SendFailure { index: run.start, error });
        }
    }
}

/// A batch of datagrams being gathered by a [`Sender`]; their bytes are borrowed for `'d`.
pub struct Batch<'s, 'd> {
    sender: &'s mut Sender,
    data: PhantomData<&'d [u8]>,
}

impl<'d> Batch<'_, 'd> {
    /// Adds a datagram to `to` (for `peer`'s counters) made of `pieces` one after the other
    /// (empty pieces are left out).
    pub fn push(&mut self, to: SocketAddr, peer: PeerId, pieces: [&'d [u8]; 2]) {
        let sender = &mut *self.sender;
        let first = sender.iovecs.len();
        let mut len = 0;
        for piece in pieces.into_iter().filter(|p| !p.is_empty()) {
            len += piece.len();
            // The kernel only reads through it (sendmsg).
            sender
                .iovecs
                .push(libc::iovec { iov_base: piece.as_ptr() as *mut libc::c_void, iov_len: piece.len() });
        }
        sender.transmits.push(Transmit { to, peer, len, first, pieces: sender.iovecs.len() - first });
    }

    /// The datagrams added so far, in order (the indexes of [`SendFailure`]).
    pub fn transmits(&self) -> &[Transmit] {
        &self.sender.transmits
    }

    /// Sends the batch, blocking while the socket buffer is full so that nothing is dropped for
    /// lack of room. Datagrams the kernel refuses are reported through `on_failure`; the rest of
    /// the batch still goes out. Runs of datagrams to one destination of one size go out as one
    /// message each with `UDP_SEGMENT` (see [`batch::runs`]).
    pub fn send(&mut self, socket: &Socket, on_failure: &mut dyn FnMut(SendFailure)) {
        let sender = &mut *self.sender;
        batch::runs(&sender.transmits, |t| (t.to, t.len), sender.gso_limit, &mut sender.runs);
        let mut next = 0;
        while next < sender.runs.len() {
            match sender.send_runs(socket, next) {
                Ok(sent) => {
                    #[cfg(test)]
                    {
                        let runs = sender.runs[next..].iter().take(sent);
                        sender.segmented_messages += runs.filter(|r| r.count > 1).count() as u64;
                    }
                    next += sent;
                }
                Err(error) => {
                    let run = sender.runs[next];
                    next += 1;
                    sender.recover(socket, run, error, on_failure);
                }
            }
        }
    }
}

/// A message to `address` gathering `iovecs`, without control data.
fn message(address: &SockAddr, iovecs: &[libc::iovec]) -> libc::msghdr {
    // SAFETY: an all-zero msghdr is valid; the pointers set here are the caller's to keep valid.
    let mut header: libc::msghdr = unsafe { mem::zeroed() };
    header.msg_name = address.as_ptr() as *mut libc::c_void;
    header.msg_namelen = address.len();
    // sendmsg does not write through it.
    header.msg_iov = iovecs.as_ptr() as *mut libc::iovec;
    header.msg_iovlen = iovecs.len();
    header
}

/// What a GSO send of `segment_size`-byte datagrams that the kernel refused with `errno` teaches:
/// the new largest segment size to coalesce, or `None` when the failure is the datagrams' own.
/// EIO: the device cannot offload checksums, so no GSO at all (wireguard-go does the same);
/// EINVAL or EMSGSIZE: the segment does not fit the path MTU, so stop coalescing this size.
fn gso_limit_after_refusal(errno: Option<i32>, segment_size: usize, limit: usize) -> Option<usize> {
    match errno {
        Some(libc::EIO) if limit > 0 => Some(0),
        Some(libc::EINVAL | libc::EMSGSIZE) if limit >= segment_size => Some(segment_size - 1),
        _ => None,
    }
}

/// Sends one datagram gathered from `iovecs` with `sendmsg`.
fn send_one(socket: &Socket, address: &SockAddr, iovecs: &[libc::iovec]) -> io::Result<()> {
    let header = message(address, iovecs);
    loop {
        // SAFETY: the header points at `address` and `iovecs`, valid for the call.
        if unsafe { libc::sendmsg(socket.as_raw_fd(), &header, 0) } >= 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

fn set_segment_size(header: &mut libc::msghdr, control: &mut [u8; CMSG_BUFFER], size: u16) {
    control.fill(0);
    header.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE of a u16 fits in CMSG_BUFFER; CMSG_FIRSTHDR is then non-null and the
    // data pointer lies inside `control`.
    unsafe {
        header.msg_controllen = libc::CMSG_SPACE(mem::size_of::<u16>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(header);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
    }
}

/// One received buffer: `len` bytes from `source`, cut into datagrams of `stride` bytes (the
/// last may be shorter) when GRO merged several.
#[derive(Clone, Copy, Debug)]
struct Received {
    buffer: usize,
    source: SocketAddr,
    len: usize,
    stride: usize,
}

/// Receives batches of datagrams with `recvmmsg`, GRO-merged where the kernel does so.
pub struct Receiver {
    buffers: Vec<Box<[u8]>>,
    addresses: Vec<MaybeUninit<libc::sockaddr_storage>>,
    controls: Vec<[u8; CMSG_BUFFER]>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    received: Vec<Received>,
    drained: bool,
}

impl Receiver {
    /// A receiver of up to `batch` buffers of `buffer_size` bytes each.
    pub fn new(batch: usize, buffer_size: usize) -> Self {
        Self {
            buffers: (0..batch).map(|_| vec![0u8; buffer_size].into_boxed_slice()).collect(),
            addresses: vec![MaybeUninit::zeroed(); batch],
            controls: vec![[0; CMSG_BUFFER]; batch],
            iovecs: Vec::with_capacity(batch),
            headers: Vec::with_capacity(batch),
            received: Vec::with_capacity(batch),
            drained: false,
        }
    }

    /// Takes as many datagrams as are queued (up to the batch size) without waiting; returns
    /// how many buffers were filled (0 when nothing was waiting). [`Receiver::datagrams`] then
    /// yields the datagrams.
    pub fn recv(&mut self, socket: &Socket) -> io::Result<usize> {
        let batch = self.buffers.len();
        self.iovecs.clear();
        self.iovecs.extend(
            self.buffers
                .iter_mut()
                .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }),
        );
        self.headers.clear();
        for i in 0..batch {
            // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
            let mut header: libc::msghdr = unsafe { mem::zeroed() };
            header.msg_name = self.addresses[i].as_mut_ptr().cast();
            header.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut self.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_control = self.controls[i].as_mut_ptr().cast();
            header.msg_controllen = CMSG_BUFFER;
            self.headers.push(libc::mmsghdr { msg_hdr: header, msg_len: 0 });
        }
        let count = loop {
            // SAFETY: headers point into buffers owned by self that outlive the call.
            let n = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    self.headers.as_mut_ptr(),
                    batch as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    self.received.clear();
                    return Ok(0);
                }
                _ => return Err(error),
            }
        };
        // The kernel stops short of the batch when the queue ran dry, or when a later message
        // failed (its error is kept for the next receive, and `poll` reports it).
        self.drained = count < batch;
        self.received.clear();
        for i in 0..count {
            let header = &self.headers[i];
            let len = header.msg_len as usize;
            // SAFETY: zero-initialised storage the kernel may have filled further.
            let storage = unsafe { self.addresses[i].assume_init_ref() };
            // A datagram from a non-IP family cannot reach a UDP socket; skip it defensively.
            let Some(source) = socket_addr(storage) else { continue };
            let stride = gro_segment_size(&header.msg_hdr).unwrap_or(len);
            self.received.push(Received { buffer: i, source, len, stride });
        }
        Ok(count)
    }

    /// Whether the last receive that got datagrams also emptied the socket's queue, so that
    /// receiving again before `poll` says there is more would only cost a system call.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// Iterates over the datagrams of the last receive: (source, payload). The payloads are
    /// mutable, so that packets can be changed where they lie (MSS clamping) before they go on.
    pub fn datagrams(&mut self) -> impl Iterator<Item = (SocketAddr, &mut [u8])> {
        // `received` is in buffer order and names each buffer at most once.
        let mut received = self.received.iter().peekable();
        self.buffers
            .iter_mut()
            .enumerate()
            .filter_map(move |(i, buffer)| Some((received.next_if(|r| r.buffer == i)?, buffer)))
            .flat_map(|(r, buffer)| {
                let mut rest = &mut buffer[..r.len];
                split_gro(r.len, r.stride).map(move |range| {
                    let (datagram, after) = std::mem::take(&mut rest).split_at_mut(range.len());
                    rest = after;
                    (r.source, datagram)
                })
            })
    }
}

/// Where the datagrams lie in a receive of `len` bytes that GRO merged from datagrams of
/// `stride` bytes: consecutive ranges of `stride` bytes, the last possibly shorter, covering
/// `0..len`. An empty receive is one empty datagram (a keepalive); a stride of 0 counts as 1.
pub fn split_gro(len: usize, stride: usize) -> impl Iterator<Item = Range<usize>> {
    let stride = stride.max(1);
    let count = if len == 0 { 1 } else { len.div_ceil(stride) };
    (0..count).map(move |i| {
        let start = i * stride;
        start..start + (len - start).min(stride)
    })
}

/// Decodes an IPv4 or IPv6 socket address, canonical (v4-mapped addresses as IPv4).
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    let storage: *const libc::sockaddr_storage = storage;
    // SAFETY: sockaddr_storage is large and aligned enough for either family's struct.
    let addr = match i32::from(unsafe { (*storage).ss_family }) {
        libc::AF_INET => {
            let sin = unsafe { &*storage.cast::<libc::sockaddr_in>() };
            SocketAddr::from((u32::from_be(sin.sin_addr.s_addr).to_be_bytes(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            let sin6 = unsafe { &*storage.cast::<libc::sockaddr_in6>() };
            SocketAddr::V6(SocketAddrV6::new(
                sin6.sin6_addr.s6_addr.into(),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            ))
        }
        _ => return None,
    };
    Some(canonical(addr))
}

/// The `UDP_GRO` segment size the kernel attached to a receive, if any.
fn gro_segment_size(header: &libc::msghdr) -> Option<usize> {
    // SAFETY: the kernel wrote msg_controllen bytes of well-formed control messages.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                return usize::try_from(size).ok();
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    fn loopback_pair() -> (Socket, Socket, SocketAddr) {
        let receiver = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        receiver.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let addr = receiver.local_addr().unwrap().as_socket().unwrap();
        let sender = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        (sender, receiver, addr)
    }

    #[test]
    fn a_refused_gso_send_lowers_the_limit_once_by_its_cause() {
        let unlimited = usize::MAX;
        assert_eq!(gso_limit_after_refusal(Some(libc::EIO), 1472, unlimited), Some(0));
        assert_eq!(gso_limit_after_refusal(Some(libc::EIO), 1472, 0), None, "already off");
        for errno in [libc::EINVAL, libc::EMSGSIZE] {
            assert_eq!(gso_limit_after_refusal(Some(errno), 1472, unlimited), Some(1471));
            assert_eq!(gso_limit_after_refusal(Some(errno), 1472, 1472), Some(1471));
            assert_eq!(gso_limit_after_refusal(Some(errno), 1472, 1471), None, "already below");
        }
        for other in [Some(libc::ENETUNREACH), Some(libc::EPERM), None] {
            assert_eq!(gso_limit_after_refusal(other, 1472, unlimited), None);
        }
    }

    /// What a round trip observed besides the payloads.
    struct Offloads {
        /// Messages the sender handed to the kernel with several datagrams each (GSO).
        segmented_messages: u64,
        /// Receive buffers that held more than one datagram (GRO), and the strides they had.
        coalesced_strides: Vec<usize>,
        /// Receive buffers filled in all.
        buffers: usize,
    }

    /// Sends `sizes` as one batch, receives until all arrived, checks that they arrived whole
    /// and in order, and returns what the offloads did. Datagram `i` is sent in two pieces cut
    /// `i` bytes in (as a split segment's header and payload), or whole when that is past its end.
    fn round_trip(gso: bool, gro: bool, sizes: &[usize]) -> Offloads {
        let (tx, rx, addr) = loopback_pair();
        if gro {
            assert!(enable_gro(&rx));
        }
        let payloads: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| vec![i as u8; n]).collect();
        let mut sender = Sender::new(gso);
        let mut batch = sender.batch();
        for (i, payload) in payloads.iter().enumerate() {
            let (head, tail) = payload.split_at(i.min(payload.len()));
            batch.push(addr, PeerId::for_tests(i as u32), [head, tail]);
        }
        assert_eq!(batch.transmits().iter().map(|t| t.len).collect::<Vec<_>>(), sizes);
        batch.send(&tx, &mut |f| panic!("send failed: {f:?}"));
        let mut receiver = Receiver::new(8, GRO_BUFFER_BYTES);
        let mut got = Vec::new();
        let mut offloads = Offloads {
            segmented_messages: sender.segmented_messages(),
            coalesced_strides: Vec::new(),
            buffers: 0,
        };
        while got.len() < sizes.len() {
            if receiver.recv(&rx).unwrap() == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            offloads.buffers += receiver.received.len();
            offloads
                .coalesced_strides
                .extend(receiver.received.iter().filter(|r| r.len > r.stride).map(|r| r.stride));
            got.extend(receiver.datagrams().map(|(source, d)| {
                assert_eq!(source, tx.local_addr().unwrap().as_socket().unwrap());
                d.to_vec()
            }));
        }
        assert_eq!(got, payloads);
        offloads
    }

    #[test]
    fn datagrams_arrive_whole_and_in_order_with_and_without_offloads() {
        let sizes = [1400, 1400, 1400, 700, 64, 64, 1500, 1];
        for (gso, gro) in [(false, false), (true, false), (false, true), (true, true)] {
            let offloads = round_trip(gso, gro, &sizes);
            // With GSO three messages: 3 × 1400 + 700, 2 × 64, 1500 + 1 (a shorter last
            // datagram ends a run).
            assert_eq!(offloads.segmented_messages, if gso { 3 } else { 0 }, "gso {gso} gro {gro}");
            if !gro {
                assert!(offloads.coalesced_strides.is_empty(), "gso {gso}: merged without GRO");
                assert_eq!(offloads.buffers, sizes.len(), "gso {gso}");
            } else if gso {
                assert_eq!(offloads.coalesced_strides, vec![1400, 64, 1500]);
                assert_eq!(offloads.buffers, 3);
            }
        }
    }

    #[test]
    fn gso_sends_one_message_and_gro_receives_one_coalesced_buffer() {
        let offloads = round_trip(true, true, &[1000; 10]);
        assert_eq!(offloads.segmented_messages, 1);
        // Loopback hands the GSO message to a GRO socket whole: the ten datagrams arrive in one
        // buffer with a segment size of 1000 attached.
        assert_eq!(offloads.coalesced_strides, vec![1000]);
        assert_eq!(offloads.buffers, 1);
    }

    #[test]
    fn a_full_gso_send_of_small_datagrams_is_split_correctly() {
        let offloads = round_trip(true, true, &[64; 200]);
        // At most 64 segments per message: 64 + 64 + 64 + 8.
        assert_eq!(offloads.segmented_messages, 4);
        assert_eq!(offloads.coalesced_strides, vec![64; 4]);
        assert_eq!(offloads.buffers, 4);
    }

    #[test]
    fn gro_split_covers_the_buffer_in_strides() {
        let ranges = |len, stride| split_gro(len, stride).collect::<Vec<_>>();
        assert_eq!(ranges(0, 0), vec![0..0]);
        assert_eq!(ranges(0, 1400), vec![0..0]);
        assert_eq!(ranges(5, 0), vec![0..1, 1..2, 2..3, 3..4, 4..5]);
        assert_eq!(ranges(1400, 1400), vec![0..1400]);
        assert_eq!(ranges(3000, 1400), vec![0..1400, 1400..2800, 2800..3000]);
        assert_eq!(ranges(2800, 1400), vec![0..1400, 1400..2800]);
        assert_eq!(ranges(10, usize::MAX), vec![0..10]);
    }

    #[test]
    fn empty_datagrams_are_received_as_empty_datagrams() {
        let (tx, rx, addr) = loopback_pair();
        tx.send_to(&[], &addr.into()).unwrap();
        tx.send_to(b"x", &addr.into()).unwrap();
        let mut receiver = Receiver::new(8, GRO_BUFFER_BYTES);
        let mut got = Vec::new();
        while got.len() < 2 {
            if receiver.recv(&rx).unwrap() == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            got.extend(receiver.datagrams().map(|(_, d)| d.to_vec()));
        }
        assert_eq!(got, vec![vec![], b"x".to_vec()]);
    }

    #[test]
    fn addresses_convert_between_families() {
        let v4: SocketAddr = "192.0.2.1:7777".parse().unwrap();
        let mapped = to_socket_family(v4, true);
        assert_eq!(mapped.to_string(), "[::ffff:192.0.2.1]:7777");
        assert_eq!(canonical(mapped), v4);
        assert_eq!(to_socket_family(v4, false), v4);
    }
}
