#!/usr/bin/env bash
# Where udptun's time goes: runs one load through a tunnel between two namespaces (as peers.sh
# does) while `perf record` samples both udptun processes, then prints the top symbols of the
# sending and the receiving end as a markdown table (self time, kernel and user space).
# Needs root and perf. Usage: bench/profile.sh UDPTUN_BINARY tcp|udp64 [SECONDS]
set -euo pipefail
bin=$(realpath "$1") load=$2 secs=${3:-5}
top=${PROFILE_TOP:-12}
case $load in tcp) iperf_args=() ;; udp64) iperf_args=(-u -l 64 -b 0) ;; *) sed -n '2,5p' "$0" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
. scripts/lab.sh
lab_need_root bench/profile.sh
command -v perf >/dev/null || { echo "bench/profile.sh: needs perf (scripts/deps.sh bench installs it)" >&2; exit 1; }
scripts/deps.sh bench
lab_init ubp-$$
work=$(mktemp -d /tmp/udptun-profile.XXXXXX)
trap 'lab_cleanup; rm -rf "$work"' EXIT
cp "$bin" "$work/udptun"   # the processes are found by their name
lab_bin=$work/udptun

a=$(lab_ns a)
b=$(lab_ns b)
lab_veth "$a" 10.231.7.1/24 "$b" 10.231.7.2/24
lab_udptun "$a" -A 10.231.7.2 -d udptun0 2>/dev/null
lab_udptun "$b" -A 10.231.7.1 -d udptun0 2>/dev/null
for ns in "$a" "$b"; do lab_wait_device "$ns" udptun0; done
lab_addr "$a" udptun0 10.232.7.1/24
lab_addr "$b" udptun0 10.232.7.2/24
ip netns exec "$a" ping -c 3 -i 0.2 -q 10.232.7.2 >/dev/null
pid_of() { for pid in $(ip netns pids "$1"); do [ "$(cat /proc/$pid/comm)" = udptun ] && echo "$pid"; done; true; }

ip netns exec "$b" iperf3 -s -1 -D
sleep 0.3
send_pid=$(pid_of "$a") recv_pid=$(pid_of "$b")
[ -n "$send_pid" ] && [ -n "$recv_pid" ] || { echo "bench/profile.sh: udptun is not running" >&2; exit 1; }
perf record -q -g -o "$work/send.data" -p "$send_pid" -- sleep "$secs" 2>/dev/null &
perf_send=$!
perf record -q -g -o "$work/recv.data" -p "$recv_pid" -- sleep "$secs" 2>/dev/null &
perf_recv=$!
ip netns exec "$a" iperf3 -c 10.232.7.2 -t "$secs" "${iperf_args[@]}" >/dev/null
wait "$perf_send" "$perf_recv"

summary() { # DATA -> "share symbol" lines, self time
    perf report -i "$1" -g none --no-children --sort sym --percent-limit 1 --stdio 2>/dev/null |
        sed -nE 's/^ +([0-9.]+%) +\[[^]]*\] +(.*[^ ]) *$/\1\t\2/p' | head -n "$top"
}
echo "| sending end ($load) | % | receiving end ($load) | % |"
echo "|---|---:|---|---:|"
paste <(summary "$work/send.data") <(summary "$work/recv.data") |
    awk -F'\t' '{printf "| `%s` | %s | `%s` | %s |\n", $2, $1, $4, $3}'
