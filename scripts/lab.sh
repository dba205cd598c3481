# The namespace lab of scripts/demo.sh, scripts/soak.sh and bench/extra.sh, sourced by them:
# network namespaces named PREFIX-NAME, joined by a veth pair or a bridge, udptun started in
# them, and a cleanup that removes every namespace of the lab (and what runs in it) on exit,
# also on error or Ctrl-C. The cleanup finds the namespaces by their prefix, so it also removes
# those a subshell made.
#
#   . scripts/lab.sh
#   lab_init demo-$$            # namespaces demo-$$-*; cleanup on exit
#   a=$(lab_ns a)
#   b=$(lab_ns b)
#   lab_veth "$a" 10.233.0.1/24 "$b" 10.233.0.2/24
#   lab_udptun "$a" -A 10.233.0.2 -d udptun

lab_prefix=
lab_bin=
lab_ports=0

# lab_need_root SCRIPT: stops SCRIPT unless it runs as root.
lab_need_root() {
    [ "$(id -u)" = 0 ] || { echo "$1: needs root (network namespaces and /dev/net/tun)" >&2; exit 1; }
}

# lab_build: builds the release binary and sets lab_bin to it (CARGO_TARGET_DIR respected).
lab_build() {
    cargo build --release --locked
    lab_bin=${CARGO_TARGET_DIR:-$PWD/target}/release/udptun
}

# lab_init PREFIX: the lab's namespaces are PREFIX-*; removes them on exit. A script with more
# to clean sets its own trap that calls lab_cleanup.
lab_init() {
    lab_prefix=$1
    trap lab_cleanup EXIT
}

# lab_namespaces: the namespaces of the lab that exist.
lab_namespaces() {
    ip netns list 2>/dev/null | awk -v p="$lab_prefix-" 'index($1, p) == 1 {print $1}'
}

# lab_cleanup: stops what runs in the lab's namespaces (waiting up to 2 s for it to exit),
# then deletes them.
lab_cleanup() {
    local ns pids
    for ns in $(lab_namespaces); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] && kill $pids 2>/dev/null || true
    done
    for _ in $(seq 20); do
        pids=$(for ns in $(lab_namespaces); do ip netns pids "$ns" 2>/dev/null; done)
        [ -z "$pids" ] && break
        sleep 0.1
    done
    for ns in $(lab_namespaces); do ip netns del "$ns" 2>/dev/null || true; done
}

# lab_ns NAME: creates namespace PREFIX-NAME with lo up; prints its name.
lab_ns() {
    local ns=$lab_prefix-$1
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    echo "$ns"
}

# lab_addr NS DEV CIDR: puts CIDR on DEV in NS and brings DEV up.
lab_addr() {
    ip -n "$1" addr add "$3" dev "$2"
    ip -n "$1" link set "$2" up
}

# lab_veth NS_A CIDR_A NS_B CIDR_B: joins two namespaces by a veth pair, `eth0` in each.
lab_veth() {
    ip link add eth0 netns "$1" type veth peer name eth0 netns "$3"
    lab_addr "$1" eth0 "$2"
    lab_addr "$3" eth0 "$4"
}

# lab_bridge NAME: creates namespace PREFIX-NAME holding bridge br0; prints its name.
lab_bridge() {
    local sw
    sw=$(lab_ns "$1")
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" link set br0 up
    echo "$sw"
}

# lab_attach SWITCH NS CIDR: plugs NS into SWITCH's bridge, with `eth0` at CIDR.
lab_attach() {
    local port=p$lab_ports
    lab_ports=$((lab_ports + 1))
    ip link add eth0 netns "$2" type veth peer name "$port" netns "$1"
    ip -n "$1" link set "$port" master br0 up
    lab_addr "$2" eth0 "$3"
}

# lab_udptun NS ARGS...: starts "$lab_bin" ARGS in NS in the background (redirect the call's
# stderr to choose where its log goes).
lab_udptun() {
    local ns=$1; shift
    ip netns exec "$ns" "$lab_bin" "$@" &
}

# lab_wait_device NS DEV: waits up to 10 s for DEV to exist in NS; fails if it never does.
lab_wait_device() {
    for _ in $(seq 100); do
        ip -n "$1" link show "$2" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "lab: no device $2 in $1 after 10 s" >&2
    return 1
}

# lab_rss_kib FIELD NS: the largest FIELD (VmRSS, VmHWM) of the udptun processes in NS, in KiB.
lab_rss_kib() {
    local max=0 v pid
    for pid in $(ip netns pids "$2"); do
        [ "$(cat /proc/$pid/comm 2>/dev/null)" = udptun ] || continue
        v=$(awk -v f="$1:" '$1 == f {print $2}' /proc/$pid/status)
        [ "${v:-0}" -gt "$max" ] && max=$v
    done
    echo "$max"
}

# lab_cpu_ns NS...: CPU time (ns, user and system, every thread) the tunnel processes in the
# namespaces have used so far: every process there but the load (ping, iperf3).
lab_cpu_ns() {
    local total=0 ns pid task
    for ns in "$@"; do
        for pid in $(ip netns pids "$ns"); do
            case "$(cat /proc/$pid/comm 2>/dev/null)" in ping | iperf3) continue ;; esac
            for task in /proc/$pid/task/*; do
                total=$((total + $(cut -d' ' -f1 "$task/schedstat" 2>/dev/null || echo 0)))
            done
        done
    done
    echo "$total"
}
