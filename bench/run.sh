#!/usr/bin/env bash
# Benchmarks udptun against kernel VXLAN and the user-space peers with ../shared/bench/peers.sh,
# several runs, then as many runs of VXLAN and udptun with its latency setting (LATENCY_ARGS),
# bench/extra.sh, bench/ping.sh (1000 pings against QuickTun raw, with CPU) and a profile of
# each end under TCP and 64-byte UDP (bench/profile.sh), and
# writes the tables into BENCHMARKS.md (between the bench markers).
# Needs root. Usage: bench/run.sh [RUNS]   (default 3; PEERS_SH overrides the peers.sh path)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
latency_args=${LATENCY_ARGS:---busy-poll 20000}
peers=${PEERS_SH:-../shared/bench/peers.sh}
[ "$(id -u)" = 0 ] || { echo "bench/run.sh: needs root" >&2; exit 1; }
[ -f "$peers" ] || { echo "bench/run.sh: $peers not found (set PEERS_SH)" >&2; exit 1; }
scripts/deps.sh bench

cargo build --release --locked
work=$(mktemp -d /tmp/udptun-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp target/release/udptun "$work/udptun"   # later rebuilds do not change what is measured
version=$("$work/udptun" --version)

export PB_CMD_A="$work/udptun -A {remote} -d udptun0"
export PB_CMD_B="$work/udptun -A {remote} -d udptun0"
export PB_CMD_LABEL=udptun PB_CMD_VERSION="$version"
for i in $(seq "$runs"); do
    echo "== peers.sh run $i of $runs" >&2
    bash "$peers" --json "$work/run$i.json" veth vxlan wireguard-go boringtun quicktun-raw openvpn-none cmd \
        > "$work/run$i.md" || echo "peers.sh run $i exited $? (some kind failed; see the table)" >&2
done
for i in $(seq "$runs"); do
    echo "== peers.sh run $i of $runs, udptun $latency_args" >&2
    PB_CMD_A="$PB_CMD_A $latency_args" PB_CMD_B="$PB_CMD_B $latency_args" PB_CMD_LABEL=udptun-latency \
        bash "$peers" --json "$work/latency$i.json" vxlan cmd > "$work/latency$i.md" ||
        echo "peers.sh latency run $i exited $? (see the table)" >&2
done
echo "== udptun scaling and memory" >&2
bash bench/extra.sh "$work/udptun" "$work/extra.json"
echo "== latency and its CPU over 1000 pings" >&2
LATENCY_ARGS="$latency_args" bench/ping.sh "$work/udptun" "$runs" 1000 > "$work/ping.md"

echo "== profiles" >&2
for load in tcp udp64; do bench/profile.sh "$work/udptun" "$load" > "$work/profile-$load.md"; done
echo "== pure-core benchmarks" >&2
cargo bench --locked --bench table_scale 2>/dev/null | grep '^|' > "$work/scale.md"
cargo bench --locked --bench core 2>/dev/null | python3 -c '
import re, sys
print("| operation (criterion, median) | time |")
print("|---|---:|")
name = None
for line in sys.stdin:
    m = re.match(r"^(\S.*?)\s+time:\s+\[\S+ \S+ (\S+ \S+) \S+ \S+\]", line)
    if m:
        print(f"| {m.group(1)} | {m.group(2)} |"); name = None; continue
    m = re.match(r"^\s+time:\s+\[\S+ \S+ (\S+ \S+) \S+ \S+\]", line)
    if m and name:
        print(f"| {name} | {m.group(1)} |"); name = None; continue
    if line.strip() and not line.startswith(" ") and "time:" not in line:
        name = line.strip()
' > "$work/core.md"

table=$(
    python3 bench/median.py "$work/extra.json" "$work"/run*.json "$work"/latency*.json
    echo; echo "The latency setting: \`$latency_args\`."
    echo; echo "Latency against QuickTun raw (bench/ping.sh, $runs interleaved rounds):"; echo; cat "$work/ping.md"
    for load in tcp udp64; do echo; echo "Profile, $load (self time, both ends):"; echo; cat "$work/profile-$load.md"; done
    echo; cat "$work/scale.md"; echo; cat "$work/core.md"
)
echo "$table"
python3 - "$table" <<'PY'
import re, sys
path = "BENCHMARKS.md"
text = open(path).read()
start, end = "<!-- bench:start -->", "<!-- bench:end -->"
new = f"{start}\n{sys.argv[1]}\n{end}"
text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: new, text, flags=re.S)
open(path, "w").write(text)
PY
echo "BENCHMARKS.md updated" >&2
