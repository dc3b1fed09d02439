#!/usr/bin/env bash
# Builds occy and runs its main job on the tiny image shipped in
# examples/quickstart/image (an OCI layout): `occy sync examples/quickstart.yaml`
# shows its plan, applies it (an OCI layout and a docker-save tarball under
# ./quickstart-out, plus a registry on 127.0.0.1 that this script starts and
# stops when the Distribution registry is installed), then runs again to show
# there is nothing to do. Then the one-shot commands: info, check, process,
# search.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v cargo >/dev/null; then
    echo "try.sh: cargo not found; install Rust with rustup (https://rustup.rs) and run again" >&2
    exit 2
fi
cargo build --release --locked -p occy
occy=./target/release/occy
src="oci://$PWD/examples/quickstart/image:1.0"
out="$PWD/quickstart-out"
rm -rf "$out"
mkdir -p "$out"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# The sync file: examples/quickstart.yaml, plus a local registry when one is installed.
sync_file=examples/quickstart.yaml
registry_pid=""
if command -v docker-registry >/dev/null; then
    port=5741
    mkdir -p "$out/registry"
    cat >"$out/registry/config.yml" <<CONF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $out/registry/data}}
http: {addr: 127.0.0.1:$port}
CONF
    docker-registry serve "$out/registry/config.yml" >"$out/registry/log" 2>&1 &
    registry_pid=$!
    trap '[ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null' EXIT
    for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    sync_file="$out/quickstart.yaml"
    sed -e "s|oci://quickstart/image|oci://$PWD/examples/quickstart/image|" \
        -e "s|\.\./quickstart-out|$out|" examples/quickstart.yaml >"$sync_file"
    printf '      - registry://127.0.0.1:%s/quickstart/app\nregistries:\n  127.0.0.1:%s: { insecure: true }\n' "$port" "$port" >>"$sync_file"
fi

step "occy sync $sync_file --plan: what would change?"
$occy sync "$sync_file" --plan

step "occy sync: do it (only what is out of date, each written image checked)"
$occy sync "$sync_file"

step "occy sync again: nothing to do"
$occy sync "$sync_file"

step "What is the image?"
$occy info "$src"

step "Is it sound? (every layer read back and checked)"
$occy check "$src"

step "One-shot copies: an occystrap directory and a runc bundle"
$occy process "$src" "dir://$out/dir?unique_names=true"
$occy process "$src" "bundle://$out/bundle"

step "The OCI layout keeps the manifest digest"
a=$($occy -O json info "$src" | sed -n 's/.*"manifest_digest": "\(.*\)".*/\1/p')
b=$($occy -O json info "oci://$out/layout:1.0" | sed -n 's/.*"manifest_digest": "\(.*\)".*/\1/p')
echo "source      $a"
echo "destination $b"
[ "$a" = "$b" ] || { echo "digests differ" >&2; exit 1; }

step "Copying again is cheap: every layer is already there"
$occy process "$src" "oci://$out/layout:1.0"

step "Where does each file come from?"
$occy search "$src" '**/*'

cat <<MSG

Outputs are in $out:
  layout/          OCI image layout   (skopeo inspect oci:$out/layout:1.0)
  quickstart.tar   docker-save archive (docker load -i / podman load -i)
  quickstart.yaml  the sync file run above (with the local registry, if installed)
  dir/             occystrap directory with catalog.json
  bundle/          runc bundle: config.json + rootfs/
MSG
