//! The control plane: turns the configured peer source (one remote, a hosts file, the config
//! file's `[nodes]`, a hosts URL) into a [`PeerTable`] and keeps it current: reloads on SIGHUP
//! and when the file changes, refetches the URL and re-resolves host names. Each new table is
//! published whole; a source that fails once running leaves the last good table in force.
//! Keepalives run on a thread of their own and name lookups on a pool, so that nothing slow here
//! delays what has a deadline.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow};
use socket2::Socket;

use crate::config;
use crate::exit::Failure;
use crate::fetch::{Fetched, Fetcher, MAX_BODY_BYTES};
use crate::hosts::{self, Entry};
use crate::keepalive::{self, Key};
use crate::peers::PeerTable;
use crate::signature::{self, Policy, Refusal};
use crate::stats::{self, Shared, TableOrigin};
use crate::udp;

/// Which address families peers may have: an IPv4 socket reaches only IPv4 peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4 addresses only.
    V4,
    /// IPv4 or IPv6 (a dual-stack socket).
    Any,
}

/// Resolves `host` (a name or an address literal) to the first address of a usable family.
/// A name may block for as long as the system resolver likes: call it through [`Resolver`].
pub fn resolve(host: &str, port: u16, family: Family) -> io::Result<SocketAddr> {
    if let Some(literal) = resolve_literal(host, port, family) {
        return literal;
    }
    let usable = |addr: &SocketAddr| family == Family::Any || addr.is_ipv4();
    let found: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    found.iter().copied().find(usable).ok_or_else(|| {
        io::Error::other(if found.is_empty() {
            "no address found"
        } else {
            "only IPv6 addresses found; an IPv6 peer needs an IPv6 socket (-a ::)"
        })
    })
}

/// `host` as an address literal, if it is one (no lookup needed).
fn resolve_literal(host: &str, port: u16, family: Family) -> Option<io::Result<SocketAddr>> {
    let ip = host.parse::<IpAddr>().ok()?;
    Some(if family == Family::Any || ip.is_ipv4() {
        Ok(SocketAddr::new(ip, port))
    } else {
        Err(io::Error::other("an IPv6 peer needs an IPv6 socket (-a ::)"))
    })
}

/// Host-name lookups off the control thread: a few worker threads resolve in parallel, each
/// lookup has `timeout` from when a worker takes it up, and a round gives up on what is left
/// once nothing has moved for `timeout` (every worker stuck in a resolver that does not answer).
/// A lookup that never returns ties up one worker, never the control plane; lookups whose round
/// is over are skipped.
pub struct Resolver {
    jobs: mpsc::Sender<Lookup>,
    family: Family,
    timeout: Duration,
}

/// How many lookups run at once.
const RESOLVER_THREADS: usize = 8;

type Name = (String, u16);

struct Lookup {
    name: Name,
    /// Where its answer goes in the round's results.
    index: usize,
    /// Set once the round has given up or finished: skip it.
    round_over: Arc<AtomicBool>,
    progress: mpsc::Sender<(usize, Progress)>,
}

/// What a worker tells the round about one lookup.
enum Progress {
    Started,
    Done(io::Result<SocketAddr>),
}

