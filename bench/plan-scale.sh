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
# targets is the memory each target costs. Between the cold and the warm
# plans, the sync itself (a cold apply of every tag, --apply-flags, default
# "-J 16") is timed with its peak RSS beside the time the registries need
# for the same requests, reads and writes (bench/replay.py --writes into an
# empty registry, with each of --replay-threads, default 16,64; the fastest
# is the floor). --apply-only measures the apply alone, no plans;
# --plans-only the plans alone (the sync between them runs untimed); with
# OCCY_BENCH_WRAP=CMD the apply and its replays run under CMD (e.g.
# /work/coord/bench-window). docs/performance.md has a recent result.
#
# With --shards N (issue 35) it measures sharding instead: the plan of
# all tags in one process and `--plan --shard I/N` of each of N pods, one
# after the other (each one's wall time, peak RSS, and requests to the
# source registry from its access log, listing apart); the partition of as
# many targets alone (occy-testkit partition); then, at --apply-tags tags
# per repository (default 100: 10,000 tags), the N pods applying at once,
# without a saved plan and from one (`--plan --shards N --out`, then
# `--apply plan.json --shard I/N`), each into an empty registry: blobs
# uploaded more than once (access log), and a full plan afterwards that
# must find every target unchanged. OCCY_BENCH_WRAP=CMD runs each measured
# group of commands under CMD (e.g. /work/coord/bench-window).
#
#   bench/plan-scale.sh [--repos N] [--tags N] [--keep] [--apply-only | --plans-only]
#                       [--apply-flags "ARGS"] [--replay-threads N,N]
#   bench/plan-scale.sh --repos 100 --tags 1000 --shards 4 [--apply-tags N]
#
# Needs docker-registry (Debian), python3, /usr/bin/time; builds occy and
# the image generator with cargo build --release (OCCY_BIN=path skips
# occy's build, OCCY_TESTKIT=path the generator's).
set -euo pipefail
cd "$(dirname "$0")/.."
repos=100 tags=100 keep=0 shards=0 apply_tags=100 apply_only=0 plans_only=0 apply_flags="-J 16" replay_threads=16,64
die() {
    echo "plan-scale: $*" >&2
    exit 1
}
while [ $# -gt 0 ]; do
    case $1 in
    --repos) repos=$2 && shift ;;
    --tags) tags=$2 && shift ;;
    --shards) shards=$2 && shift ;;
    --apply-tags) apply_tags=$2 && shift ;;
    --apply-only) apply_only=1 ;;
    --plans-only) plans_only=1 ;;
    --apply-flags) apply_flags=$2 && shift ;;
    --replay-threads) replay_threads=$2 && shift ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'  | sed 's/^# \{0,1\}//' && exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
for n in "$repos" "$tags" "$apply_tags"; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "expected a positive number, got '$n'"; done
[[ $shards =~ ^[0-9]+$ ]] || die "expected a number of shards, got '$shards'"
[ "$apply_tags" -le "$tags" ] || apply_tags=$tags
[ "$repos" -le 100 ] && [ "$tags" -le 1000 ] || die "the generator names at most 100 repositories (r00-r99) of 1,000 tags"
for c in docker-registry python3 /usr/bin/time; do command -v "$c" >/dev/null || die "$c is missing (apt-get install docker-registry python3 time)"; done

if [ -z "${OCCY_BIN:-}" ]; then
    cargo build --release --locked -q -p occy
    OCCY_BIN=$PWD/target/release/occy
fi
if [ -z "${OCCY_TESTKIT:-}" ]; then
    cargo build --release --locked -q -p occy-testkit
    OCCY_TESTKIT=$PWD/target/release/occy-testkit
fi
testkit=$OCCY_TESTKIT
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

