#!/usr/bin/env bash
# A/B of two revisions of udptun on this machine, for what a change costs the data path: both
# are built in release mode, then peers.sh measures its `cmd` kind with A, then B, ROUNDS times
# interleaved (so that drift of the machine hits both), and the medians of TCP, UDP 64 B and
# ping of each are printed as a markdown table. Needs root.
# Usage: bench/ab.sh REV_A REV_B [ROUNDS]   (default 3; PEERS_SH overrides the peers.sh path)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,6p' "$0" >&2; exit 2; }
rev_a=$1 rev_b=$2 rounds=${3:-3}
peers=${PEERS_SH:-../shared/bench/peers.sh}
[ "$(id -u)" = 0 ] || { echo "bench/ab.sh: needs root" >&2; exit 1; }
[ -f "$peers" ] || { echo "bench/ab.sh: $peers not found (set PEERS_SH)" >&2; exit 1; }
scripts/deps.sh bench

work=$(mktemp -d /tmp/udptun-ab.XXXXXX)
cleanup() { git worktree remove --force "$work/src" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
labels=()
for rev in "$rev_a" "$rev_b"; do
    label=$(git rev-parse --short "$rev")
    git worktree add -q --detach "$work/src" "$rev"
    (cd "$work/src" && CARGO_TARGET_DIR="$work/target" cargo build --release --locked -q)
    cp "$work/target/release/udptun" "$work/udptun-$label"
    git worktree remove --force "$work/src"
    labels+=("$label")
done

for round in $(seq "$rounds"); do
    for label in "${labels[@]}"; do
        echo "== round $round of $rounds: $label" >&2
        PB_CMD_A="$work/udptun-$label -A {remote} -d udptun0" PB_CMD_B="$work/udptun-$label -A {remote} -d udptun0" \
            PB_CMD_LABEL="$label" bash "$peers" --no-install --json "$work/$label-$round.json" cmd >/dev/null ||
            echo "peers.sh exited $? for $label (see its table)" >&2
    done
done

python3 - "$work" "${labels[@]}" <<'PY'
import glob, json, statistics, sys
sys.path.insert(0, "bench")
from median import cpu_per_gb
work, labels = sys.argv[1], sys.argv[2:]
def med(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else float("nan")
rows = {}
for label in labels:
    runs = [json.load(open(path)) for path in sorted(glob.glob(f"{work}/{label}-*.json"))]
    results = [r for run in runs for r in run["results"]]
    cpu = [cpu_per_gb(r, run["meta"].get("duration_s", 5)) for run in runs for r in run["results"]]
    rows[label] = [med([r.get(k) for r in results]) for k in ("tcp_gbps", "udp_rx_kpps", "ping_avg_us")] + [med(cpu), len(results)]
meta = json.load(open(glob.glob(f"{work}/{labels[0]}-*.json")[0]))["meta"]
print(f"Machine: {meta.get('cpus', '?')} CPUs, kernel {meta.get('kernel', '?')}, {meta.get('cpu_model', '?')}; "
      f"medians of {rows[labels[0]][4]} interleaved runs each.\n")
print("| build | TCP Gbit/s | UDP 64 B kpps | ping avg µs | tunnel CPU s/GB |")
print("|---|---:|---:|---:|---:|")
for label, (tcp, udp, ping, cpu, _) in rows.items():
    print(f"| {label} | {tcp:.2f} | {udp:.1f} | {ping:.0f} | {cpu:.2f} |")
a, b = rows[labels[0]], rows[labels[1]]
print(f"| {labels[1]} / {labels[0]} | {b[0] / a[0]:.3f} | {b[1] / a[1]:.3f} | {b[2] / a[2]:.3f} | {b[3] / a[3]:.3f} |")
for label in labels:  # every run, so that the noise shows
    for path in sorted(glob.glob(f"{work}/{label}-*.json")):
        for r in json.load(open(path))["results"]:
            print(f"<!-- {path.rsplit('/', 1)[1]}: tcp {r.get('tcp_gbps')} udp {r.get('udp_rx_kpps')} ping {r.get('ping_avg_us')} cpu_s {r.get('tun_cpu_s')} -->")
PY
