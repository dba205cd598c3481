//! The man page, udptun(8): the sections clap_mangen makes from the command-line definition
//! (so that they never disagree with `--help`), then what a reader needs besides the flags: the
//! hosts document, the config file, the environment, files, signals, logs, exit statuses and
//! examples, so that the page stands alone.

use std::io::{self, Write};

use clap_mangen::Man;
use roff::{Roff, bold, italic, roman};

use crate::cli::PRECEDENCE;
use crate::exit;

/// Writes the man page for `command` (the udptun command line) to `out`, as roff.
pub fn render(command: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let man = Man::new(command.clone()).section("8").manual("System Administration");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    description().to_writer(out)?;
    man.render_options_section(out)?;
    commands(&command).to_writer(out)?;
    extra_sections().to_writer(out)?;
    man.render_version_section(out)
}

/// What udptun does, in more words than NAME's line.
fn description() -> Roff {
    let mut page = Roff::new();
    section(&mut page, "DESCRIPTION");
    page.text([roman(
        "udptun creates a TUN device; each IP packet the kernel routes into it is sent, whole, as \
         the payload of one UDP datagram to the real address of the packet's destination, and \
         each datagram that arrives on its port is checked and written back into the device. That \
         is the wire format of Linux FOU in direct mode (ip fou add port 7777 ipproto 4), so \
         udptun interoperates with kernel FOU. The one change it makes to packets is to lower the \
         MSS option of TCP SYNs to fit the device's MTU (--no-clamp-mss turns that off).",
    )]);
    paragraph(
        &mut page,
        "Where packets go comes from exactly one of: -A, one remote host for a one-to-one tunnel; \
         --hosts-file, a hosts document mapping tunnel addresses and prefixes to real hosts; \
         --hosts-url, the same document fetched over HTTP(S) and fetched again every interval; \
         the [nodes] tables of the config file (see CONFIG FILE).",
    );
    paragraph(
        &mut page,
        "udptun neither encrypts nor authenticates packets: run WireGuard or IPsec inside or \
         outside the tunnel, and filter its port to known peers. It drops every privilege once the \
         device and socket exist; it needs CAP_NET_ADMIN and nothing else.",
    );
    page
}

/// The subcommands, each by how it is typed.
fn commands(command: &clap::Command) -> Roff {
    let mut page = Roff::new();
    section(&mut page, "COMMANDS");
    for sub in command.get_subcommands() {
        let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
        item(&mut page, &format!("udptun {}", sub.get_name()), &about);
    }
    page
}

/// Appends a section heading.
fn section(page: &mut Roff, title: &str) {
    page.control("SH", [title]);
}

/// Appends a paragraph of plain text.
fn paragraph(page: &mut Roff, text: &str) {
    page.control("PP", []).text([roman(text)]);
}

/// Appends an entry of a list: `tag` in bold, then `text` indented under it.
fn item(page: &mut Roff, tag: &str, text: &str) {
    page.control("TP", []).text([bold(tag)]).text([roman(text)]);
}

/// Appends lines shown as they are (code, a document), indented.
fn verbatim(page: &mut Roff, lines: &str) {
    page.control("PP", []).control("RS", ["4"]).control("nf", []);
    for line in lines.lines() {
        page.text([roman(line)]);
    }
    page.control("fi", []).control("RE", []);
}

/// Every section after the options and subcommands.
fn extra_sections() -> Roff {
    let mut page = Roff::new();
    hosts_document(&mut page);
    config_file(&mut page);
    environment(&mut page);
    files(&mut page);
    signals(&mut page);
    logs(&mut page);
    exit_status(&mut page);
    examples(&mut page);
    section(&mut page, "SEE ALSO");
    page.text([roman("ip-fou(8), systemd.service(5), systemd.exec(5), journalctl(1), sysexits.h")]);
    page
}

