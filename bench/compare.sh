#!/usr/bin/env bash
# occy beside its peers — skopeo (Debian) and occystrap 0.4.17 (PyPI) — on
# seven workloads, on loopback and through an emulated WAN, with the bytes and
# requests each registry saw. docs/performance.md explains the workloads, the
# targets and a recent result.
#
#   bench/compare.sh [--quick] [options]
#
#   --quick              small sizes, 2 repetitions (a few minutes; for iterating)
#   --reps N             repetitions of each run (default 3)
#   --images N           images of the mirror set (default 20)
#   --base-sizes A,B,C   shared base layers, MiB (default 8,24,64)
#   --top-size N         largest unique top layer, MiB (default 4; 1-2 per image)
#   --big-size N         the big image's layer, MiB (default 512)
#   --plan-repos N       repositories of the plan set (default 50)
#   --plan-tags N        tags per repository of the plan set (default 20)
#   --network LIST       loopback,wan (default both)
#   --wan KIND           auto | netem | proxy (default auto: netem in a network
#                        namespace when root and the kernel has it, else the proxy)
#   --rtt MS             emulated round trip (default 30)
#   --mbit N             emulated bandwidth per direction, Mbit/s (default 200)
#   --workloads LIST     cold,warm,tar,filtered,plan,fanout,separate (default all)
#   --tools LIST         occy,skopeo,occystrap (default all; occystrap re-compresses
#                        every layer at gzip -9 and takes minutes per run)
#   --no-install         never apt-get/pip install; fail naming what is missing
#   --keep               keep the scratch directory (registries' logs and storage)
#
# Finds or installs: docker-registry, skopeo, time (apt-get, as root or via
# sudo), occystrap 0.4.17 (pip, into a venv under ~/.cache/occy-bench), and
# builds occy (cargo build --release; OCCY_BIN=path skips the build) and the
# image generator (cargo build --release -p occy-testkit; OCCY_TESTKIT=path
# skips it).
# Results go to ~/.cache/occy-bench/results-DATE.{tsv,txt} (OCCY_BENCH_RESULTS=DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$PWD

reps=3 images=20 base_sizes=8,24,64 top_size=4 big_size=512 plan_repos=50 plan_tags=20
networks=loopback,wan wan_kind=auto rtt=30 mbit=200 workloads=cold,warm,tar,filtered,plan,fanout,separate tools=occy,skopeo,occystrap
install=1 keep=0

die() {
    echo "bench: $*" >&2
    exit 1
}
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit "${1:-0}"
}
while [ $# -gt 0 ]; do
    case $1 in
    --quick) reps=2 images=6 base_sizes=2,4,8 top_size=1 big_size=64 plan_repos=10 plan_tags=10 ;;
    --reps) reps=$2 && shift ;;
    --images) images=$2 && shift ;;
    --base-sizes) base_sizes=$2 && shift ;;
    --top-size) top_size=$2 && shift ;;
    --big-size) big_size=$2 && shift ;;
    --plan-repos) plan_repos=$2 && shift ;;
    --plan-tags) plan_tags=$2 && shift ;;
    --network) networks=$2 && shift ;;
    --wan) wan_kind=$2 && shift ;;
    --rtt) rtt=$2 && shift ;;
    --mbit) mbit=$2 && shift ;;
    --workloads) workloads=$2 && shift ;;
    --tools) tools=$2 && shift ;;
    --no-install) install=0 ;;
    --keep) keep=1 ;;
    -h | --help) usage 0 ;;
    *) echo "bench: unknown option $1" >&2 && usage 2 ;;
    esac
    shift
done
for n in "$reps" "$images" "$top_size" "$big_size" "$plan_repos" "$plan_tags" "$rtt" "$mbit"; do
    [[ $n =~ ^[0-9]+$ ]] || die "expected a whole number, got '$n'"
done
[[ $base_sizes =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--base-sizes takes MiB sizes separated by commas, got '$base_sizes'"
case $wan_kind in auto | netem | proxy) ;; *) die "--wan takes auto, netem or proxy, got '$wan_kind'" ;; esac
has() { [[ ",$2," == *",$1,"* ]]; }

