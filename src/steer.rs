//! Which of the `--threads` sockets a datagram goes to: a classic BPF program for the reuseport
//! group (`SO_ATTACH_REUSEPORT_CBPF`) that hashes the *inner* packet. Pure: it only builds the
//! program; `udp::steer_by_inner_flow` attaches it.
//!
//! Without it the kernel picks the socket by the outer 4-tuple, which is the same for every
//! flow between two peers, so one peer's traffic lands on one thread whatever `--threads` says.
//!
//! The kernel runs the program with the UDP header pulled (`run_bpf_filter` in
//! net/core/sock_reuseport.c), so offset 0 is the UDP payload, our IP packet; the result is an
//! index into the group's sockets, which are in bind order. An index past the last socket
//! makes the kernel fall back to its own hash, and a load past the end of the datagram ends the
//! program with 0: keepalives, empty datagrams and garbage still land on a socket. With UDP GRO
//! the program sees the first datagram of a coalesced batch, and the batch goes whole to one
//! socket.
//!
//! The hash is symmetric (addresses and ports are each XOR-folded), so both directions of a
//! flow meet on the same thread at both ends: the TUN's own steering sends a flow's packets to
//! the queue that last wrote that flow, which is the thread whose socket its packets reach.

use libc::sock_filter;

use crate::packet::{PROTO_TCP, PROTO_UDP};

/// The result that asks the kernel for its own hash (any index past the last socket).
const KERNEL_HASH: u32 = u32::MAX;
/// A multiplier (2^32 / golden ratio) that spreads the folded bits over the high half.
const MIX: u32 = 0x9E37_79B1;

/// The program that returns `hash(inner flow) % sockets` for IPv4 and IPv6 packets: addresses,
/// plus ports for TCP and UDP (IPv4: not in fragments, the header length from the IHL; IPv6:
/// only when the fixed header's next header says so). Anything else gets [`KERNEL_HASH`].
pub fn flow_program(sockets: u32) -> Vec<sock_filter> {
    let mut p = Program::default();
    // Version.
    p.stmt(LD | B | ABS, 0);
    p.stmt(ALU | RSH | K, 4);
    p.jump(JEQ, 4, "v4", "not4");
    p.label("not4");
    p.jump(JEQ, 6, "v6", "other");
    p.label("other");
    p.stmt(RET | K, KERNEL_HASH);

    // IPv4: M[0] = source ^ destination; ports unless a fragment (offset or more-fragments).
    p.label("v4");
    p.stmt(LD | W | ABS, 12);
    p.stmt(MISC | TAX, 0);
    p.stmt(LD | W | ABS, 16);
    p.stmt(ALU | XOR | X, 0);
    p.ports_if_tcp_or_udp(9, "v4udp", "v4ports");
    p.stmt(LD | H | ABS, 6);
    p.jump(JSET, 0x3fff, "addresses", "v4header");
    p.label("v4header");
    p.stmt(LDX | B | MSH, 0);
    p.jump(JA, 0, "ports", "ports");

    // IPv6: M[0] = the eight address words folded; ports if the next header is TCP or UDP.
    p.label("v6");
    p.stmt(LD | W | ABS, 8);
    for offset in (12..40).step_by(4) {
        p.stmt(MISC | TAX, 0);
        p.stmt(LD | W | ABS, offset);
        p.stmt(ALU | XOR | X, 0);
    }
    p.ports_if_tcp_or_udp(6, "v6udp", "v6ports");
    p.stmt(LDX | IMM, 40);

    // X = offset of the transport header: A = M[0] ^ (source port ^ destination port) << 16;
    // in the high half, a port's lowest bit decides the lowest bit kept after the mix.
    p.label("ports");
    p.stmt(LD | W | IND, 0);
    p.stmt(MISC | TAX, 0);
    p.stmt(ALU | RSH | K, 16);
    p.stmt(ALU | XOR | X, 0);
    p.stmt(ALU | LSH | K, 16);
    p.stmt(MISC | TAX, 0);
    p.stmt(LD | MEM, 0);
    p.stmt(ALU | XOR | X, 0);
    p.jump(JA, 0, "mix", "mix");

    p.label("addresses");
    p.stmt(LD | MEM, 0);
    p.label("mix");
    p.stmt(ALU | MUL | K, MIX);
    p.stmt(ALU | RSH | K, 16);
    p.stmt(ALU | MOD | K, sockets.max(1));
    p.stmt(RET | A, 0);
    p.finish()
}

// Classic BPF opcodes (linux/bpf_common.h, linux/filter.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const MSH: u16 = 0xa0;
const MUL: u16 = 0x20;
const LSH: u16 = 0x60;
const RSH: u16 = 0x70;
const MOD: u16 = 0x90;
const XOR: u16 = 0xa0;
const JA: u16 = JMP;
const JEQ: u16 = JMP | 0x10;
const JSET: u16 = JMP | 0x40;
const K: u16 = 0x00;
const X: u16 = 0x08;
const A: u16 = 0x10;
const TAX: u16 = 0x00;

