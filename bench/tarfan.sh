#!/usr/bin/env bash
# The tarball side of the fan-out workload beside its floor: the bench's
# mirror set (20 images on shared bases) synced from a registry on loopback
# to one docker-save tarball per image, in one `occy sync`, against the
# least that work can cost on this machine: `cp` of the same finished
# tarballs (and `sync`, as occy syncs each tarball it writes) plus one
# inflate of the distinct compressed layers. Prints each side's wall, user
# and sys time (medians), occy's peak RSS, the ratio occy/floor, and the
# futex calls occy makes per 100 MB written (from one more run under
# `strace -f -c`), with the 1-minute load average before and after each
# measured run. docs/performance.md has a recent result.
#
#   bench/tarfan.sh [options]
#
#   --reps N             repetitions (default 3)
#   --images N           images (default 20)
#   --base-sizes A,B,C   shared base layers, MiB (default 8,24,64)
#   --top-size N         largest unique top layer, MiB (default 4)
#   --no-strace          skip the futex count
#   --keep               keep the scratch directory
#
# OCCY_BIN=path measures that binary (default: cargo build --release of this
# tree); OCCY_OLD=path measures a second binary too, alternating with the
# first (a before/after in one run); OCCY_TESTKIT=path skips building the
# image generator. Needs docker-registry, python3,
# /usr/bin/time and (for the futex count) strace; ./test.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$PWD

reps=3 images=20 base_sizes=8,24,64 top_size=4 use_strace=1 keep=0
die() {
    echo "tarfan: $*" >&2
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
    --no-strace) use_strace=0 ;;
    --keep) keep=1 ;;
    -h | --help) usage 0 ;;
    *) echo "tarfan: unknown option $1" >&2 && usage 2 ;;
    esac
    shift
done
for n in "$reps" "$images" "$top_size"; do
    [[ $n =~ ^[0-9]+$ ]] || die "expected a whole number, got '$n'"