# ---- tools -----------------------------------------------------------------

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi
}
# need COMMAND DEBIAN_PACKAGE: find the command or install its package.
need() {
    command -v "$1" >/dev/null && return
    if [ "$install" != 1 ] || ! command -v apt-get >/dev/null; then
        die "$1 not found: install the Debian package $2 (apt-get install $2)"
    fi
    echo "bench: installing $2 (for $1)" >&2
    { as_root apt-get install -y -q "$2" >/dev/null || { as_root apt-get update -q >/dev/null && as_root apt-get install -y -q "$2" >/dev/null; }; } ||
        die "$1 not found and $2 could not be installed: run 'apt-get install $2' as root"
    command -v "$1" >/dev/null || die "$2 was installed but $1 is still not on PATH"
}
need docker-registry docker-registry
need skopeo skopeo
need python3 python3
[ -x /usr/bin/time ] || need /usr/bin/time time
python3 -c 'import ensurepip' 2>/dev/null || need_venv=1
if [ "${need_venv:-0}" = 1 ]; then
    [ "$install" = 1 ] || die "python3 cannot make a venv: install the Debian package python3-venv"
    as_root apt-get install -y -q python3-venv >/dev/null || die "python3 cannot make a venv: install python3-venv"
fi

command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs); the image generator is built from this clone"
if [ -n "${OCCY_BIN:-}" ]; then
    occy=$OCCY_BIN
    [ -x "$occy" ] || die "OCCY_BIN=$occy is not an executable"
else
    echo "bench: building occy (cargo build --release)" >&2
    cargo build --release --locked -q -p occy || die "cargo build --release failed"
    occy=$repo_root/target/release/occy
fi
if [ -n "${OCCY_TESTKIT:-}" ]; then
    testkit=$OCCY_TESTKIT
    [ -x "$testkit" ] || die "OCCY_TESTKIT=$testkit is not an executable"
else
    echo "bench: building the image generator (cargo build --release -p occy-testkit)" >&2
    cargo build --release --locked -q -p occy-testkit || die "cargo build --release -p occy-testkit failed"
    testkit=$repo_root/target/release/occy-testkit
fi

venv=${OCCY_BENCH_VENV:-$HOME/.cache/occy-bench/occystrap-0.4.17}
if has occystrap "$tools" && [ ! -x "$venv/bin/occystrap" ]; then
    [ "$install" = 1 ] || die "occystrap 0.4.17 not found in $venv: python3 -m venv $venv && $venv/bin/pip install occystrap==0.4.17"
    echo "bench: installing occystrap 0.4.17 into $venv" >&2
    python3 -m venv "$venv" || die "python3 -m venv $venv failed"
    "$venv/bin/pip" install -q occystrap==0.4.17 || die "pip install occystrap==0.4.17 failed (is PyPI reachable?)"
fi
occystrap=$venv/bin/occystrap
report=$repo_root/bench/report.py

# ---- scratch space, processes, cleanup --------------------------------------

work=$(mktemp -d /tmp/occy-compare.XXXXXX)
pids=()
netns=""
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "$netns" ]; then
        ip netns del "$netns" 2>/dev/null || true
        ip link del "${netns}h" 2>/dev/null || true
    fi
    if [ "$keep" = 1 ]; then echo "bench: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

results_dir=${OCCY_BENCH_RESULTS:-$HOME/.cache/occy-bench}
mkdir -p "$results_dir"
stamp=$(date +%Y%m%d-%H%M%S)
results=$results_dir/results-$stamp.tsv
: >"$results"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # HOST PORT
    local _
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return
        sleep 0.05
    done
    die "nothing listens on $1:$2 (see $work/*.err)"
}
forget_pid() { # PID
    local p keep_pids=()
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep_pids+=("$p"); done
    pids=("${keep_pids[@]}")
}

