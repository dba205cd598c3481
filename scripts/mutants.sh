#!/usr/bin/env bash
# Mutation testing of the pure core (packet, peers, batch, hosts; scope in .cargo/mutants.toml):
# cargo-mutants changes the code one way at a time (a comparison flipped, a return value
# replaced...) and runs the unit and property tests against each change. A mutant no test
# catches is "missed": a behaviour nothing checks. Writes the figures and the missed mutants
# into RELIABILITY.md (between the mutants markers). About 25 minutes on 2 cores.
# Usage: scripts/mutants.sh [extra cargo-mutants arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh mutants
command -v cargo-mutants >/dev/null || {
    echo "mutants.sh: installing cargo-mutants with cargo install (a few minutes)"
    cargo install cargo-mutants --locked --quiet
}
out=target/mutants
rm -rf "$out"
started=$SECONDS
# Exit status 2 (mutants missed) and 3 (timeouts) are figures to report, not failures.
status=0
cargo mutants --no-shuffle --jobs 1 --profile mutants --output "$out" "$@" || status=$?
case $status in 0 | 2 | 3) ;; *) echo "mutants.sh: cargo mutants failed ($status)" >&2; exit "$status" ;; esac
minutes=$(((SECONDS - started + 30) / 60))

python3 - "$out/mutants.out" "$minutes" <<'PY'
import json, os, re, subprocess, sys
out, minutes = sys.argv[1], sys.argv[2]
outcomes = json.load(open(os.path.join(out, "outcomes.json")))
counts = {k: outcomes.get(k, 0) for k in ("caught", "missed", "timeout", "unviable")}
viable = counts["caught"] + counts["missed"] + counts["timeout"]
score = 100.0 * (counts["caught"] + counts["timeout"]) / viable if viable else 0.0
missed = [l.strip() for l in open(os.path.join(out, "missed.txt")) if l.strip()]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
date = subprocess.run(["date", "-u", "+%Y-%m-%d"], capture_output=True, text=True).stdout.strip()
cpus = os.cpu_count()
lines = [
    f"cargo-mutants on `src/packet.rs`, `src/peers.rs`, `src/batch.rs`, `src/hosts.rs`, judged by",
    f"the unit and property tests (run of {date} at {commit}, {cpus} CPUs, {minutes} min):",
    "",
    "| mutants | caught | timed out (caught) | missed | unviable (did not build) | score |",
    "|---:|---:|---:|---:|---:|---:|",
    f"| {viable + counts['unviable']} | {counts['caught']} | {counts['timeout']} | {counts['missed']} | {counts['unviable']} | **{score:.1f} %** |",
]
if missed:
    lines += ["", "Missed (each is killed by a test or justified below):", ""]
    lines += [f"- `{m}`" for m in missed]
block = "\n".join(lines)
path = "RELIABILITY.md"
text = open(path).read()
start, end = "<!-- mutants:start -->", "<!-- mutants:end -->"
if start in text:
    text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{block}\n{end}", text, flags=re.S)
else:
    text += f"\n## Mutation testing\n\n`scripts/mutants.sh` (about an hour):\n\n{start}\n{block}\n{end}\n"
open(path, "w").write(text)
print(block)
PY
