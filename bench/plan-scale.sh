#!/usr/bin/env bash
# How `occy sync --plan` scales (issue 18, point 7): a sync of REPOS
# repositories × TAGS tags (default 100 × 100 = 10,000 tags) from one
# registry to another, planned cold (empty destination) and warm (after the
# sync), beside the time the registries alone need to answer the same
# requests (bench/replay.py sends the GETs and HEADs of the plan's access-log
# lines again, 16 keep-alive connections, occy's planner concurrency).
# Each plan runs once untimed first, so that occy and the replay meet the
# registries' caches alike. Also the peak RSS of a plan of one repository
# (TAGS targets) and of all of them: the difference divided by the extra
# targets is the memory each target costs. docs/performance.md has a
# recent result.
#
#   bench/plan-scale.sh [--repos N] [--tags N] [--keep]
#
# Needs docker-registry (Debian), python3, /usr/bin/time; builds occy and
# the image generator with cargo build --release (OCCY_BIN=path skips
# occy's build).
set -euo pipefail
cd "$(dirname "$0")/.."
repos=100 tags=100 keep=0
die() {
    echo "plan-scale: $*" >&2
    exit 1
}
while [ $# -gt 0 ]; do
    case $1 in
    --repos) repos=$2 && shift ;;
    --tags) tags=$2 && shift ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' && exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
for n in "$repos" "$tags"; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "expected a positive number, got '$n'"; done
[ "$repos" -le 100 ] && [ "$tags" -le 1000 ] || die "the generator names at most 100 repositories (r00-r99) of 1,000 tags"
for c in docker-registry python3 /usr/bin/time; do command -v "$c" >/dev/null || die "$c is missing (apt-get install docker-registry python3 time)"; done

if [ -z "${OCCY_BIN:-}" ]; then
    cargo build --release --locked -q -p occy
    OCCY_BIN=$PWD/target/release/occy
fi
cargo build --release --locked -q -p occy-testkit
testkit=$PWD/target/release/occy-testkit
occy=$OCCY_BIN

work=$(mktemp -d /tmp/occy-plan-scale.XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$keep" = 1 ]; then echo "plan-scale: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_registry() { # NAME PORT
    mkdir -p "$work/$1"
    printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
        "$work/$1" "$2" >"$work/$1.yml"
    docker-registry serve "$work/$1.yml" >>"$work/$1.log" 2>>"$work/$1.err" &
    pids+=($!)
    local _
    for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return; sleep 0.05; done
    die "the registry did not start (see $work/$1.err)"
}
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }

src_port=$(free_port)
start_registry src "$src_port"
dst_port=$(free_port)
start_registry dst "$dst_port"
src=127.0.0.1:$src_port dst=127.0.0.1:$dst_port

echo "plan-scale: generating $repos x $tags images and filling the source registry" >&2
"$testkit" generate "$work/gen" --set bench-plan --repos "$repos" --tags "$tags" >"$work/gen.txt"
{
    printf 'version: 1\ndefaults: { image_parallel: 16, check: "off" }\nregistries:\n  "%s": { insecure: true }\nsync:\n' "$src"
    while read -r name _; do
        printf '  - from: oci://%s/gen:%s\n    to: registry://%s/plan/%s:%s\n' "$work" "$name" "$src" "${name%%_*}" "${name#*_}"
    done <"$work/gen.txt"
} >"$work/seed.yaml"
"$occy" -q --no-cache sync "$work/seed.yaml" >"$work/seed.out" 2>&1 || {
    tail -n 20 "$work/seed.out" >&2
    die "filling the source registry failed"
}
rm -rf "$work/gen"

# sync_file FILE N: a sync of the first N repositories, every tag.
sync_file() {
    {
        printf 'version: 1\ndefaults: { check: "off" }\nregistries:\n  "%s": { insecure: true }\n  "%s": { insecure: true }\nsync:\n' "$src" "$dst"
        local r
        for ((r = 0; r < $2; r++)); do
            printf '  - from: registry://%s/plan/r%02d\n    to: registry://%s/plan/r%02d\n' "$src" "$r" "$dst" "$r"
        done
    } >"$1"
}
sync_file "$work/all.yaml" "$repos"
sync_file "$work/one.yaml" 1

# plan NAME FILE: time and peak RSS of a plan, its requests, and the time the
# registries take to answer the same requests.
plan() {
    local s_from d_from
    # One untimed plan first: the registries then answer occy's timed plan
    # and the replay from the same warm caches (the replay, run second,
    # would otherwise find in memory what occy's plan had to read from disk).
    "$occy" --no-cache sync "$2" --plan -O json >/dev/null 2>&1 || true
    s_from=$(($(lines "$work/src.log") + 1))
    d_from=$(($(lines "$work/dst.log") + 1))
    /usr/bin/time -f "%e %M" -o "$work/$1.time" "$occy" --no-cache sync "$2" --plan -O json >"$work/$1.json" 2>"$work/$1.err" || {
        tail -n 20 "$work/$1.err" >&2
        die "the $1 plan failed"
    }
    sleep 0.5 # the registries log a request after answering it
    read -r wall rss <"$work/$1.time"
    read -r reqs replay <<<"$(python3 bench/replay.py 16 "$src" "$work/src.log" "$s_from" "$dst" "$work/dst.log" "$d_from")"
    local targets
    targets=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["targets"]))' "$work/$1.json")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$targets" "$wall" "$rss" "$reqs" "$replay" >>"$work/results.tsv"
    echo "plan-scale: $1: $targets targets, $wall s, $((rss / 1024)) MiB peak, $reqs requests (replayed in $replay s)" >&2
}
: >"$work/results.tsv"
plan cold-one "$work/one.yaml"
plan cold "$work/all.yaml"
echo "plan-scale: syncing, to plan warm" >&2
"$occy" -q --no-cache sync "$work/all.yaml" -J 16 >"$work/apply.out" 2>&1 || {
    tail -n 20 "$work/apply.out" >&2
    die "the sync failed"
}
plan warm-one "$work/one.yaml"
plan warm "$work/all.yaml"

python3 - "$work/results.tsv" "$("$occy" --version)" "$(nproc)" <<'PY'
import sys
rows = {r[0]: r for r in (l.rstrip("\n").split("\t") for l in open(sys.argv[1]))}
print(f"# {sys.argv[2]}; {sys.argv[3]} cores; registries: Distribution on 127.0.0.1")
print(f"{'plan':<10} {'targets':>7} {'occy s':>8} {'registries s':>12} {'occy/registries':>15} {'requests':>9} {'peak MiB':>9}")
for name in ("cold", "warm"):
    r = rows[name]
    wall, replay = float(r[2]), float(r[5])
    print(f"{name:<10} {r[1]:>7} {wall:>8.2f} {replay:>12.2f} {wall / replay:>15.2f} {r[4]:>9} {int(r[3]) / 1024:>9.1f}")
for name in ("cold", "warm"):
    big, one = rows[name], rows[name + "-one"]
    extra = int(big[1]) - int(one[1])
    if extra > 0:
        per = (int(big[3]) - int(one[3])) * 1024 / extra
        print(f"{name}: memory per target {per / 1024:.1f} KiB ({one[1]} targets: {int(one[3]) / 1024:.1f} MiB peak; {big[1]}: {int(big[3]) / 1024:.1f} MiB)")
PY