impl Resolver {
    /// Starts the workers; each lookup gives up after `timeout`.
    pub fn new(family: Family, timeout: Duration) -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Lookup>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..RESOLVER_THREADS {
            let queue = queue.clone();
            thread::Builder::new().name(format!("resolver-{index}")).spawn(move || {
                loop {
                    let next = queue.lock().map_err(drop).and_then(|q| q.recv().map_err(drop));
                    let Ok(job) = next else { return };
                    if job.round_over.load(Relaxed)
                        || job.progress.send((job.index, Progress::Started)).is_err()
                    {
                        continue;
                    }
                    let result = resolve(&job.name.0, job.name.1, family);
                    let _ = job.progress.send((job.index, Progress::Done(result)));
                }
            })?;
        }
        Ok(Self { jobs, family, timeout })
    }

    /// Looks up every host name in `names` (address literals are skipped: they need no
    /// lookup), each once; a name with no answer in time gets an error.
    fn resolve_all<'a>(
        &self,
        names: impl IntoIterator<Item = (&'a str, u16)>,
    ) -> HashMap<(&'a str, u16), io::Result<SocketAddr>> {
        let (progress, updates) = mpsc::channel();
        let round_over = Arc::new(AtomicBool::new(false));
        let mut index_of = HashMap::new();
        let mut results: Vec<Option<io::Result<SocketAddr>>> = Vec::new();
        for name in names {
            if index_of.contains_key(&name) || resolve_literal(name.0, name.1, self.family).is_some() {
                continue;
            }
            let index = results.len();
            index_of.insert(name, index);
            let job = Lookup {
                name: (name.0.to_string(), name.1),
                index,
                round_over: round_over.clone(),
                progress: progress.clone(),
            };
            results.push(self.jobs.send(job).err().map(|_| Err(io::Error::other("no resolver thread left"))));
        }
        drop(progress);
        let mut pending = results.iter().filter(|r| r.is_none()).count();
        let mut started: HashMap<usize, Instant> = HashMap::new();
        let mut last_progress = Instant::now();
        while pending > 0 {
            let oldest = started.values().min().map_or(last_progress, |&at| at.min(last_progress));
            let deadline = oldest + self.timeout;
            match updates.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((index, Progress::Started)) => {
                    started.insert(index, Instant::now());
                    last_progress = Instant::now();
                }
                Ok((index, Progress::Done(result))) => {
                    if started.remove(&index).is_some() && results[index].is_none() {
                        results[index] = Some(result);
                        pending -= 1;
                    }
                    last_progress = Instant::now();
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    let expired: Vec<usize> = started
                        .iter()
                        .filter(|&(_, &at)| now >= at + self.timeout)
                        .map(|(&i, _)| i)
                        .collect();
                    for index in expired {
                        started.remove(&index);
                        results[index] = Some(Err(self.timed_out()));
                        pending -= 1;
                    }
                    if now >= last_progress + self.timeout {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        round_over.store(true, Relaxed);
        index_of
            .into_iter()
            .map(|(name, index)| (name, results[index].take().unwrap_or_else(|| Err(self.timed_out()))))
            .collect()
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {} s (--resolve-timeout)", self.timeout.as_secs_f64()),
        )
    }
}

/// What the table is made from, before names are resolved.
#[derive(Clone, Debug)]
enum Document {
    /// One-to-one: this host and port.
    Remote(String, u16),
    /// One-to-many: the entries of a hosts document.
    Hosts(Vec<Entry>),
}

/// Builds a table from `document`, each host's address given by `lookup` (an address literal
/// is its own address). `origin` names the document in messages.
fn build_table(
    document: &Document,
    origin: &str,
    lookup: &mut dyn FnMut(&str, u16) -> io::Result<SocketAddr>,
) -> Result<PeerTable> {
    match document {
        Document::Remote(host, port) => lookup(host, *port)
            .map(PeerTable::single)
            .map_err(|e| unresolved(host, anyhow!("-A {host}: does not resolve: {e}"))),
        Document::Hosts(entries) => {
            // Check every host first, so that the table is built straight from the entries,
            // with no copy of them in between (a document may have hundreds of thousands).
            for entry in entries {
                lookup(&entry.host, entry.port).map_err(|e| {
                    let message = anyhow!(
                        "{origin}: line {}: `{}`: host `{}` does not resolve: {e}",
                        entry.line,
                        entry.prefix,
                        entry.host
                    );
                    unresolved(&entry.host, message)
                })?;
            }
            Ok(PeerTable::from_entries(
                entries.iter().filter_map(|e| Some((e.prefix, lookup(&e.host, e.port).ok()?))),
            ))
        }
    }
}

/// `error`, about `host` that did not resolve, marked for the exit status: an address literal
/// fails only by its family, which no restart changes; a name may resolve later.
fn unresolved(host: &str, error: anyhow::Error) -> anyhow::Error {
    let failure = if host.parse::<IpAddr>().is_ok() { Failure::Config } else { Failure::Temporary };
    failure.mark(error)
}

/// Where the peer table comes from.
pub enum Source {
    /// A fixed remote host (`-A`).
    Remote(String, u16),
    /// A hosts file, reloaded on SIGHUP and when it changes.
    File(PathBuf),
    /// The `[nodes]` tables of the config file (`--config`), reloaded as a hosts file is; its
    /// other settings that changed are reported as needing a restart, but for those the command
    /// line or the environment set (their argument ids here), which the file does not decide.
    Config(PathBuf, Vec<String>),
    /// A hosts URL, refetched every interval.
    Url(Box<Fetcher>),
}

/// How often the control plane does what.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Between fetches of the hosts URL (before jitter).
    pub url_interval: Duration,
    /// Between re-resolutions of host names (and retries of a hosts file that failed).
    pub resolve_interval: Duration,
}

