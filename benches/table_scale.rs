//! How a hosts document of 100,000 entries scales: parse and table-build time, the time a
//! reload takes to carry over what the old table learned, and the heap the table holds per
//! entry (counted by a wrapping allocator). Prints one markdown table.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use udptun::hosts;
use udptun::peers::PeerTable;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
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

    let start = Instant::now();
    let entries = hosts::parse(&text).expect("the generated document parses");
    let parsed = start.elapsed();
    let before = LIVE.load(Relaxed);
    let build = Instant::now();
    let table = PeerTable::from_entries(entries.iter().map(|e| {
        let host: Ipv4Addr = e.host.parse().unwrap();
        (e.prefix, SocketAddr::from((host, e.port)))
    }));
    let built = build.elapsed();
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
    println!("| build the table (names given as IPs) | {:.0} ms |", built.as_secs_f64() * 1e3);
    println!("| carry learned ports over to a reloaded table | {:.0} ms |", inherited.as_secs_f64() * 1e3);
    println!(
        "| table heap | {:.1} MiB, {} bytes per entry |",
        held as f64 / (1 << 20) as f64,
        held / ENTRIES as usize
    );
}
