#!/usr/bin/env bash
# Peak memory and wall time of occy beside skopeo on one image with a single
# big layer (default 512 MiB, random-ish so it does not compress away), for
# every route occy streams: oci->tar, oci->oci, oci->dir, oci->registry,
# registry->oci, registry->tar. Prints occy's peak RSS per route and the
# occy/skopeo ratios where skopeo has the same route.
#
#   bench/memory.sh [SIZE_MIB]
#
# Needs docker-registry, skopeo and /usr/bin/time (./test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-512}
cargo build --release --locked -q -p occy -p occy-testkit
occy=$PWD/target/release/occy
testkit=$PWD/target/release/occy-testkit
. bench/lib.sh
bench_setup memory

"$testkit" generate "$work/src" --set big --size "$size" >/dev/null
src="oci://$work/src:big"


ins=(--insecure-registry "$reg")
declare -A occy_r skopeo_r
occy_r[oci-tar]=$(measure o1 "$occy" process "$src" "tar://$work/o.tar")
occy_r[oci-oci]=$(measure o2 "$occy" process "$src" "oci://$work/o-oci:big")
occy_r[oci-dir]=$(measure o3 "$occy" process "$src" "dir://$work/o-dir")
occy_r[oci-registry]=$(measure o4 "$occy" "${ins[@]}" process "$src" "registry://$reg/occy/big:1")
occy_r[registry-oci]=$(measure o5 "$occy" "${ins[@]}" process "registry://$reg/occy/big:1" "oci://$work/o-oci2:big")
occy_r[registry-tar]=$(measure o6 "$occy" "${ins[@]}" process "registry://$reg/occy/big:1" "tar://$work/o2.tar")
skopeo_r[oci-tar]=$(measure s1 skopeo copy "oci:$work/src:big" "docker-archive:$work/s.tar")
skopeo_r[oci-oci]=$(measure s2 skopeo copy "oci:$work/src:big" "oci:$work/s-oci:big")
skopeo_r[oci-registry]=$(measure s4 skopeo copy --dest-tls-verify=false "oci:$work/src:big" "docker://$reg/skopeo/big:1")
skopeo_r[registry-oci]=$(measure s5 skopeo copy --src-tls-verify=false "docker://$reg/skopeo/big:1" "oci:$work/s-oci2:big")
skopeo_r[registry-tar]=$(measure s6 skopeo copy --src-tls-verify=false "docker://$reg/skopeo/big:1" "docker-archive:$work/s2.tar")

printf '%s MiB layer\n%-14s %12s %12s %10s %10s\n' "$size" route "occy MiB" "skopeo MiB" "rss ratio" "time ratio"
for route in oci-tar oci-oci oci-dir oci-registry registry-oci registry-tar; do
    read -r o_kib o_s <<<"${occy_r[$route]}"
    if [ -n "${skopeo_r[$route]:-}" ]; then
        read -r s_kib s_s <<<"${skopeo_r[$route]}"
        awk -v r="$route" -v ok="$o_kib" -v os="$o_s" -v sk="$s_kib" -v ss="$s_s" 'BEGIN {
            printf "%-14s %12.1f %12.1f %10.2f %10.2f\n", r, ok/1024, sk/1024, ok/sk, (ss>0 ? os/ss : 0) }'
    else
        awk -v r="$route" -v ok="$o_kib" 'BEGIN { printf "%-14s %12.1f %12s %10s %10s\n", r, ok/1024, "-", "-", "-" }'
    fi
done