/// What the main thread tells the control plane.
#[derive(Debug)]
pub enum Command {
    /// SIGHUP: reload the hosts file, or fetch the URL now.
    Reload,
}

/// The address each (host name, port) of a document resolved to (address literals are not kept).
type Resolved = HashMap<Name, SocketAddr>;

/// How often a hosts file is checked for changes.
const FILE_CHECK: Duration = Duration::from_secs(1);

/// The control plane's state: the source, the current document and the last good addresses.
pub struct Control {
    source: Source,
    resolver: Resolver,
    document: Document,
    /// The last address each host name resolved to, kept when a later lookup fails.
    resolved: Resolved,
    /// The version of the hosts file (and its signature) whose table is in force (or that last
    /// failed).
    file_stamp: Stamps,
    /// With `--hosts-pubkey`: the keys and the age a document's signature must have.
    policy: Option<Policy>,
    /// The signed timestamp of the document whose table is in force (with a policy): an older
    /// one is refused.
    signed: Option<u64>,
    /// The last reload failed: try again at the next re-resolution.
    retry: bool,
    /// The config file's other settings as the first table was loaded with them (a
    /// [`Source::Config`] only): what a change is told against.
    start_settings: Option<toml::Table>,
}

/// What identifies a version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino() })
}

/// The stamps of a watched file and, when documents must be signed, of its signature file: a
/// change to either reloads (a publisher writes the signature after the document).
type Stamps = [Option<FileStamp>; 2];

fn stamps(path: &Path, signed: bool) -> Stamps {
    [stamp(path), signed.then(|| stamp(&signature_path(path))).flatten()]
}

/// Where a hosts file's detached signature is: its name plus `.minisig`.
fn signature_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(signature::SUFFIX);
    PathBuf::from(name)
}

/// What marks a new document as the one in force, once its table is published.
enum Version {
    None,
    Stamp(Stamps),
    /// A config file's: its stamp and its other settings.
    Config(Stamps, toml::Table),
    Validators(crate::fetch::Validators),
}

impl Control {
    /// Loads the first table. Any failure here is fatal: there would be nothing to run. A hosts
    /// file that cannot be read or parsed is a configuration error; a hosts URL that fails, or
    /// serves a document that does not load, may pass (its server can be fixed without touching
    /// this node), as may a name that does not resolve. With a `policy` (`--hosts-pubkey`), a
    /// hosts file or URL is applied only with a signature that it accepts, now and at every
    /// reload; a refusal is marked as the source's other failures are.
    pub fn start(source: Source, resolver: Resolver, policy: Option<Policy>) -> Result<(Self, PeerTable)> {
        let document = Document::Hosts(Vec::new());
        let mut control = Self {
            source,
            resolver,
            document,
            resolved: HashMap::new(),
            file_stamp: [None, None],
            policy,
            signed: None,
            retry: false,
            start_settings: None,
        };
        let read = control.read_source().map_err(|e| match control.source {
            Source::File(_) | Source::Config(..) => Failure::Config.mark(e),
            Source::Remote(..) | Source::Url(_) => Failure::Temporary.mark(e),
        });
        let (document, version, signed) = read?.context("the first fetch")?;
        let (table, resolved) = control.resolve(&document, true).map_err(|e| match control.source {
            // Whatever is wrong in a served document, its server can mend it: a restart may pass.
            Source::Url(_) => Failure::Temporary.mark(e),
            _ => e,
        })?;
        control.document = document;
        control.resolved = resolved;
        control.commit(version, signed);
        Ok((control, table))
    }

    /// Where the table in force came from and which version it is, as of now.
    pub fn table_origin(&self) -> TableOrigin {
        let (kind, etag) = match &self.source {
            Source::Remote(..) => ("remote", None),
            Source::File(_) => ("file", None),
            Source::Config(..) => ("config", None),
            Source::Url(fetcher) => ("url", fetcher.etag().map(str::to_string)),
        };
        TableOrigin { kind, location: self.origin(), loaded_unix: unix_now(), etag, signed_unix: self.signed }
    }

