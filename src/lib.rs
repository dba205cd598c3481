//! udptun: IP packets over UDP in user space, in the Linux FOU direct wire format.
//!
//! The pure core (`packet`, `prefix`, `peers`, `hosts`, `config`, `keepalive`, `batch`,
//! `virtio`, `split`, `coalesce`, `signature`, `steer`, `poll`) decides
//! and does no I/O; the edges (`tun`, `udp`, `fetch`, `netlink`, `metrics`) do the I/O;
//! `control` keeps the peer table current and `datapath` moves packets; `daemon` starts them in
//! order and waits for signals. The binary (`main.rs`) parses the command line, sets up logging
//! and picks the exit status. See ARCHITECTURE.md.

pub mod batch;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod exit;
pub mod fetch;
pub mod hosts;
pub mod keepalive;
pub mod logging;
pub mod manual;
pub mod metrics;
pub mod netlink;
pub mod packet;
pub mod peers;
pub mod poll;
pub mod prefix;
pub mod privileges;
pub mod show;
pub mod signature;
pub mod split;
pub mod stats;
pub mod steer;
pub mod tun;
pub mod udp;
pub mod virtio;
