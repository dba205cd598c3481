#!/usr/bin/env bash
# All tests: unit, property and namespace integration tests (cargo test), then each fuzz target
# for FUZZ_SECS (default 30) so that a regression in the parsers fails the run. The namespace
# tests need root and /dev/net/tun; fuzzing needs the nightly toolchain and cargo-fuzz. Outside
# CI a missing piece is skipped with a message; under CI=true it is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzz_secs=${FUZZ_SECS:-30}

cargo test --locked

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    if [ "${CI:-}" = true ]; then
        echo "test.sh: cargo-fuzz with the nightly toolchain is needed under CI" >&2
        exit 1
    fi
    echo "SKIPPED fuzz smoke runs: needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)"
    exit 0
fi
scratch=$(mktemp -d /tmp/udptun-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
targets=(datagram icmp hosts config)
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
