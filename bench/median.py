#!/usr/bin/env python3
"""Median table from several peers.sh --json runs (and bench/extra.sh results), as markdown.

The "vs VXLAN" columns are the medians of the per-run ratios (each run's figure over the same
run's VXLAN figure), so that drift of the machine between runs cancels; a second table gives
udptun's ratios run by run. A run file may hold only some kinds (e.g. `vxlan` and a second
udptun row with another setting): its ratios are taken against its own VXLAN row.

Usage: median.py EXTRA.json RUN1.json [RUN2.json ...]
"""
import json
import statistics
import sys


def median(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def fmt(value, digits=2):
    return "n/a" if value is None else f"{value:.{digits}f}"


def ratio(value, reference):
    return "n/a" if value is None or not reference else f"{value / reference:.2f}x"


def per_run_ratio(run, kind, field, reference_kind="vxlan"):
    """`kind`'s `field` over `reference_kind`'s in the same run, or None."""
    by_kind = {r["kind"]: r for r in run["results"]}
    value = by_kind.get(kind, {}).get(field)
    reference = by_kind.get(reference_kind, {}).get(field)
    if not isinstance(value, (int, float)) or not isinstance(reference, (int, float)) or not reference:
        return None
    return value / reference


def fmt_ratio(value):
    return "n/a" if value is None else f"{value:.2f}x"


def cpu_per_gb(result, duration):
    """Tunnel CPU seconds (both ends) per GB moved by a result's TCP test, or None."""
    if isinstance(result.get("tun_cpu_s"), (int, float)) and result.get("tcp_gbps"):
        return result["tun_cpu_s"] / (result["tcp_gbps"] * duration / 8)
    return None


def main():
    extra = json.load(open(sys.argv[1]))
    runs = [json.load(open(path)) for path in sys.argv[2:]]
    kinds = []
    for run in runs:
        for result in run["results"]:
            if result["kind"] not in kinds:
                kinds.append(result["kind"])
    duration = runs[0]["meta"].get("duration_s", 5)
    rows = {}
    for kind in kinds:
        results = [r for run in runs for r in run["results"] if r["kind"] == kind]
        cpu = [cpu_per_gb(r, duration) for r in results]
        rows[kind] = {
            "mtu": results[0].get("mtu"),
            "tcp": median([r.get("tcp_gbps") for r in results]),
            "retrans": median([r.get("tcp_retrans") for r in results]),
            "udp": median([r.get("udp_rx_kpps") for r in results]),
            "ping": median([r.get("ping_avg_us") for r in results]),
            "cpu": median(cpu),
            "ratios": {field: median([per_run_ratio(run, kind, field) for run in runs])
                       for field in ("tcp_gbps", "udp_rx_kpps", "ping_avg_us")},
            "ok": sum(1 for r in results if r.get("status") == "ok"),
            "n": len(results),
        }
    meta = runs[0]["meta"]
    full_runs = sum(1 for run in runs if any(r["kind"] == "veth" for r in run["results"]))
    print(f"Machine: {meta.get('cpus', '?')} CPUs, kernel {meta.get('kernel', '?')}, "
          f"{meta.get('cpu_model', extra.get('cpu_model', '?'))}; {meta.get('iperf3', '')}; "
          f"{full_runs} runs of peers.sh with every kind" + (f" and {len(runs) - full_runs} with VXLAN and "
          "udptun's latency setting only" if len(runs) > full_runs else "") +
          f" ({duration} s each test), medians; generated {extra.get('date', '')}.")
    print()
    print("| tunnel | MTU | TCP Gbit/s | vs VXLAN | retrans | UDP 64 B kpps | vs VXLAN | ping avg µs | vs VXLAN | tunnel CPU s/GB | runs ok |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, r in rows.items():
        cpu = "kernel" if kind in ("veth", "vxlan") else fmt(r["cpu"])
        q = r["ratios"]
        print(f"| {kind} | {r['mtu']} | {fmt(r['tcp'])} | {fmt_ratio(q['tcp_gbps'])} | {fmt(r['retrans'], 0)} "
              f"| {fmt(r['udp'], 1)} | {fmt_ratio(q['udp_rx_kpps'])} | {fmt(r['ping'], 0)} "
              f"| {fmt_ratio(q['ping_avg_us'])} | {cpu} | {r['ok']}/{r['n']} |")
    udptun_kinds = [kind for kind in kinds if kind.startswith("cmd")]
    print()
    print("udptun run by run (each figure over the same run's VXLAN; ping also over QuickTun raw's):")
    print()
    print("| run | udptun | TCP vs VXLAN | UDP 64 B vs VXLAN | ping vs VXLAN | ping vs QuickTun raw |")
    print("|---:|---|---:|---:|---:|---:|")
    for number, run in enumerate(runs, 1):
        for kind in udptun_kinds:
            if not any(r["kind"] == kind for r in run["results"]):
                continue
            cells = [fmt_ratio(per_run_ratio(run, kind, field))
                     for field in ("tcp_gbps", "udp_rx_kpps", "ping_avg_us")]
            cells.append(fmt_ratio(per_run_ratio(run, kind, "ping_avg_us", "quicktun-raw")))
            print(f"| {number} | {kind} | " + " | ".join(cells) + " |")
    print()
    print("udptun alone (bench/extra.sh, same machine, right after the runs above):")
    print()
    print("| configuration | TCP Gbit/s | RSS idle MiB | peak RSS under load MiB |")
    print("|---|---:|---:|---:|")
    for row in extra["rows"]:
        print(f"| {row['label']} | {fmt(row.get('gbps'))} | {fmt(row.get('rss_idle_mib'), 1)} | {fmt(row.get('rss_peak_mib'), 1)} |")
    idle = extra.get("idle_cpu_ms")
    if idle:
        print()
        print(f"Idle CPU over 10 s, ms (a tunnel pair with no traffic, every thread of both "
              f"udptuns, from /proc/PID/task/*/schedstat): {idle['default']:.2f} ms by default, "
              f"{idle['keepalive']:.2f} ms with `--keepalive 1`.")
    show = extra.get("show_ms")
    if show:
        print()
        print(f"`udptun show` with 100,000 peers, from start to the last line (median of 5): "
              f"{show['text']:.0f} ms as a table, {show['json']:.0f} ms as JSON.")


if __name__ == "__main__":
    main()
