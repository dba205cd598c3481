#!/usr/bin/env bash
# Builds udptun and shows it working: two network namespaces joined by a veth pair (the
# "internet", 10.233.0.0/24), a udptun in each, and a ping across the tunnel (192.168.233.0/24).
# Everything it creates is removed on exit, also on error or Ctrl-C. Needs root; installs ip and
# ping if they are missing (scripts/deps.sh demo).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "demo.sh: needs root (network namespaces and /dev/net/tun)" >&2; exit 1; }
scripts/deps.sh demo

cargo build --release --locked
bin=$PWD/target/release/udptun
a=udptun-demo-a-$$ b=udptun-demo-b-$$

cleanup() {
    for ns in "$a" "$b"; do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] && kill $pids 2>/dev/null || true
    done
    sleep 0.2
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$b" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$a"
ip netns add "$b"
ip link add eth0 netns "$a" type veth peer name eth0 netns "$b"
ip -n "$a" addr add 10.233.0.1/24 dev eth0 && ip -n "$a" link set eth0 up
ip -n "$b" addr add 10.233.0.2/24 dev eth0 && ip -n "$b" link set eth0 up

echo "== starting udptun in both namespaces (one-to-one, as on two VPSs)"
ip netns exec "$a" "$bin" -A 10.233.0.2 -d udptun &
ip netns exec "$b" "$bin" -A 10.233.0.1 -d udptun &
for ns in "$a" "$b"; do
    for _ in $(seq 50); do ip -n "$ns" link show udptun >/dev/null 2>&1 && break; sleep 0.1; done
done
ip -n "$a" addr add 192.168.233.1/24 dev udptun && ip -n "$a" link set udptun up
ip -n "$b" addr add 192.168.233.2/24 dev udptun && ip -n "$b" link set udptun up

echo "== ping 192.168.233.2 through the tunnel"
ip netns exec "$a" ping -c 3 -i 0.2 192.168.233.2
echo "== the tunnel works; cleaning up"