fn hosts_document(page: &mut Roff) {
    section(page, "HOSTS DOCUMENT");
    paragraph(
        page,
        "The hosts file (--hosts-file) and the document at --hosts-url have the same format, that \
         of the original udptun: a JSON object whose \"nodes\" map tunnel addresses to real hosts.",
    );
    verbatim(
        page,
        r#"{ "nodes": {
    "192.168.100.1": { "host": "vps1.example.org" },
    "192.168.100.2": { "host": "vps2.example.org", "port": 7777 },
    "10.77.0.0/24": { "host": "203.0.113.7" } } }"#,
    );
    paragraph(
        page,
        "Each key is a tunnel address or prefix, IPv4 or IPv6 (10.20.0.0/16, fd00::/64); a packet \
         goes to the entry with the longest prefix that holds its destination, and an address \
         with no entry is answered with an ICMP unreachable. \"host\" is the peer's real address \
         or a name (A or AAAA records; an IPv6 peer needs an IPv6 socket, -a ::); \"port\" is its \
         UDP port, 7777 when left out. The parser is lenient as the original's was: unquoted keys, \
         single quotes, comments and trailing commas are accepted and unknown fields are ignored. \
         A document may be at most 32 MiB and 200,000 entries. An error names the file or URL, \
         the line, the column and the problem.",
    );
    paragraph(
        page,
        "Names are looked up when the document loads and again every --resolve-interval; a name \
         that does not resolve then keeps its last address. A hosts file is read again when it \
         changes (checked every second) and on SIGHUP; a hosts URL is fetched again every \
         --hosts-url-interval (give or take 10%), with If-None-Match and If-Modified-Since, and at \
         once on SIGHUP. Once running, a document that does not load, a fetch that fails or a name \
         that does not resolve when a document loads keeps the table in force and is logged.",
    );
    paragraph(
        page,
        "With --hosts-pubkey, a document is applied only with a minisign signature by that key \
         (minisign -S -m hosts.json writes hosts.json.minisig): FILE.minisig beside a hosts file, \
         the URL with .minisig added to its path for a hosts URL. A document with no signature, a \
         bad one or one by another key is refused; so is one whose signed timestamp (the \
         timestamp: of the trusted comment) is earlier than that of the table in force (a \
         rollback), or older than --hosts-max-age. The table in force then stays and the log says \
         why; at start-up it is an error. The last timestamp is not kept across a restart: \
         --hosts-max-age bounds how old a document a restarted node accepts.",
    );
}

fn config_file(page: &mut Roff) {
    section(page, "CONFIG FILE");
    paragraph(
        page,
        "--config names a TOML file that sets flags by their long names: a string or number for a \
         flag with a value, a list for one that may be repeated, true or false for a flag without \
         a value, 0 to 3 for verbose. An unknown key or a bad value is an error that names the \
         file, the line and the key. config cannot be set in it.",
    );
    paragraph(
        page,
        "Its [nodes.\"ADDR\"] tables (host, port; last in the file) may be the peer source instead \
         of -A, --hosts-file or --hosts-url: they follow the rules of the hosts document and are \
         read again as a hosts file is; the other settings take effect at a restart, and the log \
         says so when one changes.",
    );
    verbatim(
        page,
        r#"device = "udptun0"
address = ["192.168.100.1/24", "fd00::1/64"]
keepalive = 25
log-format = "journal"

[nodes."192.168.100.2"]
host = "vps2.example.org""#,
    );
}

fn environment(page: &mut Roff) {
    section(page, "ENVIRONMENT");
    paragraph(page, PRECEDENCE);
    paragraph(
        page,
        "A flag without a value takes true or false from its variable (UDPTUN_ACCEPT_ANY_SOURCE=true); \
         UDPTUN_VERBOSE takes a number; a flag that may be repeated takes its values separated by \
         commas. A variable with a bad value is an error that names it.",
    );
    item(
        page,
        "RUST_LOG",
        "Which log lines to write (tracing-subscriber's EnvFilter syntax, \"debug\", \"udptun=trace\"); overrides -v.",
    );
    item(
        page,
        "JOURNAL_STREAM",
        "Set by systemd to the device and inode of the stream it connects to the journal. When it \
         names stderr, --log-format auto writes journal lines.",
    );
}

fn files(page: &mut Roff) {
    section(page, "FILES");
    item(page, "/etc/udptun/udptun.toml", "The config file of udptun.service.");
    item(page, "/etc/udptun/NAME.toml", "The config file of udptun@NAME.service, one tunnel per file.");
    item(
        page,
        "the hosts file (--hosts-file), a config file with [nodes]",
        "Read (again) once set-up is done and privileges are dropped: it must be readable by --user.",
    );
    item(
        page,
        "the key file (--key)",
        "64 hex digits, the same on every node (udptun genkey makes one); read before set-up.",
    );
    item(
        page,
        "the public key files (--hosts-pubkey), FILE.minisig",
        "minisign public keys (minisign -G), read before set-up; the detached signature of a \
         hosts file, read with it.",
    );
    item(
        page,
        "/dev/net/tun",
        "The TUN clone device; udptun needs CAP_NET_ADMIN to create a device with it.",
    );
}

