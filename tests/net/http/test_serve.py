"""`poolalloc serve`: the CLI entry, SO_REUSEPORT workers, metrics, clean shutdown."""

from __future__ import annotations

import http.client
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from poolalloc.net.http.serve import START_LIMIT
from poolalloc.net.metrics import flatten_stats, prometheus_text

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + 20
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not start")


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    resp = conn.getresponse()
    out = (resp.status, resp.read())
    conn.close()
    return out


def children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    with open(path) as f:
        return [int(x) for x in f.read().split()]


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_cli(tmp_path: Any, workers: int) -> None:
    (tmp_path / "hello.txt").write_bytes(b"from disk\n")
    port = free_port()
    cmd = [sys.executable, "-m", "poolalloc.cli", "serve", "--port", str(port)]
    cmd += ["--root", str(tmp_path), "--workers", str(workers)]
    # From outside the source tree, so that the installed (compiled) package is imported.
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, cwd=tmp_path, env=dict(os.environ))
    try:
        wait_listening(port, proc)
        assert get(port, "/test") == (200, b"Hello, World!")
        assert get(port, "/hello.txt") == (200, b"from disk\n")
        status, text = get(port, "/metrics")
        assert status == 200
        assert b"poolalloc_requests_total" in text
        assert b"# TYPE poolalloc_connections_total counter" in text
        for method in ("POST", "PUT", "DELETE"):  # a scrape only reads (they answered 200)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request(method, "/metrics", body=b"x")
            resp = conn.getresponse()
            answer = (resp.status, resp.getheader("Allow"), resp.read())
            assert answer == (405, "GET, HEAD", b"method not allowed\n")
            conn.close()
        if workers > 1:
            assert len(children(proc.pid)) == workers  # N processes on one port
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def listening_ports(proc: subprocess.Popen[bytes], count: int) -> list[str]:
    """The addresses the first ``count`` "listening on" lines of the server name."""
    assert proc.stderr is not None
    found: list[str] = []
    end = time.monotonic() + 20
    while len(found) < count and time.monotonic() < end:
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if ready:
            line = proc.stderr.readline().decode()
            assert line, "server exited"
            if " listening on " in line:
                found.append(line.rsplit(" ", 1)[1].strip())
    assert len(found) == count, found
    return found


@pytest.mark.parametrize(
    ("host", "workers", "url_host", "clients"),
    [
        ("::", 1, "[::]", ["::1", "127.0.0.1"]),  # one IPv6 socket takes both families
        ("0.0.0.0", 2, "0.0.0.0", ["127.0.0.1"]),
        ("[::1]", 2, "[::1]", ["::1"]),
    ],
)
def test_serve_on_any_address(
    tmp_path: Any, host: str, workers: int, url_host: str, clients: list[str]
) -> None:
    """``--host`` takes any address; the tests still talk to it over loopback only. With
    ``--port 0`` every worker shares the one port the parent picked."""
    cmd = [sys.executable, "-m", "poolalloc.cli", "serve", "--host", host, "--port", "0"]
    cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, bufsize=0, cwd=tmp_path, env=dict(os.environ)
    )  # unbuffered: select() must see every line that has not been read yet
    try:
        urls = listening_ports(proc, workers)
        assert len(set(urls)) == 1, urls
        prefix = f"http://{url_host}:"
        assert urls[0].startswith(prefix)
        port = int(urls[0][len(prefix) :])
        assert port > 0
        for client in clients:
            conn = http.client.HTTPConnection(client, port, timeout=5)
            conn.request("GET", "/test")
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"Hello, World!")
            conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