    fn origin(&self) -> String {
        match &self.source {
            Source::Remote(host, _) => format!("-A {host}"),
            Source::File(path) | Source::Config(path, _) => path.display().to_string(),
            Source::Url(fetcher) => fetcher.url().to_string(),
        }
    }

    /// Reads the source: a new document, what marks its version and its signed timestamp (with
    /// a policy), or `None` if the server says the one in force is unchanged. A signed document
    /// is checked before it is parsed.
    fn read_source(&mut self) -> Result<Option<(Document, Version, Option<u64>)>> {
        let (policy, in_force) = (self.policy.as_ref(), self.signed);
        match &mut self.source {
            Source::Remote(host, port) => {
                Ok(Some((Document::Remote(host.clone(), *port), Version::None, None)))
            }
            Source::File(path) => {
                let stamps = stamps(path, policy.is_some());
                let origin = path.display().to_string();
                let text = read_file(path)?;
                let signed = check_signature(policy, in_force, &origin, &text, || {
                    let at = signature_path(path);
                    Ok((at.display().to_string(), read_signature_file(&at)?))
                })?;
                Ok(Some((parse(&text, &origin)?, Version::Stamp(stamps), signed)))
            }
            Source::Config(path, set_above) => {
                let stamps = stamps(path, false);
                let (entries, settings) = read_config(path, set_above)?;
                Ok(Some((Document::Hosts(entries), Version::Config(stamps, settings), None)))
            }
            Source::Url(fetcher) => {
                // A table in force that outlived --hosts-max-age: fetch whole, to see it re-signed.
                if policy.is_some_and(|policy| policy.outlived(in_force, unix_now())) {
                    fetcher.forget_validators();
                }
                match fetcher.fetch()? {
                    Fetched::Unchanged => Ok(None),
                    Fetched::Document(text, validators) => {
                        let origin = fetcher.url().to_string();
                        let signed = check_signature(policy, in_force, &origin, &text, || {
                            Ok((fetcher.signature_url().to_string(), fetcher.fetch_signature()?))
                        })?;
                        Ok(Some((parse(&text, &origin)?, Version::Validators(validators), signed)))
                    }
                }
            }
        }
    }

    /// The table of the document marked by `version`, signed at `signed`, is in force.
    fn commit(&mut self, version: Version, signed: Option<u64>) {
        let origin = self.origin();
        match (version, &mut self.source) {
            (Version::Stamp(stamp), _) => self.file_stamp = stamp,
            (Version::Config(stamp, settings), Source::Config(_, set_above)) => {
                self.file_stamp = stamp;
                match &self.start_settings {
                    Some(start) => {
                        let decided_here = |name: &&str| !set_above.contains(&name.replace('-', "_"));
                        for name in
                            config::changed_settings(start, &settings).into_iter().filter(decided_here)
                        {
                            tracing::warn!("`{name}` changed in {origin}: takes effect after a restart");
                        }
                    }
                    None => self.start_settings = Some(settings),
                }
            }
            (Version::Validators(validators), Source::Url(fetcher)) => fetcher.commit(validators),
            _ => {}
        }
        self.signed = signed;
        self.retry = false;
    }

    /// Resolves every host of `document` (in parallel, each round within the resolve timeout),
    /// returning the table and the addresses found. With `strict`, a name that does not resolve
    /// is an error; without, it keeps its last address (and only a name never resolved is an
    /// error).
    fn resolve(&self, document: &Document, strict: bool) -> Result<(PeerTable, Resolved)> {
        let names: Box<dyn Iterator<Item = (&str, u16)>> = match document {
            Document::Remote(host, port) => Box::new(std::iter::once((host.as_str(), *port))),
            Document::Hosts(entries) => Box::new(entries.iter().map(|e| (e.host.as_str(), e.port))),
        };
        let origin = self.origin();
        let mut results = self.resolver.resolve_all(names);
        // Each name once: a name with no answer keeps its last address, unless `strict`.
        for (&(host, port), result) in &mut results {
            if let (Err(error), false) = (&*result, strict)
                && let Some(last) = self.resolved.get(&(host.to_string(), port))
            {
                tracing::warn!("{origin}: `{host}` does not resolve ({error}); keeping {last}");
                *result = Ok(*last);
            }
        }
        let family = self.resolver.family;
        let table = build_table(document, &origin, &mut |host, port| match (
            resolve_literal(host, port, family),
            results.get(&(host, port)),
        ) {
            (Some(literal), _) => literal,
            (None, Some(Ok(addr))) => Ok(*addr),
            (None, Some(Err(error))) => Err(io::Error::new(error.kind(), error.to_string())),
            (None, None) => Err(io::Error::other("not looked up")),
        })?;
        let fresh: Resolved = results
            .into_iter()
            .filter_map(|((host, port), result)| Some(((host.to_string(), port), result.ok()?)))
            .collect();
        Ok((table, fresh))
    }

