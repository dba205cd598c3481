#!/usr/bin/env bash
# Installs what one of the README's commands needs, and nothing that is already there.
# Usage: scripts/deps.sh demo|test|fuzz|bench|mutants
#   - the commands listed for it in scripts/tools.list: with apt-get when run as root on Debian
#     or Ubuntu; elsewhere it stops at once, naming the packages to install;
#   - for test and fuzz: cargo-fuzz when the nightly toolchain is present (the fuzz smoke runs);
#     without nightly, test.sh says so at its end, and under CI=true this stops here instead.
#     (fuzz is test without the namespace tests' commands: test.sh when they are skipped.)
# Prints one line for each thing it installs, and why; nothing when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."
purpose=${1:?usage: scripts/deps.sh demo|test|fuzz|bench|mutants}

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
        # Never a question (debconf or a changed conffile), and wait for a dpkg lock held by
        # unattended upgrades on a fresh machine rather than fail at once.
        apt=(apt-get -qq -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef
            -o Dpkg::Options::=--force-confold)
        if ! log=$("${apt[@]}" update 2>&1 </dev/null &&
            "${apt[@]}" install -y --no-install-recommends "${missing_packages[@]}" 2>&1 </dev/null); then
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

if [ "$purpose" = test ] || [ "$purpose" = fuzz ]; then
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
