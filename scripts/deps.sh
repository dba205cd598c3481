#!/usr/bin/env bash
# Installs what one of the README's commands needs, and nothing that is already there.
# Usage: scripts/deps.sh demo|test|bench
#   - the commands listed for it in scripts/tools.list: with apt-get when run as root on Debian
#     or Ubuntu; elsewhere it stops at once, naming the packages to install;
#   - for test: cargo-fuzz when the nightly toolchain is present (the fuzz smoke runs); without
#     nightly, test.sh says so at its end, and under CI=true this stops here instead.
# Prints one line for each thing it installs, and why; nothing when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."
purpose=${1:?usage: scripts/deps.sh demo|test|bench}

missing_tools=() missing_packages=()
while read -r tool package needed_by; do
    case "$tool" in '' | '#'*) continue ;; esac
    [[ " $needed_by " == *" $purpose "* ]] || continue
    command -v "$tool" >/dev/null 2>&1 && continue
    missing_tools+=("$tool")
    [[ " ${missing_packages[*]} " == *" $package "* ]] || missing_packages+=("$package")
done < scripts/tools.list

if [ ${#missing_packages[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "deps.sh: installing ${missing_packages[*]} with apt-get (for ${missing_tools[*]}, which $purpose runs)"
        export DEBIAN_FRONTEND=noninteractive
        # Quiet unless it fails (debconf chatters on stderr even when all goes well).
        if ! log=$(apt-get update -qq 2>&1 &&
            apt-get install -y -qq --no-install-recommends "${missing_packages[@]}" 2>&1); then
            echo "$log" >&2
            echo "deps.sh: apt-get could not install ${missing_packages[*]}" >&2
            exit 1
        fi
    else
        echo "deps.sh: $purpose needs ${missing_tools[*]}: install the packages ${missing_packages[*]}" \
            "(Debian names; as root with apt-get this script installs them itself)" >&2
        exit 1
    fi
fi

if [ "$purpose" = test ]; then
    if cargo +nightly --version >/dev/null 2>&1; then
        if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
            echo "deps.sh: installing cargo-fuzz with cargo install (for the fuzz smoke runs; a few minutes)"
            cargo install cargo-fuzz --locked --quiet
        fi
    elif [ "${CI:-}" = true ]; then
        echo "deps.sh: CI=true, and fuzzing needs the nightly toolchain (rustup toolchain install nightly)" >&2
        exit 1
    fi
fi