    /// Publishes `table`, carrying over what the current one learned (again once it is in
    /// force, for what the data plane taught the old one meanwhile), and starting the roaming
    /// hold of its new peers.
    fn publish(&self, shared: &Shared, mut table: PeerTable, why: &str) {
        let old = shared.table.load_full();
        table.share_traffic(&old);
        let table = Arc::new(table);
        table.inherit_learned(&old);
        table.start_holds(stats::clock_ms());
        shared.table.store(table.clone());
        table.inherit_learned(&old);
        shared.stats.tables_loaded.fetch_add(1, Relaxed);
        shared.stats.last_load_unix.store(unix_now(), Relaxed);
        // Said once the table is in force and counted, so that whoever reads the log finds it so.
        tracing::info!(
            "{}: {why}: {} entries, {} peers",
            self.origin(),
            table.entry_count(),
            table.peer_count()
        );
        drop((old, table));
        release_free_memory();
    }

    /// Rereads the source; a failure keeps the current table, says why, and forgets the
    /// version, so that the next fetch or check loads the document whole.
    fn reload(&mut self, shared: &Shared) {
        let result = self.read_source().and_then(|read| match read {
            None => Ok(None),
            Some((document, version, signed)) => {
                let (table, resolved) = self.resolve(&document, true)?;
                Ok(Some((document, version, signed, table, resolved)))
            }
        });
        match result {
            Ok(Some((document, version, signed, table, resolved))) => {
                self.document = document;
                self.resolved = resolved;
                let why = signed.map_or_else(|| "loaded".to_string(), |at| format!("loaded, signed at {at}"));
                self.publish(shared, table, &why);
                self.commit(version, signed);
                shared.origin.store(Arc::new(self.table_origin()));
            }
            Ok(None) => {
                tracing::debug!("{}: unchanged", self.origin());
                shared.stats.last_load_unix.store(unix_now(), Relaxed);
            }
            Err(e) => {
                shared.stats.load_failures.fetch_add(1, Relaxed);
                if let Some(refusal) = e.downcast_ref::<Refusal>() {
                    shared.stats.hosts_refused[refusal.reason as usize].fetch_add(1, Relaxed);
                }
                tracing::error!("{e:#}; keeping the previous table");
                match &mut self.source {
                    Source::Url(fetcher) => fetcher.forget_validators(),
                    // Not reloaded every second while it stays broken, but retried.
                    Source::File(path) | Source::Config(path, _) => {
                        self.file_stamp = stamps(path, self.policy.is_some());
                        self.retry = true;
                    }
                    Source::Remote(..) => {}
                }
            }
        }
    }

