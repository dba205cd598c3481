//! The command line: the original udptun's flags with their meanings and defaults, and the
//! new ones.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgGroup, CommandFactory, FromArgMatches, Parser};

use crate::config;
use crate::logging::LogFormat;
use crate::netlink::InterfaceAddress;
use crate::prefix::Prefix;

/// Where settings come from, in order: said in `--help` and the man page.
pub const PRECEDENCE: &str = "Every flag can also be set by the environment variable UDPTUN_<LONG_NAME> \
(UDPTUN_LOCAL_PORT=7001, UDPTUN_NO_OFFLOAD=true, UDPTUN_ADDRESS=10.0.0.1/24,fd00::1/64), except \
--hosts-url-interval, --ca-file and --ca-path, which keep the original udptun's HOSTS_URL_INTERVAL, \
CA_FILE and CA_PATH; or in the --config file by its long name. The command line wins over the \
environment, the environment over the config file, and the config file over the defaults.";

/// Tunnel IP packets over UDP: each packet routed into the TUN device goes, whole, as one UDP
/// datagram to the real address of its destination (the Linux FOU direct format).
#[derive(Parser, Debug)]
#[command(version, about, max_term_width = 100, args_override_self = true, subcommand_negates_reqs = true)]
#[command(after_help = PRECEDENCE)]
#[command(group(ArgGroup::new("peers").required(true).args(["remote_address", "hosts_file", "hosts_url"])))]
pub struct Cli {
    /// Address the UDP socket binds; `::` listens on IPv4 and IPv6.
    #[arg(short = 'a', long, env = "UDPTUN_LOCAL_ADDRESS", default_value = "0.0.0.0", value_name = "ADDR")]
    pub local_address: IpAddr,

    /// UDP port the socket binds.
    #[arg(short = 'p', long, env = "UDPTUN_LOCAL_PORT", default_value_t = 7777, value_name = "PORT")]
    pub local_port: u16,

    /// The one remote host (name or IP) of a one-to-one tunnel: every packet goes there.
    #[arg(short = 'A', long, env = "UDPTUN_REMOTE_ADDRESS", value_name = "HOST")]
    pub remote_address: Option<String>,

    /// UDP port of the remote host.
    #[arg(short = 'P', long, env = "UDPTUN_REMOTE_PORT", default_value_t = 7777, value_name = "PORT")]
    pub remote_port: u16,

    /// JSON hosts file mapping virtual addresses to real hosts (one-to-many).
    #[arg(long, env = "UDPTUN_HOSTS_FILE", value_name = "FILE")]
    pub hosts_file: Option<PathBuf>,

    /// http(s) URL of the hosts document, fetched at start and then every interval.
    #[arg(long, env = "UDPTUN_HOSTS_URL", value_name = "URL")]
    pub hosts_url: Option<String>,

