#!/usr/bin/env bash
# The work-graph engine against the engine before it (commit 9b5eced), on the
# scenario of issue 18: N images sharing base layers, each synced to a
# registry AND an OCI layout AND a tar template, plus one entry with a filter
# chain (normalize-timestamps) to a registry and a tar, in one `occy sync`
# with -J 8 -j 4, through the emulated WAN of bench/compare.sh
# (bench/wanproxy.py in front of both registries). Prints the median wall
# time of each engine, the ratio new/old, and the blob GETs the source
# registry served (from its access log) beside the distinct blobs the run
# needs. docs/performance.md has a recent result.
#
#   bench/engine.sh [options]
#
#   --reps N             repetitions of each engine, alternating (default 3)
#   --images N           images (default 8; at least 6 for the issue's scenario)
#   --base-sizes A,B,C   shared base layers, MiB (default 8,24,64)
#   --top-size N         largest unique top layer, MiB (default 4)
#   --jobs J,j           -J and -j of both runs (default 8,4)
#   --network KIND       wan (default) or loopback
#   --rtt MS             emulated round trip (default 30)
#   --mbit N             emulated bandwidth per direction, Mbit/s (default 200)
#   --keep               keep the scratch directory (registries' logs and storage)
#
# The images come from this tree's generator (cargo build --release -p
# occy-testkit). The binaries: OCCY_NEW (default: cargo build --release of this tree) and
# OCCY_OLD (default: commit 9b5eced built with cargo build --release --locked
# in a git worktree under ~/.cache/occy-bench/engine-9b5eced; the first build
# takes a while). Needs docker-registry (Debian) and python3.
# Results go to ~/.cache/occy-bench/engine-DATE.{tsv,txt} (OCCY_BENCH_RESULTS=DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$PWD
old_commit=9b5eced

reps=3 images=8 base_sizes=8,24,64 top_size=4 jobs=8,4 network=wan rtt=30 mbit=200 keep=0
die() {
    echo "engine: $*" >&2
    exit 1
}
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit "${1:-0}"
}
while [ $# -gt 0 ]; do
    case $1 in
    --reps) reps=$2 && shift ;;
    --images) images=$2 && shift ;;
    --base-sizes) base_sizes=$2 && shift ;;
    --top-size) top_size=$2 && shift ;;
    --jobs) jobs=$2 && shift ;;
    --network) network=$2 && shift ;;
    --rtt) rtt=$2 && shift ;;
    --mbit) mbit=$2 && shift ;;
    --keep) keep=1 ;;
    -h | --help) usage 0 ;;
    *) echo "engine: unknown option $1" >&2 && usage 2 ;;
    esac
    shift
done
for n in "$reps" "$images" "$top_size" "$rtt" "$mbit"; do
    [[ $n =~ ^[0-9]+$ ]] || die "expected a whole number, got '$n'"
done
[ "$reps" -ge 1 ] || die "--reps must be at least 1"
[ "$images" -ge 1 ] || die "--images must be at least 1"
[[ $base_sizes =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--base-sizes takes MiB sizes separated by commas, got '$base_sizes'"
[[ $jobs =~ ^([0-9]+),([0-9]+)$ ]] || die "--jobs takes -J and -j separated by a comma (8,4), got '$jobs'"
big_j=${BASH_REMATCH[1]} small_j=${BASH_REMATCH[2]}
case $network in wan | loopback) ;; *) die "--network takes wan or loopback, got '$network'" ;; esac
command -v docker-registry >/dev/null || die "docker-registry not found: apt-get install docker-registry"
command -v python3 >/dev/null || die "python3 not found: apt-get install python3"
[ -x /usr/bin/time ] || die "/usr/bin/time not found: apt-get install time"

# ---- the two binaries -------------------------------------------------------

if [ -n "${OCCY_NEW:-}" ]; then
    new=$OCCY_NEW
else
    echo "engine: building this tree (cargo build --release --locked)" >&2
    cargo build --release --locked -q -p occy || die "cargo build --release failed"
    new=$repo_root/target/release/occy
