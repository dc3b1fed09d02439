#!/usr/bin/env bash
# Builds occy's container image into the local Docker Engine as occy:latest
# and occy:VERSION, offline and reproducibly (docs/operations.md):
#
#   ./image.sh                      release build of occy, then the image
#   OCCY_IMAGE_BINARY=PATH ./image.sh   the image around an occy binary built already
#   ./image.sh --tar FILE           also keep the docker-save archive (e.g. to push it
#                                   with `occy process tar:///FILE registry://…`)
#
# No base image is pulled: the image is FROM scratch, assembled by this
# script rather than by `docker build` (which stamps the build time into the
# image config, so every build would get a new image ID). Its one layer holds
# the stripped occy binary, the shared libraries it links (from `ldd`, as
# this machine has them), the CA certificates of the `ca-certificates`
# package, /etc/passwd and /etc/group with the non-root user occy
# (65532:65532), and /tmp. Every file time is the commit time of HEAD, files
# are in name order with numeric owners, and the config carries no build
# time, so the same source on the same machine gives the same image ID.
set -euo pipefail
cd "$(dirname "$0")"

keep_tar=""
while [ $# -gt 0 ]; do
    case "$1" in
        --tar) keep_tar="${2:?--tar needs a file name}"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "image.sh: unknown argument $1 (expected --tar FILE)" >&2; exit 2 ;;
    esac
done

for tool in docker ldd tar sha256sum; do
    command -v "$tool" >/dev/null || { echo "image.sh: $tool is needed" >&2; exit 2; }
done
certs=/etc/ssl/certs/ca-certificates.crt
[ -s "$certs" ] || { echo "image.sh: $certs is missing: install the Debian package ca-certificates" >&2; exit 2; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
[ -n "$version" ] || { echo "image.sh: no version in Cargo.toml" >&2; exit 2; }
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
source_url=${OCCY_IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null || echo unknown)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

binary=${OCCY_IMAGE_BINARY:-}
if [ -z "$binary" ]; then
    command -v cargo >/dev/null || { echo "image.sh: cargo not found; install Rust (https://rustup.rs) or set OCCY_IMAGE_BINARY" >&2; exit 2; }
    echo "image.sh: building occy (cargo build --release --locked)" >&2
    cargo build --release --locked --bin occy
    binary=${CARGO_TARGET_DIR:-target}/release/occy
fi
[ -x "$binary" ] || { echo "image.sh: $binary is not an executable occy binary" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/occy-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"

# The binary, without symbols (they are not needed to run it).
if command -v strip >/dev/null; then
    strip --strip-all -o "$root/usr/local/bin/occy" "$binary"
else
    cp "$binary" "$root/usr/local/bin/occy"
fi
chmod 0755 "$root/usr/local/bin/occy"

# The shared libraries it links, and the dynamic loader, at the paths the
# binary names them by (symbolic links resolved to the files).
# A static binary (e.g. a musl build) needs none.
libs=$(ldd "$binary" 2>/dev/null | awk '/=> \// { print $3 } /^[[:space:]]*\/[^ ]*ld-linux/ { print $1 }' | sort -u || true)
if [ -z "$libs" ] && ! ldd "$binary" 2>&1 | grep -q -e 'statically linked' -e 'not a dynamic executable'; then
    echo "image.sh: ldd found no libraries in $binary" >&2
    exit 2
fi
for lib in $libs; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
    chmod 0755 "$root$lib"
done

cp -L "$certs" "$root$certs"
chmod 0644 "$root$certs"
printf 'root:x:0:0:root:/root:/sbin/nologin\noccy:x:65532:65532:occy:/tmp:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\noccy:x:65532:\n' >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"
chmod 1777 "$root/tmp"
find "$root" -type d ! -path "$root/tmp" -exec chmod 0755 {} +

# The layer: name order, numeric owners root:root, one time for every file.
tar_flags=(--sort=name --format=gnu --numeric-owner --owner=0 --group=0 --mtime="@$epoch")
tar "${tar_flags[@]}" -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)

labels=$(printf '"org.opencontainers.image.source":"%s","org.opencontainers.image.version":"%s","org.opencontainers.image.revision":"%s","org.opencontainers.image.title":"occy","org.opencontainers.image.licenses":"Apache-2.0"' \
    "$source_url" "$version" "$revision")
printf '{"architecture":"%s","os":"linux","created":"%s","author":"image.sh","config":{"User":"65532:65532","Env":["PATH=/usr/local/bin:/usr/bin:/bin","SSL_CERT_FILE=%s","HOME=/tmp","TMPDIR=/tmp"],"Entrypoint":["/usr/local/bin/occy"],"WorkingDir":"/tmp","Labels":{%s}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"%s","created_by":"image.sh: occy %s (%s)"}]}' \
    "$(docker version --format '{{.Server.Arch}}' 2>/dev/null || echo amd64)" "$created" "$certs" "$labels" "$diff_id" "$created" "$version" "$revision" \
    >"$work/config.json"
config_id=$(sha256sum "$work/config.json" | cut -d' ' -f1)

# The docker-save archive docker load reads: the image ID is the digest of
# the config, so it is the same whenever the config and the layer are.
out=$work/archive
mkdir -p "$out/$diff_id"
mv "$work/layer.tar" "$out/$diff_id/layer.tar"
mv "$work/config.json" "$out/$config_id.json"
printf '[{"Config":"%s.json","RepoTags":["occy:latest","occy:%s"],"Layers":["%s/layer.tar"]}]' \
    "$config_id" "$version" "$diff_id" >"$out/manifest.json"
tar "${tar_flags[@]}" -C "$out" -cf "$work/occy-image.tar" .
docker load -i "$work/occy-image.tar" >/dev/null
if [ -n "$keep_tar" ]; then
    cp "$work/occy-image.tar" "$keep_tar"
fi

size=$(docker image inspect --format '{{.Size}}' "occy:$version")
echo "occy:latest occy:$version sha256:$config_id $((size / 1024 / 1024)) MiB ($size bytes)"
