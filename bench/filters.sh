#!/usr/bin/env bash
# normalize-timestamps on a big image, registry -> registry, occy beside
# occystrap 0.4.17 (installed from PyPI into a venv under ~/.cache) in one
# run, on one local Distribution registry. Prints wall time, peak memory and
# the occystrap/occy time ratio.
#
#   bench/filters.sh [SIZE_MIB [CONTENT]]
#
# SIZE_MIB (default 256) is the size of the image's big layer, next to a small
# base. CONTENT is `realistic` (default: a tree of files that compress like a
# root filesystem, 2-3:1) or `random` (one file of pseudo-random bytes that
# gzip can only entropy-code, the cheapest input for a high compression level).
#
# Needs docker-registry, python3-venv and /usr/bin/time (./test.sh installs the first and last).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-256}
content=${2:-realistic}
cargo build --release --locked -q -p occy -p occy-testkit
occy=$PWD/target/release/occy
testkit=$PWD/target/release/occy-testkit

venv=${OCCY_BENCH_VENV:-$HOME/.cache/occy-bench/occystrap-0.4.17}
if [ ! -x "$venv/bin/occystrap" ]; then
    echo "bench: installing occystrap 0.4.17 into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q occystrap==0.4.17
fi
occystrap=$venv/bin/occystrap

. bench/lib.sh
bench_setup filters

"$testkit" generate "$work/src" --set big --size "$size" --content "$content" >/dev/null
"$occy" --insecure-registry "$reg" process "oci://$work/src:big" "registry://$reg/bench/big:1" 2>/dev/null


read -r o_kib o_s <<<"$(measure occy "$occy" --insecure-registry "$reg" --no-cache \
    process "registry://$reg/bench/big:1" "registry://$reg/occy/big:1" -f normalize-timestamps)"
read -r p_kib p_s <<<"$(measure occystrap "$occystrap" --insecure \
    process "registry://$reg/bench/big:1" "registry://$reg/occystrap/big:1" -f normalize-timestamps)"

# Both outputs must really be normalized: every mtime 0 in every layer.
for who in occy occystrap; do
    "$occy" --insecure-registry "$reg" process "registry://$reg/$who/big:1" "dir://$work/check-$who" >/dev/null 2>&1
    bad=$(for l in "$work/check-$who"/*/layer.tar; do tar -tvf "$l" --full-time | grep -vc ' 1970-01-01 00:00:00 ' || true; done | awk '{s+=$1} END {print s+0}')
    echo "$who: entries with a non-zero mtime: $bad"
done

printf '\nnormalize-timestamps, registry -> registry, %s MiB layer of %s content\n' "$size" "$content"
printf '%-10s %10s %12s\n' tool seconds "peak MiB"
printf '%-10s %10.2f %12.1f\n' occy "$o_s" "$(awk -v k="$o_kib" 'BEGIN{print k/1024}')"
printf '%-10s %10.2f %12.1f\n' occystrap "$p_s" "$(awk -v k="$p_kib" 'BEGIN{print k/1024}')"
awk -v o="$o_s" -v p="$p_s" 'BEGIN { if (o > 0) printf "occystrap/occy time ratio: %.1fx\n", p/o }'