class Lines:
    """The lines a process writes to an unbuffered stderr pipe, taken in any order, read with a
    deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self.fd = proc.stderr.fileno()
        self.buf = b""
        self.seen: list[str] = []
        self.taken: set[int] = set()

    def take(self, want: Callable[[str], bool], timeout: float = 20) -> str:
        """The first line not taken yet that ``want``s, waiting for it."""
        end = time.monotonic() + timeout
        while True:
            for i, line in enumerate(self.seen):
                if i not in self.taken and want(line):
                    self.taken.add(i)
                    return line
            left = end - time.monotonic()
            assert left > 0, f"no such line in {self.seen}"
            if select.select([self.fd], [], [], left)[0]:
                data = os.read(self.fd, 65536)
                assert data, f"server exited: {self.seen}"
                *done, self.buf = (self.buf + data).split(b"\n")
                self.seen += [line.decode() for line in done]


def listening_pid(line: str) -> int:
    return int(line.split()[3])  # "poolalloc serve: pid N (Reactor) listening on ..."


def listeners(port: int) -> int:
    """How many sockets listen on ``port`` (IPv4), from ``/proc/net/tcp``."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(r[1].endswith(f":{port:04X}") and r[3] == "0A" for r in rows)


def wait_listeners(port: int, count: int) -> None:
    """A killed io_uring worker's socket outlives the process while the kernel tears its ring
    down (and takes connections meanwhile, reset when it closes): wait until it is gone."""
    end = time.monotonic() + 10
    while listeners(port) != count:
        assert time.monotonic() < end, f"{listeners(port)} listening sockets, not {count}"
        time.sleep(0.02)


