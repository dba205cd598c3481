//! udptun: IP packets over UDP in user space, in the Linux FOU direct wire format.
//!
//! The pure core (`packet`, `prefix`, `peers`, `hosts`, `config`, `keepalive`, `batch`) decides
//! and does no I/O; the edges (`tun`, `udp`, `fetch`, `netlink`, `metrics`) do the I/O;
//! `control` keeps the peer table current and `datapath` moves packets. The binary (`main.rs`)
//! wires them together. See ARCHITECTURE.md.

pub mod batch;
pub mod cli;
pub mod config;
pub mod control;
pub mod datapath;
pub mod fetch;
pub mod hosts;
pub mod keepalive;
pub mod metrics;
pub mod netlink;
pub mod packet;
pub mod peers;
pub mod prefix;
pub mod privileges;
pub mod show;
pub mod stats;
pub mod tun;
pub mod udp;
