#!/usr/bin/env bash
# Writes seed inputs for each fuzz target into fuzz/corpus/TARGET/: the
# repository's example sync files, references from the docs, the manifests,
# configs and layer tars of the quickstart image.
set -euo pipefail
cd "$(dirname "$0")"
root=..
mkdir -p corpus/{sync_file,reference,manifest,config,tar_rewrite,extract}
cp "$root"/examples/*.yaml corpus/sync_file/ 2>/dev/null || true
i=0
for r in 'registry://quay.io/org/app:1.0' 'registry://127.0.0.1:5000/a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000' \
         'tar:///tmp/app.tar' 'oci:///srv/layout:1.0' 'dir:///x?unique_names=true' 'docker://app:1?socket=/run/d.sock' \
         'bundle:///b' 'quay://org/app*:latest?since=2024-01-01' 'registry://h/org/*:v*'; do
    printf '%s' "$r" >"corpus/reference/seed$i"; i=$((i + 1))
done
blobs=$root/examples/quickstart/image/blobs/sha256
for f in "$blobs"/*; do
    case "$(head -c 1 "$f")" in
        '{') cp "$f" corpus/manifest/; cp "$f" corpus/config/ ;;
        *) if gzip -t "$f" 2>/dev/null; then gzip -dc "$f" >"corpus/tar_rewrite/$(basename "$f")"; cp "corpus/tar_rewrite/$(basename "$f")" corpus/extract/; fi ;;
    esac
done
