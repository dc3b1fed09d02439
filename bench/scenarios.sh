#!/usr/bin/env bash
# Does occy need tuning? For each network scenario, a cold registry-to-registry
# mirror with occy's default flags, beside the best of a sweep of hand-set
# -J/-j (varied together) and beside `skopeo sync`, each run into a fresh
# destination registry (and a fresh occy cache). docs/performance.md has a
# recent result.
#
#   bench/scenarios.sh [options]
#
#   --scenarios LIST   loopback,wan,satellite,lowbw,throttle (default all)
#                        loopback   no emulation
#                        wan        30 ms round trip, 200 Mbit/s
#                        satellite  600 ms round trip, 20 Mbit/s
#                        lowbw      30 ms round trip, 2 Mbit/s
#                        throttle   loopback, each registry behind a proxy
#                                   answering 429 (Retry-After: 1) past 30 requests/s
#   --sweep LIST       -J/-j values set together (default 1,2,4,8,16)
#   --reps N           repetitions of each configuration (default 1)
#   --tools LIST       occy,skopeo (default both)
#
# Image sets are sized per scenario so a run takes seconds, not minutes
# (the mirror set of bench/compare.sh on loopback and the WAN, smaller ones
# through the slow links). Needs docker-registry, skopeo, python3, and release
# builds of occy and occy-testkit (OCCY_BIN / OCCY_TESTKIT skip the build).
# Results: ~/.cache/occy-bench/scenarios-DATE.tsv (OCCY_BENCH_RESULTS=DIR),
# each run's output (occy -v: what each registry settled at) beside it in
# scenarios-DATE.tsv.SCENARIO-CONFIG-REP.out.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$PWD

scenarios=loopback,wan,satellite,lowbw,throttle sweep=1,2,4,8,16 reps=1 tools=occy,skopeo
die() {
    echo "bench: $*" >&2
    exit 1
}
while [ $# -gt 0 ]; do
    case $1 in
    --scenarios) scenarios=$2 && shift ;;
    --sweep) sweep=$2 && shift ;;
    --reps) reps=$2 && shift ;;
    --tools) tools=$2 && shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' && exit 0 ;;
    *) die "unknown option $1" ;;
    esac
    shift
done
has() { [[ ",$2," == *",$1,"* ]]; }
for c in docker-registry skopeo python3; do command -v "$c" >/dev/null || die "$c not found"; done

if [ -n "${OCCY_BIN:-}" ]; then occy=$OCCY_BIN; else
    cargo build --release --locked -q -p occy || die "cargo build --release failed"
    occy=$repo_root/target/release/occy
fi
if [ -n "${OCCY_TESTKIT:-}" ]; then testkit=$OCCY_TESTKIT; else
    cargo build --release --locked -q -p occy-testkit || die "cargo build -p occy-testkit failed"
    testkit=$repo_root/target/release/occy-testkit
fi

work=$(mktemp -d /tmp/occy-scenarios.XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
results_dir=${OCCY_BENCH_RESULTS:-$HOME/.cache/occy-bench}
mkdir -p "$results_dir"
results=$results_dir/scenarios-$(date +%Y%m%d-%H%M%S).tsv
: >"$results"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    local _
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
        sleep 0.05
    done
    die "nothing listens on 127.0.0.1:$1"
}
# start_registry NAME PORT: a Distribution registry storing under $work/NAME; sets reg_pid.
start_registry() {
    mkdir -p "$work/$1"
    printf 'version: 0.1\nlog: { level: error, accesslog: { disabled: true } }\nstorage: { filesystem: { rootdirectory: %s } }\nhttp: { addr: "127.0.0.1:%s", secret: occy-bench }\n' \
        "$work/$1" "$2" >"$work/$1.yml"
    docker-registry serve "$work/$1.yml" >/dev/null 2>>"$work/$1.err" &
    reg_pid=$!
    pids+=("$reg_pid")
    wait_port "$2"
}
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# scenario NAME -> images, bases, top size, emulation
sizes() {
    case $1 in
    loopback | wan) echo "20 8,24,64 4" ;;
    satellite) echo "6 1,2,4 1" ;;
    lowbw) echo "4 1 1" ;;
    throttle) echo "12 2,4,8 1" ;;
    *) die "unknown scenario $1" ;;
    esac
}
link() { # scenario -> "one-way-ms mbit" or "throttle" or ""
    case $1 in
    loopback) echo "" ;;
    wan) echo "15 200" ;;
    satellite) echo "300 20" ;;
    lowbw) echo "15 2" ;;
    throttle) echo "throttle" ;;
    esac
}

