//! udptun: IP over UDP in user space, in the Linux FOU direct wire format.
//!
//! `main` wires the pieces together: it loads the first peer table (control plane), opens the
//! UDP sockets and the TUN device (I/O edges), starts the data-plane threads and then waits for
//! a signal or a fatal error. See ARCHITECTURE.md.

mod batch;
mod cli;
mod control;
mod datapath;
mod fetch;
mod hosts;
mod packet;
mod peers;
mod stats;
mod tun;
mod udp;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing_subscriber::EnvFilter;

use crate::cli::Cli;
use crate::control::{Family, Source};
use crate::datapath::{Fatal, Options, Queue, Shared};
use crate::fetch::{Fetcher, Trust};
use crate::peers::PeerTable;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();

    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// What wakes the main thread.
enum Event {
    Signal(i32),
    Fatal(Fatal),
}

fn run(cli: &Cli) -> Result<()> {
    let family = if cli.local_address.is_ipv6() { Family::Any } else { Family::V4 };

    // The first table must load, or there is nothing to run (a supervisor will retry).
    let (table, source) = if let Some(host) = &cli.remote_address {
        (PeerTable::Single(control::check_remote(host, cli.remote_port, family)?), Source::Remote)
    } else if let Some(path) = &cli.hosts_file {
        (control::load_file(path, family)?, Source::File(path.clone()))
    } else if let Some(url) = &cli.hosts_url {
        let trust = Trust { ca_file: cli.ca_file.as_deref(), ca_path: cli.ca_path.as_deref() };
        let timeout = control::fetch_timeout(cli.hosts_url_interval)?;
        let mut fetcher = Fetcher::new(url, &trust, timeout)?;
        let table = control::load_url(&mut fetcher, family)?
            .context("the first fetch of the hosts URL returned no document")?;
        (table, Source::Url(fetcher, cli.hosts_url_interval))
    } else {
        unreachable!("clap requires one of -A, --hosts-file, --hosts-url");
    };

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
    let gso = offload && udp::supports_gso(&sockets[0]);
    let gro = offload && sockets.iter().all(udp::enable_gro);

    let device = tun::create(&cli.device, threads, offload, cli.mtu())
        .with_context(|| format!("creating TUN device {}", cli.device))?;
    tracing::info!(
        "device {} (mtu {}), listening on {local}, {threads} thread(s), offloads: tun {}, gso {gso}, gro {gro}",
        device.name,
        cli.mtu(),
        device.offload,
    );

    let shared = Arc::new(Shared { table: ArcSwap::from_pointee(table), stats: Default::default() });
    let options = Options {
        tun_offload: device.offload,
        gso,
        gro,
        socket_is_v6: local.is_ipv6(),
        busy_poll: Duration::from_micros(cli.busy_poll),
    };
    let queues = device.queues.into_iter().zip(sockets).map(|(device, socket)| Queue { device, socket });
    let (events, wake) = mpsc::channel();
    let fatal_events = events.clone();
    let on_fatal = Arc::new(move |fatal| drop(fatal_events.send(Event::Fatal(fatal))));
    datapath::spawn(queues.collect(), options, &shared, on_fatal)?;

    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let signal_events = events.clone();
    thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in signals.forever() {
            if signal_events.send(Event::Signal(signal)).is_err() {
                break;
            }
        }
    })?;

    let reloadable = match source {
        Source::Remote => None,
        Source::File(path) => Some(path),
        Source::Url(fetcher, interval) => {
            control::spawn_url_refresh(fetcher, interval, family, shared.clone())?;
            None
        }
    };

    for event in wake {
        match event {
            Event::Signal(SIGHUP) => match &reloadable {
                Some(path) => control::reload_file(path, family, &shared),
                None => tracing::info!("SIGHUP: no hosts file to reload"),
            },
            Event::Signal(signal) => {
                tracing::info!("signal {signal}: shutting down; {}", shared.stats.summary());
                return Ok(());
            }
            Event::Fatal(Fatal(message)) => {
                anyhow::bail!("{message}; {}", shared.stats.summary())
            }
        }
    }
    Ok(())
}
