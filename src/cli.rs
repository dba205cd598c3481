//! The command line: the original udptun's flags with their meanings and defaults, and the
//! new ones.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser};

/// Tunnel IP packets over UDP: each packet routed into the TUN device goes, whole and unchanged,
/// as one UDP datagram to the real address of its destination (the Linux FOU direct format).
#[derive(Parser, Debug)]
#[command(version, about, max_term_width = 100)]
#[command(group(ArgGroup::new("peers").required(true).args(["remote_address", "hosts_file", "hosts_url"])))]
pub struct Cli {
    /// Address the UDP socket binds; `::` listens on IPv4 and IPv6.
    #[arg(short = 'a', long, default_value = "0.0.0.0", value_name = "ADDR")]
    pub local_address: IpAddr,

    /// UDP port the socket binds.
    #[arg(short = 'p', long, default_value_t = 7777, value_name = "PORT")]
    pub local_port: u16,

    /// The one remote host (name or IP) of a one-to-one tunnel: every packet goes there.
    #[arg(short = 'A', long, value_name = "HOST")]
    pub remote_address: Option<String>,

    /// UDP port of the remote host.
    #[arg(short = 'P', long, default_value_t = 7777, value_name = "PORT")]
    pub remote_port: u16,

    /// JSON hosts file mapping virtual addresses to real hosts (one-to-many).
    #[arg(long, value_name = "FILE")]
    pub hosts_file: Option<PathBuf>,

    /// http(s) URL of the hosts document, fetched at start and then every interval.
    #[arg(long, value_name = "URL")]
    pub hosts_url: Option<String>,

    /// Seconds between fetches of --hosts-url (fractions allowed).
    #[arg(long, env = "HOSTS_URL_INTERVAL", default_value = "300", value_name = "SECS",
          value_parser = parse_interval)]
    pub hosts_url_interval: Duration,

    /// PEM file of CA certificates to trust for HTTPS (instead of the system roots).
    #[arg(long, env = "CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Directory of PEM CA certificates to trust for HTTPS (as OpenSSL's -CApath).
    #[arg(long, env = "CA_PATH", value_name = "DIR")]
    pub ca_path: Option<PathBuf>,

    /// Name of the TUN device to create; `%d` picks a free number.
    #[arg(short = 'd', long, default_value = "tun%d", value_name = "NAME")]
    pub device: String,

    /// MTU of the TUN device [default: 1472 with an IPv4 socket, 1452 with IPv6, so that one
    /// tunnelled packet fits one 1500-byte underlay packet]
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(576..))]
    pub mtu: Option<u16>,

    /// Data-plane threads, each with its own TUN queue and UDP socket [default: number of CPUs]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,

    /// Microseconds a data-plane thread keeps polling (yielding the CPU between polls) after the
    /// last packet before it sleeps: replies within it skip a wake-up. 0 saves CPU, more cuts latency.
    #[arg(long, default_value_t = 200, value_name = "USECS",
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub busy_poll: u64,

    /// Turn off TUN offloads (TSO/GRO) and UDP GSO/GRO: one packet per datagram all the way.
    #[arg(long)]
    pub no_offload: bool,

    /// More log detail (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short = 'v', long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(seconds.is_finite() && seconds >= 0.01) {
        return Err(format!("`{text}`: the interval must be at least 0.01 seconds"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

impl Cli {
    /// The MTU to give the device: as asked, or what fits a 1500-byte underlay packet.
    pub fn mtu(&self) -> u16 {
        self.mtu.unwrap_or(if self.local_address.is_ipv6() { 1452 } else { 1472 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("udptun").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn original_flags_keep_their_defaults() {
        let cli = parse(&["-A", "peer.example.org"]).unwrap();
        assert_eq!(cli.local_address.to_string(), "0.0.0.0");
        assert_eq!((cli.local_port, cli.remote_port), (7777, 7777));
        assert_eq!(cli.device, "tun%d");
        assert_eq!(cli.hosts_url_interval, Duration::from_secs(300));
        assert_eq!(cli.mtu(), 1472);
        let cli =
            parse(&["-a", "::", "-p", "1", "-P", "2", "-d", "udptun", "--hosts-file", "h.json"]).unwrap();
        assert_eq!((cli.local_port, cli.remote_port, cli.mtu()), (1, 2, 1452));
    }

    #[test]
    fn exactly_one_peer_source_is_required() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["-A", "a", "--hosts-file", "h"]).is_err());
        assert!(parse(&["--hosts-url", "http://x/", "--hosts-file", "h"]).is_err());
        assert!(parse(&["--hosts-url", "http://x/"]).is_ok());
    }

    #[test]
    fn intervals_take_fractions_and_refuse_nonsense() {
        let cli = parse(&["--hosts-url", "http://x/", "--hosts-url-interval", "0.5"]).unwrap();
        assert_eq!(cli.hosts_url_interval, Duration::from_millis(500));
        for bad in ["0", "-1", "abc", "inf", "NaN"] {
            assert!(parse(&["--hosts-url", "http://x/", "--hosts-url-interval", bad]).is_err(), "{bad}");
        }
    }
}
