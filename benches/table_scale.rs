//! How a hosts document of 100,000 entries scales: parse and table-build time, the time a
//! reload takes to carry over what the old table learned, and the heap the table holds per
//! entry (counted by a wrapping allocator), and the time `udptun show`'s answer takes to write; and what parsing a document padded to 30 MiB with a
//! field the parser ignores costs in time and peak heap. Prints one markdown table.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use udptun::hosts;
use udptun::peers::PeerTable;
use udptun::show;
use udptun::stats::TableOrigin;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(live, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ENTRIES: u32 = 100_000;

fn main() {
    let mut text = String::from("{ \"nodes\" : {\n");
    for i in 0..ENTRIES {
        let inner = Ipv4Addr::from((10 << 24) | i);
        let host = Ipv4Addr::from((100 << 24) | i);
        let comma = if i + 1 < ENTRIES { "," } else { "" };
        let _ = writeln!(text, "  \"{inner}\" : {{ \"host\" : \"{host}\", \"port\" : 7777 }}{comma}");
    }
    text.push_str("} }\n");

    let before_parse = LIVE.load(Relaxed);
    PEAK.store(before_parse, Relaxed);
    let start = Instant::now();
    let entries = hosts::parse(&text).expect("the generated document parses");
    let parsed = start.elapsed();
    let parse_peak = PEAK.load(Relaxed) - before_parse;
    let entries_held = LIVE.load(Relaxed) - before_parse;
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let build = Instant::now();
    let table = PeerTable::from_entries(entries.iter().map(|e| {
        let host: Ipv4Addr = e.host.parse().unwrap();
        (e.prefix, SocketAddr::from((host, e.port)))
    }));
    let built = build.elapsed();
    let build_peak = PEAK.load(Relaxed) - before;
    let held = LIVE.load(Relaxed) - before;
    assert_eq!(table.entry_count(), ENTRIES as usize);
    let reloaded = PeerTable::from_entries(entries.iter().map(|e| {
        let host: Ipv4Addr = e.host.parse().unwrap();
        (e.prefix, SocketAddr::from((host, e.port)))
    }));
    let inherit = Instant::now();
    reloaded.inherit_learned(&table);
    let inherited = inherit.elapsed();
    println!("| hosts document, {ENTRIES} entries | value |");
    println!("|---|---:|");
    println!("| document size | {:.1} MB |", text.len() as f64 / 1e6);
    println!("| parse | {:.0} ms |", parsed.as_secs_f64() * 1e3);
    let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
    println!(
        "| heap: parse peak, entries held after it | {:.1} MiB, {:.1} MiB |",
        mib(parse_peak),
        mib(entries_held)
    );
    println!("| heap: table build peak | {:.1} MiB |", mib(build_peak));
    println!("| build the table (names given as IPs) | {:.0} ms |", built.as_secs_f64() * 1e3);
    println!("| carry learned ports over to a reloaded table | {:.0} ms |", inherited.as_secs_f64() * 1e3);
    println!(
        "| table heap | {:.1} MiB, {} bytes per entry |",
        held as f64 / (1 << 20) as f64,
        held / ENTRIES as usize
    );
    let status = show::Status {
        device: "udptun0".into(),
        listen: "0.0.0.0:7777".parse().unwrap(),
        threads: 2,
        offloads: [("tun", true), ("gso", true), ("gro", true)],
    };
    let origin = TableOrigin {
        kind: "file",
        location: "hosts.json".into(),
        loaded_unix: 0,
        etag: None,
        signed_unix: None,
    };
    let mut answer = Vec::new();
    let start = Instant::now();
    show::write_status(&mut answer, &status, &origin, &table, 1, 1).unwrap();
    let answered = start.elapsed();
    println!(
        "| `udptun show`: the daemon writes its answer ({:.1} MB) | {:.0} ms |",
        answer.len() as f64 / 1e6,
        answered.as_secs_f64() * 1e3
    );
    drop((table, entries, text, answer));

    // Two entries after `"pad": [0,0,...]`: the padding must cost time, not memory.
    let zeros = (30 << 20) / 2;
    let padded = format!(
        "{{ \"pad\": [{}0], \"nodes\": {{ \"10.0.0.1\": {{ \"host\": \"a\" }}, \"10.0.0.2\": {{ \"host\": \"b\" }} }} }}",
        "0,".repeat(zeros)
    );
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let start = Instant::now();
    let entries = hosts::parse(&padded).expect("the padded document parses");
    let parsed = start.elapsed();
    assert_eq!(entries.len(), 2);
    println!(
        "| parse {:.1} MiB padded with an ignored array | {:.0} ms |",
        padded.len() as f64 / (1 << 20) as f64,
        parsed.as_secs_f64() * 1e3
    );
    println!("| heap the padded parse peaked at | {} bytes |", PEAK.load(Relaxed) - before);
}
