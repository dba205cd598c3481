#!/usr/bin/env bash
# Builds udptun and shows it working: two network namespaces joined by a veth pair (the
# "internet", 10.233.0.0/24), a udptun in each, a ping across the tunnel (192.168.233.0/24) and
# what `udptun show` says about it.
# Everything it creates is removed on exit, also on error or Ctrl-C. Needs root; installs ip and
# ping if they are missing (scripts/deps.sh demo).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lab.sh

lab_need_root demo.sh
scripts/deps.sh demo

lab_build
lab_init udptun-demo-$$
a=$(lab_ns a)
b=$(lab_ns b)
lab_veth "$a" 10.233.0.1/24 "$b" 10.233.0.2/24

echo "== starting udptun in both namespaces (one-to-one, as on two VPSs)"
lab_udptun "$a" -A 10.233.0.2 -d udptun
lab_udptun "$b" -A 10.233.0.1 -d udptun
for ns in "$a" "$b"; do lab_wait_device "$ns" udptun; done
lab_addr "$a" udptun 192.168.233.1/24
lab_addr "$b" udptun 192.168.233.2/24

echo "== ping 192.168.233.2 through the tunnel"
ip netns exec "$a" ping -c 3 -i 0.2 192.168.233.2
echo "== udptun show, in the first namespace"
ip netns exec "$a" "$lab_bin" show
echo "== the tunnel works; cleaning up"