@pytest.mark.parametrize("engine", ["epoll", "uring"])
def test_a_killed_worker_is_logged_and_replaced(tmp_path: Any, engine: str) -> None:
    """``kill -9`` of workers: the parent names each one and forks another, so the port keeps
    its N workers, also when every worker was killed."""
    port = free_port()
    cmd = [sys.executable, "-m", "poolalloc.cli", "serve", "--port", str(port)]
    cmd += ["--workers", "2", "--engine", engine]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, bufsize=0, cwd=tmp_path)
    lines = Lines(proc)
    try:
        workers = {listening_pid(lines.take(lambda s: " listening on " in s)) for _ in "ab"}
        assert set(children(proc.pid)) == workers
        for every in (False, True):  # one worker, then every worker
            victims = sorted(workers) if every else [min(workers)]
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            for pid in victims:
                said = f"poolalloc serve: worker pid {pid} was killed by signal 9 (SIGKILL); "
                lines.take(lambda s, said=said: s == said + "starting a new one")
            new = {listening_pid(lines.take(lambda s: " listening on " in s)) for _ in victims}
            workers = (workers - set(victims)) | new
            assert len(workers) == 2
            assert set(children(proc.pid)) == workers
            wait_listeners(port, 2)
            for _ in range(10):  # new connections, spread by the kernel over the workers
                assert get(port, "/test") == (200, b"Hello, World!")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_workers_killed_from_outside_do_not_count_toward_the_restart_limit(
    tmp_path: Any,
) -> None:
    """A fresh worker killed with SIGKILL (an operator, the OOM killer) is not a failed start:
    five such kills within 5 s of the workers' starts ended the whole server. Each is replaced,
    however many in a row (past START_LIMIT within START_WINDOW the replacements are paced,
    which this machine's speed decides), and the server serves on and stops cleanly."""
    port = free_port()
    cmd = [sys.executable, "-m", "poolalloc.cli", "serve", "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, bufsize=0, cwd=tmp_path)
    lines = Lines(proc)
    try:
        workers = {listening_pid(lines.take(lambda s: " listening on " in s)) for _ in "ab"}
        newest = max(workers)
        for _ in range(START_LIMIT + 1):  # each killed a moment after it listens
            os.kill(newest, signal.SIGKILL)
            said = f"poolalloc serve: worker pid {newest} was killed by signal 9 (SIGKILL); "
            lines.take(lambda s, said=said: s == said + "starting a new one")
            workers.discard(newest)
            newest = listening_pid(lines.take(lambda s: " listening on " in s))
            workers.add(newest)
        assert proc.poll() is None
        assert set(children(proc.pid)) == workers
        wait_listeners(port, 2)
        assert get(port, "/test") == (200, b"Hello, World!")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert not any("workers in a row" in s for s in lines.seen)


def test_workers_killed_at_every_start_are_replaced_at_a_bounded_pace(tmp_path: Any) -> None:
    """Kills from outside are not counted, so a worker killed at every start (the OOM killer
    during a big app's startup) was forked again at once, forever: over 2000 forks in 3 s. At
    most START_LIMIT replacements per START_WINDOW now, said in one line, and a stop signal
    still ends the supervisor at once while it waits for the pace."""
    code = (
        "import os, signal, sys; from poolalloc.net.http import serve\n"
        "sys.exit(serve._supervise(lambda: os.kill(os.getpid(), signal.SIGKILL) or 0, 2))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the supervisor runs (its signal handlers are set)
    time.sleep(2.5)
    stopped = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert time.monotonic() - stopped < 1.5, "the stop waited for the pace"
    err = first + err
    assert proc.returncode == 0, err
    said = err.splitlines()
    forks = sum(s.endswith("was killed by signal 9 (SIGKILL); starting a new one") for s in said)
    assert 2 <= forks <= 2 + START_LIMIT, said[-5:]  # the first two, then the paced ones
    assert sum(f" at most {START_LIMIT} replacements per " in s for s in said) == 1, said


def test_replacement_workers_hold_none_of_the_supervisors_descriptors(tmp_path: Any) -> None:
    """The supervisor's pidfds (one per worker) leaked into every replacement forked after
    them: a worker held its siblings' pidfds for its whole life. Each worker here lists its
    descriptors and exits (five such quick exits end the server)."""
    code = (
        "import os, sys, time; from poolalloc.net.http import serve\n"
        "def run():\n"
        "    targets = []\n"
        "    for fd in os.listdir('/proc/self/fd'):\n"
        "        try:\n"
        "            targets.append(os.readlink(f'/proc/self/fd/{fd}'))\n"
        "        except OSError:\n"
        "            pass  # the listing's own descriptor, closed since\n"
        "    with open(f'{os.getpid()}.fds', 'w') as f:\n"
        "        f.write('\\n'.join(targets))\n"
        "    time.sleep(0.3)  # the other worker, alive, has its pidfd open meanwhile\n"
        "    return 0\n"
        "sys.exit(serve._supervise(run, 2))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, cwd=tmp_path, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # gave up after five quick exits
    listed = {p.name: p.read_text().split() for p in tmp_path.glob("*.fds")}
    assert len(listed) >= 5, done.stderr  # the first two and at least three replacements
    first = min(listed, key=lambda name: int(name.split(".")[0]))
    for name, targets in listed.items():
        assert "anon_inode:[pidfd]" not in targets, (name, targets)
        assert sorted(targets) == sorted(listed[first]), (name, targets)


def test_workers_that_crash_at_start_still_count_toward_the_restart_limit(
    tmp_path: Any,
) -> None:
    """A crash (SIGABRT here: under AddressSanitizer a SIGSEGV is caught and becomes an exit
    status of 1) within the window is a failed start: five in a row end the server, as a
    nonzero exit does."""
    code = (
        "import os, signal, sys; from poolalloc.net.http import serve\n"
        "sys.exit(serve._supervise(lambda: os.kill(os.getpid(), signal.SIGABRT) or 0, 2))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, cwd=tmp_path, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("poolalloc serve: 5 workers in a row ended"), last
    assert "killed by signal 6 (SIGABRT)" in last


def test_the_supervisor_waits_only_for_its_own_workers(tmp_path: Any) -> None:
    """``serve(workers=N)`` from a program with a child of its own: the supervisor waited for
    any child (``waitpid(-1)``) and reaped that one too, so the program's ``wait()`` got 0, not
    its child's status. Workers are still replaced as before."""
    code = (
        "import subprocess, sys\n"
        "from poolalloc.net.http.serve import serve\n"
        "own = subprocess.Popen(['sh', '-c', 'exit 7'])\n"
        "print(own.pid, flush=True)\n"
        f"serve('127.0.0.1', {free_port()}, workers=2)\n"
        "print(own.wait(), flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        bufsize=0, cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = Lines(proc)
    try:
        own = int(proc.stdout.readline())
        workers = {listening_pid(lines.take(lambda s: " listening on " in s)) for _ in "ab"}
        end = time.monotonic() + 10
        while _alive(own):  # it ended: a zombie until its parent reaps it (or already reaped)
            assert time.monotonic() < end, "the program's own child did not end"
            time.sleep(0.02)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        said = f"poolalloc serve: worker pid {victim} was killed by signal 9 (SIGKILL); "
        lines.take(lambda s: s == said + "starting a new one")
        new = listening_pid(lines.take(lambda s: " listening on " in s))
        assert set(children(proc.pid)) == (workers - {victim}) | {new, own}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out.split() == [b"7"]  # the child's own exit status


def test_workers_that_cannot_start_end_the_server_in_one_line(tmp_path: Any) -> None:
    """A worker that fails at start is not forked again and again: after a few such deaths in
    a row the parent stops with one line and status 1 (here every worker's pool is invalid)."""
    code = "import sys; from poolalloc.net.http.serve import serve\n"
    code += "sys.exit(serve('127.0.0.1', 0, workers=2, buffer_size=0))"
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, cwd=tmp_path, timeout=30, check=False,
    )  # fmt: skip
    assert time.monotonic() - began < 10
    assert done.returncode == 1
    said = done.stderr.splitlines()
    assert said[-1].startswith("poolalloc serve: 5 workers in a row ended within 5 s of their ")
    assert said[-1].endswith("exited with status 1): stopping; the lines above say why")
    assert sum("workers in a row" in s for s in said) == 1
    assert any(s.endswith(": size must be >= 1, not 0") for s in said)  # each worker's reason


def test_workers_stop_when_their_parent_is_killed(tmp_path: Any) -> None:
    """``kill -9`` of the parent: its workers served on without it and held the port for good
    (a restart failed with "already in use"); now the kernel sends each a SIGTERM."""
    port = free_port()
    cmd = [sys.executable, "-m", "poolalloc.cli", "serve", "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, bufsize=0, cwd=tmp_path)
    lines = Lines(proc)
    workers = {listening_pid(lines.take(lambda s: " listening on " in s)) for _ in "ab"}
    proc.kill()
    proc.wait(10)
    end = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") and _alive(pid) for pid in workers):
        assert time.monotonic() < end, "workers outlived their parent"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Not a zombie (the workers' zombies go to init, which reaps them in its own time)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_whose_startup_fails_late_still_end_the_server(tmp_path: Any) -> None:
    """A startup that fails (status 3) counts toward the restart limit however long it took:
    an ASGI app whose lifespan startup failed after more than 5 s was forked again forever.
    (Here the window is 0 s, so only the status can count it.)"""
    code = (
        "import sys; from poolalloc.net.http import serve\n"
        "serve.START_WINDOW = 0.0\n"
        "sys.exit(serve._supervise(lambda: 3, 2))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, cwd=tmp_path, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stderr.splitlines()[-1].startswith("poolalloc serve: 5 workers in a row ended")


def test_prometheus_text_and_flatten() -> None:
    flat = flatten_stats("pool", {"in_use": 1, "name": "x", "ok": True, "rate": 0.25})
    assert flat == {"pool_in_use": 1, "pool_rate": 0.25}
    text = prometheus_text({"requests_total": 5, "connections_active": 2, "pool_rate": 0.25})
    assert text.splitlines() == [
        "# HELP poolalloc_connections_active Connections open now, not counting those lingering.",
        "# TYPE poolalloc_connections_active gauge",
        "poolalloc_connections_active 2",
        "# HELP poolalloc_pool_rate poolalloc figure pool_rate.",
        "# TYPE poolalloc_pool_rate gauge",
        "poolalloc_pool_rate 0.25",
        "# HELP poolalloc_requests_total Requests answered.",
        "# TYPE poolalloc_requests_total counter",
        "poolalloc_requests_total 5",
    ]
