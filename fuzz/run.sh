#!/usr/bin/env bash
# Fuzzes every target for SECONDS each (default 300) with cargo fuzz
# (nightly toolchain; `cargo install cargo-fuzz` once). Seeds come from
# fuzz/seeds.sh; a crash is saved under fuzz/artifacts/TARGET/: copy it to
# fuzz/regressions/TARGET/ so `cargo test --test fuzz_regressions` replays it
# on every test run, then fix it.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-300}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(sync_file reference manifest config tar_rewrite extract)
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: needs a nightly toolchain (rustup toolchain install nightly) and cargo-fuzz (cargo install cargo-fuzz)" >&2
    exit 2
fi
./seeds.sh
found=()
for t in "${targets[@]}"; do
    echo "== $t: ${seconds}s"
    if ! cargo +nightly fuzz run "$t" "corpus/$t" "regressions/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=1024 -max_len=65536 -timeout=10; then
        found+=("$t")
    fi
done
if [ ${#found[@]} -gt 0 ]; then
    echo "fuzz/run.sh: findings in ${found[*]}: see fuzz/artifacts/" >&2
    exit 1
fi