/// A program under construction: jumps name their targets, resolved by `finish`.
#[derive(Default)]
struct Program {
    code: Vec<sock_filter>,
    labels: Vec<(&'static str, usize)>,
    jumps: Vec<(usize, &'static str, &'static str)>,
}

impl Program {
    fn stmt(&mut self, code: u16, k: u32) {
        self.code.push(sock_filter { code, jt: 0, jf: 0, k });
    }

    /// A conditional jump (or `JA`, which takes `taken`) comparing A with `k`.
    fn jump(&mut self, code: u16, k: u32, taken: &'static str, not_taken: &'static str) {
        self.jumps.push((self.code.len(), taken, not_taken));
        self.stmt(code | K, k);
    }

    fn label(&mut self, name: &'static str) {
        self.labels.push((name, self.code.len()));
    }

    /// Stores A (the folded addresses) in M[0], then goes on at label `ports` (which follows)
    /// if the protocol byte at `protocol_at` is TCP or UDP, whose headers start with the two
    /// ports, else to "addresses". `udp` names the second test.
    fn ports_if_tcp_or_udp(&mut self, protocol_at: u32, udp: &'static str, ports: &'static str) {
        self.stmt(ST, 0);
        self.stmt(LD | B | ABS, protocol_at);
        self.jump(JEQ, u32::from(PROTO_TCP), ports, udp);
        self.label(udp);
        self.jump(JEQ, u32::from(PROTO_UDP), ports, "addresses");
        self.label(ports);
    }

    /// Resolves the jumps. Every target lies ahead (classic BPF only jumps forward, by at most
    /// 255 instructions when conditional); the program is fixed, so a bad label is a bug in
    /// `flow_program` that any of its tests hits.
    fn finish(mut self) -> Vec<sock_filter> {
        for &(index, taken, not_taken) in &self.jumps {
            let offset = |name: &str| {
                let target = self.labels.iter().find(|(n, _)| *n == name).map(|(_, i)| *i);
                target.and_then(|t| t.checked_sub(index + 1)).expect("a label ahead of its jump")
            };
            let (jt, jf) = (offset(taken), offset(not_taken));
            let insn = &mut self.code[index];
            if insn.code == JA {
                insn.k = jt as u32;
            } else {
                insn.jt = u8::try_from(jt).expect("a short jump");
                insn.jf = u8::try_from(jf).expect("a short jump");
            }
        }
        self.code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic BPF interpreter for the instructions `flow_program` uses, with the kernel's
    /// rule that a load past the end of the packet ends the program with 0.
    fn run(program: &[sock_filter], packet: &[u8]) -> u32 {
        let load = |offset: u32, size: usize| -> Option<u32> {
            let start = offset as usize;
            let bytes = packet.get(start..start.checked_add(size)?)?;
            Some(bytes.iter().fold(0, |v, &b| v << 8 | u32::from(b)))
        };
        let (mut a, mut x, mut mem, mut pc) = (0u32, 0u32, [0u32; 16], 0usize);
        loop {
            let insn = program[pc];
            pc += 1;
            let size = match insn.code & 0x18 {
                W => 4,
                H => 2,
                _ => 1,
            };
            match insn.code & 0x07 {
                LD => match insn.code & 0xe0 {
                    ABS => match load(insn.k, size) {
                        Some(v) => a = v,
                        None => return 0,
                    },
                    IND => match load(x.wrapping_add(insn.k), size) {
                        Some(v) => a = v,
                        None => return 0,
                    },
                    MEM => a = mem[insn.k as usize],
                    mode => panic!("ld mode {mode:#x}"),
                },
                LDX => match insn.code & 0xe0 {
                    IMM => x = insn.k,
                    MSH => match load(insn.k, 1) {
                        Some(v) => x = 4 * (v & 0xf),
                        None => return 0,
                    },
                    mode => panic!("ldx mode {mode:#x}"),
                },
                ST => mem[insn.k as usize] = a,
                ALU => {
                    let operand = if insn.code & X != 0 { x } else { insn.k };
                    a = match insn.code & 0xf0 {
                        MUL => a.wrapping_mul(operand),
                        LSH => a << operand,
                        RSH => a >> operand,
                        MOD => a % operand,
                        XOR => a ^ operand,
                        op => panic!("alu op {op:#x}"),
                    };
                }
                JMP => {
                    let skip = match insn.code & 0xf0 {
                        0x00 => insn.k as usize,
                        0x10 if a == insn.k => usize::from(insn.jt),
                        0x40 if a & insn.k != 0 => usize::from(insn.jt),
                        0x10 | 0x40 => usize::from(insn.jf),
                        op => panic!("jmp op {op:#x}"),
                    };
                    pc += skip;
                }
                RET => return if insn.code & A != 0 { a } else { insn.k },
                MISC => x = a,
                class => panic!("class {class:#x}"),
            }
        }
    }

    fn ipv4(protocol: u8, source: [u8; 4], destination: [u8; 4], ports: (u16, u16)) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, protocol, 0, 0];
        p.extend(source);
        p.extend(destination);
        p.extend(ports.0.to_be_bytes());
        p.extend(ports.1.to_be_bytes());
        p.extend([0, 8, 0, 0]);
        p
    }