fi
echo "engine: building the image generator (cargo build --release -p occy-testkit)" >&2
cargo build --release --locked -q -p occy-testkit || die "cargo build --release -p occy-testkit failed"
testkit=$repo_root/target/release/occy-testkit
if [ -n "${OCCY_OLD:-}" ]; then
    old=$OCCY_OLD
else
    old_tree=$HOME/.cache/occy-bench/engine-$old_commit
    if [ ! -d "$old_tree" ]; then
        git -C "$repo_root" worktree add --detach "$old_tree" "$old_commit" >&2 ||
            die "could not check out $old_commit into $old_tree (set OCCY_OLD to a binary built from it)"
    fi
    echo "engine: building $old_commit in $old_tree (cargo build --release --locked)" >&2
    (cd "$old_tree" && cargo build --release --locked -q) || die "cargo build --release of $old_commit failed"
    old=$old_tree/target/release/occy
fi
for b in "$new" "$old"; do [ -x "$b" ] || die "$b is not an executable"; done
report=$repo_root/bench/report.py

# ---- scratch space, registries, proxies ---------------------------------------

work=$(mktemp -d /tmp/occy-engine.XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$keep" = 1 ]; then echo "engine: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

results_dir=${OCCY_BENCH_RESULTS:-$HOME/.cache/occy-bench}
mkdir -p "$results_dir"
results=$results_dir/engine-$(date +%Y%m%d-%H%M%S).tsv

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # PORT
    local _
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
        sleep 0.05
    done
    die "nothing listens on 127.0.0.1:$1 (see $work/*.err)"
}
# start_registry NAME PORT: a Distribution registry storing under $work/NAME,
# its access log in $work/NAME.log; sets reg_pid.
start_registry() {
    mkdir -p "$work/$1"
    cat >"$work/$1.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $work/$1
http:
  addr: 127.0.0.1:$2
  secret: occy-bench
YML
    docker-registry serve "$work/$1.yml" >>"$work/$1.log" 2>>"$work/$1.err" &
    reg_pid=$!
    pids+=("$reg_pid")
    wait_port "$2"
}
stop() { # PID
    local p rest=()
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || rest+=("$p"); done
    pids=("${rest[@]}")
}
# front PORT: sets addr to the address the tools use for the registry on PORT
# (through a wanproxy.py when the network is the WAN, whose pid goes in
# proxy_pid).
front() {
    proxy_pid=""
    if [ "$network" = loopback ]; then
        addr=127.0.0.1:$1
        return
    fi
    local p half
    p=$(free_port)
    half=$(awk -v r="$rtt" 'BEGIN { printf "%g", r / 2 }')
    python3 "$repo_root/bench/wanproxy.py" "$p" "127.0.0.1:$1" --delay-ms "$half" --mbit "$mbit" >/dev/null 2>>"$work/proxy.err" &
    proxy_pid=$!
    pids+=("$proxy_pid")
    wait_port "$p"
    addr=127.0.0.1:$p
}
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }

# ---- the images, the source registry, the sync file ---------------------------

echo "engine: generating $images images on bases of $base_sizes MiB" >&2
"$testkit" generate "$work/gen" --set bench-mirror --images "$images" --base-sizes "$base_sizes" --top-size "$top_size" >"$work/gen.txt" ||
    die "occy-testkit generate failed"
mapfile -t apps < <(cut -d' ' -f1 "$work/gen.txt")
needed=$(python3 "$report" distinct-blobs "$work/gen")

src_port=$(free_port)
dst_port=$(free_port)
start_registry src "$src_port"
{
    printf 'version: 1\ndefaults: { image_parallel: 8, check: "off" }\nregistries:\n  "127.0.0.1:%s": { insecure: true }\nsync:\n' "$src_port"
    for a in "${apps[@]}"; do
        printf '  - from: oci://%s/gen:%s\n    to: registry://127.0.0.1:%s/bench/%s:1.0\n' "$work" "$a" "$src_port" "$a"
    done
} >"$work/seed.yaml"
"$new" -q sync "$work/seed.yaml" >"$work/seed.out" 2>&1 || {
    cat "$work/seed.out" >&2
    die "filling the source registry failed"
}
front "$src_port"
src=$addr