# start_registry NAME ADDR PORT: a Distribution registry storing under
# $work/NAME, logging requests to $work/NAME.log; sets reg_pid.
start_registry() {
    local name=$1 addr=$2 port=$3
    mkdir -p "$work/$name"
    cat >"$work/$name.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $work/$name
http:
  addr: $addr:$port
  secret: occy-bench
YML
    if [ -n "$netns" ]; then
        ip netns exec "$netns" docker-registry serve "$work/$name.yml" >>"$work/$name.log" 2>>"$work/$name.err" &
    else
        docker-registry serve "$work/$name.yml" >>"$work/$name.log" 2>>"$work/$name.err" &
    fi
    reg_pid=$!
    pids+=("$reg_pid")
    wait_port "$addr" "$port"
}
stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget_pid "$1"
}
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }

# ---- the image sets ----------------------------------------------------------

gen=$work/gen
echo "bench: generating images (mirror set: $images images, bases ${base_sizes} MiB; big: $big_size MiB; plan: $plan_repos x $plan_tags tags)" >&2
"$testkit" generate "$gen/mirror" --set bench-mirror --images "$images" --base-sizes "$base_sizes" --top-size "$top_size" >"$gen.mirror.txt" ||
    die "occy-testkit generate failed"
# The big image and the plan set only when a workload uses them.
if has tar "$workloads"; then "$testkit" generate "$gen/big" --set big --size "$big_size" >/dev/null; fi
: >"$gen.plan.txt"
if has plan "$workloads"; then
    "$testkit" generate "$gen/plan" --set bench-plan --repos "$plan_repos" --tags "$plan_tags" >"$gen.plan.txt"
