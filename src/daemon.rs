//! The daemon: start-up in its order and the signal loop.
//!
//! [`run`] installs the signal handlers, opens the UDP sockets and the TUN device and configures
//! it (the privileged set-up), gives up every privilege, loads the first peer table (control
//! plane), starts the data-plane threads and then waits for a signal or a fatal error. The
//! binary (`main.rs`) only parses the command line, sets up logging and turns the outcome into
//! an exit status. See ARCHITECTURE.md.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::cli::Cli;
use crate::control::{self, Command, Control, Family, Keepalive, Resolver, Source, Timing};
use crate::datapath::{self, Fatal, Options, Queue};
use crate::exit::Failure;
use crate::fetch::{Fetcher, Trust};
use crate::keepalive::{self, Key};
use crate::netlink::Netlink;
use crate::peers::Roaming;
use crate::signature::{self, Policy};
use crate::stats::{self, Shared};
use crate::{metrics, privileges, show, tun, udp};

/// What wakes the main thread.
enum Event {
    Signal(i32),
    Fatal(Fatal),
}

/// Runs the tunnel that `cli` describes until SIGINT or SIGTERM (`Ok`) or a fatal error. A
/// start-up error is marked ([`Failure`]) when a restart cannot fix it (a bad `--key` file,
/// `--user` or `--hosts-url`, a hosts file that is missing or does not parse, an address of the
/// wrong family) or may (a name that does not resolve, a hosts URL that fails).
pub fn run(cli: &Cli) -> Result<()> {
    // Signal handlers first: a SIGHUP during the first fetch queues a reload, and SIGTERM ends
    // the process at any time (during start-up, at once). The handlers are installed here; the
    // thread that reads what they caught starts once privileges are dropped.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;

    let family = if cli.local_address.is_ipv6() { Family::Any } else { Family::V4 };
    let identity = match &cli.user {
        Some(user) => {
            Some(privileges::resolve(user, cli.group.as_deref()).map_err(|e| Failure::Config.mark(e))?)
        }
        None => None,
    };
    let key = match &cli.key {
        Some(path) => Some(read_key(path).map_err(|e| Failure::Config.mark(e))?),
        None => None,
    };
    if key.is_some() && cli.keepalive.is_some() && cli.address.is_empty() {
        tracing::warn!(
            "--key: authenticated keepalives name this node by its first --address, and it has none: \
             a peer with a hosts table will refuse them (a one-to-one peer needs none)"
        );
    }
    if let Some(keepalive) = cli.keepalive.filter(|&k| k >= cli.roam_hold) {
        tracing::warn!(
            "--keepalive {} s is not shorter than --roam-hold {} s: a peer with the same hold lets \
             this node's address go between two keepalives",
            keepalive.as_secs_f64(),
            cli.roam_hold.as_secs_f64()
        );
    }
    let policy = match cli.hosts_pubkey.as_slice() {
        [] => None,
        paths => Some(Policy::new(read_public_keys(paths)?, cli.hosts_max_age)),
    };
    let source = if let Some(host) = &cli.remote_address {
        Source::Remote(host.clone(), cli.remote_port)
    } else if let Some(path) = &cli.hosts_file {
        Source::File(path.clone())
    } else if let Some(path) = &cli.nodes_config {
        Source::Config(path.clone(), cli.set_above_config.clone())
    } else if let Some(url) = &cli.hosts_url {
        let trust = Trust { ca_file: cli.ca_file.as_deref(), ca_path: cli.ca_path.as_deref() };
        let fetcher = Fetcher::new(url, &trust, control::fetch_timeout(cli.hosts_url_interval))
            .map_err(|e| Failure::Config.mark(e))?;
        if fetcher.is_plain_http() && policy.is_none() {
            tracing::warn!(
                "{}: plain http: anyone on the path can rewrite the peer table; use https or \
                 --hosts-pubkey",
                fetcher.url()
            );
        }
        Source::Url(Box::new(fetcher))
    } else {
        // cli::parse requires one; a library caller may not have gone through it.
        return Err(Failure::Config.mark(anyhow::anyhow!(
            "no peers: give -A, --hosts-file, --hosts-url or [nodes] in the config file"
        )));
    };

    if policy.is_some() && !matches!(source, Source::File(_) | Source::Url(_)) {
        return Err(Failure::Config.mark(anyhow::anyhow!(
            "--hosts-pubkey: only a hosts document is signed (--hosts-file or --hosts-url), not -A or [nodes]"
        )));
    }

    // Set-up, the only part that needs privileges: sockets, device, addresses, routes.
    let threads = match cli.threads {
        Some(n) => usize::from(n),
        None => thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let local = SocketAddr::new(cli.local_address, cli.local_port);
    udp::ensure_port_free(local).with_context(|| format!("UDP port {local}"))?;
    let offload = !cli.no_offload;
    let mut sockets = Vec::with_capacity(threads);
    for _ in 0..threads {
        sockets.push(udp::bind(local, threads > 1).with_context(|| format!("UDP port {local}"))?);
    }
    if threads > 1 {
        // Without it all of one peer's flows share one thread; the tunnel works either way.
        match udp::steer_by_inner_flow(&sockets) {
            Ok(()) => tracing::debug!("{threads} sockets: datagrams spread by inner flow"),
            Err(e) => tracing::warn!("cannot spread datagrams by inner flow ({e}): by peer only"),
        }
    }
    let gso = offload && udp::supports_gso(&sockets[0]);
    let gro = offload && sockets.iter().all(udp::enable_gro);
    let keepalive = match cli.keepalive {
        Some(interval) => Some(Keepalive {
            interval,
            socket: sockets[0].try_clone()?,
            key: key.map(|key| (key, keepalive_sender(cli))),
        }),
        None => None,
    };
    let device = tun::create(&cli.device, threads, offload, cli.mtu())
        .with_context(|| format!("creating TUN device {}", cli.device))?;
    configure_device(cli, &device.name)?;
    // Abstract socket names are open to every user of the namespace: if someone holds this one,
    // the tunnel runs all the same, without `udptun show`.
    let show_listener = show::bind(&device.name)
        .inspect_err(|e| {
            tracing::warn!(
                "udptun show will not work: its socket @{} is taken by another process of this \
                 network namespace ({e})",
                show::socket_name(&device.name)
            )
        })
        .ok();
    let metrics_listener = match cli.metrics_listen {
        Some(listen) => Some(metrics::bind(listen).with_context(|| format!("--metrics-listen {listen}"))?),
        None => None,
    };

    // Nothing from here on needs a privilege: give them all up before the first fetch, parse
    // or lookup, and before any other thread starts (threads inherit the empty sets).
    if let Some((uid, gid)) = identity {
        privileges::drop_to(uid, gid)?;
        tracing::info!("now running as uid {uid}, gid {gid}");
    }
    privileges::drop_capabilities()?;

    let (events, wake) = mpsc::channel();
    let started = Arc::new(AtomicBool::new(false));
    let signal_events = events.clone();
    let signal_started = started.clone();
    thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in signals.forever() {
            if signal != SIGHUP && !signal_started.load(Relaxed) {
                tracing::info!("signal {signal} during start-up: exiting");
                std::process::exit(0);
            }
            if signal_events.send(Event::Signal(signal)).is_err() {
                break;
            }
        }
    })?;

    // The first table must load, or there is nothing to run (a supervisor will retry).
    let resolver = Resolver::new(family, cli.resolve_timeout)?;
    let (control, table) = Control::start(source, resolver, policy)?;
    control::release_free_memory();
    // Nothing slow is left: from here a signal waits for the loop below, which shuts down
    // cleanly, with the summary.
    started.store(true, Relaxed);

    table.start_holds(stats::clock_ms());
    let shared = Arc::new(Shared::new(table, control.table_origin()));
    shared.stats.last_load_unix.store(control::unix_now(), Relaxed);
    let options = Options {
        tun_offload: device.offload,
        tun_udp_offload: device.udp_offload,
        gso,
        gro,
        socket_is_v6: local.is_ipv6(),
        busy_poll: Duration::from_micros(cli.busy_poll),
        accept_any_source: cli.accept_any_source,
        roaming: Roaming { hold_ms: cli.roam_hold.as_millis() as u64, keyed: key.is_some() },
        key,
        clamp_mss: cli.clamp_mss(),
    };
    let queues = device.queues.into_iter().zip(sockets).map(|(device, socket)| Queue { device, socket });
    let fatal_events = events.clone();
    let on_fatal = Arc::new(move |fatal| drop(fatal_events.send(Event::Fatal(fatal))));
    datapath::spawn(queues.collect(), options, &shared, on_fatal)?;
    if let (Some(listener), Some(listen)) = (metrics_listener, cli.metrics_listen) {
        metrics::serve(listener, shared.clone(), cli.metrics_per_peer)?;
        tracing::info!("metrics at http://{listen}/metrics");
    }
    let status = show::Status {
        device: device.name.clone(),
        listen: local,
        threads,
        offloads: [("tun", device.offload), ("gso", gso), ("gro", gro)],
    };
    if let Some(listener) = show_listener {
        show::serve(listener, status, shared.clone())?;
    }
    if let Some(keepalive) = keepalive {
        control::spawn_keepalives(keepalive, shared.clone())?;
    }

    let (commands, command_queue) = mpsc::channel();
    let timing = Timing { url_interval: cli.hosts_url_interval, resolve_interval: cli.resolve_interval };
    let control_shared = shared.clone();
    thread::Builder::new()
        .name("control".into())
        .spawn(move || control.run(control_shared, timing, command_queue))?;

    // Ready: the device is configured, the first table is loaded and every thread runs. Tests
    // and operators take this line to mean so.
    tracing::info!(
        "device {} (mtu {}), listening on {local}, {threads} thread(s), offloads: tun {}, gso {gso}, gro {gro}",
        device.name,
        cli.mtu(),
        device.offload,
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    loop {
        // Only a socket bound to one address needs the once-a-second check below; otherwise
        // an idle daemon wakes for nothing.
        let next = if local.ip().is_unspecified() {
            wake.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
        } else {
            wake.recv_timeout(Duration::from_secs(1))
        };
        let event = match next {
            Ok(event) => event,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // A socket bound to an address that is deleted stays open but dead: notice it.
                if !local.ip().is_unspecified() && !udp::address_usable(local.ip()) {
                    anyhow::bail!("the local address {} is gone; {}", local.ip(), shared.stats.summary());
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        };
        match event {
            Event::Signal(SIGHUP) => drop(commands.send(Command::Reload)),
            Event::Signal(signal) => {
                tracing::info!("signal {signal}: shutting down; {}", shared.stats.summary());
                return Ok(());
            }
            Event::Fatal(Fatal(message)) => {
                anyhow::bail!("{message}; {}", shared.stats.summary())
            }
        }
    }
}

/// A new random key from the kernel, for `udptun genkey`.
pub fn new_key() -> std::io::Result<Key> {
    let mut bytes = [0u8; keepalive::KEY_LEN];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: writes at most the rest of `bytes`.
        let rc = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0) };
        if rc < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error);
            }
        } else {
            filled += rc as usize;
        }
    }
    Ok(Key::from_bytes(bytes))
}

