# Shared by the bench scripts (sourced, not run): a scratch directory, a
# Distribution registry on a free loopback port, and a timer.
#
#   bench_setup NAME   -> sets $work (removed on exit) and $reg (HOST:PORT)
#   measure NAME CMD…  -> prints "peak_rss_kib seconds" of CMD, or exits with its output

bench_setup() {
    work=$(mktemp -d "/tmp/occy-bench-$1.XXXXXX")
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    reg=127.0.0.1:$port
    cat >"$work/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $reg
YML
    docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
    registry_pid=$!
    trap 'kill $registry_pid 2>/dev/null; rm -rf "$work"' EXIT
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
}

measure() {
    local name=$1
    shift
    /usr/bin/time -f "%M %e" -o "$work/time.$name" "$@" >"$work/out.$name" 2>&1 || {
        echo "$name failed:" >&2
        cat "$work/out.$name" >&2
        exit 1
    }
    cat "$work/time.$name"
}
