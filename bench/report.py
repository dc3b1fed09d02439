#!/usr/bin/env python3
"""Helpers of bench/compare.sh: what a registry saw, and the results table.

    report.py count LOG FROM_LINE [STORAGE]
        Reads a Distribution access log (combined format) from line FROM_LINE
        (1-based) and prints one line:
          requests blob_get_bytes uploads upload_bytes mounts stored_bytes
        requests: every request logged; blob_get_bytes: bytes of blobs served
        (GET 200/206); uploads: blob uploads completed (PUT ...?digest= 201);
        upload_bytes: the sizes of those blobs, summed per upload (a blob
        uploaded twice counts twice), read from STORAGE; mounts: cross-
        repository mounts that succeeded (POST ?mount= 201); stored_bytes:
        the bytes of every blob STORAGE holds, manifests excluded.

    report.py expect-mounts LAYOUT
        The layer blobs an image set shares: layer references minus distinct
        layers over every image of the OCI layout (each image in its own
        repository, so each is a mount when done right).

    report.py table RESULTS.tsv
        The table of medians with occy/peer ratios, then each target of
        docs/performance.md, met or missed.

    report.py blob-gets LOG FROM_LINE
        Blob GETs a registry served (2xx) from line FROM_LINE of its access
        log: "gets distinct_digests bytes".

    report.py distinct-blobs LAYOUT
        The distinct blobs (layers and configs) of every image of an OCI
        layout: what a run copying them all needs from its source.

    report.py engine RESULTS.tsv
        bench/engine.sh's table: medians per engine and the ratio new/old.
"""

import json
import os
import re
import statistics
import sys
import urllib.parse
from collections import defaultdict

LINE = re.compile(r'^\S+ - \S+ \[[^\]]+\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-)')
MIB = 1024 * 1024


def storage_blobs(root):
    """{hex: size} of blob data files, and the set of manifest digests."""
    v2 = os.path.join(root, "docker", "registry", "v2")
    sizes = {}
    blobs = os.path.join(v2, "blobs", "sha256")
    if os.path.isdir(blobs):
        for prefix in os.listdir(blobs):
            for hexd in os.listdir(os.path.join(blobs, prefix)):
                data = os.path.join(blobs, prefix, hexd, "data")
                if os.path.isfile(data):
                    sizes[hexd] = os.path.getsize(data)
    manifests = set()
    repos = os.path.join(v2, "repositories")
    for dirpath, dirnames, _ in os.walk(repos):
        if dirpath.endswith(os.path.join("_manifests", "revisions", "sha256")):
            manifests.update(dirnames)
            dirnames[:] = []
    return sizes, manifests


def count(log, from_line, storage=None):
    requests = get_bytes = uploads = upload_bytes = mounts = 0
    uploaded = []
    with open(log, errors="replace") as f:
        for n, line in enumerate(f, 1):
            if n < from_line:
                continue
            m = LINE.match(line)
            if not m:
                continue
            method, uri, status, written = m.group(1), m.group(2), int(m.group(3)), m.group(4)
            requests += 1
            path, _, query = uri.partition("?")
            q = urllib.parse.parse_qs(query)
            if method == "GET" and "/blobs/sha256:" in path and status in (200, 206) and written != "-":
                get_bytes += int(written)
            elif method == "PUT" and "/blobs/uploads/" in path and status == 201 and "digest" in q:
                uploads += 1
                uploaded.append(q["digest"][0].split(":", 1)[-1])
            elif method == "POST" and "mount" in q and status == 201:
                mounts += 1
    stored = 0
    if storage:
        sizes, manifests = storage_blobs(storage)
        upload_bytes = sum(sizes.get(h, 0) for h in uploaded)
        stored = sum(s for h, s in sizes.items() if h not in manifests)
    print(requests, get_bytes, uploads, upload_bytes, mounts, stored)


def blob_gets(log, from_line):
    gets, digests, nbytes = 0, set(), 0
    with open(log, errors="replace") as f:
        for n, line in enumerate(f, 1):
            if n < from_line:
                continue
            m = LINE.match(line)
            if not m:
                continue
            method, uri, status, written = m.group(1), m.group(2), int(m.group(3)), m.group(4)
            path = uri.partition("?")[0]
            if method == "GET" and "/blobs/sha256:" in path and 200 <= status < 300:
                gets += 1
                digests.add(path.rsplit("/", 1)[-1])
                if written != "-":
                    nbytes += int(written)
    print(gets, len(digests), nbytes)