    /// Resolves the current document's names again; publishes if an address changed.
    fn re_resolve(&mut self, shared: &Shared) {
        match self.resolve(&self.document, false) {
            Ok((table, resolved)) if resolved != self.resolved => {
                self.resolved = resolved;
                self.publish(shared, table, "a host's address changed");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("{e:#}"),
        }
    }

    /// Whether the current document names any host by name (so re-resolving can matter).
    fn has_names(&self) -> bool {
        let is_name = |host: &str| host.parse::<IpAddr>().is_err();
        match &self.document {
            Document::Remote(host, _) => is_name(host),
            Document::Hosts(entries) => entries.iter().any(|e| is_name(&e.host)),
        }
    }

    /// The file whose changes reload the table, if the source is one.
    fn watched_file(&self) -> Option<&Path> {
        match &self.source {
            Source::File(path) | Source::Config(path, _) => Some(path),
            Source::Remote(..) | Source::Url(_) => None,
        }
    }

    /// Runs the control plane until `commands` closes.
    pub fn run(mut self, shared: Arc<Shared>, timing: Timing, commands: Receiver<Command>) {
        let now = Instant::now();
        let mut next_fetch = now + jittered(timing.url_interval);
        let mut next_resolve = now + timing.resolve_interval;
        let mut next_file_check = now + FILE_CHECK;
        loop {
            let deadline = [
                Some(next_resolve),
                matches!(self.source, Source::Url(_)).then_some(next_fetch),
                self.watched_file().map(|_| next_file_check),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_resolve);
            match commands.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Command::Reload) => {
                    tracing::info!("SIGHUP: reloading {}", self.origin());
                    self.reload(&shared);
                }
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if matches!(self.source, Source::Url(_)) && now >= next_fetch {
                self.reload(&shared);
                next_fetch = Instant::now() + jittered(timing.url_interval);
            }
            if let Some(path) = self.watched_file()
                && now >= next_file_check
            {
                next_file_check = now + FILE_CHECK;
                if stamps(path, self.policy.is_some()) != self.file_stamp {
                    tracing::info!("{} changed on disk", path.display());
                    self.reload(&shared);
                }
            }
            if now >= next_resolve {
                next_resolve = now + timing.resolve_interval;
                if self.retry {
                    self.reload(&shared);
                } else if self.has_names() {
                    self.re_resolve(&shared);
                }
            }
        }
    }
}

/// Keepalives to every peer at `interval`, sent from `socket` (one of the tunnel's, so that
/// they open the same NAT mapping as the traffic).
pub struct Keepalive {
    /// Between two rounds.
    pub interval: Duration,
    /// The socket they leave from.
    pub socket: Socket,
    /// With a key, keepalives are authenticated and name this node by `sender`.
    pub key: Option<(Key, IpAddr)>,
}

/// Sends keepalives on a thread of their own, so that they leave on time whatever the control
/// plane is waiting for (a hung resolver, a slow hosts server).
pub fn spawn_keepalives(keepalive: Keepalive, shared: Arc<Shared>) -> io::Result<()> {
    thread::Builder::new().name("keepalive".into()).spawn(move || {
        let is_v6 =
            keepalive.socket.local_addr().ok().and_then(|a| a.as_socket()).is_some_and(|a| a.is_ipv6());
        let mut counter = 0;
        let mut next = Instant::now() + keepalive.interval;
        loop {
            thread::sleep(next.saturating_duration_since(Instant::now()));
            next += keepalive.interval;
            let sealed;
            let payload: &[u8] = match &keepalive.key {
                None => &[],
                Some((key, sender)) => {
                    counter = keepalive::next_counter(counter, unix_micros());
                    sealed = keepalive::seal(key, *sender, counter);
                    &sealed
                }
            };
            let table = shared.table.load();
            for peer in table.peers() {
                if let Err(e) = keepalive.socket.send_to(payload, &udp::to_socket_family(peer, is_v6).into())
                {
                    tracing::debug!("keepalive to {peer} failed: {e}");
                }
            }
        }
    })?;
    Ok(())
}

/// Gives the memory a table build used and freed back to the system: a large document parsed
/// once would otherwise stay in the resident set for the rest of the run.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `interval` ± 10 %, so that many nodes polling one server do not do it in step.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * fastrand::f64())
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn parse(text: &str, origin: &str) -> Result<Document> {
    hosts::parse(text).map(Document::Hosts).map_err(|e| anyhow!("{origin}: {e}"))
}

/// With a `policy`, checks the signature of `text` (from `origin`) against it, with `in_force`
/// the signed timestamp of the table in force: `read` says where the signature is and gives its
/// bytes (`None` when there is none). Returns the signed timestamp, or `None` without a policy.
/// A refusal is a [`Refusal`] under the origin, so that it is counted by its reason.
fn check_signature(
    policy: Option<&Policy>,
    in_force: Option<u64>,
    origin: &str,
    text: &str,
    read: impl FnOnce() -> Result<(String, Option<Vec<u8>>)>,
) -> Result<Option<u64>> {
    let Some(policy) = policy else { return Ok(None) };
    let (at, signature) = read()?;
    let signed = policy
        .check(text.as_bytes(), signature.as_deref(), &at, in_force, unix_now())
        .map_err(|refusal| anyhow::Error::new(refusal).context(origin.to_string()))?;
    Ok(Some(signed))
}

