#!/usr/bin/env bash
# Fuzzes jaco.yaml + compose parsing for a bounded time.
#
#   fuzz/run.sh SECONDS
#
# Installs cargo-fuzz if missing, seeds fuzz/corpus/manifest/ from fuzz/seeds/, runs the
# `manifest` target with debug assertions (overflow checks) under AddressSanitizer for SECONDS
# and prints executions and coverage. Exits non-zero when libFuzzer found a crash, an
# invariant violation, a timeout or an out-of-memory input; the input is left in
# fuzz/artifacts/manifest/ (reproduce: see fuzz/README.md).
#
# Toolchain: cargo-fuzz needs nightly rustc flags (-Zsanitizer). `cargo +nightly` is used when a
# rustup nightly toolchain is installed; otherwise stable with RUSTC_BOOTSTRAP=1 (set
# JACO_FUZZ_TOOLCHAIN=stable to force that).
set -euo pipefail

if [[ $# -ne 1 || ! $1 =~ ^[0-9]+$ || $1 -eq 0 ]]; then
    echo "usage: $0 SECONDS" >&2
    exit 2
fi
seconds=$1

fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$fuzz_dir")
cd "$root"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cargo_cmd=(cargo)
toolchain=${JACO_FUZZ_TOOLCHAIN:-}
if [[ -z $toolchain ]]; then
    if command -v rustup >/dev/null 2>&1 && rustup run nightly rustc --version >/dev/null 2>&1; then
        toolchain=nightly
    else
        toolchain=stable
    fi
fi
if [[ $toolchain == nightly ]]; then
    cargo_cmd=(cargo +nightly)
else
    # Stable rustc accepts the -Z flags cargo-fuzz passes only when it believes it is
    # bootstrapping itself.
    export RUSTC_BOOTSTRAP=1
fi

corpus=fuzz/corpus/manifest
artifacts=fuzz/artifacts/manifest
mkdir -p "$corpus" "$artifacts"
cp fuzz/seeds/* "$corpus/"

log=$(mktemp "${TMPDIR:-/tmp}/jaco-fuzz.XXXXXX")
trap 'rm -f "$log"' EXIT

echo "== building (${cargo_cmd[*]} fuzz build -a manifest)"
"${cargo_cmd[@]}" fuzz build -a manifest

echo "== fuzzing for ${seconds}s (${toolchain}); corpus $corpus, artifacts $artifacts"
status=0
"${cargo_cmd[@]}" fuzz run -a manifest "$corpus" -- \
    -max_total_time="$seconds" \
    -dict=fuzz/manifest.dict \
    -rss_limit_mb=2048 \
    -max_len=16384 \
    -timeout=30 \
    -print_final_stats=1 \
    2>&1 | tee "$log" || status=$?

echo
echo "== summary"
# The last status line libFuzzer printed: "#<execs> <event> cov: N ft: N corp: N/size ...".
last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
execs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' | tail -n 1 || true)
cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
corp=$(sed -nE 's/.* corp: ([0-9]+\/[^ ]+).*/\1/p' <<<"$last")
echo "executions:      ${execs:-unknown}"
echo "coverage (cov):  ${cov:-unknown} edges"
echo "features (ft):   ${ft:-unknown}"
echo "corpus:          ${corp:-unknown}"
echo "last status:     ${last:-none}"

crashes=$(sed -nE 's/.*Test unit written to (.*)/\1/p' "$log" || true)
if [[ $status -ne 0 || -n $crashes ]]; then
    echo "== FAILED: libFuzzer exited with status $status"
    if [[ -n $crashes ]]; then
        echo "input(s) left in:"
        while IFS= read -r file; do
            echo "  $file"
            if command -v python3 >/dev/null 2>&1; then
                python3 -c 'import sys; print("    " + repr(open(sys.argv[1], "rb").read())[:2000])' "$file"
            else
                od -c "$file" | head -n 20 | sed 's/^/    /'
            fi
        done <<<"$crashes"
        echo "reproduce: ${cargo_cmd[*]} fuzz run -a manifest <file>"
    fi
    if [[ $status -eq 0 ]]; then status=1; fi
    exit "$status"
fi
echo "== no crash"