fn signals(page: &mut Roff) {
    section(page, "SIGNALS");
    item(
        page,
        "SIGHUP",
        "Reload: read the hosts file or the config file's [nodes] again, fetch the hosts URL now, \
         or look the -A name up again. \
         A reload that fails keeps the table in force. A SIGHUP during start-up is kept until the \
         first table is loaded. systemctl reload sends it.",
    );
    item(
        page,
        "SIGTERM, SIGINT",
        "Exit with status 0 and a summary of packets, bytes and drops. While the first table \
         loads, exit at once. The device goes away with the process.",
    );
}

fn logs(page: &mut Roff) {
    section(page, "LOGS");
    paragraph(
        page,
        "Log lines go to stderr: the device and listening address at start, reloads, peers whose \
         NAT port changed, drops (at most one line a second per kind), and a summary on exit. \
         --log-format text gives a timestamp, the level and the message; journal starts each line \
         with its syslog priority, <3> error, <4> warning, <6> info, <7> debug and trace, and \
         leaves the time to the journal, so that journalctl -p err finds the errors; json gives \
         one object per line with timestamp, level, message and fields. The default, auto, is \
         journal when stderr is the journal (JOURNAL_STREAM) and text otherwise.",
    );
}

fn exit_status(page: &mut Roff) {
    section(page, "EXIT STATUS");
    item(page, "0", "Stopped by SIGTERM or SIGINT; or --help, --version, genkey done.");
    item(
        page,
        &exit::FAILURE.to_string(),
        "Any other failure: the device or the socket cannot be set up (the port is in use, no \
         CAP_NET_ADMIN), the local address went away while running, a fatal error moving packets.",
    );
    item(
        page,
        &format!("{} (EX_TEMPFAIL)", exit::TEMPFAIL),
        "A start-up failure that may pass by itself: a peer's name that does not resolve (yet), a \
         hosts URL that cannot be fetched, answers with an HTTP error, or serves a document that \
         does not load or whose signature is refused (its server can be mended without touching \
         this node).",
    );
    item(
        page,
        &format!("{} (EX_CONFIG)", exit::CONFIG),
        "The configuration is wrong and no restart can fix it: a bad flag or value on the command \
         line, in the environment or in the config file; a config, hosts or key file that is \
         missing or does not parse; a hosts file whose signature is refused; an unknown --user or --group; a --hosts-url that is not an \
         http(s) URL or a CA file that cannot be read; a peer address of a family the socket \
         cannot reach.",
    );
    paragraph(
        page,
        "The packaged units restart on failure but not after 78 (Restart=on-failure, \
         RestartPreventExitStatus=78): a restart would fail the same way.",
    );
}

fn examples(page: &mut Roff) {
    section(page, "EXAMPLES");
    paragraph(page, "One-to-one, on each of two hosts (.2 on the other):");
    verbatim(page, "udptun -A other-host.example.org -d udptun --address 192.168.100.1/24");
    paragraph(page, "An overlay, the same hosts file on every node, with NAT keepalives:");
    verbatim(
        page,
        "udptun --hosts-file /etc/udptun/hosts.json -d udptun --address 192.168.100.2/24 --keepalive 25",
    );
    paragraph(page, "The hosts document fetched over HTTPS every minute:");
    verbatim(
        page,
        "udptun --hosts-url https://config.example.org/hosts.json --hosts-url-interval 60 -d udptun",
    );
    paragraph(page, "Settings from the environment, as a systemd drop-in would give them:");
    verbatim(page, "UDPTUN_LOCAL_PORT=7001 UDPTUN_MTU=1400 udptun --config /etc/udptun/udptun.toml");
    paragraph(page, "A shared key for authenticated keepalives, made once and copied to every node:");
    verbatim(
        page,
        "udptun genkey > /etc/udptun/udptun.key\nudptun -A peer.example.org --key /etc/udptun/udptun.key --keepalive 25",
    );
    page.control("PP", []).text([
        roman("The errors of the last start of the service: "),
        italic("journalctl -u udptun -p err -b"),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_page_has_every_section_once_in_order() {
        let mut out = Vec::new();
        render(crate::cli::Cli::command(), &mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        let sections: Vec<&str> = page.lines().filter_map(|l| l.strip_prefix(".SH ")).collect();
        assert_eq!(
            sections,
            [
                "NAME",
                "SYNOPSIS",
                "DESCRIPTION",
                "OPTIONS",
                "COMMANDS",
                "\"HOSTS DOCUMENT\"",
                "\"CONFIG FILE\"",
                "ENVIRONMENT",
                "FILES",
                "SIGNALS",
                "LOGS",
                "\"EXIT STATUS\"",
                "EXAMPLES",
                "\"SEE ALSO\"",
                "VERSION"
            ]
        );
        assert!(page.starts_with(".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n.TH udptun 8"), "{page}");
    }
}
