#!/usr/bin/env bash
# Soak test (not a unit test): SOAK_SECS (default 600) of one iperf3 TCP stream plus a parallel
# flood of 64-byte UDP packets plus a ping every 100 ms through the tunnel, while both ends
# refetch their hosts URL every second. Reports throughput over time, ping loss, RSS after
# warm-up and at the end, and the drop counters; `--write` puts the report into RELIABILITY.md.
# Needs root; installs iperf3, ping and python3 if missing (scripts/deps.sh bench). Everything it
# creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SOAK_SECS:-600}
warmup=${SOAK_WARMUP:-30}
udp_rate=${SOAK_UDP_RATE:-20M}
write=${1:-}
. scripts/lab.sh
lab_need_root soak.sh
scripts/deps.sh bench

lab_build
work=$(mktemp -d /tmp/udptun-soak.XXXXXX)
cp "$lab_bin" "$work/udptun"
lab_bin=$work/udptun
lab_init soak$$
trap 'lab_cleanup; [ -n "${SOAK_KEEP:-}" ] && echo "logs kept in $work" >&2 || rm -rf "$work"' EXIT

sw=$(lab_bridge sw)
a=$(lab_ns a)
b=$(lab_ns b)
web=$(lab_ns web)
lab_attach "$sw" "$a" 10.231.20.1/24
lab_attach "$sw" "$b" 10.231.20.2/24
lab_attach "$sw" "$web" 10.231.20.80/24

mkdir "$work/www"
echo '{ nodes : { "10.232.20.1" : { host : "10.231.20.1" }, "10.232.20.2" : { host : "10.231.20.2" } } }' > "$work/www/hosts.json"
ip netns exec "$web" python3 -m http.server 8080 --bind 10.231.20.80 --directory "$work/www" >/dev/null 2>&1 &
sleep 1
url=http://10.231.20.80:8080/hosts.json
lab_udptun "$a" --hosts-url "$url" --hosts-url-interval 1 -d udptun0 \
    --address 10.232.20.1/24 --metrics-listen 127.0.0.1:9477 2> "$work/a.log"
lab_udptun "$b" --hosts-url "$url" --hosts-url-interval 1 -d udptun0 \
    --address 10.232.20.2/24 --metrics-listen 127.0.0.1:9477 2> "$work/b.log"
for ns in "$a" "$b"; do lab_wait_device "$ns" udptun0; done
ip netns exec "$a" ping -c 3 -i 0.2 -q 10.232.20.2 >/dev/null

metrics() { # NS -> the metrics page
    ip netns exec "$1" python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:9477/metrics").read().decode())'
}

ip netns exec "$b" iperf3 -s -p 5201 -D
ip netns exec "$b" iperf3 -s -p 5202 -D
sleep 0.5
echo "soak: $secs s (warm-up $warmup s) ..." >&2
ip netns exec "$a" iperf3 -c 10.232.20.2 -p 5201 -t "$secs" -i 60 -J > "$work/tcp.json" &
tcp=$!
ip netns exec "$a" iperf3 -c 10.232.20.2 -p 5202 -u -l 64 -b "$udp_rate" -t "$secs" -J > "$work/udp.json" &
udp=$!
ip netns exec "$a" ping -i 0.1 -w "$secs" -q 10.232.20.2 > "$work/ping.txt" &
ping=$!
sleep "$warmup"
rss_a0=$(lab_rss_kib VmRSS "$a") rss_b0=$(lab_rss_kib VmRSS "$b")
metrics "$a" > "$work/a0.prom"; metrics "$b" > "$work/b0.prom"
wait "$tcp" "$udp" || true
wait "$ping" || true
rss_a1=$(lab_rss_kib VmRSS "$a") rss_b1=$(lab_rss_kib VmRSS "$b")
metrics "$a" > "$work/a1.prom"; metrics "$b" > "$work/b1.prom"

report=$(python3 - "$work" "$secs" "$warmup" "$udp_rate" "$rss_a0" "$rss_a1" "$rss_b0" "$rss_b1" <<'PY'
import json, re, sys, datetime, os
work, secs, warmup, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rss = [int(x) for x in sys.argv[5:9]]
tcp = json.load(open(f"{work}/tcp.json"))
udp = json.load(open(f"{work}/udp.json"))
ping = open(f"{work}/ping.txt").read()
def prom(path):
    values = {}
    for line in open(path):
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try: values[name] = float(value)
            except ValueError: pass
    return values
out = []
out.append(f"Run of {datetime.date.today()}: {secs} s, {os.cpu_count()} CPUs, kernel {os.uname().release}; "
           f"one TCP stream + 64-byte UDP at {rate}bit/s + ping every 100 ms; hosts URL refetched every second by both ends.")
out.append("")
out.append("| minute | TCP Gbit/s |")
out.append("|---:|---:|")
for i, interval in enumerate(tcp["intervals"]):
    out.append(f"| {i + 1} | {interval['sum']['bits_per_second'] / 1e9:.2f} |")
end = tcp["end"]
out.append(f"| all | {end['sum_received']['bits_per_second'] / 1e9:.2f} (retransmits {end['sum_sent'].get('retransmits', 'n/a')}) |")
out.append("")
m = re.search(r"(\d+) packets transmitted, (\d+) received.*?([\d.]+)% packet loss", ping)
u = udp["end"]["sum"]
out.append(f"- ping: {m.group(1)} sent, {m.group(2)} received, {m.group(3)} % loss")
out.append(f"- UDP flood: {u.get('packets', 0)} sent, {u.get('lost_percent', 0):.2f} % lost")
out.append(f"- RSS after {warmup} s warm-up → end: a {rss[0]/1024:.1f} → {rss[1]/1024:.1f} MiB, b {rss[2]/1024:.1f} → {rss[3]/1024:.1f} MiB "
           f"(growth {max(rss[1]-rss[0], rss[3]-rss[2])} KiB at most)")
for side in "ab":
    before, after = prom(f"{work}/{side}0.prom"), prom(f"{work}/{side}1.prom")
    drops = {k: after[k] - before.get(k, 0) for k in after if k.startswith("udptun_dropped_packets_total")}
    reason = lambda key: re.search(r'reason="(\w+)"', key).group(1)
    moved = ", ".join(f"{reason(k)} +{int(v)}" for k, v in sorted(drops.items()) if v)
    loads = after.get("udptun_hosts_loads_total", 0) - before.get("udptun_hosts_loads_total", 0)
    failures = after.get("udptun_hosts_load_failures_total", 0)
    out.append(f"- {side}: drop counters that moved after warm-up: {moved or 'none'}; "
               f"hosts fetch failures {int(failures)}, tables published {int(loads)} (unchanged documents publish none)")
print("\n".join(out))
PY
)
echo "$report"
if [ "$write" = --write ]; then
    python3 - "$report" <<'PY'
import re, sys
path = "RELIABILITY.md"
text = open(path).read()
start, end = "<!-- soak:start -->", "<!-- soak:end -->"
text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{sys.argv[1]}\n{end}", text, flags=re.S)
open(path, "w").write(text)
PY
    echo "RELIABILITY.md updated" >&2
fi