    /// Seconds between fetches of --hosts-url (fractions allowed).
    #[arg(long, env = "HOSTS_URL_INTERVAL", default_value = "300", value_name = "SECS",
          value_parser = parse_interval)]
    pub hosts_url_interval: Duration,

    /// minisign public key file (as `minisign -G` writes it): the hosts document (--hosts-file
    /// or --hosts-url) is applied only if its signature, FILE.minisig or URL.minisig, verifies
    /// under it and was made no earlier than that of the table in force. Repeatable (or
    /// comma-separated), to accept a new key beside the old one during a key rotation.
    #[arg(long, env = "UDPTUN_HOSTS_PUBKEY", value_name = "FILE", value_delimiter = ',')]
    pub hosts_pubkey: Vec<PathBuf>,

    /// Refuse a signed hosts document whose signature (the `timestamp:` of its trusted comment)
    /// is older than this: publishers re-sign on a schedule, so nodes cannot be kept on a stale
    /// table [default: no limit]
    #[arg(long, env = "UDPTUN_HOSTS_MAX_AGE", value_name = "SECS", value_parser = parse_interval,
          requires = "hosts_pubkey")]
    pub hosts_max_age: Option<Duration>,

    /// PEM file of CA certificates to trust for HTTPS (instead of the system roots).
    #[arg(long, env = "CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Directory of PEM CA certificates to trust for HTTPS (as OpenSSL's -CApath).
    #[arg(long, env = "CA_PATH", value_name = "DIR")]
    pub ca_path: Option<PathBuf>,

    /// Name of the TUN device to create; `%d` picks a free number.
    #[arg(short = 'd', long, env = "UDPTUN_DEVICE", default_value = "tun%d", value_name = "NAME")]
    pub device: String,

    /// MTU of the TUN device [default: 1472 with an IPv4 socket, 1452 with IPv6, so that one
    /// tunnelled packet fits one 1500-byte underlay packet]
    #[arg(long, env = "UDPTUN_MTU", value_name = "BYTES", value_parser = clap::value_parser!(u16).range(576..))]
    pub mtu: Option<u16>,

    /// Data-plane threads, each with its own TUN queue and UDP socket [default: number of CPUs]
    #[arg(long, env = "UDPTUN_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,

    /// Longest a data-plane thread keeps polling (yielding the CPU) after the last packet before
    /// it sleeps, in µs; the window adapts to the traffic, so replies skip a wake-up and an idle
    /// tunnel sleeps at once. 0 never polls; 20000 (about a core while traffic lasts) halves ping.
    #[arg(long, env = "UDPTUN_BUSY_POLL", default_value_t = 200, value_name = "USECS",
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub busy_poll: u64,

    /// Turn off TUN offloads (TSO/GRO) and UDP GSO/GRO: one packet per datagram all the way.
    #[arg(long, env = "UDPTUN_NO_OFFLOAD")]
    pub no_offload: bool,

    /// Put this address on the device and bring it up (repeatable or comma-separated; IPv4 and
    /// IPv6).
    #[arg(long, env = "UDPTUN_ADDRESS", value_name = "CIDR", value_delimiter = ',')]
    pub address: Vec<InterfaceAddress>,

    /// Route this prefix through the device (repeatable or comma-separated).
    #[arg(long, env = "UDPTUN_ROUTE", value_name = "CIDR", value_delimiter = ',')]
    pub route: Vec<Prefix>,

    /// Leave the MSS of TCP SYNs alone. By default a SYN crossing the tunnel (either way) has its
    /// MSS lowered to fit the MTU (MTU - 40 for IPv4, MTU - 60 for IPv6), so TCP works even where
    /// the ICMP errors that tell senders of a smaller path MTU are filtered.
    #[arg(long, env = "UDPTUN_NO_CLAMP_MSS")]
    pub no_clamp_mss: bool,

    /// Accept packets from any outer source address. By default a datagram is accepted only
    /// from the real address the table maps the packet's inner source address to.
    #[arg(long, env = "UDPTUN_ACCEPT_ANY_SOURCE")]
    pub accept_any_source: bool,

    /// Send a keepalive to every peer this often, so NAT mappings stay open.
    #[arg(long, env = "UDPTUN_KEEPALIVE", value_name = "SECS", value_parser = parse_interval)]
    pub keepalive: Option<Duration>,

    /// Seconds between new lookups of the peers' host names (a failed lookup keeps the last
    /// address).
    #[arg(long, env = "UDPTUN_RESOLVE_INTERVAL", default_value = "60", value_name = "SECS", value_parser = parse_interval)]
    pub resolve_interval: Duration,

    /// Seconds one host-name lookup may take from when it starts; a name with no answer by then
    /// keeps its last address.
    #[arg(long, env = "UDPTUN_RESOLVE_TIMEOUT", default_value = "5", value_name = "SECS", value_parser = parse_interval)]
    pub resolve_timeout: Duration,

    /// Seconds a peer's current address stays in force after it was last heard: a datagram from
    /// another port of the peer's IP moves the peer only once it has been silent this long.
    #[arg(long, env = "UDPTUN_ROAM_HOLD", default_value = "15", value_name = "SECS", value_parser = parse_interval)]
    pub roam_hold: Duration,

    /// File holding the shared key (`udptun genkey`): keepalives are authenticated, and only an
    /// authenticated keepalive moves a peer to a new port. Every node needs the same key.
    #[arg(long, env = "UDPTUN_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDR:PORT/metrics.
    #[arg(long, env = "UDPTUN_METRICS_LISTEN", value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,

    /// Per-peer series in the metrics: `on` or `off` [default: on while the table has at most
    /// 1,000 peers, off above]
    #[arg(long, env = "UDPTUN_METRICS_PER_PEER", value_name = "on|off")]
    pub metrics_per_peer: Option<Toggle>,

    /// Switch to this user once the device and socket exist.
    #[arg(long, env = "UDPTUN_USER", value_name = "NAME")]
    pub user: Option<String>,

    /// Switch to this group once the device and socket exist [default: the user's group].
    #[arg(long, env = "UDPTUN_GROUP", value_name = "NAME", requires = "user")]
    pub group: Option<String>,

    /// TOML file setting any of these flags by their long names (`mtu = 1400`,
    /// `address = ["10.0.0.1/24"]`); the command line and the environment win over it. Its
    /// `[nodes."ADDR"]` tables (`host`, `port`) may stand for --hosts-file, reloaded as one.
    #[arg(long, env = "UDPTUN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The config file, when its `[nodes]` tables are the peer source (set by [`parse`]).
    #[arg(skip)]
    pub nodes_config: Option<PathBuf>,

    /// The settings (argument ids) the command line or the environment set, over the config
    /// file's (set by [`parse`]): a reload of the file neither checks nor reports them.
    #[arg(skip)]
    pub set_above_config: Vec<String>,

    /// Print the man page (roff) and exit.
    #[arg(long, hide = true, exclusive = true)]
    pub generate_man: bool,

    /// Print completions for SHELL (bash, zsh, fish, elvish, powershell) and exit.
    #[arg(long, hide = true, exclusive = true, value_name = "SHELL")]
    pub generate_completions: Option<clap_complete::Shell>,

    /// More log detail (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short = 'v', long, env = "UDPTUN_VERBOSE", action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Format of the log lines on stderr.
    #[arg(long, env = "UDPTUN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto, value_name = "FORMAT")]
    pub log_format: LogFormat,

    /// What to do instead of running the tunnel.
    #[command(subcommand)]
    pub action: Option<Action>,
}