out=$work/out
{
    printf 'version: 1\nregistries:\n  "%s": { insecure: true }\n  "DST": { insecure: true }\nsync:\n' "$src"
    for a in "${apps[@]}"; do
        printf '  - from: registry://%s/bench/%s\n    tags: ["1.0"]\n    to:\n' "$src" "$a"
        printf '      - registry://DST/eng/%s\n      - "oci://%s/oci:{name}-{tag}"\n      - "tar://%s/tar/{name}-{tag}.tar"\n' "$a" "$out" "$out"
    done
    printf '  - from: registry://%s/bench/%s\n    tags: ["1.0"]\n    filters: [normalize-timestamps]\n    to:\n' "$src" "${apps[0]}"
    printf '      - registry://DST/filtered/%s\n      - "tar://%s/tar/filtered-{name}-{tag}.tar"\n' "${apps[0]}" "$out"
} >"$work/scenario.in"

# ---- the runs ------------------------------------------------------------------

# one ENGINE BINARY REP: a fresh destination registry, output directory and
# layer cache; times the sync and records what the source registry served.
one() {
    local engine=$1 bin=$2 rep=$3 from load wall rss gets distinct bytes uploads dst addr proxy_pid
    rm -rf "$out" "$work/dst" "$work/dst.log" "$work/cache"
    mkdir -p "$out/tar"
    start_registry dst "$dst_port"
    local dst_pid=$reg_pid
    front "$dst_port"
    dst=$addr
    local dst_proxy=$proxy_pid
    sed "s|DST|$dst|g" "$work/scenario.in" >"$work/scenario.yaml"
    from=$(($(lines "$work/src.log") + 1))
    load=$(cut -d' ' -f1 /proc/loadavg)
    if ! /usr/bin/time -f "%e %M" -o "$work/time" "$bin" --cache-dir "$work/cache" sync "$work/scenario.yaml" \
        -J "$big_j" -j "$small_j" >"$work/run.$engine.$rep.log" 2>&1; then
        tail -n 30 "$work/run.$engine.$rep.log" >&2
        die "the $engine engine failed (rep $rep); its output is above"
    fi
    sleep 0.3 # the registries log a request after answering it
    read -r wall rss <"$work/time"
    read -r gets distinct bytes <<<"$(python3 "$report" blob-gets "$work/src.log" "$from")"
    read -r _ _ uploads _ _ _ <<<"$(python3 "$report" count "$work/dst.log" 1)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$engine" "$rep" "$wall" "$rss" "$gets" "$distinct" "$bytes" \
        "$needed" "$uploads" "$load" >>"$results"
    printf 'engine: %-4s rep %s: %6.2f s, %4d MiB, source blob GETs %s (%s distinct; %s needed), destination uploads %s, load %s\n' \
        "$engine" "$rep" "$wall" "$((rss / 1024))" "$gets" "$distinct" "$needed" "$uploads" "$load" >&2
    [ -n "$dst_proxy" ] && stop "$dst_proxy"
    stop "$dst_pid"
}

{
    echo "# engine comparison: new $("$new" --version | cut -d' ' -f2) ($new) vs old $old_commit ($old)"
    echo "# $(nproc) cores; $images images, bases $base_sizes MiB, tops <= $top_size MiB; -J $big_j -j $small_j;" \
        "network $network$([ "$network" = wan ] && echo " (wanproxy ${rtt} ms, ${mbit} Mbit/s)")"
} >"$results"
for ((rep = 1; rep <= reps; rep++)); do
    if ((rep % 2)); then
        one old "$old" "$rep"
        one new "$new" "$rep"
    else
        one new "$new" "$rep"
        one old "$old" "$rep"
    fi
done

python3 "$report" engine "$results" | tee "${results%.tsv}.txt"
echo "engine: raw results in $results, the table in ${results%.tsv}.txt" >&2
