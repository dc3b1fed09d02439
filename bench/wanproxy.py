#!/usr/bin/env python3
"""A TCP proxy that behaves like a WAN link, for bench/compare.sh when
network namespaces or tc netem are not available.

    wanproxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT [--delay-ms 15] [--mbit 200]

Every byte is delivered --delay-ms after it was read (each direction, so the
round trip grows by twice that), and each direction of the proxy is one link
of --mbit megabits per second shared by all connections: a chunk waits for
the link to be free, takes len/rate to send, then travels the delay. Up to
4 MiB per connection and direction are in flight (the link's buffer); beyond
that the proxy stops reading, so TCP flow control pushes back on the sender.
Listens on 127.0.0.1. Stops on SIGTERM or SIGINT.
"""

import argparse
import asyncio
import signal
import sys

CHUNK = 64 * 1024
IN_FLIGHT = 64  # chunks per connection and direction (4 MiB)


class Link:
    """One direction of the emulated link: serialisation at a rate, then delay."""

    def __init__(self, delay_s, bytes_per_s):
        self.delay = delay_s
        self.rate = bytes_per_s
        self.busy_until = 0.0

    def delivery_time(self, now, n):
        start = max(now, self.busy_until)
        if self.rate > 0:
            self.busy_until = start + n / self.rate
        else:
            self.busy_until = start
        return self.busy_until + self.delay


async def pump(reader, writer, link):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue(IN_FLIGHT)

    async def deliver():
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                at, data = item
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
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

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            await queue.put((link.delivery_time(loop.time(), len(data)), data))
    except (ConnectionError, OSError):
        pass
    await queue.put(None)
    await sender


async def handle(client_reader, client_writer, target, up, down):
    host, port = target
    try:
        server_reader, server_writer = await asyncio.open_connection(host, port)
    except OSError as e:
        print(f"wanproxy: cannot reach {host}:{port}: {e}", file=sys.stderr)
        client_writer.close()
        return
    try:
        await asyncio.gather(
            pump(client_reader, server_writer, up),
            pump(server_reader, client_writer, down),
        )
    finally:
        for w in (server_writer, client_writer):
            try:
                w.close()
                await w.wait_closed()
            except (ConnectionError, OSError):
                pass


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("listen_port", type=int)
    p.add_argument("target", help="HOST:PORT")
    p.add_argument("--delay-ms", type=float, default=15.0, help="one-way delay (default 15)")
    p.add_argument("--mbit", type=float, default=200.0, help="per-direction bandwidth, 0: unlimited (default 200)")
    a = p.parse_args()
    host, _, port = a.target.rpartition(":")
    rate = a.mbit * 1e6 / 8
    up = Link(a.delay_ms / 1000, rate)
    down = Link(a.delay_ms / 1000, rate)
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, (host, int(port)), up, down), "127.0.0.1", a.listen_port
    )
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(s, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