fi
expect_mounts=$(python3 "$report" expect-mounts "$gen/mirror")
mapfile -t apps < <(cut -d' ' -f1 "$gen.mirror.txt")
mapfile -t plan_images < <(cut -d' ' -f1 "$gen.plan.txt")
plan_units=${#plan_images[@]}

# The source registry is filled once, directly, and reused by every network.
src_port=$(free_port)
dst_port=$(free_port)
start_registry src 127.0.0.1 "$src_port"
seed_pid=$reg_pid
{
    printf 'version: 1\ndefaults: { image_parallel: 8, check: "off" }\nregistries:\n  "127.0.0.1:%s": { insecure: true }\nsync:\n' "$src_port"
    for a in "${apps[@]}"; do
        printf '  - from: oci://%s/mirror:%s\n    to: registry://127.0.0.1:%s/bench/%s:1.0\n' "$gen" "$a" "$src_port" "$a"
    done
    if has tar "$workloads"; then
        printf '  - from: oci://%s/big:big\n    to: registry://127.0.0.1:%s/bench/big:1.0\n' "$gen" "$src_port"
    fi
    for p in "${plan_images[@]}"; do
        printf '  - from: oci://%s/plan:%s\n    to: registry://127.0.0.1:%s/plan/%s:%s\n' "$gen" "$p" "$src_port" "${p%%_*}" "${p#*_}"
    done
} >"$work/seed.yaml"
echo "bench: filling the source registry" >&2
"$occy" -q sync "$work/seed.yaml" >"$work/seed.out" 2>&1 || {
    cat "$work/seed.out" >&2
    die "filling the source registry failed"
}
stop_pid "$seed_pid"
rm -rf "$gen/plan" "$gen/big" # the registry has them now

# ---- networks ----------------------------------------------------------------

# Sets src_host/dst_host (where the registries listen), src/dst (what the
# tools are told) for network $1; starts the source registry.
setup_network() {
    case $1 in
    loopback)
        src_host=127.0.0.1 dst_host=127.0.0.1
        src=127.0.0.1:$src_port dst=127.0.0.1:$dst_port
        ;;
    wan)
        local kind=$wan_kind half
        half=$(awk -v r="$rtt" 'BEGIN { printf "%g", r / 2 }')
        if [ "$kind" != proxy ] && try_netem "$half"; then
            kind=netem
            src_host=10.231.0.2 dst_host=10.231.0.2
            src=$src_host:$src_port dst=$dst_host:$dst_port
        else
            [ "$kind" = netem ] && die "--wan netem: could not set up a network namespace with tc netem (root, iproute2 and the sch_netem module are needed)"
            kind=proxy
            src_host=127.0.0.1 dst_host=127.0.0.1
            local sp dp
            sp=$(free_port)
            dp=$(free_port)
            python3 "$repo_root/bench/wanproxy.py" "$sp" "127.0.0.1:$src_port" --delay-ms "$half" --mbit "$mbit" 2>>"$work/proxy.err" &
            pids+=("$!")
            python3 "$repo_root/bench/wanproxy.py" "$dp" "127.0.0.1:$dst_port" --delay-ms "$half" --mbit "$mbit" 2>>"$work/proxy.err" &
            pids+=("$!")
            wait_port 127.0.0.1 "$sp"
            wait_port 127.0.0.1 "$dp"
            src=127.0.0.1:$sp dst=127.0.0.1:$dp
        fi
        mode="wan-$kind ${rtt}ms ${mbit}Mbit"
        echo "bench: emulated WAN through $kind: ${rtt} ms round trip, $mbit Mbit/s each way" >&2
        ;;
    esac
    start_registry src "$src_host" "$src_port"
    src_pid=$reg_pid
}
teardown_network() {
    local p
    stop_pid "$src_pid"
    for p in "${pids[@]}"; do stop_pid "$p"; done
    if [ -n "$netns" ]; then
        ip netns del "$netns" 2>/dev/null || true
        ip link del "${netns}h" 2>/dev/null || true
        netns=""
    fi
}
# try_netem ONE_WAY_MS: both registries go into a network namespace behind a
# veth pair whose ends both delay by ONE_WAY_MS and cap the rate.
try_netem() {
    [ "$(id -u)" = 0 ] && command -v ip >/dev/null && command -v tc >/dev/null || return 1
    local ns=occyb$$
    ip netns add "$ns" 2>/dev/null || return 1
    netns=$ns
    if ip link add "${ns}h" type veth peer name "${ns}n" &&
        ip link set "${ns}n" netns "$ns" &&
        ip addr add 10.231.0.1/30 dev "${ns}h" && ip link set "${ns}h" up &&
        ip netns exec "$ns" ip addr add 10.231.0.2/30 dev "${ns}n" &&
        ip netns exec "$ns" ip link set "${ns}n" up && ip netns exec "$ns" ip link set lo up &&
        tc qdisc add dev "${ns}h" root netem delay "${1}ms" rate "${mbit}mbit" limit 100000 2>/dev/null &&
        ip netns exec "$ns" tc qdisc add dev "${ns}n" root netem delay "${1}ms" rate "${mbit}mbit" limit 100000 2>/dev/null; then
        return 0
    fi
    ip netns del "$ns" 2>/dev/null || true
    ip link del "${ns}h" 2>/dev/null || true
    netns=""
    return 1
}

# A fresh, empty destination registry.
fresh_destination() {
    [ -n "${dst_pid:-}" ] && stop_pid "$dst_pid"
    rm -rf "$work/dst" "$work/dst.log"
    start_registry dst "$dst_host" "$dst_port"
    dst_pid=$reg_pid
}

# skopeo with its blob-info cache in DIR (fresh per repetition): a private
# mount over the system cache as root, else its own XDG data directory.
# Sets the array sk to the command to run.
skopeo_in() {
    mkdir -p "$1"
    if [ "$(id -u)" = 0 ]; then
        mkdir -p /var/lib/containers/cache
        # shellcheck disable=SC2016 # expanded by the inner shell
        sk=(unshare -m sh -c 'mount --bind "$0" /var/lib/containers/cache && exec skopeo "$@"' "$1")
    else
        sk=(env "XDG_DATA_HOME=$1" skopeo)
    fi
}

# ---- one measured run ---------------------------------------------------------

