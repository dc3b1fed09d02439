#!/usr/bin/env bash
# Builds occy and runs its main job on the tiny image shipped in
# examples/quickstart/image (an OCI layout): shows what the image is, then
# copies it to an OCI layout, a docker-save tarball, an occystrap directory
# and a runc bundle under ./quickstart-out, checks the copy kept the digest,
# and runs the copy again to show it is cheap.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v cargo >/dev/null; then
    echo "try.sh: cargo not found; install Rust with rustup (https://rustup.rs) and run again" >&2
    exit 2
fi
cargo build --release --locked
occy=./target/release/occy
src="oci://$PWD/examples/quickstart/image:1.0"
out="$PWD/quickstart-out"
rm -rf "$out"
mkdir -p "$out"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "What is the image?"
$occy info "$src"

step "Is it sound? (every layer read back and checked)"
$occy check "$src"

step "Copy it to an OCI layout, a docker-save tarball, a directory and a runc bundle"
$occy process "$src" "oci://$out/layout:1.0"
$occy process "$src" "tar://$out/quickstart.tar"
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
  dir/             occystrap directory with catalog.json
  bundle/          runc bundle: config.json + rootfs/
MSG
