"""Faulty peers: the server keeps serving others and every pooled buffer comes back."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from conftest import TEST_SECONDS
from rawhttp import connect, exchange, is_closed_by_peer, read_response

from poolalloc.net.http.server import Response

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]

GET = b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n"


def served(port: int) -> bool:
    return exchange(port, GET)[0][2] == b"Hello, World!"


def live_connections(srv: Any) -> int:
    return int(srv.call(lambda: len(srv.http.tcp.connections)))


def wait_until(cond: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.02)


def test_disconnect_mid_request_and_mid_body(make_server: Any) -> None:
    srv = make_server()
    srv.http.route("/echo", lambda req: Response(body=req.body))
    for raw in (b"GET /te", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc"):
        sock = connect(srv.port)
        sock.sendall(raw)
        sock.close()
    assert served(srv.port)
    wait_until(lambda: live_connections(srv) == 0)


def test_reset_connections(make_server: Any) -> None:
    srv = make_server()
    for _ in range(20):
        sock = connect(srv.port)
        sock.sendall(GET + b"GET /te")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
    assert served(srv.port)
    wait_until(lambda: live_connections(srv) == 0)
    assert srv.call(srv.http.metrics)["connections_active"] == 0


def test_half_close_still_gets_the_response(make_server: Any) -> None:
    srv = make_server()
    with connect(srv.port) as sock:
        sock.sendall(GET + GET)
        sock.shutdown(socket.SHUT_WR)
        f = sock.makefile("rb")
        assert [read_response(f)[2] for _ in range(2)] == [b"Hello, World!"] * 2
        assert is_closed_by_peer(sock)


def test_slowloris_is_ended_by_the_header_timeout(make_server: Any) -> None:
    srv = make_server(header_timeout=0.3, sweep_interval=0.05)
    slow = connect(srv.port)
    start = time.monotonic()
    closed = False
    for byte in GET[:-4]:
        try:
            slow.send(bytes([byte]))
        except OSError:
            closed = True
            break
        assert served(srv.port)  # everyone else is served meanwhile
        time.sleep(0.05)
        if time.monotonic() - start > 3:
            break
    assert closed or is_closed_by_peer(slow, 3)
    assert time.monotonic() - start < 3
    slow.close()
    assert srv.call(srv.http.metrics)["timeouts_total"] >= 1


def test_idle_connections_are_closed(make_server: Any) -> None:
    srv = make_server(idle_timeout=0.3, sweep_interval=0.05)
    with connect(srv.port) as sock:
        sock.sendall(GET)
        read_response(sock.makefile("rb"))
        start = time.monotonic()
        assert is_closed_by_peer(sock, 3)
        assert 0.2 < time.monotonic() - start < 3


def test_client_that_never_reads_is_paused_not_buffered(make_server: Any) -> None:
    big = b"z" * (256 << 10)
    srv = make_server(high_water=1 << 20, low_water=256 << 10)
    srv.http.route("/big", lambda req: Response(body=big))
    hog = connect(srv.port)
    hog.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 200)  # 50 MiB of responses asked for
    time.sleep(0.3)
    assert served(srv.port)

    def queued() -> list[int]:
        return [c.queued for c in srv.http.tcp.connections]

    wait_until(lambda: max(srv.call(queued), default=0) > 0)
    worst = max(srv.call(queued))
    assert worst <= (1 << 20) + len(big) + 4096  # high water + one response, not 50 MiB
    # Now the hog reads everything: reading resumes and all 200 responses arrive.
    f = hog.makefile("rb")
    for _ in range(200):
        assert len(read_response(f)[2]) == len(big)
    f.close()  # the makefile reference would keep the descriptor open
    hog.close()
    wait_until(lambda: live_connections(srv) == 0)


def test_many_clients_with_faults_leave_pools_balanced(make_server: Any) -> None:
    srv = make_server()
    end = time.monotonic() + 0.5 * TEST_SECONDS
    rounds = 0
    while time.monotonic() < end or rounds < 3:
        rounds += 1
        socks = [connect(srv.port) for _ in range(20)]
        for i, s in enumerate(socks):
            s.sendall(GET if i % 3 else GET[:10])
            if i % 4 == 0:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        assert served(srv.port)
    wait_until(lambda: live_connections(srv) == 0)
    assert srv.call(srv.pool.outstanding) == 0


EMFILE_SCRIPT = textwrap.dedent(
    """
    import resource, socket, sys, threading, time
    sys.path.insert(0, sys.argv[1])
    from conftest import make_pool
    from rawhttp import free_two_then_serve_two
    from poolalloc.net.http.server import HttpServer
    from poolalloc.net.epoll.reactor import Reactor

    r = Reactor()
    srv = HttpServer(r, buffer_pool=make_pool(4096, 64), accept_retry=30.0)
    srv.start()
    port = srv.address[1]
    threading.Thread(target=r.run, daemon=True).start()
    # Client sockets exist first; then only two more descriptors are left for accept().
    import os
    clients = [socket.socket() for _ in range(8)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (top + 3, hard))
    for c in clients:
        c.connect(("127.0.0.1", port))  # the kernel queues them in the backlog
    time.sleep(0.3)
    paused = srv.tcp.accept_paused
    w0 = r.stats["wakeups"]
    time.sleep(0.5)
    spin = r.stats["wakeups"] - w0
    served = free_two_then_serve_two(clients)  # the pending connections get accepted
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))  # thread exit needs to dlopen
    print(paused, spin, served, 2, srv.tcp.totals["accept_paused_total"])
    """
)


def test_emfile_pauses_accepting_without_spinning(tmp_path: Any) -> None:
    here = os.path.dirname(os.path.dirname(__file__))  # tests/net: conftest.py, rawhttp.py
    script = tmp_path / "emfile.py"
    script.write_text(EMFILE_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, str(script), here],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    paused, spin, served_n, pending, pauses = out.stdout.split()
    assert paused == "True"
    assert int(spin) < 10  # paused: the loop sleeps instead of retrying accept
    assert int(pauses) >= 1
    assert int(served_n) == int(pending) > 0