# run WORKLOAD TOOL REP UNITS CMD...: times CMD, then records what the
# registries saw into the results.
run() {
    local wl=$1 tool=$2 rep=$3 units=$4
    shift 4
    local src_from dst_from out=$work/out.$wl.$tool.$rep
    src_from=$(($(lines "$work/src.log") + 1))
    dst_from=$(($(lines "$work/dst.log") + 1))
    local t0 t1
    t0=$(date +%s%N)
    if ! /usr/bin/time -f "%e %M" -o "$out.time" "$@" >"$out.log" 2>&1; then
        tail -n 30 "$out.log" >&2
        die "$tool failed on workload $wl (rep $rep); its output is above"
    fi
    t1=$(date +%s%N)
    sleep 0.3 # the registries log a request after answering it
    local wall rss s d
    read -r _ rss <"$out.time"
    # The wall time to the millisecond (time's %e has 10 ms steps, a warm
    # no-op takes a few of them).
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    read -r s_req s_bytes _ _ _ _ <<<"$(python3 "$report" count "$work/src.log" "$src_from")"
    s=$s_req
    if [ -f "$work/dst.log" ] && [ "$wl" != tar ]; then
        read -r d_req _ d_uploads d_up d_mounts d_stored <<<"$(python3 "$report" count "$work/dst.log" "$dst_from" "$work/dst")"
    else
        d_req=0 d_uploads=0 d_up=0 d_mounts=0 d_stored=0
    fi
    d=$d_req
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$mode" "$wl" "$tool" "$rep" "$wall" "$rss" "$s" "$d" "$s_bytes" "$d_uploads" "$d_up" "$d_mounts" \
        "$d_stored" "$units" "$expect_mounts" "$plan_repos" >>"$results"
    printf 'bench: %-22s %-9s %-9s rep %s: %7.3f s, %4d MiB, requests %s/%s, sent %s B\n' \
        "$mode" "$wl" "$tool" "$rep" "$wall" "$((rss / 1024))" "$s" "$d" "$d_up" >&2
}

# The tools in a different order each repetition.
order() { # REP
    local t=(occy skopeo occystrap) i
    for i in 0 1 2; do
        has "${t[$(((i + $1) % 3))]}" "$tools" && echo "${t[$(((i + $1) % 3))]}"
    done
    true
}

# ---- the workloads' inputs for the current network ---------------------------

write_inputs() {
    local a
    { # occy: one entry per repository, like the skopeo file
        printf 'version: 1\nregistries:\n  "%s": { insecure: true }\n  "%s": { insecure: true }\nsync:\n' "$src" "$dst"
        for a in "${apps[@]}"; do
            printf '  - from: registry://%s/bench/%s\n    tags: ["1.0"]\n    to: registry://%s/bench/%s\n' "$src" "$a" "$dst" "$a"
        done
    } >"$work/mirror.yaml"
    sed 's|^    to: |    filters: [normalize-timestamps]\n    to: |' "$work/mirror.yaml" >"$work/filtered.yaml"
    {
        printf '%s:\n  tls-verify: false\n  images:\n' "$src"
        for a in "${apps[@]}"; do printf '    bench/%s: ["1.0"]\n' "$a"; done
    } >"$work/skopeo.yaml"
    { # fan-out: each image to a registry, one OCI layout and a tar per image, in one run
        printf 'version: 1\nregistries:\n  "%s": { insecure: true }\n  "%s": { insecure: true }\nsync:\n' "$src" "$dst"
        for a in "${apps[@]}"; do
            printf '  - from: registry://%s/bench/%s\n    tags: ["1.0"]\n    to:\n' "$src" "$a"
            printf '      - registry://%s/fan/%s\n      - "oci://%s/fan/oci:{name}-{tag}"\n      - "tar://%s/fan/tar/{name}-{tag}.tar"\n' \
                "$dst" "$a" "$work" "$work"
        done
    } >"$work/fanout.yaml"
    { # occystrap has no sync: one process per image
        for a in "${apps[@]}"; do
            printf '"%s" --insecure process "registry://%s/bench/%s:1.0" "registry://%s/bench/%s:1.0" "$@" || exit 1\n' \
                "$occystrap" "$src" "$a" "$dst" "$a"
        done
    } >"$work/occystrap-mirror.sh"
    {
        printf 'version: 1\nregistries:\n  "%s": { insecure: true }\n  "%s": { insecure: true }\nsync:\n' "$src" "$dst"
        local r
        for ((r = 0; r < plan_repos; r++)); do
            printf '  - from: registry://%s/plan/r%02d\n    to: registry://%s/plan/r%02d\n' "$src" "$r" "$dst" "$r"
        done
    } >"$work/plan.yaml"
}

