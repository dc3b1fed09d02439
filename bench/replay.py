"""Replays the requests a client made to registries, to time what the
registries alone need to answer them. It reads the access-log lines of a
run (Distribution's combined format) and sends the requests again with N
threads, each on one keep-alive connection per host, as fast as the
answers come. bench/plan-scale.sh puts this time beside occy's.

Reads only (a `--plan`): the GETs and HEADs of /v2/, sent again to the
registries that logged them.

    python3 bench/replay.py THREADS HOST:PORT LOG FROM_LINE [HOST:PORT LOG FROM_LINE ...]

Writes too (an apply, `--writes`): the source's GETs and HEADs, and the
destination's requests sent to NEW_DST, an empty registry standing in for
the destination as it was before the apply. Each blob upload is a POST and
a PUT with the blob (the PATCHes and POSTs of the log are folded into it),
a mount is sent as logged (a declined one cancelled with a DELETE, as occy
does), and each manifest PUT sends the manifest; a manifest waits for the
blobs and child manifests it names, a mount for the blob it mounts, where
the log wrote them before it. Blobs and manifests are read from the
source before the clock starts (the destination's repositories are named
as the source's). The two logs are merged by their time stamps.

    python3 bench/replay.py --writes THREADS SRC SRC_LOG FROM-TO DST_LOG FROM-TO NEW_DST

(FROM-TO: the log's lines of the apply, the first and the last.)

Prints "requests seconds".
"""

import hashlib
import http.client
import json
import queue
import re
import sys
import threading
import time
import urllib.parse

LINE = re.compile(r'^\S+ - \S+ \[([^\]]+)\] "(GET|HEAD|POST|PUT|PATCH|DELETE) (/v2/\S*) [^"]*" (\d{3})')
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
BLOB_PUT = re.compile(r"^/v2/(.+)/blobs/uploads/[^?]+\?(.*)$")
MOUNT = re.compile(r"^/v2/(.+)/blobs/uploads/\?(.*)$")
MANIFEST = re.compile(r"^/v2/(.+)/manifests/([^?]+)$")
BLOB = re.compile(r"^/v2/(.+)/blobs/(sha256:[0-9a-f]{64})$")


def log_lines(log, from_line, to_line=None):
    """(time stamp, method, path, status) of each /v2/ line from FROM_LINE
    (up to TO_LINE, when given)."""
    with open(log, errors="replace") as f:
        for n, line in enumerate(f, 1):
            if n < from_line:
                continue
            if to_line is not None and n > to_line:
                break
            m = LINE.match(line)
            if m:
                stamp = m.group(1).split()[0]
                yield stamp, m.group(2), m.group(3), int(m.group(4))


def requests_of(host, log, from_line):
    return [(host, method, path) for _, method, path, _ in log_lines(log, from_line) if method in ("GET", "HEAD")]


def run(threads, work, step):
    """Runs step(conn_for, item) for each item over THREADS threads; returns
    the seconds taken and the failures."""
    q = queue.Queue()
    for w in work:
        q.put(w)
    failed = []

    def worker():
        conns = {}

        def conn_for(host):
            c = conns.get(host)
            if c is None:
                c = conns[host] = http.client.HTTPConnection(host, timeout=60)
            return c

        while True:
            try:
                item = q.get_nowait()
            except queue.Empty:
                return
            try:
                step(conn_for, item)
            except Exception as e:  # noqa: BLE001 - counted and reported
                failed.append(f"{item[:3]}: {e!r}")
                conns.clear()

    start = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.monotonic() - start, failed


def exchange(c, method, path, body=None, headers=None):
    h = {"Accept": ACCEPT}
    h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    return r, data


def reads(argv):
    threads = int(argv[0])
    args = argv[1:]
    work = []
    for i in range(0, len(args), 3):
        work += requests_of(args[i], args[i + 1], int(args[i + 2]))

    def step(conn_for, item):
        host, method, path = item
        exchange(conn_for(host), method, path)

    took, failed = run(threads, work, step)
    return len(work), took, failed


