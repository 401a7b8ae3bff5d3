"""CPU per request inside ``HttpProtocol.buffer_received``, without sockets, before/after.

Three kinds of read, each one whole request head, fed again and again to one protocol object
over a fake connection (as the loop would after a ``recv``):

* ``fast``: a keep-alive ``GET /test`` of a static route: answered from the reply cache;
* ``cached``: the same head for a dynamic route: parsed once, then taken from the reply cache;
* ``unique``: a new head every time (a counter in the target): the full parse, Host included.

Each run is a subprocess measuring process CPU time (``time.process_time``) for ``--n``
requests; ``--base-pythonpath`` names an older installed copy of the package to compare
against, run alternately with the current one (the fake app and connection speak both the
current interface and the one before the reply cache and the Transport interface). Prints
median (min-max) microseconds per request and the ratio of medians (current / base). Run from
the repository root:

    .venv/bin/python bench/bench_http_parse.py --rounds 7 --base-pythonpath /tmp/base-site
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
import poolalloc
from poolalloc.net.http.protocol import HttpProtocol
from poolalloc.net.http.server import Response

kind, n = sys.argv[1], int(sys.argv[2])
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


try:
    from poolalloc.net.http._cache import ReplyCache
except ImportError:  # an older copy: a dict of whole heads, and a parser cache of its own
    ReplyCache = dict


class Reactor:
    now = 0.0


class Conn:
    paused = closing = closed = False
    deadline = 0.0
    reactor = Reactor()

    def write(self, data, *, more=False):
        pass

    def close(self):
        self.closing = True

    def set_deadline(self, seconds):
        pass

    def hold_back(self, data):
        raise AssertionError("never paused")


class App:
    max_head, max_target, header_timeout = 16384, 8190, 10.0

    def __init__(self):
        self.replies = ReplyCache()

    def static_reply(self, req):
        return OK if kind == "fast" else None

    def body_limit(self, req):
        return 1 << 20

    def begin(self, proto, req):
        return None

    if hasattr(HttpProtocol, "send"):
        def finish(self, proto, req):
            proto.send(OK)
    else:
        def finish(self, proto, req):
            proto.conn.write(OK)

    def send_error(self, proto, status, message, **kw):
        raise AssertionError(status)

    def error_reply(self, status, message, **kw):
        raise AssertionError(status)


pool = poolalloc.BufferPool(16384, capacity=4)
proto = HttpProtocol(App())
proto.connection_made(Conn())
lease = pool.acquire()
heads = []
for i in range(n if kind == "unique" else 1):
    target = f"/u{i}" if kind == "unique" else "/test"
    heads.append(
        f"GET {target} HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: bench\r\n"
        "Accept: */*\r\n\r\n".encode()
    )
view = lease.view
for head in heads[:1]:
    view[: len(head)] = head
    proto.buffer_received(lease, len(head))  # warm the caches
start = time.process_time()
for i in range(n):
    head = heads[i] if kind == "unique" else heads[0]
    if kind == "unique":
        view[: len(head)] = head
    proto.buffer_received(lease, len(head))
spent = time.process_time() - start
assert proto.errors == 0 and proto.requests == n + 1
lease.release()
pool.close()
print(json.dumps(spent / n * 1e6))
"""


def run(kind: str, n: int, pythonpath: str) -> float:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(n)], env=env, check=True, capture_output=True
    )
    return float(json.loads(out.stdout))


def main() -> None:
    """Alternate base and current runs; print the table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--base-pythonpath", default="")
    args = ap.parse_args()
    sides = [("current", "")] + ([("base", args.base_pythonpath)] if args.base_pythonpath else [])
    results: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        order = sides if r % 2 == 0 else sides[::-1]
        for kind in ("fast", "cached", "unique"):
            for side, path in order:
                results.setdefault((kind, side), []).append(run(kind, args.n, path))
    print("| read | side | CPU us/request median (min-max) | current / base |")
    print("|---|---|---|---|")
    for kind in ("fast", "cached", "unique"):
        for side, _ in sides:
            vals = results[kind, side]
            ratio = ""
            if side == "current" and len(sides) == 2:
                ratio = f"{statistics.median(vals) / statistics.median(results[kind, 'base']):.2f}"
            print(
                f"| {kind} | {side} | {statistics.median(vals):.2f} "
                f"({min(vals):.2f}-{max(vals):.2f}) | {ratio} |"
            )


if __name__ == "__main__":
    main()