mirror() { # TOOL REP: cold then warm, into a fresh destination
    local tool=$1 rep=$2 n=${#apps[@]}
    fresh_destination
    case $tool in
    occy)
        rm -rf "$work/cache"
        has cold "$workloads" && run cold occy "$rep" "$n" "$occy" --cache-dir "$work/cache" sync "$work/mirror.yaml"
        has warm "$workloads" && run warm occy "$rep" "$n" "$occy" --cache-dir "$work/cache" sync "$work/mirror.yaml"
        ;;
    skopeo)
        rm -rf "$work/skopeo-cache"
        skopeo_in "$work/skopeo-cache"
        local cmd=("${sk[@]}" sync --src yaml --dest docker --dest-tls-verify=false "$work/skopeo.yaml" "$dst/bench")
        has cold "$workloads" && run cold skopeo "$rep" "$n" "${cmd[@]}"
        has warm "$workloads" && run warm skopeo "$rep" "$n" "${cmd[@]}"
        ;;
    occystrap)
        has cold "$workloads" && run cold occystrap "$rep" "$n" bash "$work/occystrap-mirror.sh"
        has warm "$workloads" && run warm occystrap "$rep" "$n" bash "$work/occystrap-mirror.sh"
        ;;
    esac
    true
}

to_tar() { # TOOL REP
    local tool=$1 rep=$2 out=$work/big.tar
    rm -f "$out"
    case $tool in
    occy) run tar occy "$rep" 1 "$occy" --insecure-registry "$src" process "registry://$src/bench/big:1.0" "tar://$out" ;;
    skopeo)
        rm -rf "$work/skopeo-cache"
        skopeo_in "$work/skopeo-cache"
        run tar skopeo "$rep" 1 "${sk[@]}" copy --src-tls-verify=false "docker://$src/bench/big:1.0" "docker-archive:$out:bench/big:1.0"
        ;;
    occystrap) run tar occystrap "$rep" 1 "$occystrap" --insecure process "registry://$src/bench/big:1.0" "tar://$out" ;;
    esac
    rm -f "$out"
}

filtered() { # TOOL REP
    local tool=$1 rep=$2 n=${#apps[@]}
    case $tool in
    occy)
        fresh_destination
        rm -rf "$work/cache"
        run filtered occy "$rep" "$n" "$occy" --cache-dir "$work/cache" sync "$work/filtered.yaml"
        ;;
    occystrap)
        fresh_destination
        run filtered occystrap "$rep" "$n" bash "$work/occystrap-mirror.sh" -f normalize-timestamps
        ;;
    esac
    true # skopeo has no filters
}

# fan-out: the mirror set to a registry, an OCI layout and a tar per image.
# occy does it in one sync. skopeo sync writes only registries and dir: (not
# an OCI layout), so skopeo runs one `skopeo sync --src yaml` for the
# registry (all images in one process, like workload 1), then one
# `skopeo copy` per image into the same OCI layout, then one per image into
# a docker-archive tar, one after the other, as a script would.
fanout() { # TOOL REP
    local tool=$1 rep=$2 n=${#apps[@]} a
    rm -rf "$work/fan"
    mkdir -p "$work/fan/tar"
    case $tool in
    occy)
        fresh_destination
        rm -rf "$work/cache"
        run fanout occy "$rep" "$n" "$occy" --cache-dir "$work/cache" sync "$work/fanout.yaml"
        ;;
    skopeo)
        fresh_destination
        rm -rf "$work/skopeo-cache"
        skopeo_in "$work/skopeo-cache"
        {
            echo 'set -e'
            printf '%q ' "${sk[@]}" sync --src yaml --dest docker --dest-tls-verify=false "$work/skopeo.yaml" "$dst/fan"
            echo
            for a in "${apps[@]}"; do
                printf '%q ' "${sk[@]}" copy --src-tls-verify=false "docker://$src/bench/$a:1.0" "oci:$work/fan/oci:$a-1.0"
                echo
            done
            for a in "${apps[@]}"; do
                printf '%q ' "${sk[@]}" copy --src-tls-verify=false "docker://$src/bench/$a:1.0" "docker-archive:$work/fan/tar/$a-1.0.tar:bench/$a:1.0"
                echo
            done
        } >"$work/fanout-skopeo.sh"
        run fanout skopeo "$rep" "$n" bash "$work/fanout-skopeo.sh"
        ;;
    esac
    rm -rf "$work/fan"
    true # occystrap has no sync and no OCI layout output
}

