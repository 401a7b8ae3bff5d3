"""The net layer's HTTP and fault tests (tests/net/http/test_http*.py), run again on the Proactor.

Every test there that takes the ``make_server`` fixture runs here with the server's loop a
:class:`~poolalloc.net.uring.proactor.Proactor`: keep-alive, pipelining, bodies, files, bad input,
disconnects, resets, half-close, slowloris, idle timeouts, a client that never reads, many
clients with faults, and pools balanced afterwards. The test bodies are the net layer's own,
loaded from their files, so both engines answer to one specification.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from poolalloc.net.uring.proactor import Proactor, available

NET = Path(__file__).parent.parent  # tests/net: conftest.py and rawhttp.py; the suites in http/


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_suites() -> tuple[ModuleType, list[ModuleType]]:
    # The net tests import their helpers as top-level ``conftest`` and ``rawhttp``.
    saved = {k: sys.modules.get(k) for k in ("conftest", "rawhttp")}
    try:
        helpers = sys.modules["conftest"] = _load("net_conftest_for_uring", NET / "conftest.py")
        sys.modules["rawhttp"] = _load("rawhttp", NET / "rawhttp.py")
        suites = [
            _load(f"{p.stem}_on_uring", p) for p in sorted((NET / "http").glob("test_http*.py"))
        ]
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    return helpers, suites


_helpers, _suites = _load_suites()
pytestmark = [pytest.mark.uring, pytest.mark.net, pytest.mark.timeout(60)]

for _suite in _suites:
    for _name, _obj in vars(_suite).items():
        is_test = _name.startswith("test_") and callable(_obj)
        if is_test and "make_server" in inspect.signature(_obj).parameters:
            globals()[_name] = _obj
        elif _name in ("root", "files_root"):
            globals()[_name] = _obj  # the fixtures the suites define themselves

buffer_pool = _helpers.buffer_pool


class UringThreadedServer(_helpers.ThreadedServer):  # type: ignore[misc,name-defined]
    """The net tests' threaded server with a Proactor as its loop."""

    loop_class = Proactor

    def call(self, fn: Any, *args: Any) -> Any:
        """As the net tests' ``call``, with one documented difference: on the Proactor the
        blocks lent to the kernel's provided-buffer ring are leases of the pool for as long as
        the loop lives (they go back at ``close()``), so "balanced" while serving means that
        nothing beyond the ring's inventory is out."""
        if getattr(fn, "__self__", None) is self.pool and fn.__name__ == "outstanding":
            return super().call(lambda: fn() - self._lent_to_ring())
        return super().call(fn, *args)

    def _lent_to_ring(self) -> int:
        return sum(pr.in_ring for pr in self.reactor._pool_rings.values())


@pytest.fixture
def make_server(buffer_pool: Any) -> Iterator[Any]:
    ok, reason = available()
    if not ok:
        pytest.skip(f"io_uring unavailable: {reason}")
    yield from _helpers.start_servers(buffer_pool, UringThreadedServer)


EMFILE_SCRIPT = """
import os, resource, socket, sys, threading, time
from poolalloc.buffers import BufferPool
from poolalloc.net.http.server import HttpServer
from poolalloc.net.uring.proactor import Proactor
from rawhttp import free_two_then_serve_two  # tests/net is on the path (its conftest)

# A multishot accept reads RLIMIT_NOFILE once, when it is submitted (io_accept_prep): the
# limit must be in place before the server arms it, not lowered while it runs.
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
r = Proactor()
srv = HttpServer(r, buffer_pool=BufferPool(4096, capacity=64), accept_retry=30.0)
srv.start()
threading.Thread(target=r.run, daemon=True).start()
clients = [socket.socket() for _ in range(8)]
filler = []
while True:  # take every free descriptor, then give exactly two back
    try:
        filler.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        break
os.close(filler.pop())
os.close(filler.pop())
for c in clients:
    c.connect(("127.0.0.1", srv.address[1]))  # the kernel queues them in the backlog
deadline = time.monotonic() + 10  # slow under ASan: wait for the state, not a fixed time
while not srv.tcp.accept_paused and time.monotonic() < deadline:
    time.sleep(0.02)
time.sleep(0.1)
paused, accepted = srv.tcp.accept_paused, srv.tcp.totals["connections_total"]
w0 = r.stats["wakeups"]
time.sleep(0.5)
spin = r.stats["wakeups"] - w0
served = free_two_then_serve_two(clients)  # accepted peers leave, waiting ones are served
for fd in filler:
    os.close(fd)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print(paused, accepted, spin, served, srv.tcp.totals["accept_paused_total"])
"""


def test_emfile_pauses_the_multishot_accept_without_spinning(tmp_path: Any) -> None:
    """Descriptors run out: the multishot accept ends with EMFILE and is not re-armed (no
    spinning) until one of our connections closes; then the waiting peers are served."""
    ok, reason = available()
    if not ok:
        pytest.skip(f"io_uring unavailable: {reason}")
    script = tmp_path / "emfile_uring.py"
    script.write_text(EMFILE_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, env=env,
        check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    paused, accepted, spin, served_n, pauses = out.stdout.split()
    assert paused == "True"
    assert int(accepted) == 2  # exactly the two free descriptors
    assert int(spin) < 10  # paused: the accept is not re-armed, the loop sleeps
    assert int(pauses) >= 1
    assert int(served_n) == 2