/// Commands other than running the tunnel.
#[derive(clap::Subcommand, Debug, PartialEq, Eq)]
pub enum Action {
    /// Print a new random key for --key (64 hex digits) and exit.
    Genkey,
    /// Show what the udptun daemons of this network namespace are doing: device, table, and
    /// each peer with its addresses, where it is reached, when it was last heard and its traffic.
    /// Root or the daemon's user only.
    Show {
        /// Only the daemon of this device.
        device: Option<String>,
        /// One JSON document (an array of them without DEVICE) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// A setting forced on or off.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toggle {
    /// Forced on.
    On,
    /// Forced off.
    Off,
}

/// The longest interval or timeout a flag takes: a year (longer would overflow the clock).
const MAX_INTERVAL_SECS: f64 = 365.0 * 86_400.0;

fn parse_interval(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(seconds.is_finite() && (0.01..=MAX_INTERVAL_SECS).contains(&seconds)) {
        return Err(format!("`{text}`: the interval must be from 0.01 seconds to a year"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// Parses the command line, with the environment under it and the settings of `--config FILE`
/// (if given) under both. Every error is in the configuration; clap's own (`--help` and
/// `--version` included) come back as [`clap::Error`].
pub fn parse() -> Result<Cli> {
    parse_from(std::env::args_os().collect())
}

fn parse_from(args: Vec<OsString>) -> Result<Cli> {
    // A first, forgiving pass finds --config and which flags the command line or the
    // environment set.
    let first = Cli::command().ignore_errors(true).try_get_matches_from(&args).ok();
    let source = |id: &str| first.as_ref().and_then(|m| m.value_source(id));
    check_environment(&|id| source(id) == Some(ValueSource::CommandLine))?;
    let config = first.as_ref().and_then(|m| m.get_one::<PathBuf>("config").cloned());
    let mut full = args.clone();
    let mut nodes = None;
    if let Some(path) = &config {
        let set_above =
            |id: &str| matches!(source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
        let (from_file, nodes_line) = config_args(path, &set_above)?;
        nodes = nodes_line.map(|line| (path.clone(), line));
        full.splice(1..1, from_file);
    }
    // (A first pass that stopped at an error may lack even the defaults: ask, do not assume.)
    let generating = first.as_ref().is_some_and(|m| {
        matches!(m.try_get_one::<bool>("generate_man"), Ok(Some(true)))
            || m.contains_id("generate_completions")
    });
    let mut command = Cli::command();
    if generating || nodes.is_some() {
        // The man page and completions need no peer source; `[nodes]` is one.
        command = command.mut_group("peers", |g| g.required(false));
    }
    if generating {
        // The man page and completions are alone on the command line whatever the environment
        // sets.
        command = command.mut_args(|a| a.env(None::<&str>));
    }
    let matches = command.try_get_matches_from(full)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let Some((path, line)) = nodes {
        if let Some(other) = [
            ("-A", cli.remote_address.is_some()),
            ("--hosts-file", cli.hosts_file.is_some()),
            ("--hosts-url", cli.hosts_url.is_some()),
        ]
        .into_iter()
        .find_map(|(flag, set)| set.then_some(flag))
        {
            bail!(
                "{}: line {line}: `nodes`: the peers come from these tables or from {other}, not both",
                path.display()
            );
        }
        cli.nodes_config = Some(path);
    }
    cli.set_above_config = Cli::command()
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| matches!(source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)))
        .map(str::to_string)
        .collect();
    Ok(cli)
}

/// Checks the value of each flag's environment variable that is set and not overridden by the
/// command line (`on_command_line`), so that an error names the variable, not only the flag.
fn check_environment(on_command_line: &dyn Fn(&str) -> bool) -> Result<()> {
    for arg in Cli::command().get_arguments() {
        let Some(variable) = arg.get_env() else { continue };
        let id = arg.get_id().as_str();
        if std::env::var_os(variable).is_none() || on_command_line(id) {
            continue;
        }
        value_error(alone(Some(id)).try_get_matches_from(["udptun"]))
            .map_err(|e| anyhow!("{}: {e}", variable.to_string_lossy()))?;
    }
    Ok(())
}

/// The command for checking one value alone: no peer source required and no environment
/// variable read but that of the flag `keep_env` (an id).
fn alone(keep_env: Option<&str>) -> clap::Command {
    Cli::command()
        .mut_group("peers", |g| g.required(false))
        .mut_args(|a| if Some(a.get_id().as_str()) == keep_env { a } else { a.env(None::<&str>) })
}

/// A parse's error about a value, if it has one, on one line (without clap's advice to try
/// --help); errors about how flags go together (a missing `--user` for `--group`) are left to
/// the parse of everything.
fn value_error(parsed: Result<clap::ArgMatches, clap::Error>) -> Result<(), String> {
    use clap::error::ErrorKind;
    match parsed {
        Err(e) if !matches!(e.kind(), ErrorKind::MissingRequiredArgument | ErrorKind::ArgumentConflict) => {
            let message = e.render().to_string();
            let lines: Vec<&str> =
                message.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            Err(lines.join(" ").trim_start_matches("error: ").to_string())
        }
        _ => Ok(()),
    }
}

/// The arguments a config file gives (but for the keys set above it, `set_above`), and the line
/// of its `[nodes]` tables if it has them (checked here, so that a bad entry stops the start
/// before any set-up).
fn config_args(path: &Path, set_above: &dyn Fn(&str) -> bool) -> Result<(Vec<OsString>, Option<usize>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--config {}", path.display()))?;
    let origin = path.display().to_string();
    let args = config_to_args(&text, &origin, set_above)?;
    let parsed = config::parse(&text).map_err(|e| anyhow!("{origin}: {e}"))?;
    Ok((args, parsed.nodes.map(|nodes| nodes.line)))
}

/// Turns the text of a TOML config file into command-line arguments, checking each value with
/// the flag's own parser so that errors name the file (`origin`), the line and the key. Keys
/// set above the file (`set_above`: on the command line or in the environment) are left out:
/// those win, lists included.
pub fn config_to_args(text: &str, origin: &str, set_above: &dyn Fn(&str) -> bool) -> Result<Vec<OsString>> {
    let table: std::collections::BTreeMap<toml::Spanned<String>, toml::Value> =
        toml::from_str(text).map_err(|e| anyhow!("{origin}: {}", e.to_string().trim_end()))?;
    let command = Cli::command();
    let mut args = Vec::new();
    for (key, value) in &table {
        let line = text[..key.span().start].matches('\n').count() + 1;
        let key = key.get_ref();
        if key == config::NODES {
            continue; // the peers: `config::parse` reads them
        }
        let place = format!("{origin}: line {line}: `{key}`");
        let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(key.as_str())) else {
            bail!("{place}: no such setting (settings are the long flag names, as in --help)");
        };
        if matches!(key.as_str(), "config" | "generate-man" | "generate-completions" | "help" | "version") {
            bail!("{place}: cannot be set in a config file");
        }
        if set_above(arg.get_id().as_str()) {
            continue;
        }
        let flag = format!("--{key}");
        let values: Vec<String> = match (value, arg.get_action()) {
            (toml::Value::Boolean(true), ArgAction::SetTrue) => Ok(vec![]),
            (toml::Value::Boolean(false), ArgAction::SetTrue) => continue,
            (toml::Value::Integer(n), ArgAction::Count) if (0..=3).contains(n) => {
                args.extend((0..*n).map(|_| OsString::from(&flag)));
                continue;
            }
            (_, ArgAction::SetTrue | ArgAction::Count) => bail!("{place}: expected true or false"),
            (toml::Value::Array(items), ArgAction::Append) => {
                items.iter().map(scalar).collect::<Result<_, _>>()
            }
            (toml::Value::Array(_), _) => bail!("{place}: takes one value, not a list"),
            (scalar_value, _) => scalar(scalar_value).map(|v| vec![v]),
        }
        .map_err(|e| anyhow!("{place}: {e}"))?;
        if values.is_empty() {
            args.push(OsString::from(&flag));
        }
        for value in values {
            // Check the value with the flag's own parser, alone, so the error is about it.
            value_error(alone(None).try_get_matches_from(["udptun", flag.as_str(), value.as_str()]))
                .map_err(|e| anyhow!("{place}: {e}"))?;
            args.push(OsString::from(&flag));
            args.push(OsString::from(value));
        }
    }
    Ok(args)
}

fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        other => Err(format!("unexpected {}", other.type_str())),
    }
}

impl Cli {
    /// The MTU to give the device: as asked, or what fits a 1500-byte underlay packet.
    pub fn mtu(&self) -> u16 {
        self.mtu.unwrap_or(if self.local_address.is_ipv6() { 1452 } else { 1472 })
    }