def distinct_blobs(layout):
    blobs = set()
    for desc in blob_index(layout)["manifests"]:
        with open(os.path.join(layout, "blobs", "sha256", desc["digest"].split(":", 1)[1])) as f:
            manifest = json.load(f)
        blobs.add(manifest["config"]["digest"])
        blobs.update(layer["digest"] for layer in manifest["layers"])
    print(len(blobs))


ENGINE_FIELDS = ["engine", "rep", "wall", "rss_kib", "gets", "distinct", "bytes", "needed", "uploads", "load"]


def engine(path):
    rows, notes = [], []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                notes.append(line.strip())
            elif line.strip():
                rows.append(dict(zip(ENGINE_FIELDS, line.rstrip("\n").split("\t"))))
    out = notes[:]
    out.append(f"{'engine':<8}{'runs':>5}{'wall s':>9}{'min':>8}{'max':>8}{'peak MiB':>10}{'src blob GETs':>15}"
               f"{'distinct':>10}{'needed':>8}{'src MiB':>9}{'dst uploads':>13}{'load':>6}")
    med = {}
    for name in ("old", "new"):
        g = [r for r in rows if r["engine"] == name]
        if not g:
            continue
        walls = [float(r["wall"]) for r in g]

        def m(key, g=g):
            return statistics.median(float(r[key]) for r in g)

        med[name] = statistics.median(walls)
        out.append(f"{name:<8}{len(g):>5}{med[name]:>9.2f}{min(walls):>8.2f}{max(walls):>8.2f}"
                   f"{m('rss_kib') / 1024:>10.0f}{m('gets'):>15.0f}{m('distinct'):>10.0f}{int(g[0]['needed']):>8}"
                   f"{m('bytes') / MIB:>9.1f}{m('uploads'):>13.0f}{m('load'):>6.1f}")
    if "old" in med and "new" in med and med["old"]:
        r = med["new"] / med["old"]
        out.append(f"new/old (medians): {r:.2f}  {'MET   ' if r <= 1.0 else 'MISSED'} the new engine is no slower than the old")
    new_rows = [r for r in rows if r["engine"] == "new"]
    if new_rows:
        worst = max(int(r["gets"]) for r in new_rows)
        needed = int(new_rows[0]["needed"])
        ok = worst <= needed
        out.append(f"{'MET   ' if ok else 'MISSED'} new engine: source blob GETs <= distinct blobs needed: "
                   f"at most {worst} GETs for {needed} blobs")
    print("\n".join(out))


def expect_mounts(layout):
    def blob(d):
        with open(os.path.join(layout, "blobs", "sha256", d.split(":", 1)[1])) as f:
            return json.load(f)

    refs, distinct = 0, set()
    for desc in blob_index(layout)["manifests"]:
        for layer in blob(desc["digest"])["layers"]:
            refs += 1
            distinct.add(layer["digest"])
    print(refs - len(distinct))


def blob_index(layout):
    with open(os.path.join(layout, "index.json")) as f:
        return json.load(f)


WORKLOADS = {
    "cold": "1 cold mirror",
    "warm": "2 warm no-op",
    "tar": "3 big image to tar",
    "filtered": "4 filtered mirror",
    "plan": "5 --plan",
    "fanout": "6 fan-out (3 kinds)",
    "separate": "7 separate runs",
}
TOOLS = ["occy", "skopeo", "occystrap"]
FIELDS = ["mode", "workload", "tool", "rep", "wall", "rss_kib", "src_req", "dst_req",
          "src_bytes", "uploads", "up_bytes", "mounts", "stored", "units", "expect_mounts", "lists"]


def fmt_bytes(n):
    return f"{n / MIB:.1f}"