for sc in ${scenarios//,/ }; do
    read -r images bases top <<<"$(sizes "$sc")"
    gen=$work/gen-$sc
    "$testkit" generate "$gen/mirror" --set bench-mirror --images "$images" --base-sizes "$bases" --top-size "$top" >"$gen.txt" ||
        die "occy-testkit generate failed"
    mapfile -t apps < <(cut -d' ' -f1 "$gen.txt")
    src_port=$(free_port) dst_port=$(free_port)
    rm -rf "$work/src"
    start_registry src "$src_port"
    src_pid=$reg_pid
    {
        printf 'version: 1\ndefaults: { check: "off" }\nregistries:\n  "127.0.0.1:%s": { insecure: true }\nsync:\n' "$src_port"
        for a in "${apps[@]}"; do
            printf '  - from: oci://%s/mirror:%s\n    to: registry://127.0.0.1:%s/bench/%s:1.0\n' "$gen" "$a" "$src_port" "$a"
        done
    } >"$work/seed.yaml"
    "$occy" -q sync "$work/seed.yaml" >"$work/seed.out" 2>&1 || { cat "$work/seed.out" >&2; die "seeding failed"; }
    mib=$(du -sm "$work/src" | cut -f1)

    # What the tools are told: the registries, or proxies in front of them.
    src=127.0.0.1:$src_port dst=127.0.0.1:$dst_port
    proxies=()
    l=$(link "$sc")
    if [ "$l" = throttle ]; then
        sp=$(free_port) dp=$(free_port)
        python3 bench/throttleproxy.py "$sp" "$src" --per-second 30 --log "$work/throttle-src.log" &
        proxies+=("$!")
        python3 bench/throttleproxy.py "$dp" "$dst" --per-second 30 --log "$work/throttle-dst.log" &
        proxies+=("$!")
        wait_port "$sp" && wait_port "$dp"
        src=127.0.0.1:$sp dst=127.0.0.1:$dp
    elif [ -n "$l" ]; then
        read -r half mbit <<<"$l"
        sp=$(free_port) dp=$(free_port)
        python3 bench/wanproxy.py "$sp" "$src" --delay-ms "$half" --mbit "$mbit" &
        proxies+=("$!")
        python3 bench/wanproxy.py "$dp" "$dst" --delay-ms "$half" --mbit "$mbit" &
        proxies+=("$!")
        wait_port "$sp" && wait_port "$dp"
        src=127.0.0.1:$sp dst=127.0.0.1:$dp
    fi
    pids+=("${proxies[@]}")
    {
        printf 'version: 1\ndefaults: { check: "off" }\nregistries:\n  "%s": { insecure: true }\n  "%s": { insecure: true }\nsync:\n' "$src" "$dst"
        for a in "${apps[@]}"; do
            printf '  - from: registry://%s/bench/%s\n    tags: ["1.0"]\n    to: registry://%s/bench/%s\n' "$src" "$a" "$dst" "$a"
        done
    } >"$work/mirror.yaml"
    {
        printf '%s:\n  tls-verify: false\n  images:\n' "$src"
        for a in "${apps[@]}"; do printf '    bench/%s: ["1.0"]\n' "$a"; done
    } >"$work/skopeo.yaml"

    configs=()
    if has occy "$tools"; then
        configs+=(default)
        for n in ${sweep//,/ }; do configs+=("J$n"); done
    fi
    has skopeo "$tools" && configs+=(skopeo)
    echo "bench: $sc ($images images, $mib MiB at the source; load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    for ((rep = 1; rep <= reps; rep++)); do
        for c in "${configs[@]}"; do
            rm -rf "$work/dst" "$work/cache" "$work/skopeo-cache"
            : >"$work/throttle-src.log"
            : >"$work/throttle-dst.log"
            start_registry dst "$dst_port"
            dst_pid=$reg_pid
            case $c in
            default) cmd=("$occy" --cache-dir "$work/cache" -v sync "$work/mirror.yaml") ;;
            J*) cmd=("$occy" --cache-dir "$work/cache" -v sync "$work/mirror.yaml" -J "${c#J}" -j "${c#J}") ;;
            skopeo) cmd=(env "XDG_DATA_HOME=$work/skopeo-cache" skopeo sync --src yaml --dest docker --dest-tls-verify=false "$work/skopeo.yaml" "$dst/bench") ;;
            esac
            # The throttling proxies count the last second's requests: let
            # the previous run's leave it, so each run starts alike.
            sleep 1.2
            load=$(cut -d' ' -f1 /proc/loadavg)
            if /usr/bin/time -f "%e" -o "$work/time" "${cmd[@]}" >"$work/out" 2>&1; then
                wall=$(cat "$work/time")
            else
                wall=failed
                tail -n 5 "$work/out" >&2
            fi
            cp "$work/out" "$results.$sc-$c-$rep.out"
            total=$(cat "$work/throttle-src.log" "$work/throttle-dst.log" | wc -l)
            refused=$(cat "$work/throttle-src.log" "$work/throttle-dst.log" | grep -c '^429' || true)
            settled=$(grep -h "settled at" "$work/out" | tr '\n' '|' || true)
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sc" "$c" "$rep" "$wall" "$load" "$total" "$refused" "$settled" >>"$results"
            printf 'bench: %-9s %-8s rep %s: %8s s (load %s)%s\n' "$sc" "$c" "$rep" "$wall" "$load" \
                "$([ "$total" -gt 0 ] && echo ", $refused of $total requests answered 429")" >&2
            [ -n "$settled" ] && echo "         ${settled//|/$'\n'         }" >&2
            stop "$dst_pid"
        done
    done
    for p in "${proxies[@]}"; do stop "$p"; done
    stop "$src_pid"
    rm -rf "$gen"