# OCCY_PLAN_SCALE_SOURCE=HOST:PORT=ACCESS_LOG: a registry already filled
# (by an earlier run with --keep, say), to skip generating and filling one.
src_log=$work/src.log
if [ -n "${OCCY_PLAN_SCALE_SOURCE:-}" ]; then
    src_port=${OCCY_PLAN_SCALE_SOURCE%%=*}
    src_port=${src_port##*:}
    src_log=${OCCY_PLAN_SCALE_SOURCE#*=}
    [ -f "$src_log" ] || die "no access log $src_log (OCCY_PLAN_SCALE_SOURCE=HOST:PORT=ACCESS_LOG)"
else
    src_port=$(free_port)
    start_registry src "$src_port"
fi
dst_port=$(free_port)
start_registry dst "$dst_port"
dst_pid=${pids[-1]}
src=127.0.0.1:$src_port dst=127.0.0.1:$dst_port

gen_wall=0 gen_rss=0
if [ -z "${OCCY_PLAN_SCALE_SOURCE:-}" ]; then
echo "plan-scale: generating $repos x $tags images and filling the source registry" >&2
# One OCI layout per repository (gen/rNN, tags tNNN): each sync entry reads
# an index of its own repository's tags only.
/usr/bin/time -f "%e %M" -o "$work/gen.time" \
    "$testkit" generate "$work/gen" --set bench-plan --repos "$repos" --tags "$tags" --per-repo >"$work/gen.txt"
read -r gen_wall gen_rss <"$work/gen.time"
echo "plan-scale: generated $(wc -l <"$work/gen.txt") images in $gen_wall s, $((gen_rss / 1024)) MiB peak" >&2
# Ten repositories (10,000 images at 1,000 tags) a run: one sync of all
# 100,000 images from their layouts is an apply that this bench does not
# measure, and it ran for over 40 minutes here.
for ((b = 0; b < repos; b += 10)); do
    {
        printf 'version: 1\ndefaults: { image_parallel: 16, check: "off" }\nregistries:\n  "%s": { insecure: true }\nsync:\n' "$src"
        for ((r = b; r < b + 10 && r < repos; r++)); do
            printf '  - from: oci://%s/gen/r%02d\n    to: "registry://%s/plan/r%02d:{tag}"\n' "$work" "$r" "$src" "$r"
        done
    } >"$work/seed.yaml"
    "$occy" -q --no-cache sync "$work/seed.yaml" -J 16 >"$work/seed.out" 2>&1 || {
        tail -n 20 "$work/seed.out" >&2
        die "filling the source registry failed"
    }
done
rm -rf "$work/gen"
fi

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

if [ "$shards" -gt 0 ]; then
    wrap=${OCCY_BENCH_WRAP:-}
    # measured NAME ARGS...: a line of the measuring script: occy ARGS under
    # /usr/bin/time, with the source and destination access-log lengths before.
    measured() {
        local name=$1
        shift
        printf 'echo "$(wc -l <%q) $(wc -l <%q)" >%q\n' "$src_log" "$work/dst.log" "$work/$name.from"
        printf '/usr/bin/time -f "%%e %%M" -o %q %q --no-cache' "$work/$name.time" "$occy"
        printf ' %q' "$@"
        printf ' >%q 2>%q || echo "plan-scale: %s failed (exit $?)" >&2\n' "$work/$name.out" "$work/$name.err" "$name"
        printf 'sleep 0.5\n'
        printf 'wc -l <%q >%q\n' "$src_log" "$work/$name.to"
    }
    # source requests in NAME's run: all, and the listing (tags, catalog) among them.
    src_requests() {
        local from to
        read -r from _ <"$work/$1.from"
        read -r to <"$work/$1.to"
        sed -n "$((from + 1)),${to}p" "$src_log" | python3 -c '
import re, sys
n = listing = 0
for line in sys.stdin:
    m = re.search(r"\"(GET|HEAD|POST|PUT|PATCH|DELETE) (/v2/\S*)", line)
    if m:
        n += 1
        listing += "/tags/list" in m.group(2) or "/_catalog" in m.group(2)
print(n, listing)'
    }
    : >"$work/shards.tsv"
    row() { # NAME: wall, peak KiB, source requests, listing
        local wall rss reqs listing
        read -r wall rss < <(tail -n 1 "$work/$1.time")
        read -r reqs listing <<<"$(src_requests "$1")"
        printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$wall" "$rss" "$reqs" "$listing" >>"$work/shards.tsv"
    }

    # 1. The plan of every tag: one process, then each pod alone.
    {
        measured one sync "$work/all.yaml" --plan -O json
        for ((i = 0; i < shards; i++)); do
            measured "pod$i" sync "$work/all.yaml" --plan --shard "$i/$shards" -O json
        done
        printf '%q partition --repos %q --tags %q --shards %q >%q\n' "$testkit" "$repos" "$tags" "$shards" "$work/partition.out"
    } >"$work/measure-plans.sh"
    echo "plan-scale: planning $((repos * tags)) tags in one process and in $shards pods" >&2
    $wrap bash "$work/measure-plans.sh"
    row one
    for ((i = 0; i < shards; i++)); do row "pod$i"; done

    # 2. N pods applying at once, at --apply-tags tags per repository, into
    # an empty registry each way: without a saved plan, and from one.
    {
        printf 'version: 1\ndefaults: { check: "off", image_parallel: 8 }\nregistries:\n  "%s": { insecure: true }\n  "%s": { insecure: true }\nsync:\n' "$src" "$dst"
        for ((r = 0; r < repos; r++)); do
            printf '  - from: registry://%s/plan/r%02d\n    tags: [' "$src" "$r"
            for ((t = 0; t < apply_tags; t++)); do printf '%s"t%03d"' "$([ "$t" -gt 0 ] && echo ", ")" "$t"; done
            printf ']\n    to: registry://%s/plan/r%02d\n' "$dst" "$r"
        done
    } >"$work/apply.yaml"
    apply_round() { # NAME: the pods at once; then counts of the destination's access log
        local name=$1 i
        shift
        local d_from s_from
        d_from=$(($(lines "$work/dst.log") + 1))
        s_from=$(lines "$src_log")
        local pids_here=()
        for ((i = 0; i < shards; i++)); do
            /usr/bin/time -f "%e %M" -o "$work/$name$i.time" "$occy" --no-cache "$@" --shard "$i/$shards" -J 8 -O json \
                >"$work/$name$i.json" 2>"$work/$name$i.err" &
            pids_here+=($!)
        done
        local failed=0
        for i in "${pids_here[@]}"; do wait "$i" || failed=1; done
        [ "$failed" = 0 ] || echo "plan-scale: a pod of $name failed (see $work/$name*.err)" >&2
        sleep 0.5
        echo $(($(lines "$src_log") - s_from)) >"$work/$name.srcreq"
        # Uploads per digest: a blob upload ends in a PUT (or POST) with ?digest=.
        sed -n "$d_from,\$p" "$work/dst.log" | python3 -c '
import collections, re, sys
uploads = collections.Counter()
for line in sys.stdin:
    m = re.search(r"\"(PUT|POST) /v2/(\S+)/blobs/uploads/\S*[?&]digest=sha256(?:%3A|:)([0-9a-f]{64})\S* [^\"]*\" 201", line)
    if m:
        uploads[m.group(3)] += 1
twice = sum(1 for n in uploads.values() if n > 1)
extra = sum(n - 1 for n in uploads.values())
print(len(uploads), twice, extra)' >"$work/$name.uploads"
        # After the pods, one full plan must find every target unchanged.
        "$occy" --no-cache sync "$work/apply.yaml" --plan -O json >"$work/$name.after.json" 2>/dev/null || true
        python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["totals"]; print(t["targets"], t["unchanged"])' \
            "$work/$name.after.json" >"$work/$name.after"
    }
    echo "plan-scale: $shards pods applying $((repos * apply_tags)) tags at once, without a saved plan" >&2
    apply_round unsaved sync "$work/apply.yaml"
    # The destination again empty, for the saved plan.
    kill "$dst_pid" && wait "$dst_pid" 2>/dev/null || true
    rm -rf "$work/dst" && : >"$work/dst.log"
    start_registry dst "$dst_port"
    echo "plan-scale: the same from a saved plan (--plan --shards $shards --out, then --apply --shard I/$shards)" >&2
    /usr/bin/time -f "%e %M" -o "$work/saved-plan.time" "$occy" --no-cache sync "$work/apply.yaml" --plan \
        --shards "$shards" --out "$work/plan.json" -O json >"$work/assignment.json" 2>"$work/saved-plan.err"
    apply_round saved sync --apply "$work/plan.json"

    python3 - "$work" "$shards" "$("$occy" --version)" "$(nproc)" "$gen_wall" "$gen_rss" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
rows = {r[0]: r for r in (l.rstrip("\n").split("\t") for l in open(f"{work}/shards.tsv"))}
print(f"# {sys.argv[3]}; {sys.argv[4]} cores; registries: Distribution on 127.0.0.1")
print(f"# generator: {float(sys.argv[5]):.0f} s, {int(sys.argv[6]) / 1024:.0f} MiB peak")
def targets(name):
    try:
        p = json.load(open(f"{work}/{name}.out"))
        return len(p["targets"])
    except Exception:
        return 0
one = rows["one"]
ow, om, oreq, olist = float(one[1]), int(one[2]), int(one[3]), int(one[4])
print(f"{'plan':<8} {'targets':>8} {'wall s':>8} {'x one':>6} {'peak MiB':>9} {'x one':>6} {'src req':>8} {'listing':>8} {'(req-listing) x one':>20}")
for name in ["one"] + [f"pod{i}" for i in range(n)]:
    r = rows[name]
    w, m, req, lst = float(r[1]), int(r[2]), int(r[3]), int(r[4])
    print(f"{name:<8} {targets(name):>8} {w:>8.2f} {w / ow:>6.2f} {m / 1024:>9.1f} {m / om:>6.2f} {req:>8} {lst:>8} {(req - lst) / max(1, oreq - olist):>20.3f}")
print(open(f"{work}/partition.out").read().rstrip())
a = json.load(open(f"{work}/assignment.json"))
fair = a["targets"] / n
print(f"saved plan of {a['targets']} tags: {a['groups']} groups, {a['split_groups']} split, {a['duplicated_bytes']} bytes duplicated; "
      + ", ".join(f"{s['shard']}: {len(s['targets'])} ({len(s['targets']) / fair - 1:+.1%})" for s in a["assignment"]))
for name in ("unsaved", "saved"):
    blobs, twice, extra = open(f"{work}/{name}.uploads").read().split()
    total, unchanged = open(f"{work}/{name}.after").read().split()
    walls = []
    for i in range(n):
        # /usr/bin/time writes "Command exited with non-zero status N" first when it did.
        w, m = open(f"{work}/{name}{i}.time").read().splitlines()[-1].split()
        walls.append(f"{float(w):.1f} s/{int(m) / 1024:.0f} MiB")
    src = open(f"{work}/{name}.srcreq").read().strip()
    print(f"{name} apply, {n} pods at once: {blobs} blobs uploaded, {twice} of them more than once ({extra} extra uploads); "
          f"then {unchanged} of {total} targets unchanged; {src} source requests; pods: {', '.join(walls)}")
PY
    exit 0
fi

# plan NAME FILE: time and peak RSS of a plan, its requests, and the time the
# registries take to answer the same requests.
plan() {
    local s_from d_from
    # One untimed plan first: the registries then answer occy's timed plan
    # and the replay from the same warm caches (the replay, run second,
    # would otherwise find in memory what occy's plan had to read from disk).
    "$occy" --no-cache sync "$2" --plan -O json >/dev/null 2>&1 || true
    s_from=$(($(lines "$src_log") + 1))
    d_from=$(($(lines "$work/dst.log") + 1))
    /usr/bin/time -f "%e %M" -o "$work/$1.time" "$occy" --no-cache sync "$2" --plan -O json >"$work/$1.json" 2>"$work/$1.err" || {
        tail -n 20 "$work/$1.err" >&2
        die "the $1 plan failed"
    }
    sleep 0.5 # the registries log a request after answering it
    read -r wall rss <"$work/$1.time"
    read -r reqs replay <<<"$(python3 bench/replay.py 16 "$src" "$src_log" "$s_from" "$dst" "$work/dst.log" "$d_from")"
    local targets
    targets=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["targets"]))' "$work/$1.json")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$targets" "$wall" "$rss" "$reqs" "$replay" >>"$work/results.tsv"
    echo "plan-scale: $1: $targets targets, $wall s, $((rss / 1024)) MiB peak, $reqs requests (replayed in $replay s)" >&2
}
: >"$work/results.tsv"
if [ "$apply_only" = 0 ]; then
    plan cold-one "$work/one.yaml"
    plan cold "$work/all.yaml"
