#!/usr/bin/env bash
# Measurements of udptun alone that peers.sh does not make: scaling with --threads over two
# parallel TCP streams, the plain path (--no-offload), resident memory idle and at peak, and how
# long `udptun show` takes with 100,000 peers, and the CPU an idle tunnel pair uses over 10 s.
# Two namespaces on a veth pair, as peers.sh does. Usage: extra.sh UDPTUN_BINARY OUT.json
set -euo pipefail
bin=$1 out=$2
secs=${EXTRA_TIME:-5}
. "$(dirname "$0")/../scripts/lab.sh"
lab_bin=$bin
lab_init ubx-$$

measure() { # LABEL STREAMS UDPTUN-ARGS...
    local label=$1 streams=$2; shift 2
    local a b
    a=$(lab_ns a)
    b=$(lab_ns b)
    lab_veth "$a" 10.231.9.1/24 "$b" 10.231.9.2/24
    lab_udptun "$a" -A 10.231.9.2 -d udptun0 "$@" 2>/dev/null
    lab_udptun "$b" -A 10.231.9.1 -d udptun0 "$@" 2>/dev/null
    for ns in "$a" "$b"; do lab_wait_device "$ns" udptun0; done
    lab_addr "$a" udptun0 10.232.9.1/24
    lab_addr "$b" udptun0 10.232.9.2/24
    ip netns exec "$a" ping -c 3 -i 0.2 -q 10.232.9.2 >/dev/null
    sleep 1
    local idle; idle=$(( $(lab_rss_kib VmRSS "$a") > $(lab_rss_kib VmRSS "$b") ? $(lab_rss_kib VmRSS "$a") : $(lab_rss_kib VmRSS "$b") ))
    ip netns exec "$b" iperf3 -s -1 -D
    sleep 0.3
    local gbps
    gbps=$(ip netns exec "$a" iperf3 -c 10.232.9.2 -t "$secs" -P "$streams" -J |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)')
    local peak; peak=$(( $(lab_rss_kib VmHWM "$a") > $(lab_rss_kib VmHWM "$b") ? $(lab_rss_kib VmHWM "$a") : $(lab_rss_kib VmHWM "$b") ))
    lab_cleanup
    printf '{"label": "%s", "gbps": %s, "rss_idle_mib": %s, "rss_peak_mib": %s}' \
        "$label" "$gbps" "$(awk "BEGIN {print $idle / 1024}")" "$(awk "BEGIN {print $peak / 1024}")"
}

idle_cpu_ms() { # -> {"default": MS, "keepalive": MS}: CPU (all threads, both udptuns) over 10 s idle
    local result=() args
    for args in "" "--keepalive 1"; do
        local a b
        a=$(lab_ns a)
        b=$(lab_ns b)
        lab_veth "$a" 10.231.9.1/24 "$b" 10.231.9.2/24
        # shellcheck disable=SC2086 # the arguments split on purpose
        lab_udptun "$a" -A 10.231.9.2 -d udptun0 $args 2>/dev/null
        # shellcheck disable=SC2086
        lab_udptun "$b" -A 10.231.9.1 -d udptun0 $args 2>/dev/null
        for ns in "$a" "$b"; do lab_wait_device "$ns" udptun0; done
        lab_addr "$a" udptun0 10.232.9.1/24
        lab_addr "$b" udptun0 10.232.9.2/24
        ip netns exec "$a" ping -c 3 -i 0.2 -q 10.232.9.2 >/dev/null
        sleep 2
        local before after
        before=$(lab_cpu_ns "$a" "$b")
        sleep 10
        after=$(lab_cpu_ns "$a" "$b")
        lab_cleanup
        result+=("$(awk "BEGIN {printf \"%.2f\", ($after - $before) / 1e6}")")
    done
    printf '{"default": %s, "keepalive": %s}' "${result[0]}" "${result[1]}"
}

show_ms() { # -> {"json": MS, "text": MS}: the median of 5 runs of `udptun show` with 100,000 peers
    local ns hosts
    ns=$(lab_ns show)
    hosts=$(mktemp /tmp/udptun-show-hosts.XXXXXX)
    python3 -c 'print("{\"nodes\": {" + ",".join(f"\"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\": {{\"host\": \"100.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\"}}" for i in range(1, 100001)) + "}}")' > "$hosts"
    lab_udptun "$ns" --hosts-file "$hosts" -d udptun0 2>/dev/null
    lab_wait_device "$ns" udptun0
    for _ in $(seq 100); do ip netns exec "$ns" "$bin" show udptun0 --json >/dev/null 2>&1 && break; sleep 0.1; done
    python3 - "$ns" "$bin" <<'PY'
import statistics, subprocess, sys, time
ns, udptun = sys.argv[1:]
def median_ms(*args):
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run(["ip", "netns", "exec", ns, udptun, "show", "udptun0", *args], stdout=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
print(f'{{"json": {median_ms("--json"):.0f}, "text": {median_ms():.0f}}}')
PY
    rm -f "$hosts"
    lab_cleanup
}

rows=()
rows+=("$(measure "1 stream, --threads 1" 1 --threads 1)")
rows+=("$(measure "2 streams, --threads 1" 2 --threads 1)")
rows+=("$(measure "2 streams, --threads 2" 2 --threads 2)")
rows+=("$(measure "1 stream, --no-offload --threads 1" 1 --no-offload --threads 1)")
show=$(show_ms)
idle=$(idle_cpu_ms)
cpu_model=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
{
    printf '{"date": "%s", "cpu_model": "%s", "show_ms": %s, "idle_cpu_ms": %s, "rows": [' "$(date -u +%Y-%m-%d)" "$cpu_model" "$show" "$idle"
    (IFS=,; printf '%s' "${rows[*]}")
    printf ']}\n'
} > "$out"