done
[ "$reps" -ge 1 ] || die "--reps must be at least 1"
[[ $base_sizes =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--base-sizes takes MiB sizes separated by commas, got '$base_sizes'"
command -v docker-registry >/dev/null || die "docker-registry not found: apt-get install docker-registry"
command -v python3 >/dev/null || die "python3 not found: apt-get install python3"
[ -x /usr/bin/time ] || die "/usr/bin/time not found: apt-get install time"
if [ "$use_strace" = 1 ] && ! command -v strace >/dev/null; then
    die "strace not found: apt-get install strace (or --no-strace)"
fi

if [ -n "${OCCY_BIN:-}" ]; then
    occy=$OCCY_BIN
    [ -x "$occy" ] || die "OCCY_BIN=$occy is not an executable"
else
    echo "tarfan: building occy (cargo build --release)" >&2
    cargo build --release --locked -q -p occy || die "cargo build --release failed"
    occy=$repo_root/target/release/occy
fi
old=${OCCY_OLD:-}
[ -z "$old" ] || [ -x "$old" ] || die "OCCY_OLD=$old is not an executable"
if [ -n "${OCCY_TESTKIT:-}" ]; then
    testkit=$OCCY_TESTKIT
    [ -x "$testkit" ] || die "OCCY_TESTKIT=$testkit is not an executable"
else
    echo "tarfan: building the image generator (cargo build --release -p occy-testkit)" >&2
    cargo build --release --locked -q -p occy-testkit || die "cargo build --release -p occy-testkit failed"
    testkit=$repo_root/target/release/occy-testkit
fi

# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_setup tarfan
[ "$keep" = 1 ] && trap 'kill $registry_pid 2>/dev/null; echo "tarfan: kept $work" >&2' EXIT

gen=$work/gen
echo "tarfan: generating $images images (bases $base_sizes MiB, tops <= $top_size MiB)" >&2
"$testkit" generate "$gen" --set bench-mirror --images "$images" --base-sizes "$base_sizes" --top-size "$top_size" >"$work/apps.txt" ||
    die "occy-testkit generate failed"
mapfile -t apps < <(cut -d' ' -f1 "$work/apps.txt")
{
    printf 'version: 1\ndefaults: { image_parallel: 8, check: "off" }\nregistries:\n  "%s": { insecure: true }\nsync:\n' "$reg"
    for a in "${apps[@]}"; do
        printf '  - from: oci://%s:%s\n    to: registry://%s/bench/%s:1.0\n' "$gen" "$a" "$reg" "$a"
    done
} >"$work/seed.yaml"
"$occy" -q sync "$work/seed.yaml" >"$work/seed.out" 2>&1 || {
    cat "$work/seed.out" >&2
    die "filling the registry failed"
}
# The same file as bench/compare.sh's fan-out, with the tarballs only.
{
    printf 'version: 1\nregistries:\n  "%s": { insecure: true }\nsync:\n' "$reg"
    for a in "${apps[@]}"; do
        printf '  - from: registry://%s/bench/%s\n    tags: ["1.0"]\n    to:\n' "$reg" "$a"
        printf '      - "tar://%s/fan/{name}-{tag}.tar"\n' "$work"
    done
} >"$work/tarfan.yaml"

# One inflate of each distinct compressed layer, as fast as this machine's
# zlib goes (1 MiB reads, output dropped).
cat >"$work/inflate.py" <<'PY'
import os, sys, zlib
total = 0
for root in sys.argv[1:]:
    for name in sorted(os.listdir(root)):
        with open(os.path.join(root, name), "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                continue
            f.seek(0)
            d = zlib.decompressobj(31)
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                while chunk:
                    total += len(d.decompress(chunk, 1 << 20))
                    chunk = d.unconsumed_tail
            total += len(d.flush())
print(total)
PY

load() { cut -d' ' -f1 /proc/loadavg; }
# timed NAME CMD...: appends "wall user sys rss_kib load_before load_after" to $work/NAME.tsv
timed() {
    local name=$1 before
    shift
    before=$(load)
    /usr/bin/time -f "%e %U %S %M" -o "$work/t.$name" "$@" >"$work/out.$name" 2>&1 || {
        tail -n 30 "$work/out.$name" >&2
        die "$name failed; its output is above"
    }
    echo "$(cat "$work/t.$name") $before $(load)" >>"$work/$name.tsv"
}
run_occy() { # NAME BINARY
    rm -rf "$work/fan" "$work/cache"
    mkdir -p "$work/fan"
    timed "$1" "$2" --cache-dir "$work/cache" sync "$work/tarfan.yaml"
}

tools=(occy)
[ -n "$old" ] && tools+=(old)
for ((rep = 1; rep <= reps; rep++)); do
    for t in "${tools[@]}"; do
        bin=$occy
        [ "$t" = old ] && bin=$old
        run_occy "$t" "$bin"
        echo "tarfan: rep $rep $t: $(tail -n 1 "$work/$t.tsv")" >&2
    done
    # The floor, on the tarballs the last run wrote.
    rm -rf "$work/fan-copy"
    timed cp bash -c 'cp -r "$1" "$2" && sync' _ "$work/fan" "$work/fan-copy"
    rm -rf "$work/fan-copy"
    timed inflate python3 "$work/inflate.py" "$gen/blobs/sha256"
    echo "tarfan: rep $rep floor: cp $(tail -n 1 "$work/cp.tsv"), inflate $(tail -n 1 "$work/inflate.tsv")" >&2
done
written=$(du -cb "$work"/fan/*.tar | tail -n 1 | cut -f1)
ntars=$(find "$work/fan" -name '*.tar' | wc -l)
inflated=$(cat "$work/out.inflate")

# The futex count: one more run of each binary under strace (slower; not timed).
for t in "${tools[@]}"; do
    : >"$work/$t.strace"
    [ "$use_strace" = 1 ] || continue
    bin=$occy
    [ "$t" = old ] && bin=$old
    rm -rf "$work/fan" "$work/cache"
    mkdir -p "$work/fan"
    strace -f -c -o "$work/$t.strace" "$bin" --cache-dir "$work/cache" sync "$work/tarfan.yaml" >"$work/out.strace" 2>&1 ||
        die "$t failed under strace: $(tail -n 5 "$work/out.strace")"
done

python3 - "$work" "$written" "$ntars" "$inflated" "${tools[@]}" <<'PY'
import statistics, sys
work, written, ntars, inflated, tools = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5:]

def rows(name):
    out = []
    for line in open(f"{work}/{name}.tsv"):
        w, u, s, rss, lb, la = line.split()
        out.append((float(w), float(u), float(s), int(rss), float(lb), float(la)))
    return out

def med(rs, i):
    return statistics.median(r[i] for r in rs)

def syscalls(t):
    calls = {}
    try:
        for line in open(f"{work}/{t}.strace"):
            p = line.split()
            if len(p) >= 5 and p[-1].isidentifier() and p[3].isdigit():
                calls[p[-1]] = int(p[3])
    except OSError:
        pass
    return calls

cp, inf = rows("cp"), rows("inflate")
floor = med(cp, 0) + med(inf, 0)
mb = written / 1e6
print(f"tarball-only fan-out: {ntars} tarballs, {mb:.0f} MB written; distinct layers inflate to {inflated / 1e6:.0f} MB")
def cpu(rs):
    return statistics.median(r[1] + r[2] for r in rs)
floor_cpu = cpu(cp) + cpu(inf)
print(f"{'':22} {'runs':>4} {'wall s':>7} {'user s':>7} {'sys s':>7} {'cpu s':>6} {'peak MiB':>8} {'load':>9} "
      f"{'wall/floor':>10} {'cpu/floor':>9} {'futex':>9} {'futex/100MB':>11} {'writes':>7}")
def line(name, rs, ratio=True, t=None):
    loads = [x for r in rs for x in r[4:6]]
    sc = syscalls(t) if t else {}
    fx = sc.get("futex")
    wr = sum(v for k, v in sc.items() if k in ("write", "writev", "pwrite64", "pwritev"))
    print(f"{name:22} {len(rs):4d} {med(rs, 0):7.2f} {med(rs, 1):7.2f} {med(rs, 2):7.2f} {cpu(rs):6.2f} {med(rs, 3) / 1024:8.1f} "
          f"{min(loads):4.1f}-{max(loads):<4.1f} "
          + (f"{med(rs, 0) / floor:10.2f} {cpu(rs) / floor_cpu:9.2f} " if ratio else f"{'':10} {'':9} ")
          + (f"{fx:9d} {fx / mb * 100:11.0f} {wr:7d}" if fx is not None else ""))
for t in tools:
    line({"occy": "occy sync", "old": "occy sync (OCCY_OLD)"}[t], rows(t), t=t)
line("cp -r + sync", cp, ratio=False)
line("inflate distinct", inf, ratio=False)
print(f"{'floor (cp + inflate)':22} {'':4} {floor:7.2f} {'':7} {'':7} {floor_cpu:6.2f}")
print("wall/floor is met at <= 1.5 on an idle machine; under load (the load column: 1-minute"
      " averages before and after each run) the cpu columns are the steadier comparison.")
PY