# separate runs: the first 10 images of the mirror set (they share base
# layers), each copied by a process of its own into a new repository of the
# destination, one after the other, as a CI loop does: `occy process` with
# one cache directory, `skopeo copy` with its blob-info cache (each fresh per
# repetition). What a run remembers is all a later run can mount from.
separate() { # TOOL REP
    local tool=$1 rep=$2 a sep=("${apps[@]:0:10}")
    case $tool in
    occy)
        fresh_destination
        rm -rf "$work/cache"
        {
            echo 'set -e'
            for a in "${sep[@]}"; do
                printf '%q ' "$occy" -q --cache-dir "$work/cache" --insecure-registry "$src" --insecure-registry "$dst" \
                    process "registry://$src/bench/$a:1.0" "registry://$dst/sep/$a:1.0"
                echo
            done
        } >"$work/separate-occy.sh"
        run separate occy "$rep" "${#sep[@]}" bash "$work/separate-occy.sh"
        ;;
    skopeo)
        fresh_destination
        rm -rf "$work/skopeo-cache"
        skopeo_in "$work/skopeo-cache"
        {
            echo 'set -e'
            for a in "${sep[@]}"; do
                printf '%q ' "${sk[@]}" copy --src-tls-verify=false --dest-tls-verify=false \
                    "docker://$src/bench/$a:1.0" "docker://$dst/sep/$a:1.0"
                echo
            done
        } >"$work/separate-skopeo.sh"
        run separate skopeo "$rep" "${#sep[@]}" bash "$work/separate-skopeo.sh"
        ;;
    esac
    true # occystrap: workload 1 already runs it one process per image
}

plan() { # REP
    fresh_destination
    rm -rf "$work/cache"
    run plan occy "$1" "$plan_units" "$occy" --cache-dir "$work/cache" sync "$work/plan.yaml" --plan
}

# ---- the run -------------------------------------------------------------------

echo "# occy $("$occy" --version | cut -d' ' -f2), skopeo $(skopeo --version | cut -d' ' -f3), occystrap 0.4.17; $(nproc) cores; reps $reps; images $images, bases $base_sizes MiB, tops <= $top_size MiB, big $big_size MiB, plan $plan_repos x $plan_tags" >>"$results"
for net in ${networks//,/ }; do
    case $net in loopback | wan) ;; *) die "--network takes loopback and/or wan, got '$net'" ;; esac
    mode=$net
    setup_network "$net"
    write_inputs
    for ((rep = 1; rep <= reps; rep++)); do
        if has cold "$workloads" || has warm "$workloads"; then
            for t in $(order "$rep"); do mirror "$t" "$rep"; done
        fi
        if has tar "$workloads"; then
            for t in $(order "$rep"); do to_tar "$t" "$rep"; done
        fi
        if has filtered "$workloads"; then
            for t in $(order "$rep"); do filtered "$t" "$rep"; done
        fi
        if has plan "$workloads"; then plan "$rep"; fi
        if has fanout "$workloads"; then
            for t in $(order "$rep"); do fanout "$t" "$rep"; done
        fi
        if has separate "$workloads"; then
            for t in $(order "$rep"); do separate "$t" "$rep"; done
        fi
    done
    [ -n "${dst_pid:-}" ] && stop_pid "$dst_pid" && dst_pid=""
    teardown_network
done

python3 "$report" table "$results" | tee "${results%.tsv}.txt"
echo >&2
echo "bench: raw results in $results, the table in ${results%.tsv}.txt" >&2