/// Reads a small file (a signature or a public key): at most one byte more than
/// [`signature::MAX_FILE_BYTES`], so that a larger one is refused without being read whole.
pub fn read_small_file(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(signature::MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads a hosts file's signature file, `None` if there is none.
fn read_signature_file(path: &Path) -> Result<Option<Vec<u8>>> {
    match read_small_file(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(path.display().to_string())),
    }
}

/// Reads a hosts or config file, refusing one larger than a hosts URL may be (bounded memory).
fn read_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let origin = path.display().to_string();
    let file = std::fs::File::open(path).with_context(|| origin.clone())?;
    let mut text = String::new();
    file.take(MAX_BODY_BYTES + 1).read_to_string(&mut text).with_context(|| origin.clone())?;
    if text.len() as u64 > MAX_BODY_BYTES {
        anyhow::bail!("{origin}: larger than {MAX_BODY_BYTES} bytes");
    }
    Ok(text)
}

/// Reads the config file's `[nodes]` entries and its other settings, which must still be valid
/// (else the next start would fail), but for those set above the file (`set_above`): a file
/// that lost its `[nodes]` is an error too, since the peer source changes only at a restart.
fn read_config(path: &Path, set_above: &[String]) -> Result<(Vec<Entry>, toml::Table)> {
    let text = read_file(path)?;
    let origin = path.display().to_string();
    let parsed = config::parse(&text).map_err(|e| anyhow!("{origin}: {e}"))?;
    crate::cli::config_to_args(&text, &origin, &|id| set_above.iter().any(|s| s == id))?;
    let nodes = parsed.nodes.ok_or_else(|| {
        anyhow!("{origin}: no `[nodes]` tables any more (the peer source changes only at a restart)")
    })?;
    Ok((nodes.entries, parsed.settings))
}

