#!/usr/bin/env python3
"""An HTTP proxy that throttles like a registry with a request rate limit,
for bench/scenarios.sh.

    throttleproxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT [--per-second 30] [--log FILE]

Past --per-second requests passed on in the last second, a request is
answered 429 Too Many Requests with `Retry-After: 1` and not passed on
(refused requests do not count). One request per connection: the request
is passed on with `Connection: close`, and the answer is relayed until the
registry closes, so bodies of any encoding go through untouched. Each
request is logged to --log as `STATUS METHOD PATH` (429 or `-` for passed
on). Listens on 127.0.0.1. Stops on SIGTERM or SIGINT.
"""

import argparse
import asyncio
import collections
import signal
import time


class Throttle:
    def __init__(self, per_second):
        self.per_second = per_second
        self.passed = collections.deque()

    def admit(self):
        now = time.monotonic()
        while self.passed and now - self.passed[0] >= 1.0:
            self.passed.popleft()
        if len(self.passed) >= self.per_second:
            return False
        self.passed.append(now)
        return True


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(64 * 1024)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError, RuntimeError):
            pass


async def drain(reader):
    while await reader.read(64 * 1024):
        pass


async def relay_answer(up_reader, writer):
    """The registry's answer, its head saying `Connection: close` (the
    client must not send another request on this connection)."""
    try:
        head = await up_reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    lines = head.decode("latin-1").split("\r\n")
    kept = [l for l in lines[1:] if l and not l.lower().startswith(("connection:", "keep-alive:"))]
    writer.write("\r\n".join([lines[0]] + kept + ["Connection: close", "", ""]).encode("latin-1"))
    await pipe(up_reader, writer)


async def handle(reader, writer, target, throttle, log):
    try:
        first = await reader.readexactly(1)
        if not first.isalpha():
            # Not HTTP (a TLS hello probing for HTTPS): refuse at once, as a
            # plain-HTTP registry does.
            writer.close()
            return
        head = first + await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    lines = head.decode("latin-1").split("\r\n")
    method, path = (lines[0].split(" ") + ["", ""])[:2]
    if not throttle.admit():
        body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"rate limit exceeded"}]}'
        writer.write(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            + body
        )
        log.write(f"429 {method} {path}\n")
        try:
            await writer.drain()
            writer.write_eof()
            # Read what the client still sends (a body) before closing, so
            # it gets the answer rather than a reset.
            await asyncio.wait_for(drain(reader), 5)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass
        writer.close()
        return
    log.write(f"- {method} {path}\n")
    kept = [l for l in lines[1:] if l and not l.lower().startswith(("connection:", "keep-alive:"))]
    new_head = "\r\n".join([lines[0]] + kept + ["Connection: close", "", ""]).encode("latin-1")
    host, port = target
    try:
        up_reader, up_writer = await asyncio.open_connection(host, port)
    except OSError:
        writer.close()
        return
    up_writer.write(new_head)
    await asyncio.gather(pipe(reader, up_writer), relay_answer(up_reader, writer))
    for w in (up_writer, writer):
        try:
            w.close()
        except (ConnectionError, OSError):
            pass


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("listen_port", type=int)
    p.add_argument("target", help="HOST:PORT")
    p.add_argument("--per-second", type=int, default=30)
    p.add_argument("--log", default="/dev/null")
    a = p.parse_args()
    host, _, port = a.target.rpartition(":")
    throttle = Throttle(a.per_second)
    log = open(a.log, "a", buffering=1)
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, (host, int(port)), throttle, log), "127.0.0.1", a.listen_port
    )
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(s, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
