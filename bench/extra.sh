#!/usr/bin/env bash
# Measurements of udptun alone that peers.sh does not make: scaling with --threads over two
# parallel TCP streams, the plain path (--no-offload), and resident memory idle and at peak.
# Two namespaces on a veth pair, as peers.sh does. Usage: extra.sh UDPTUN_BINARY OUT.json
set -euo pipefail
bin=$1 out=$2
secs=${EXTRA_TIME:-5}
a=ubx-a-$$ b=ubx-b-$$

cleanup() {
    for ns in "$a" "$b"; do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] && kill $pids 2>/dev/null || true
    done
    sleep 0.3
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$b" 2>/dev/null || true
}
trap cleanup EXIT

rss_kib() { # FIELD NS -> largest value of FIELD among udptun processes in NS
    local max=0 v
    for pid in $(ip netns pids "$2"); do
        [ "$(cat /proc/$pid/comm 2>/dev/null)" = udptun ] || continue
        v=$(awk -v f="$1:" '$1 == f {print $2}' /proc/$pid/status)
        [ "${v:-0}" -gt "$max" ] && max=$v
    done
    echo "$max"
}

measure() { # LABEL STREAMS UDPTUN-ARGS...
    local label=$1 streams=$2; shift 2
    ip netns add "$a"; ip netns add "$b"
    ip link add eth0 netns "$a" type veth peer name eth0 netns "$b"
    ip -n "$a" addr add 10.231.9.1/24 dev eth0; ip -n "$a" link set eth0 up; ip -n "$a" link set lo up
    ip -n "$b" addr add 10.231.9.2/24 dev eth0; ip -n "$b" link set eth0 up; ip -n "$b" link set lo up
    ip netns exec "$a" "$bin" -A 10.231.9.2 -d udptun0 "$@" 2>/dev/null &
    ip netns exec "$b" "$bin" -A 10.231.9.1 -d udptun0 "$@" 2>/dev/null &
    for ns in "$a" "$b"; do
        for _ in $(seq 100); do ip -n "$ns" link show udptun0 >/dev/null 2>&1 && break; sleep 0.05; done
    done
    ip -n "$a" addr add 10.232.9.1/24 dev udptun0; ip -n "$a" link set udptun0 up
    ip -n "$b" addr add 10.232.9.2/24 dev udptun0; ip -n "$b" link set udptun0 up
    ip netns exec "$a" ping -c 3 -i 0.2 -q 10.232.9.2 >/dev/null
    sleep 1
    local idle; idle=$(( $(rss_kib VmRSS "$a") > $(rss_kib VmRSS "$b") ? $(rss_kib VmRSS "$a") : $(rss_kib VmRSS "$b") ))
    ip netns exec "$b" iperf3 -s -1 -D
    sleep 0.3
    local gbps
    gbps=$(ip netns exec "$a" iperf3 -c 10.232.9.2 -t "$secs" -P "$streams" -J |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)')
    local peak; peak=$(( $(rss_kib VmHWM "$a") > $(rss_kib VmHWM "$b") ? $(rss_kib VmHWM "$a") : $(rss_kib VmHWM "$b") ))
    cleanup
    printf '{"label": "%s", "gbps": %s, "rss_idle_mib": %s, "rss_peak_mib": %s}' \
        "$label" "$gbps" "$(awk "BEGIN {print $idle / 1024}")" "$(awk "BEGIN {print $peak / 1024}")"
}

rows=()
rows+=("$(measure "1 stream, --threads 1" 1 --threads 1)")
rows+=("$(measure "2 streams, --threads 1" 2 --threads 1)")
rows+=("$(measure "2 streams, --threads 2" 2 --threads 2)")
rows+=("$(measure "1 stream, --no-offload --threads 1" 1 --no-offload --threads 1)")
cpu_model=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
{
    printf '{"date": "%s", "cpu_model": "%s", "rows": [' "$(date -u +%Y-%m-%d)" "$cpu_model"
    (IFS=,; printf '%s' "${rows[*]}")
    printf ']}\n'
} > "$out"