/// A fetch may take up to 30 s, but never longer than the interval between two fetches.
pub fn fetch_timeout(interval: Duration) -> Duration {
    interval.clamp(Duration::from_secs(1), Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tests::echo_request_v4;

    #[test]
    fn literals_resolve_without_dns_and_families_are_enforced() {
        assert_eq!(resolve("192.0.2.1", 9, Family::V4).unwrap(), "192.0.2.1:9".parse().unwrap());
        assert!(resolve("2001:db8::1", 9, Family::V4).is_err());
        assert!(resolve("2001:db8::1", 9, Family::Any).is_ok());
        assert!(resolve("localhost", 9, Family::V4).unwrap().is_ipv4());
    }

    fn three_entries() -> Document {
        parse(
            "{ nodes: {\n \"10.0.0.1\": { host: \"a\" },\n \"10.0.0.2\": { host: \"a\" },\n \"10.0.0.3\": { host: \"bad\" } } }",
            "hosts.json",
        )
        .unwrap()
    }

    #[test]
    fn errors_name_the_line_and_the_host() {
        let mut resolver = |host: &str, port: u16| match host {
            "a" => Ok(SocketAddr::from(([192, 0, 2, 1], port))),
            _ => Err(io::Error::other("no address found")),
        };
        let error = build_table(&three_entries(), "hosts.json", &mut resolver).unwrap_err().to_string();
        assert_eq!(error, "hosts.json: line 4: `10.0.0.3`: host `bad` does not resolve: no address found");

        let Document::Hosts(entries) = three_entries() else { unreachable!() };
        let table =
            build_table(&Document::Hosts(entries[..2].to_vec()), "hosts.json", &mut resolver).unwrap();
        assert_eq!(
            table.route(&echo_request_v4([10, 0, 0, 9], [10, 0, 0, 2])).destination(),
            Some("192.0.2.1:7777".parse().unwrap())
        );
    }

    #[test]
    fn the_resolver_answers_each_name_once_skips_literals_and_keeps_its_deadline() {
        let resolver = Resolver::new(Family::V4, Duration::from_secs(2)).unwrap();
        let started = Instant::now();
        let results = resolver.resolve_all([
            ("localhost", 9),
            ("localhost", 9),
            ("192.0.2.1", 9),
            ("no-such-host.invalid", 9),
        ]);
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        assert_eq!(results.len(), 2, "one result per name, none for the literal");
        assert!(results[&("localhost", 9)].as_ref().is_ok_and(|a| a.ip().is_loopback()));
        assert!(results[&("no-such-host.invalid", 9)].is_err());
    }

    #[test]
    fn a_config_reloads_only_whole_with_its_nodes() {
        let dir = std::env::temp_dir().join(format!("udptun-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("udptun.toml");
        let origin = path.display().to_string();
        let node = "[nodes.\"10.0.0.2\"]\nhost = \"192.0.2.2\"\n";
        std::fs::write(&path, format!("mtu = 1400\n{node}")).unwrap();
        let (entries, settings) = read_config(&path, &[]).unwrap();
        assert_eq!((entries.len(), entries[0].port), (1, 7777));
        assert_eq!(settings.get("mtu").and_then(toml::Value::as_integer), Some(1400));
        // A setting the next start would refuse, and a file without [nodes], are broken edits.
        std::fs::write(&path, format!("mtu = 70000\n{node}")).unwrap();
        let error = read_config(&path, &[]).unwrap_err().to_string();
        assert!(error.starts_with(&format!("{origin}: line 1: `mtu`: invalid value")), "{error}");
        // Unless the command line or the environment sets it: then the file does not decide it.
        assert!(read_config(&path, &["mtu".to_string()]).is_ok());
        std::fs::write(&path, "mtu = 1400\n").unwrap();
        let error = read_config(&path, &[]).unwrap_err().to_string();
        assert!(error.starts_with(&format!("{origin}: no `[nodes]` tables any more")), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_refusal_is_told_under_the_origin_and_keeps_its_reason() {
        let no_key = Policy::new(Vec::new(), None);
        let read = || Ok(("https://h/x.json.minisig".to_string(), None));
        let error = check_signature(Some(&no_key), None, "https://h/x.json", "{}", read).unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "https://h/x.json: refused: no signature at https://h/x.json.minisig"
        );
        assert_eq!(error.downcast_ref::<Refusal>().map(|r| r.reason), Some(signature::Reason::Signature));
        // Without a policy nothing is read.
        let unread = || -> Result<(String, Option<Vec<u8>>)> { panic!("read without a policy") };
        assert_eq!(check_signature(None, None, "x", "{}", unread).unwrap(), None);
        // A signature that cannot be read is a failure, not a refusal.
        let failed = || Err(anyhow!("x.minisig: Permission denied"));
        let error = check_signature(Some(&no_key), None, "x", "{}", failed).unwrap_err();
        assert!(error.downcast_ref::<Refusal>().is_none(), "{error:#}");
    }

    #[test]
    fn a_hosts_files_signature_is_beside_it_and_its_changes_are_seen() {
        let dir = std::env::temp_dir().join(format!("udptun-stamps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hosts.json");
        assert_eq!(signature_path(&path), dir.join("hosts.json.minisig"));
        std::fs::write(&path, "{}").unwrap();
        let before = stamps(&path, true);
        assert_eq!(before[1], None);
        assert_eq!(read_signature_file(&signature_path(&path)).unwrap(), None);
        std::fs::write(signature_path(&path), "x".repeat(10_000)).unwrap();
        assert_ne!(stamps(&path, true), before, "a new signature file is a change");
        assert_eq!(stamps(&path, false), [before[0], None], "unsigned, it is not watched");
        let read = read_signature_file(&signature_path(&path)).unwrap().unwrap();
        assert_eq!(read.len(), signature::MAX_FILE_BYTES + 1, "read no further than needed to refuse it");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn document_errors_name_the_origin() {
        let error = parse("{ nodes: { x: {} } }", "https://h/x.json").unwrap_err();
        assert!(error.to_string().starts_with("https://h/x.json: line 1 column 12:"), "{error}");
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let interval = Duration::from_secs(100);
        let samples: Vec<f64> = (0..2000).map(|_| jittered(interval).as_secs_f64()).collect();
        for &s in &samples {
            assert!((90.0..=110.0).contains(&s), "{s} s is outside 100 s ± 10 %");
        }
        // It really varies: the samples spread over most of ±10 %, on both sides of the interval,
        // and are not a handful of values repeated. For 2,000 uniform samples the chance that
        // none falls in the outer 2 % on one side is 0.9^2000.
        let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert!(min < 92.0 && max > 108.0, "spread only {min}..{max} s");
        let below = samples.iter().filter(|&&s| s < 100.0).count();
        assert!((600..=1400).contains(&below), "{below} of 2000 below the interval");
        let mut distinct = samples.clone();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        assert!(distinct.len() > 1900, "only {} distinct values", distinct.len());
    }
}