    fn ipv6(next: u8, source: u8, destination: u8, ports: (u16, u16)) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 8, next, 64];
        p.extend([0xfd; 15]);
        p.push(source);
        p.extend([0xfd; 15]);
        p.push(destination);
        p.extend(ports.0.to_be_bytes());
        p.extend(ports.1.to_be_bytes());
        p.extend([0, 8, 0, 0]);
        p
    }

    #[test]
    fn jumps_resolve_forward_and_within_the_program() {
        let program = flow_program(2);
        for (index, insn) in program.iter().enumerate() {
            if insn.code & 0x07 == JMP {
                let longest = if insn.code == JA { insn.k as usize } else { insn.jt.max(insn.jf).into() };
                assert!(index + 1 + longest < program.len(), "jump at {index} leaves the program");
            }
        }
        assert_eq!(program.last().map(|i| i.code), Some(RET | A));
    }

    #[test]
    fn flows_whose_source_ports_differ_in_the_lowest_bit_split_over_two_sockets() {
        // tests/datapath.rs relies on this: the two flows of its steering test.
        let program = flow_program(2);
        for protocol in [6, 17] {
            for port in [40_000u16, 40_002, 51_234] {
                let one = run(&program, &ipv4(protocol, [10, 0, 0, 1], [10, 0, 0, 2], (port, 5201)));
                let two = run(&program, &ipv4(protocol, [10, 0, 0, 1], [10, 0, 0, 2], (port + 1, 5201)));
                assert!(one < 2 && two < 2);
                assert_ne!(one, two, "protocol {protocol}, port {port}");
            }
            let one = run(&program, &ipv6(protocol, 1, 2, (40_000, 5201)));
            let two = run(&program, &ipv6(protocol, 1, 2, (40_001, 5201)));
            assert_ne!(one, two);
        }
    }

    #[test]
    fn both_directions_of_a_flow_land_on_the_same_socket() {
        let program = flow_program(4);
        for port in 40_000..40_100 {
            let out = run(&program, &ipv4(6, [10, 0, 0, 1], [10, 0, 0, 2], (port, 443)));
            let back = run(&program, &ipv4(6, [10, 0, 0, 2], [10, 0, 0, 1], (443, port)));
            assert_eq!(out, back);
            let out = run(&program, &ipv6(17, 1, 2, (port, 53)));
            let back = run(&program, &ipv6(17, 2, 1, (53, port)));
            assert_eq!(out, back);
        }
    }

    #[test]
    fn many_flows_spread_over_every_socket() {
        for sockets in [2, 3, 4, 8] {
            let program = flow_program(sockets);
            let mut seen = vec![0u32; sockets as usize];
            for port in 30_000..31_000 {
                let index = run(&program, &ipv4(6, [192, 168, 1, 7], [10, 1, 2, 3], (port, 443)));
                seen[index as usize] += 1;
            }
            let fair = 1000 / sockets;
            assert!(seen.iter().all(|&n| n > fair / 2), "{sockets} sockets: {seen:?}");
        }
    }

    #[test]
    fn fragments_and_other_protocols_hash_by_addresses_only() {
        let program = flow_program(8);
        let addresses = |packet: &[u8]| run(&program, packet);
        let icmp = ipv4(1, [10, 0, 0, 1], [10, 0, 0, 2], (0x0800, 1));
        let mut fragment = ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], (1234, 5678));
        fragment[6] = 0x20; // more fragments
        let mut later = ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], (9, 9));
        later[7] = 0x10; // offset 16
        assert_eq!(addresses(&fragment), addresses(&icmp));
        assert_eq!(addresses(&later), addresses(&icmp));
        // IPv4 options move the ports: the IHL is honoured.
        let mut options = ipv4(6, [10, 0, 0, 1], [10, 0, 0, 2], (0, 0));
        options[0] = 0x46;
        options.splice(20..20, [1, 1, 1, 1]);
        options[24..28].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]); // 40000 → 5201
        let plain = ipv4(6, [10, 0, 0, 1], [10, 0, 0, 2], (40_000, 5201));
        assert_eq!(addresses(&options), addresses(&plain));
    }

    #[test]
    fn anything_else_still_lands_on_a_socket() {
        let program = flow_program(2);
        // Empty (a plain keepalive) and truncated packets end on a load past the end: socket 0.
        assert_eq!(run(&program, &[]), 0);
        assert_eq!(run(&program, &[0x45, 0, 0]), 0);
        assert_eq!(run(&program, &ipv6(6, 1, 2, (1, 2))[..30]), 0);
        // A transport header cut short, too.
        assert_eq!(run(&program, &ipv4(6, [10, 0, 0, 1], [10, 0, 0, 2], (1, 2))[..21]), 0);
        // Not IP (an authenticated keepalive starts with 0x01): the kernel's own hash.
        assert_eq!(run(&program, &[0x01; 40]), KERNEL_HASH);
        assert_eq!(run(&program, &[0xff; 3]), KERNEL_HASH);
    }
}