def table(path):
    rows = []
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            rows.append(dict(zip(FIELDS, parts)))
    groups = defaultdict(list)
    for r in rows:
        groups[(r["mode"], r["workload"], r["tool"])].append(r)

    def med(key, mode, wl, tool, cast=float):
        g = groups.get((mode, wl, tool))
        if not g:
            return None
        return statistics.median(cast(r[key]) for r in g)

    def one(key, mode, wl, tool):
        g = groups.get((mode, wl, tool))
        return int(g[0][key]) if g else None

    modes = []
    for r in rows:
        if r["mode"] not in modes:
            modes.append(r["mode"])
    out = []
    head = ("workload", "tool", "runs", "wall s", "occy/peer", "peak MiB", "src req", "dst req",
            "src MiB", "sent MiB", "uploads", "mounts", "stored MiB")
    widths = (20, 10, 4, 8, 9, 8, 7, 7, 8, 8, 7, 6, 10)

    def line(cells):
        return "  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    for mode in modes:
        out.append(f"\n== {mode} ==")
        out.append(line(head))
        for wl, title in WORKLOADS.items():
            occy_wall = med("wall", mode, wl, "occy")
            for tool in TOOLS:
                g = groups.get((mode, wl, tool))
                if not g:
                    continue
                wall = med("wall", mode, wl, tool)
                ratio = ""
                if tool != "occy" and occy_wall is not None and wall:
                    ratio = f"{occy_wall / wall:.2f}"
                out.append(line((
                    title if tool == "occy" or (mode, wl, "occy") not in groups else "",
                    tool, len(g), f"{wall:.3f}" if wall < 1 else f"{wall:.2f}", ratio,
                    f"{med('rss_kib', mode, wl, tool) / 1024:.0f}",
                    f"{med('src_req', mode, wl, tool):.0f}", f"{med('dst_req', mode, wl, tool):.0f}",
                    fmt_bytes(med("src_bytes", mode, wl, tool)), fmt_bytes(med("up_bytes", mode, wl, tool)),
                    f"{med('uploads', mode, wl, tool):.0f}", f"{med('mounts', mode, wl, tool):.0f}",
                    fmt_bytes(med("stored", mode, wl, tool)),
                )))

    # Targets.
    out.append("\n== targets ==")

    def verdict(ok):
        return "MET   " if ok else "MISSED"

    def target(text, ok, measured):
        if ok is None:
            out.append(f"  -      {text}: not measured")
        else:
            out.append(f"  {verdict(ok)} {text}: {measured}")

    def ratio(mode, wl, peer):
        o, p = med("wall", mode, wl, "occy"), med("wall", mode, wl, peer)
        return None if o is None or not p else o / p

    def paired(mode, wl, peer):
        """The median over repetitions of occy's wall over the peer's in
        the same repetition (the tools alternate within each), and how
        many pairs."""
        o = {r["rep"]: float(r["wall"]) for r in groups.get((mode, wl, "occy"), [])}
        p = {r["rep"]: float(r["wall"]) for r in groups.get((mode, wl, peer), [])}
        rs = [o[k] / p[k] for k in o if k in p and p[k] > 0]
        return (statistics.median(rs), len(rs)) if rs else (None, 0)

    wan = next((m for m in modes if m != "loopback"), None)
    ran_cold = any(wl == "cold" for _, wl, _ in groups)
    for mode, limit in (("loopback", 0.6), (wan, 0.4)) if ran_cold else ():
        r = ratio(mode, "cold", "skopeo") if mode else None
        target(f"1 cold mirror, {mode or 'wan'}: occy <= {limit} x skopeo sync", None if r is None else r <= limit,
               f"{r:.2f} x" if r is not None else "")
    for mode in modes:
        g = groups.get((mode, "cold", "occy"))
        if not g:
            continue
        bad = [r for r in g if int(r["up_bytes"]) != int(r["stored"])]
        target(f"1 cold mirror, {mode}: bytes uploaded = unique blob bytes", not bad,
               f"sent {fmt_bytes(med('up_bytes', mode, 'cold', 'occy'))} MiB, stored "
               f"{fmt_bytes(med('stored', mode, 'cold', 'occy'))} MiB")
        m, e = med("mounts", mode, "cold", "occy"), one("expect_mounts", mode, "cold", "occy")
        target(f"1 cold mirror, {mode}: every shared layer mounted", m >= e, f"{m:.0f} mounts of {e} shared layers")
    for mode in modes:
        r, n = paired(mode, "warm", "skopeo")
        if r is not None:
            target(f"2 warm no-op, {mode}: occy <= 0.25 x skopeo sync", r <= 0.25,
                   f"{r:.2f} x (median of {n} paired runs; ratio of the medians {ratio(mode, 'warm', 'skopeo'):.2f} x)")
        g = groups.get((mode, "warm", "occy"))
        if g:
            per_tag = max((int(x["src_req"]) + int(x["dst_req"])) / int(x["units"]) for x in g)
            target(f"2 warm no-op, {mode}: <= 2 requests per tag", per_tag <= 2, f"{per_tag:.2f} per tag")
            b = max(int(x["up_bytes"]) + int(x["src_bytes"]) for x in g)
            target(f"2 warm no-op, {mode}: 0 blob bytes", b == 0, f"{b} bytes")
    for mode in modes:
        r = ratio(mode, "tar", "skopeo")
        if r is not None:
            target(f"3 to tar, {mode}: occy <= 1.0 x skopeo", r <= 1.0, f"{r:.2f} x")
        rss = med("rss_kib", mode, "tar", "occy")
        if rss is not None:
            target(f"3 to tar, {mode}: peak RSS <= 64 MiB", rss / 1024 <= 64, f"{rss / 1024:.1f} MiB")
    for mode in modes:
        r = ratio(mode, "filtered", "occystrap")
        if r is not None:
            target(f"4 filtered, {mode}: occy <= 0.2 x occystrap", r <= 0.2, f"{r:.2f} x")
        rss = med("rss_kib", mode, "filtered", "occy")
        if rss is not None:
            target(f"4 filtered, {mode}: peak RSS <= 64 MiB", rss / 1024 <= 64, f"{rss / 1024:.1f} MiB")
    for mode in modes:
        w = med("wall", mode, "plan", "occy")
        if w is None:
            continue
        if mode == "loopback":
            target("5 plan, loopback: <= 3 s", w <= 3.0, f"{w:.2f} s")
        else:
            target(f"5 plan, {mode}: time (no target)", True, f"{w:.2f} s")
        g = groups[(mode, "plan", "occy")]
        tags, lists = int(g[0]["units"]), int(g[0]["lists"])
        src, dst = max(int(x["src_req"]) for x in g), max(int(x["dst_req"]) for x in g)
        # Per side: one request per tag, one tag listing per repository, and
        # one /v2/ version check.
        allowed = tags + lists + 1
        ok = src <= allowed and dst <= allowed
        target(f"5 plan, {mode}: <= 1 request per tag per side + tag listing",
               ok, f"source {src}, destination {dst} (allowed {allowed} each) for {tags} tags")
    for mode in modes:
        r = ratio(mode, "fanout", "skopeo")
        if r is not None:
            target(f"6 fan-out, {mode}: occy <= 0.4 x skopeo (sync + copy loops)", r <= 0.4, f"{r:.2f} x")
    for mode in modes:
        r = ratio(mode, "separate", "skopeo")
        if r is None:
            continue
        o, p = med("up_bytes", mode, "separate", "occy"), med("up_bytes", mode, "separate", "skopeo")
        target(f"7 separate runs, {mode}: occy uploads <= skopeo's bytes", o <= p,
               f"occy {fmt_bytes(o)} MiB ({med('uploads', mode, 'separate', 'occy'):.0f} blobs, "
               f"{med('mounts', mode, 'separate', 'occy'):.0f} mounts), skopeo {fmt_bytes(p)} MiB "
               f"({med('uploads', mode, 'separate', 'skopeo'):.0f} blobs, "
               f"{med('mounts', mode, 'separate', 'skopeo'):.0f} mounts)")
        target(f"7 separate runs, {mode}: occy <= 0.8 x skopeo copy loop", r <= 0.8, f"{r:.2f} x")
    print("\n".join(out))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd = sys.argv[1]
    if cmd == "count":
        count(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    elif cmd == "expect-mounts":
        expect_mounts(sys.argv[2])
    elif cmd == "table":
        table(sys.argv[2])
    elif cmd == "blob-gets":
        blob_gets(sys.argv[2], int(sys.argv[3]))
    elif cmd == "distinct-blobs":
        distinct_blobs(sys.argv[2])
    elif cmd == "engine":
        engine(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