done

# The table: medians per configuration, default against the best sweep and skopeo.
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
by = {}
for sc, c, rep, wall, load, total, refused, _ in rows:
    by.setdefault(sc, {}).setdefault(c, []).append((wall, float(load), int(total), int(refused)))
print(f"{'scenario':10} {'config':8} {'wall s':>8} {'load':>5} {'429s/requests':>20}")
for sc, cs in by.items():
    med = {}
    for c, runs in cs.items():
        ok = [float(w) for w, *_ in runs if w != "failed"]
        med[c] = statistics.median(ok) if ok else None
        refused = sum(r for *_, r in runs); total = sum(t for *_, t, _ in runs)
        loads = "/".join(f"{l:.1f}" for _, l, _, _ in runs)
        m = f"{med[c]:.2f}" if med[c] is not None else "failed"
        share = f"{refused}/{total} ({100 * refused / total:.1f} %)" if total else ""
        print(f"{sc:10} {c:8} {m:>8} {loads:>5} {share:>20}")
    sweep = {c: v for c, v in med.items() if c.startswith("J") and v is not None}
    d = med.get("default")
    if d and sweep:
        best = min(sweep, key=sweep.get)
        print(f"{sc:10} default/best ({best}) = {d / sweep[best]:.2f}", end="")
        if med.get("skopeo"):
            print(f"; default/skopeo = {d / med['skopeo']:.2f}", end="")
        print()
PY
echo "bench: results in $results" >&2
