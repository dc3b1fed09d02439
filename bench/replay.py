"""Replays the read requests a client made to registries, to time what the
registries alone need to answer them: reads the access-log lines of a run
(Distribution's combined format), keeps the GETs and HEADs of /v2/, and
sends them again with N threads, each on one keep-alive connection, as
fast as the answers come. bench/plan-scale.sh puts this time beside
occy's `--plan` of the same requests.

    python3 bench/replay.py THREADS HOST:PORT LOG FROM_LINE [HOST:PORT LOG FROM_LINE ...]

Prints "requests seconds".
"""

import http.client
import queue
import re
import sys
import threading
import time

LINE = re.compile(r'^\S+ - \S+ \[[^\]]+\] "(GET|HEAD) (/v2/\S*) [^"]*" (\d{3})')
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


def requests_of(host, log, from_line):
    out = []
    with open(log, errors="replace") as f:
        for n, line in enumerate(f, 1):
            if n < from_line:
                continue
            m = LINE.match(line)
            if m:
                out.append((host, m.group(1), m.group(2)))
    return out


def main():
    threads = int(sys.argv[1])
    args = sys.argv[2:]
    work = []
    for i in range(0, len(args), 3):
        work += requests_of(args[i], args[i + 1], int(args[i + 2]))
    q = queue.Queue()
    for w in work:
        q.put(w)
    failed = []

    def worker():
        conns = {}
        while True:
            try:
                host, method, path = q.get_nowait()
            except queue.Empty:
                return
            c = conns.get(host) or http.client.HTTPConnection(host, timeout=30)
            conns[host] = c
            try:
                c.request(method, path, headers={"Accept": ACCEPT})
                r = c.getresponse()
                r.read()
            except Exception as e:  # noqa: BLE001 - counted and reported
                failed.append(f"{method} {path}: {e}")
                conns.pop(host, None)

    start = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    took = time.monotonic() - start
    if failed:
        print(f"replay: {len(failed)} requests failed, e.g. {failed[0]}", file=sys.stderr)
        sys.exit(1)
    print(len(work), f"{took:.2f}")


if __name__ == "__main__":
    main()
