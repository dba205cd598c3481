#!/usr/bin/env bash
# The test command: installs what the tests use (scripts/deps.sh test), then runs all tests
# (cargo test: unit, property, CLI and the namespace integration tests with the real binary),
# then each fuzz target for FUZZ_SECS (default 30) so that a regression in the parsers fails the
# run. Needs root and /dev/net/tun for the namespace tests; UDPTUN_SKIP_NAMESPACE_TESTS=1 skips
# them instead, and says so at the end. Without the nightly toolchain fuzzing is skipped, also
# said at the end. Under CI=true neither may be skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzz_secs=${FUZZ_SECS:-30}
skip_namespaces=${UDPTUN_SKIP_NAMESPACE_TESTS:-}
started=$SECONDS

# The namespace tests skip only where they cannot run (no root or no TUN) and the user said so.
namespaces_skipped=
if [ "$(id -u)" != 0 ] || [ ! -c /dev/net/tun ]; then
    if [ -z "$skip_namespaces" ]; then
        echo "test.sh: the namespace tests need root and /dev/net/tun; run as root, or set" \
            "UDPTUN_SKIP_NAMESPACE_TESTS=1 to run the rest without them" >&2
        exit 1
    fi
    namespaces_skipped=yes
    scripts/deps.sh fuzz
else
    scripts/deps.sh test
fi

# Every test binary runs even after one fails, so that one CI log names every failure.
cargo test --locked --no-fail-fast

fuzzed=
if cargo +nightly fuzz --version >/dev/null 2>&1; then
    scratch=$(mktemp -d /tmp/udptun-fuzz.XXXXXX)
    trap 'rm -rf "$scratch"' EXIT
    targets=(datagram icmp hosts config gro coalesce keepalive signature split)
    for target in "${targets[@]}"; do
        mkdir -p "$scratch/$target"
        echo "fuzz: $target for ${fuzz_secs}s"
        # New inputs go to the scratch corpus; the committed seeds are read only.
        cargo +nightly fuzz run "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
            -max_total_time="$fuzz_secs" -rss_limit_mb=1024 -malloc_limit_mb=256 -print_final_stats=1 \
            2> "$scratch/$target.log" || { tail -40 "$scratch/$target.log"; exit 1; }
        grep -E "stat::number_of_executed_units" "$scratch/$target.log" | sed "s/^/fuzz $target: /"
    done
    echo "fuzz: ${#targets[@]} passed, 0 failed"
    fuzzed=yes
fi

echo
echo "test.sh: done in $(((SECONDS - started) / 60)) min $(((SECONDS - started) % 60)) s"
if [ -n "$namespaces_skipped" ]; then
    echo "************************************************************************"
    echo "* NAMESPACE TESTS SKIPPED: UDPTUN_SKIP_NAMESPACE_TESTS is set. The tunnel *"
    echo "* itself was not tested; run as root without it for the full suite.   *"
    echo "************************************************************************"
fi
if [ -z "$fuzzed" ]; then
    echo "************************************************************************"
    echo "* FUZZING SKIPPED: no nightly toolchain (rustup toolchain install nightly) *"
    echo "************************************************************************"
    [ "${CI:-}" != true ] || exit 1
fi