    /// The MTU that TCP SYNs crossing the tunnel get an MSS to fit, or `None` with
    /// `--no-clamp-mss`.
    pub fn clamp_mss(&self) -> Option<u16> {
        (!self.no_clamp_mss).then(|| self.mtu())
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
    fn mss_clamping_is_on_for_the_device_mtu_unless_turned_off() {
        assert_eq!(parse(&["-A", "a"]).unwrap().clamp_mss(), Some(1472));
        assert_eq!(parse(&["-A", "a", "-a", "::", "--mtu", "1400"]).unwrap().clamp_mss(), Some(1400));
        assert_eq!(parse(&["-A", "a", "--no-clamp-mss"]).unwrap().clamp_mss(), None);
        let args = config_to_args("no-clamp-mss = true\n", "test.toml", &|_| false).unwrap();
        assert_eq!(args, ["--no-clamp-mss"]);
    }

    #[test]
    fn exactly_one_peer_source_is_required() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["-A", "a", "--hosts-file", "h"]).is_err());
        assert!(parse(&["--hosts-url", "http://x/", "--hosts-file", "h"]).is_err());
        assert!(parse(&["--hosts-url", "http://x/"]).is_ok());
    }

    #[test]
    fn nodes_in_the_config_are_the_peer_source_and_the_only_one() {
        let dir = std::env::temp_dir().join(format!("udptun-cli-nodes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nodes.toml");
        std::fs::write(&path, "mtu = 1400\n\n[nodes.\"10.0.0.2\"]\nhost = \"b\"\n").unwrap();
        let args = |extra: &[&str]| -> Vec<OsString> {
            ["udptun", "--config", path.to_str().unwrap()].iter().chain(extra).map(OsString::from).collect()
        };
        let cli = parse_from(args(&[])).unwrap();
        assert_eq!((cli.nodes_config.as_deref(), cli.mtu), (Some(path.as_path()), Some(1400)));
        // What the command line sets, the file does not decide: its reloads leave it alone.
        let cli = parse_from(args(&["--mtu", "1300"])).unwrap();
        assert_eq!((cli.mtu, cli.set_above_config.contains(&"mtu".to_string())), (Some(1300), true));
        for extra in [["-A", "x"], ["--hosts-file", "h.json"], ["--hosts-url", "http://x/"]] {
            let error = parse_from(args(&extra)).unwrap_err().to_string();
            let expected = format!(
                "{}: line 3: `nodes`: the peers come from these tables or from {}, not both",
                path.display(),
                extra[0]
            );
            assert_eq!(error, expected);
        }
        // A config without them is no peer source.
        std::fs::write(&path, "mtu = 1400\n").unwrap();
        assert_eq!(parse_from(args(&["-A", "x"])).unwrap().nodes_config, None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_example_config_loads_with_its_overlay() {
        let text = include_str!("../packaging/udptun.toml");
        let args = config_to_args(text, "udptun.toml", &|_| false).unwrap();
        let mut command = Cli::command().mut_group("peers", |g| g.required(false));
        let cli = Cli::from_arg_matches(
            &command.try_get_matches_from_mut(["udptun".into()].into_iter().chain(args)).unwrap(),
        )
        .unwrap();
        assert_eq!((cli.device.as_str(), cli.address.len()), ("udptun0", 1));
        let nodes = config::parse(text).unwrap().nodes.unwrap();
        let hosts: Vec<&str> = nodes.entries.iter().map(|e| e.host.as_str()).collect();
        assert_eq!(hosts, ["vps1.example.org", "vps2.example.org", "203.0.113.7", "203.0.113.7"]);
    }

    #[test]
    fn every_flag_has_its_environment_variable() {
        for arg in Cli::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let expected = match long {
                "help" | "version" | "generate-man" | "generate-completions" => None,
                // The original udptun's names.
                "hosts-url-interval" => Some("HOSTS_URL_INTERVAL".to_string()),
                "ca-file" => Some("CA_FILE".to_string()),
                "ca-path" => Some("CA_PATH".to_string()),
                _ => Some(format!("UDPTUN_{}", long.to_uppercase().replace('-', "_"))),
            };
            assert_eq!(arg.get_env().and_then(|v| v.to_str()), expected.as_deref(), "--{long}");
        }
    }

    #[test]
    fn config_keys_set_above_the_file_are_left_out() {
        let text = "mtu = 1400\ndevice = \"tun7\"\naddress = [\"10.0.0.1/24\"]\n";
        let args = config_to_args(text, "t.toml", &|id| id == "mtu" || id == "address").unwrap();
        assert_eq!(args, ["--device", "tun7"]);
        let args = config_to_args(text, "t.toml", &|_| false).unwrap();
        assert_eq!(args, ["--address", "10.0.0.1/24", "--device", "tun7", "--mtu", "1400"]);
    }

    #[test]
    fn a_config_value_is_checked_alone_and_a_flag_it_needs_is_not_its_error() {
        // --group needs --user, which the command line may give: not an error of the file's.
        assert!(config_to_args("group = \"nogroup\"\n", "t.toml", &|_| false).is_ok());
        let error = config_to_args("log-format = \"xml\"\n", "t.toml", &|_| false).unwrap_err();
        assert!(
            error.to_string().starts_with("t.toml: line 1: `log-format`: invalid value 'xml'"),
            "{error}"
        );
    }

    #[test]
    fn hosts_pubkeys_are_a_list_and_a_max_age_needs_one() {
        let cli = parse(&[
            "--hosts-url",
            "http://x/",
            "--hosts-pubkey",
            "a.pub,b.pub",
            "--hosts-pubkey",
            "c.pub",
            "--hosts-max-age",
            "3600",
        ])
        .unwrap();
        let keys: Vec<&str> = cli.hosts_pubkey.iter().filter_map(|p| p.to_str()).collect();
        assert_eq!(
            (keys, cli.hosts_max_age),
            (vec!["a.pub", "b.pub", "c.pub"], Some(Duration::from_secs(3600)))
        );
        assert_eq!(parse(&["--hosts-url", "http://x/"]).unwrap().hosts_max_age, None);
        assert!(parse(&["--hosts-url", "http://x/", "--hosts-max-age", "3600"]).is_err());
        let text = "hosts-pubkey = [\"a.pub\", \"b.pub\"]\nhosts-max-age = 60\n";
        let args = config_to_args(text, "t.toml", &|_| false).unwrap();
        assert_eq!(args, ["--hosts-max-age", "60", "--hosts-pubkey", "a.pub", "--hosts-pubkey", "b.pub"]);
    }

    #[test]
    fn intervals_take_fractions_and_refuse_nonsense() {
        let cli = parse(&["--hosts-url", "http://x/", "--hosts-url-interval", "0.5"]).unwrap();
        assert_eq!(cli.hosts_url_interval, Duration::from_millis(500));
        for bad in ["0", "-1", "abc", "inf", "NaN", "1e30", "31536001"] {
            assert!(parse(&["--hosts-url", "http://x/", "--hosts-url-interval", bad]).is_err(), "{bad}");
        }
    }
}
