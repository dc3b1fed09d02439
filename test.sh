#!/usr/bin/env bash
# Runs occy's whole test suite. On a fresh Debian machine it first installs
# what the tests talk to: the Distribution registry, skopeo, podman,
# containerd, umoci, htpasswd, openssl, Graphviz, Prometheus (promtool) and
# busybox-static (a base image for `docker build` tests) (apt, as root or
# through sudo), and sigstore-python (pip).
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v podman >/dev/null || need+=(podman)
# containerd: only when the binary is missing (a Docker Engine install may bring its own).
command -v containerd >/dev/null && command -v ctr >/dev/null || need+=(containerd)
command -v umoci >/dev/null || need+=(umoci)
command -v dot >/dev/null || need+=(graphviz)
[ -x /bin/busybox ] || need+=(busybox-static)
[ -x /usr/bin/time ] || need+=(time)
{ command -v prometheus && command -v promtool; } >/dev/null || need+=(prometheus)
[ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
command -v unshare >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    echo "test.sh: installing ${need[*]}" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
fi
# sigstore-python: the independent verifier of the keyless test bundles
# (tests/it/provenance.rs); PyPI has it, Debian does not. It brings
# pyca/cryptography, which tests/it/support/sigstore_material.py uses.
if ! command -v sigstore >/dev/null; then
    command -v pip3 >/dev/null || command -v pip >/dev/null || {
        SUDO=""
        if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
        $SUDO apt-get update -q
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q python3-pip
    }
    echo "test.sh: installing sigstore-python (pip install sigstore)" >&2
    PIP="$(command -v pip3 || command -v pip)"
    "$PIP" install -q sigstore || "$PIP" install -q --break-system-packages sigstore
fi
if ! command -v cargo >/dev/null; then
    echo "test.sh: cargo not found; install Rust with rustup (https://rustup.rs) and run again" >&2
    exit 2
fi

echo "== components the tests use"
for c in "docker version --format {{.Server.Version}}" "podman --version" "containerd --version" "skopeo --version" \
    "umoci --version" "docker-registry --version" "dot -V" "prometheus --version" "sigstore --version"; do
    # A missing tool is reported here; the tests that need it then fail
    # (OCCY_REQUIRE_ALL=1, as in CI) or say SKIPPED.
    printf '%s: %s\n' "${c%% *}" "$($c 2>&1 | head -1 || echo "not available")"
done

cargo test --locked "$@"