/// Reads the shared key of `--key`.
fn read_key(path: &Path) -> Result<Key> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--key {}", path.display()))?;
    Key::parse(&text).map_err(|e| anyhow::anyhow!("--key {}: {e}", path.display()))
}

/// Reads the minisign public keys of `--hosts-pubkey` (before privileges are dropped, as the
/// other key files are); any that is missing or is no key is a configuration error.
fn read_public_keys(paths: &[PathBuf]) -> Result<Vec<minisign_verify::PublicKey>> {
    paths
        .iter()
        .map(|path| {
            let origin = format!("--hosts-pubkey {}", path.display());
            let bytes = control::read_small_file(path).with_context(|| origin.clone())?;
            signature::parse_public_key(&bytes, &origin).map_err(anyhow::Error::msg)
        })
        .collect::<Result<_>>()
        .map_err(|e| Failure::Config.mark(e))
}

/// How authenticated keepalives name this node: its first tunnel address (`--address`), which
/// its peers' tables map to it; unspecified when it has none (a one-to-one peer needs none).
fn keepalive_sender(cli: &Cli) -> IpAddr {
    cli.address.first().map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |a| a.addr)
}

/// Puts the addresses on the device, brings it up and adds the routes (`--address`, `--route`).
fn configure_device(cli: &Cli, name: &str) -> Result<()> {
    if cli.address.is_empty() && cli.route.is_empty() {
        return Ok(());
    }
    let mut netlink = Netlink::open().context("opening a netlink socket")?;
    let index = Netlink::index(name).with_context(|| format!("device {name}"))?;
    for address in &cli.address {
        netlink
            .add_address(index, *address)
            .with_context(|| format!("--address {}/{}", address.addr, address.len))?;
    }
    netlink.set_up(index).with_context(|| format!("setting {name} up"))?;
    for route in &cli.route {
        netlink
            .add_route(index, route.addr(), route.prefix_len())
            .with_context(|| format!("--route {route}"))?;
    }
    Ok(())
}
