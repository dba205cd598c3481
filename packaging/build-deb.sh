#!/usr/bin/env bash
# Builds a Debian package (target/debian/udptun_*.deb) with the binary, the systemd units, the
# man page, shell completions and the example config. Installs cargo-deb if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
cargo build --release --locked
assets=target/assets
mkdir -p "$assets"
target/release/udptun --generate-man | gzip -9n > "$assets/udptun.8.gz"
target/release/udptun --generate-completions bash > "$assets/udptun.bash"
target/release/udptun --generate-completions zsh > "$assets/_udptun"
target/release/udptun --generate-completions fish > "$assets/udptun.fish"
cargo deb --no-build "$@"