def writes(argv):
    threads, src, src_log, src_lines, dst_log, dst_lines, new_dst = argv
    threads = int(threads)
    src_from, src_to = (int(n) for n in src_lines.split("-"))
    dst_from, dst_to = (int(n) for n in dst_lines.split("-"))
    stamp = lambda s: time.mktime(time.strptime(s, "%d/%b/%Y:%H:%M:%S"))  # noqa: E731
    # Each item: (sort key, host, kind, method, path, extra); kinds: read,
    # upload (repo, digest), mount (repo, digest, from), manifest (repo, ref).
    items = []
    blob_home = {}
    src_lines = [l for l in log_lines(src_log, src_from, src_to) if l[1] in ("GET", "HEAD")]
    for i, (s, method, path, _) in enumerate(src_lines):
        m = BLOB.match(path)
        if m:
            blob_home.setdefault(m.group(2), m.group(1))
        items.append(((stamp(s), i / max(1, len(src_lines))), src, "read", method, path, None))
    dst_lines = list(log_lines(dst_log, dst_from, dst_to))
    folded = 0
    for i, (s, method, path, status) in enumerate(dst_lines):
        key = (stamp(s), i / max(1, len(dst_lines)))
        if method in ("GET", "HEAD"):
            items.append((key, new_dst, "read", method, path, None))
            continue
        if status // 100 != 2:
            continue
        if method == "POST":
            m = MOUNT.match(path)
            q = urllib.parse.parse_qs(m.group(2)) if m else {}
            if m and "mount" in q and "from" in q:
                items.append((key, new_dst, "mount", method, path, (m.group(1), q["mount"][0], q["from"][0])))
            else:
                folded += 1  # an upload session: sent with its PUT
        elif method == "PUT":
            m = BLOB_PUT.match(path)
            q = urllib.parse.parse_qs(m.group(2)) if m else {}
            if m and "digest" in q:
                items.append((key, new_dst, "upload", method, path, (m.group(1), q["digest"][0])))
                continue
            m = MANIFEST.match(path)
            if m:
                items.append((key, new_dst, "manifest", method, path, (m.group(1), m.group(2))))
        else:
            folded += 1  # PATCH (a chunk: sent with the PUT), DELETE (a declined mount's)
    items.sort(key=lambda x: x[0])

    # What the writes send, read from the source before the clock starts.
    c = http.client.HTTPConnection(src, timeout=60)
    blobs, manifests = {}, {}
    for _, _, kind, _, _, extra in items:
        if kind == "upload" and extra[1] not in blobs:
            repo = blob_home.get(extra[1], extra[0])
            r, data = exchange(c, "GET", f"/v2/{repo}/blobs/{extra[1]}")
            if r.status != 200:
                raise SystemExit(f"replay: cannot read blob {extra[1]} from {src}/{repo}: {r.status}")
            blobs[extra[1]] = data
        elif kind == "manifest" and extra not in manifests:
            r, data = exchange(c, "GET", f"/v2/{extra[0]}/manifests/{extra[1]}")
            if r.status != 200:
                raise SystemExit(f"replay: cannot read manifest {extra[1]} of {src}/{extra[0]}: {r.status}")
            manifests[extra] = (data, r.getheader("Content-Type"))
    c.close()

    # Dependencies: a manifest waits for the writes of what it names, a
    # mount for the write of its blob in the repository it mounts from.
    writer = {}
    deps = [[] for _ in items]
    done = [None] * len(items)
    for n, (_, _, kind, _, _, extra) in enumerate(items):
        if kind == "upload":
            writer.setdefault((extra[0], extra[1]), n)
        elif kind == "mount":
            repo, digest, frm = extra
            if (frm, digest) in writer:
                deps[n].append(writer[(frm, digest)])
            writer.setdefault((repo, digest), n)
        elif kind == "manifest":
            repo, ref = extra
            body, _ = manifests[extra]
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {}
            named = [d.get("digest") for d in doc.get("layers", []) + doc.get("manifests", []) + [doc.get("config") or {}]]
            for d in named:
                if (repo, d) in writer:
                    deps[n].append(writer[(repo, d)])
            writer.setdefault((repo, ref), n)
            writer.setdefault((repo, "sha256:" + hashlib.sha256(body).hexdigest()), n)
    for n, ds in enumerate(deps):
        for d in ds:
            if done[d] is None:
                done[d] = threading.Event()
    sent = [0]
    lock = threading.Lock()

    def count(k):
        with lock:
            sent[0] += k

    def step(conn_for, n):
        _, host, kind, method, path, extra = items[n]
        try:
            for d in deps[n]:
                done[d].wait()
            c = conn_for(host)
            if kind == "read":
                exchange(c, method, path)
                count(1)
            elif kind == "mount":
                r, _ = exchange(c, "POST", path, body=b"", headers={"Content-Length": "0"})
                count(1)
                if r.status == 202:
                    loc = urllib.parse.urlsplit(r.getheader("Location") or "")
                    exchange(c, "DELETE", loc.path + ("?" + loc.query if loc.query else ""))
                    count(1)
            elif kind == "upload":
                repo, digest = extra
                r, _ = exchange(c, "POST", f"/v2/{repo}/blobs/uploads/", body=b"", headers={"Content-Length": "0"})
                if r.status != 202:
                    raise RuntimeError(f"POST upload to {repo}: {r.status}")
                loc = urllib.parse.urlsplit(r.getheader("Location") or "")
                query = (loc.query + "&" if loc.query else "") + "digest=" + urllib.parse.quote(digest)
                body = blobs[digest]
                r, _ = exchange(c, "PUT", f"{loc.path}?{query}", body=body,
                                headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(body))})
                count(2)
                if r.status != 201:
                    raise RuntimeError(f"PUT blob {digest} to {repo}: {r.status}")
            elif kind == "manifest":
                body, ctype = manifests[extra]
                r, data = exchange(c, "PUT", path, body=body, headers={"Content-Type": ctype or "", "Content-Length": str(len(body))})
                count(1)
                if r.status != 201:
                    raise RuntimeError(f"PUT manifest {extra}: {r.status} {data[:200]!r}")
        finally:
            if done[n] is not None:
                done[n].set()

    took, failed = run(threads, [(n,) for n in range(len(items))], lambda cf, it: step(cf, it[0]))
    print(f"replay: {len(src_lines) + len(dst_lines)} logged requests replayed as {sent[0]} ({folded} upload "
          f"sessions, chunks and cancels folded into their uploads and mounts)", file=sys.stderr)
    return sent[0], took, failed


def main():
    if sys.argv[1:2] == ["--writes"]:
        n, took, failed = writes(sys.argv[2:])
    else:
        n, took, failed = reads(sys.argv[1:])
    if failed:
        print(f"replay: {len(failed)} requests failed, e.g. {failed[0]}", file=sys.stderr)
        sys.exit(1)
    print(n, f"{took:.2f}")


if __name__ == "__main__":
    main()
