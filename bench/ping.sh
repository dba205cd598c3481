#!/usr/bin/env bash
# Latency and its CPU cost, measured more finely than peers.sh's 50 pings: ROUNDS interleaved
# rounds of COUNT pings 10 ms apart through udptun at its default, udptun at the latency setting
# (LATENCY_ARGS, default --busy-poll 20000) and QuickTun raw (plain IP-in-UDP, the issue's
# reference), each on a fresh veth pair between two namespaces. Prints a markdown table: average
# RTT per round, the median, the median of udptun's per-round ratio to QuickTun's, and the CPU
# the two tunnel processes used per ping (user and system, every thread).
# Needs root. Usage: bench/ping.sh UDPTUN_BINARY [ROUNDS] [COUNT]   (defaults 3 and 1000)
set -euo pipefail
bin=$(realpath "$1") rounds=${2:-3} count=${3:-1000}
latency_args=${LATENCY_ARGS:---busy-poll 20000}
cd "$(dirname "$0")/.."
. scripts/lab.sh
lab_need_root bench/ping.sh
scripts/deps.sh bench
lab_bin=$bin
lab_init ubp-$$
results=$(mktemp /tmp/udptun-ping.XXXXXX)
trap 'lab_cleanup; rm -f "$results"' EXIT

measure() { # LABEL udptun ARGS... | LABEL quicktun
    local label=$1 kind=$2; shift 2
    local a b dev
    a=$(lab_ns a)
    b=$(lab_ns b)
    lab_veth "$a" 10.231.11.1/24 "$b" 10.231.11.2/24
    if [ "$kind" = quicktun ]; then
        dev=qt0
        local ns here there
        for end in "$a 1 2" "$b 2 1"; do
            read -r ns here there <<< "$end"
            ip netns exec "$ns" env IFACE=$dev IF_QT_PROTOCOL=raw IF_QT_TUN_MODE=1 \
                IF_QT_LOCAL_ADDRESS=10.231.11.$here IF_QT_LOCAL_PORT=2998 \
                IF_QT_REMOTE_ADDRESS=10.231.11.$there IF_QT_REMOTE_PORT=2998 quicktun >/dev/null 2>&1 &
        done
    else
        dev=udptun0
        lab_udptun "$a" -A 10.231.11.2 -d $dev "$@" 2>/dev/null
        lab_udptun "$b" -A 10.231.11.1 -d $dev "$@" 2>/dev/null
    fi
    for ns in "$a" "$b"; do lab_wait_device "$ns" $dev; done
    lab_addr "$a" $dev 10.232.11.1/24
    lab_addr "$b" $dev 10.232.11.2/24
    ip netns exec "$a" ping -c 20 -i 0.01 -q 10.232.11.2 >/dev/null
    local before after rtt
    before=$(lab_cpu_ns "$a" "$b")
    rtt=$(ip netns exec "$a" ping -n -q -c "$count" -i 0.01 -W 1 10.232.11.2 | awk -F/ '/^rtt/ {print $5 * 1000}')
    after=$(lab_cpu_ns "$a" "$b")
    lab_cleanup
    echo "$label $rtt $(( (after - before) / count / 1000 ))" >> "$results"
}

command -v quicktun >/dev/null || { echo "bench/ping.sh: needs quicktun (scripts/deps.sh bench)" >&2; exit 1; }
for round in $(seq "$rounds"); do
    echo "== bench/ping.sh round $round of $rounds" >&2
    measure default udptun
    # shellcheck disable=SC2086 # the arguments split on purpose
    measure latency udptun $latency_args
    measure quicktun quicktun
done

python3 - "$results" "$latency_args" "$count" <<'PY'
import statistics, sys
path, latency_args, count = sys.argv[1:]
rows = {}
for line in open(path):
    label, rtt, cpu = line.split()
    rows.setdefault(label, []).append((float(rtt), int(cpu)))
qt = [rtt for rtt, _ in rows["quicktun"]]
names = {"default": "udptun, default", "latency": f"udptun, `{latency_args}`", "quicktun": "QuickTun raw"}
print(f"| {count} pings, 10 ms apart | avg RTT µs, each round | median | vs QuickTun raw (median of per-round ratios) | tunnel CPU µs per ping |")
print("|---|---|---:|---:|---:|")
for label, runs in rows.items():
    rtts = [rtt for rtt, _ in runs]
    ratio = statistics.median(r / q for r, q in zip(rtts, qt))
    print(f"| {names[label]} | {', '.join(f'{r:.0f}' for r in rtts)} | {statistics.median(rtts):.0f} | "
          f"{ratio:.2f}x | {statistics.median(cpu for _, cpu in runs)} |")
PY
