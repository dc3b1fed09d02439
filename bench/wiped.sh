#!/usr/bin/env bash
# A stale memory costs nothing (issue 33, point 3): the fan-out of
# bench/compare.sh (each image of the mirror set to a registry, an OCI
# layout and a tarball, in one `occy sync`) run once with a cache, then again
# after the destination registry was wiped (its storage removed, the
# registry restarted) and the file outputs removed, with the first run's
# cache. Prints, per run, the source registry's blob GETs against the
# distinct blobs they read, and the bytes served; `--filtered` puts the
# layout and the tarballs through normalize-timestamps (the registry gets
# the images as they are: one fetch feeds the registry and the rewrite).
# Counts, not times: any build of occy will do.
#
#   bench/wiped.sh [--images N] [--base-sizes A,B,C] [--top-size MIB] [--filtered]
#
# OCCY_BIN and OCCY_TESTKIT name the binaries (default: target/release/).
set -euo pipefail
cd "$(dirname "$0")/.."

images=15 base_sizes=8,24,64 top_size=4 filtered=0
while [ $# -gt 0 ]; do
    case $1 in
    --images) images=$2 && shift ;;
    --base-sizes) base_sizes=$2 && shift ;;
    --top-size) top_size=$2 && shift ;;
    --filtered) filtered=1 ;;
    *) echo "wiped: unknown option $1" >&2 && exit 2 ;;
    esac
    shift
done
occy=${OCCY_BIN:-$PWD/target/release/occy}
testkit=${OCCY_TESTKIT:-$PWD/target/release/occy-testkit}
work=$(mktemp -d /tmp/occy-wiped.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_registry() { # NAME PORT
    printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
        "$work/$1" "$2" >"$work/$1.yml"
    docker-registry serve "$work/$1.yml" >>"$work/$1.log" 2>/dev/null &
    pids+=($!)
    reg_pid=$!
    for _ in $(seq 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $2), 0.2)" 2>/dev/null && return
        sleep 0.1
    done
    echo "wiped: registry $1 did not start" >&2 && exit 1
}
# Blob GETs in an access log from line $2 on: "GETS DISTINCT MIB".
blob_gets() {
    tail -n +"$2" "$1" | python3 -c '
import re, sys
gets, size = {}, 0
for line in sys.stdin:
    m = re.search(r"\"GET (/v2/\S+/blobs/sha256:[0-9a-f]+) HTTP[^\"]*\" (\d+) (\d+)", line)
    if m:
        d = m.group(1).rsplit(":", 1)[1]
        gets[d] = gets.get(d, 0) + 1
        size += int(m.group(3))
print(sum(gets.values()), len(gets), "%.1f" % (size / 1048576))'
}

"$testkit" generate "$work/gen" --set bench-mirror --images "$images" --base-sizes "$base_sizes" --top-size "$top_size" >"$work/gen.txt"
mapfile -t apps < <(cut -d' ' -f1 "$work/gen.txt")
src_port=$(free_port)
dst_port=$(free_port)
start_registry src "$src_port"
start_registry dst "$dst_port"
dst_pid=$reg_pid
{
    printf 'version: 1\ndefaults: { check: "off" }\nregistries:\n  "127.0.0.1:%s": { insecure: true }\nsync:\n' "$src_port"
    for a in "${apps[@]}"; do
        printf '  - from: oci://%s/gen:%s\n    to: registry://127.0.0.1:%s/bench/%s:1.0\n' "$work" "$a" "$src_port" "$a"
    done
} >"$work/seed.yaml"
"$occy" -q --no-cache sync "$work/seed.yaml" >/dev/null
{
    printf 'version: 1\nregistries:\n  "127.0.0.1:%s": { insecure: true }\n  "127.0.0.1:%s": { insecure: true }\nsync:\n' "$src_port" "$dst_port"
    for a in "${apps[@]}"; do
        from=$(printf '  - from: registry://127.0.0.1:%s/bench/%s\n    tags: ["1.0"]\n' "$src_port" "$a")
        reg=$(printf '      - registry://127.0.0.1:%s/fan/%s' "$dst_port" "$a")
        files=$(printf '      - "oci://%s/fan/oci:{name}-{tag}"\n      - "tar://%s/fan/tar/{name}-{tag}.tar"' "$work" "$work")
        if [ "$filtered" = 1 ]; then
            printf '%s\n    to:\n%s\n%s\n    filters: [normalize-timestamps]\n    to:\n%s\n' "$from" "$reg" "$from" "$files"
        else
            printf '%s\n    to:\n%s\n%s\n' "$from" "$reg" "$files"
        fi
    done
} >"$work/fanout.yaml"

for run in first wiped; do
    if [ "$run" = wiped ]; then
        kill "$dst_pid" && wait "$dst_pid" 2>/dev/null || true
        rm -rf "$work/dst" "$work/fan"
        start_registry dst "$dst_port"
        dst_pid=$reg_pid
    fi
    mkdir -p "$work/fan/tar"
    if [ "$run" = wiped ]; then # what the plan says of the remembered mounts
        "$occy" -q --cache-dir "$work/cache" sync "$work/fanout.yaml" --plan | grep -E 'remembered|^[0-9]+ targets' | sed 's/^ */plan: /' | sort -u | head -4
    fi
    from=$(($(wc -l <"$work/src.log") + 1))
    "$occy" -q --cache-dir "$work/cache" -O json sync "$work/fanout.yaml" >"$work/$run.json"
    sleep 0.5
    read -r gets distinct mib < <(blob_gets "$work/src.log" "$from")
    declined=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["mounts_declined"])' "$work/$run.json")
    printf '%-6s run: %3d source blob GETs for %3d distinct blobs, %7s MiB served; %d mounts declined\n' \
        "$run" "$gets" "$distinct" "$mib" "$declined"
done
