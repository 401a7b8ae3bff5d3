"""``poolalloc serve`` driven by the clients people use, on both engines, over loopback.

curl (keep-alive across URLs, HTTP/1.0, resumed downloads, uploads), Python's http.client,
requests, httpx, and the load tools ab (HTTP/1.0 keep-alive), wrk and h2load (HTTP/1.1): every
run must end with zero errors. The tools are installed by .ci/run; a missing one FAILS the test
(a skipped check would look like a passed one). Runs are short (ab -n 2000, wrk -d1...).
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from poolalloc.net.uring.proactor import available

pytestmark = [pytest.mark.net, pytest.mark.timeout(120)]

SMALL = b"small file\n"
MEDIUM = os.urandom(3 << 20)  # several sendfile/splice rounds


def tool(name: str) -> str:
    """The path of a command-line client; its absence is a failure (CI installs them all)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: .ci/run installs it with apt-get (see there)")
    return path


#: The clients' environment: under ``make test-asan`` LD_PRELOAD carries libasan, meant for our
#: server (which inherits it), not for curl, ab, wrk or h2load.
TOOL_ENV = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, env=TOOL_ENV
    )
    assert done.returncode == 0, f"{cmd}: rc {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


class Served:
    """A ``poolalloc serve`` child process and what it serves."""

    def __init__(self, engine: str, root: Path) -> None:
        self.engine, self.root = engine, root
        cmd = [sys.executable, "-m", "poolalloc.cli", "serve", "--engine", engine]
        cmd += ["--port", "0", "--root", str(root), "--uploads"]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, bufsize=0, cwd=root)
        line = self._listening_line()
        # The engine asked for is the engine that runs (serve says which, and falls back loudly).
        assert f"({'Proactor' if engine == 'uring' else 'Reactor'})" in line, line
        self.port = int(line.rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def _listening_line(self) -> str:
        assert self.proc.stderr is not None
        end = time.monotonic() + 20
        while time.monotonic() < end:
            if select.select([self.proc.stderr], [], [], 0.2)[0]:
                line = self.proc.stderr.readline().decode()
                assert line, "poolalloc serve exited"
                if " listening on " in line:
                    return line.strip()
        raise AssertionError("poolalloc serve did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(15) == 0


@pytest.fixture(scope="module", params=["epoll", "uring"])
def served(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[Served]:
    if request.param == "uring":
        ok, reason = available()
        if not ok:
            pytest.skip(f"io_uring unavailable: {reason}")
    root = tmp_path_factory.mktemp(f"root-{request.param}")
    (root / "small.txt").write_bytes(SMALL)
    (root / "medium.bin").write_bytes(MEDIUM)
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_bytes(b"<p>index</p>")
    srv = Served(request.param, root)
    yield srv
    srv.stop()


# ---- curl ----


def test_curl_keeps_one_connection_for_several_urls(served: Served, tmp_path: Path) -> None:
    curl = tool("curl")
    urls = [f"{served.url}/small.txt", f"{served.url}/medium.bin", f"{served.url}/test"] * 2
    outs = [str(tmp_path / f"out{i}") for i in range(len(urls))]
    args = [curl, "-sS", "--fail", "-w", "%{http_code} %{num_connects}\\n"]
    for url, out in zip(urls, outs, strict=True):
        args += [url, "-o", out]
    done = run(*args)
    # One connection opened for the first URL, then reused by every other one.
    assert done.stdout.split("\n")[:-1] == ["200 1"] + ["200 0"] * (len(urls) - 1)
    bodies = [Path(out).read_bytes() for out in outs]
    assert bodies == [SMALL, MEDIUM, b"Hello, World!"] * 2


def test_curl_http10(served: Served) -> None:
    curl = tool("curl")
    done = run(curl, "-sS", "--fail", "--http1.0", f"{served.url}/small.txt", f"{served.url}/test")
    assert done.stdout == SMALL.decode() + "Hello, World!"
    head = run(curl, "-sS", "--fail", "--http1.0", "-I", f"{served.url}/medium.bin").stdout
    assert head.startswith("HTTP/1.1 200 OK\n")  # text mode: CRLF reads as \n
    assert f"\nContent-Length: {len(MEDIUM)}\n" in head
    assert "\nAccept-Ranges: bytes\n" in head


def test_curl_resumes_a_download(served: Served, tmp_path: Path) -> None:
    curl = tool("curl")
    out = tmp_path / "medium.bin"
    out.write_bytes(MEDIUM[:1_000_001])  # what an interrupted transfer left
    done = run(curl, "-sS", "--fail", "-C", "-", "-w", "%{http_code}", "-o", str(out),
               f"{served.url}/medium.bin")  # fmt: skip
    assert done.stdout == "206"
    assert out.read_bytes() == MEDIUM


def test_curl_follows_the_directory_redirect(served: Served) -> None:
    curl = tool("curl")
    done = run(curl, "-sS", "--fail", "-L", "-w", "%{num_redirects}", f"{served.url}/sub")
    assert done.stdout == "<p>index</p>1"


def test_curl_uploads_with_T(served: Served, tmp_path: Path) -> None:
    curl = tool("curl")
    src = tmp_path / "upload.bin"
    data = os.urandom(2 << 20)
    src.write_bytes(data)
    name = f"up-{os.getpid()}.bin"
    done = run(curl, "-sS", "--fail", "-T", str(src), "-w", "%{http_code}",
               f"{served.url}/{name}")  # fmt: skip
    assert done.stdout.endswith("201")
    assert (served.root / name).read_bytes() == data
    back = run(curl, "-sS", "--fail", "-o", str(tmp_path / "back"), f"{served.url}/{name}")
    assert back.returncode == 0
    assert (tmp_path / "back").read_bytes() == data


# ---- Python clients ----


def test_http_client(served: Served) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    for _ in range(10):
        conn.request("GET", "/medium.bin")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, MEDIUM)
    conn.request("GET", "/medium.bin", headers={"Range": "bytes=100-199"})
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (206, MEDIUM[100:200])
    assert resp.getheader("Content-Range") == f"bytes 100-199/{len(MEDIUM)}"
    etag = resp.getheader("ETag")
    conn.request("GET", "/medium.bin", headers={"If-None-Match": etag or ""})
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (304, b"")
    conn.request("GET", "/test")  # still the same connection after a 304
    assert conn.getresponse().read() == b"Hello, World!"
    conn.close()


def test_requests(served: Served) -> None:
    import requests

    with requests.Session() as session:
        for _ in range(10):
            r = session.get(f"{served.url}/small.txt", timeout=10)
            assert (r.status_code, r.content) == (200, SMALL)
        r = session.get(f"{served.url}/medium.bin", stream=True, timeout=10)
        assert b"".join(r.iter_content(65536)) == MEDIUM
        r = session.get(f"{served.url}/medium.bin", headers={"Range": "bytes=-10"}, timeout=10)
        assert (r.status_code, r.content) == (206, MEDIUM[-10:])
        r = session.get(f"{served.url}/sub", timeout=10)  # follows the 301
        assert (r.status_code, r.text, r.history[0].status_code) == (200, "<p>index</p>", 301)
        etag = session.head(f"{served.url}/small.txt", timeout=10).headers["ETag"]
        r = session.get(f"{served.url}/small.txt", headers={"If-None-Match": etag}, timeout=10)
        assert (r.status_code, r.content) == (304, b"")
        name = f"req-{os.getpid()}.bin"
        r = session.put(f"{served.url}/{name}", data=MEDIUM, timeout=10)
        assert r.status_code == 201
        assert (served.root / name).read_bytes() == MEDIUM


def test_httpx(served: Served) -> None:
    import httpx

    with httpx.Client(base_url=served.url, timeout=10, follow_redirects=True) as client:
        for _ in range(10):
            r = client.get("/small.txt")
            assert (r.status_code, r.content, r.http_version) == (200, SMALL, "HTTP/1.1")
        with client.stream("GET", "/medium.bin") as r:
            assert b"".join(r.iter_bytes()) == MEDIUM
        r = client.get("/medium.bin", headers={"Range": "bytes=1048576-"})
        assert (r.status_code, r.content) == (206, MEDIUM[1 << 20 :])
        r = client.get("/small.txt", headers={"Range": f"bytes={len(SMALL)}-"})
        assert (r.status_code, r.headers["Content-Range"]) == (416, f"bytes */{len(SMALL)}")
        assert client.get("/sub").text == "<p>index</p>"
        name = f"httpx-{os.getpid()}.bin"
        assert client.put(f"/{name}", content=MEDIUM).status_code == 201
        assert (served.root / name).read_bytes() == MEDIUM


# ---- load tools ----


def test_ab_keep_alive_http10(served: Served) -> None:
    """ab -k speaks HTTP/1.0 with ``Connection: keep-alive``: every request must complete
    on kept-alive connections (a server that does not confirm keep-alive makes ab wait)."""
    ab = tool("ab")
    done = run(ab, "-k", "-q", "-s", "10", "-n", "2000", "-c", "10", f"{served.url}/test",
               timeout=60)  # fmt: skip
    out = done.stdout
    assert re.search(r"^Complete requests:\s+2000$", out, re.M), out
    assert re.search(r"^Failed requests:\s+0$", out, re.M), out
    assert re.search(r"^Keep-Alive requests:\s+2000$", out, re.M), out
    assert "Non-2xx responses" not in out


def test_wrk(served: Served) -> None:
    wrk = tool("wrk")
    for path in ("/test", "/small.txt"):
        out = run(wrk, "-t2", "-c20", "-d1", f"{served.url}{path}", timeout=30).stdout
        m = re.search(r"^\s*(\d+) requests in ", out, re.M)
        assert m, out
        assert int(m.group(1)) > 0
        assert "Socket errors" not in out, out
        assert "Non-2xx or 3xx responses" not in out, out


def test_h2load_h1(served: Served) -> None:
    h2load = tool("h2load")
    for path in ("/test", "/small.txt"):
        out = run(h2load, "--h1", "-n", "2000", "-c", "10", f"{served.url}{path}",
                  timeout=60).stdout  # fmt: skip
        assert (
            "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, "
            "0 errored, 0 timeout" in out
        ), out
        assert "status codes: 2000 2xx" in out, out


# ---- a resumed 2 GiB download ----

GIB2 = (2 << 30) + 4099  # 2 GiB and a few bytes: offsets past 2^31 - 1 (32-bit signed) too


@pytest.mark.timeout(300)
def test_curl_resumes_a_2_gib_download_byte_identical(served: Served, tmp_path: Path) -> None:
    """A 2 GiB sparse file with non-zero markers (one straddling byte 2^31): the first
    transfer is killed part-way, ``curl -C -`` resumes it (a 206 from the offset), and the
    result hashes the same as the file."""
    curl = tool("curl")
    name = f"big-{os.getpid()}.bin"
    src = served.root / name
    with open(src, "wb") as f:
        f.truncate(GIB2)
        # Markers across the file: start, odd offset, 1 GiB, across 2^31, the very end.
        for offset in (0, 4096 * 7 + 3, 1 << 30, (1 << 31) - 10, GIB2 - 4096):
            f.seek(offset)
            f.write(hashlib.sha256(str(offset).encode()).digest() * 128)
    out = tmp_path / "big.bin"
    url = f"{served.url}/{name}"
    try:
        first = subprocess.Popen(
            [curl, "-sS", "--limit-rate", "300M", "-o", str(out), url],
            stderr=subprocess.PIPE,
            env=TOOL_ENV,
        )
        end = time.monotonic() + 60
        while time.monotonic() < end and first.poll() is None:
            if out.exists() and out.stat().st_size >= 256 << 20:
                break
            time.sleep(0.02)
        first.kill()
        first.wait(10)
        partial = out.stat().st_size
        assert 0 < partial < GIB2, partial  # really interrupted
        done = run(curl, "-sS", "-v", "--fail", "-C", "-", "-w", "%{http_code} %{size_download}",
                   "-o", str(out), url, timeout=240)  # fmt: skip
        assert f"> Range: bytes={partial}-\n" in done.stderr, (partial, done.stderr)
        assert f"< Content-Range: bytes {partial}-{GIB2 - 1}/{GIB2}\n" in done.stderr
        assert done.stdout == f"206 {GIB2 - partial}", partial
        assert out.stat().st_size == GIB2
        assert _sha256(out) == _sha256(src)
    finally:
        src.unlink()
        out.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