fi
if [ "$plans_only" = 1 ]; then
    echo "plan-scale: syncing $((repos * tags)) tags (untimed) for the warm plans" >&2
    "$occy" --no-cache -q sync "$work/all.yaml" $apply_flags >"$work/apply.out" 2>&1 || {
        tail -n 20 "$work/apply.out" >&2
        die "the sync failed"
    }
else
# The cold apply (issue 33): wall and peak RSS beside the time the registries
# need for the same requests, replayed into an empty registry standing in
# for the destination (bench/replay.py --writes), at each of the replay
# thread counts (the fastest is the floor).
replay_port=$(free_port)
apply_from_s=$(($(lines "$src_log") + 1))
apply_from_d=$(($(lines "$work/dst.log") + 1))
{
    printf '/usr/bin/time -f "%%e %%M %%U %%S" -o %q %q --no-cache -q sync %q' "$work/apply.time" "$occy" "$work/all.yaml"
    for a in $apply_flags; do printf ' %q' "$a"; done
    printf ' >%q 2>&1 || { tail -n 20 %q >&2; exit 1; }\n' "$work/apply.out" "$work/apply.out"
    printf 'sleep 1\n'
    # The logs' lines of the apply (the replays read from the source too).
    printf 'echo "%s-$(wc -l <%q)" >%q\n' "$apply_from_s" "$src_log" "$work/apply.lines_s"
    printf 'echo "%s-$(wc -l <%q)" >%q\n' "$apply_from_d" "$work/dst.log" "$work/apply.lines_d"
    for t in ${replay_threads//,/ }; do
        printf 'rm -rf %q && mkdir -p %q\n' "$work/replay" "$work/replay"
        printf 'docker-registry serve %q >/dev/null 2>>%q & rp=$!\n' "$work/replay.yml" "$work/replay.err"
        printf 'for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/%q) 2>/dev/null && break; sleep 0.05; done\n' "$replay_port"
        printf 'python3 bench/replay.py --writes %q %q %q "$(cat %q)" %q "$(cat %q)" %q >%q || echo "failed" >%q\n' \
            "$t" "$src" "$src_log" "$work/apply.lines_s" "$work/dst.log" "$work/apply.lines_d" "127.0.0.1:$replay_port" "$work/replay-$t" "$work/replay-$t"
        printf 'kill $rp; wait $rp 2>/dev/null || true\n'
    done
} >"$work/measure-apply.sh"
printf 'version: 0.1\nlog: { level: error, accesslog: { disabled: true } }\nstorage: { filesystem: { rootdirectory: %s } }\nhttp: { addr: "127.0.0.1:%s" }\n' \
    "$work/replay" "$replay_port" >"$work/replay.yml"
echo "plan-scale: applying $((repos * tags)) tags cold (occy $apply_flags), then replaying its requests" >&2
${OCCY_BENCH_WRAP:-} bash "$work/measure-apply.sh" || die "the cold apply failed"
read -r a_wall a_rss a_user a_sys < <(tail -n 1 "$work/apply.time")
best=
for t in ${replay_threads//,/ }; do
    read -r a_reqs a_replay <"$work/replay-$t" || true
    [ "$a_reqs" = failed ] && { echo "plan-scale: the replay with $t threads failed" >&2; continue; }
    echo "plan-scale: apply replayed: $a_reqs requests in $a_replay s with $t threads" >&2
    if [ -z "$best" ] || awk -v a="$a_replay" -v b="$best" 'BEGIN{exit !(a<b)}'; then best=$a_replay best_t=$t; fi
done
[ -n "$best" ] || die "no replay of the apply succeeded"
awk -v n="$((repos * tags))" -v w="$a_wall" -v u="$a_user" -v s="$a_sys" -v m="$a_rss" -v b="$best" -v t="$best_t" -v r="$a_reqs" \
    'BEGIN { printf "cold apply: %d tags, occy %.2f s (%.2f s user, %.2f s system), peak %.1f MiB; registries %.2f s (%d requests replayed, %d threads); occy/registries %.2f\n", n, w, u, s, m / 1024, b, r, t, w / b }' \
    | tee "$work/apply.result"
fi
[ "$apply_only" = 0 ] || exit 0
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
