"""A full disk under the upload server: the upload is refused, nothing half-written stays.

Two ways to fill the disk: a 1 MiB tmpfs (needs root to mount; skipped otherwise, with the
reason), and ``RLIMIT_FSIZE`` in a child process with ``SIGXFSZ`` ignored, so ``write`` fails
with ``EFBIG`` (runs anywhere). The server answers ``507 Insufficient Storage`` for a full
disk (``ENOSPC``) and ``500`` for other refused writes (``EFBIG``), removes the partial file,
keeps serving other requests, and every pooled buffer comes back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from relkit import ThreadedHttp, request


def put(port: int, name: str, body: bytes) -> tuple[int, bytes]:
    head = f"PUT /{name} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    return request(port, head + body)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the RLIMIT_FSIZE test covers this case)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_full_tmpfs_answers_507_and_keeps_serving(tiny_tmpfs: Path) -> None:
    with ThreadedHttp(root=tiny_tmpfs, uploads=True) as srv:
        assert put(srv.port, "small", b"a" * 1000)[0] == 201
        status, body = put(srv.port, "big", os.urandom(2 << 20))
        assert status == 507, body
        assert sorted(os.listdir(tiny_tmpfs)) == ["small"], "a partial upload was left behind"
        assert put(srv.port, "after", b"b" * 1000)[0] == 201, "the space was not given back"
        assert request(srv.port, b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n") == (200, b"a" * 1000)
        assert srv.call(lambda: srv.http.metrics()["errors_total"]) >= 1


FSIZE_CHILD = textwrap.dedent(
    """
    import os, resource, signal, sys
    sys.path.insert(0, sys.argv[2])
    from relkit import ThreadedHttp, request
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
    root = sys.argv[1]
    with ThreadedHttp(root=root, uploads=True) as srv:
        def put(name, body):
            head = f"PUT /{name} HTTP/1.1\\r\\nHost: x\\r\\n".encode()
            head += f"Content-Length: {len(body)}\\r\\n\\r\\n".encode()
            return request(srv.port, head + body)[0]
        print(put("small", b"a" * 1000), put("big", b"x" * (1 << 20)), put("again", b"c" * 10))
        print(request(srv.port, b"GET /small HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")[1] == b"a" * 1000)
    print(sorted(os.listdir(root)))
    """
)


def test_file_size_limit_answers_507_and_removes_the_part(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    script = tmp_path / "child.py"
    script.write_text(FSIZE_CHILD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, str(script), str(root), os.path.dirname(__file__)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    statuses, same, files = out.stdout.splitlines()
    assert statuses.split() == ["201", "500", "201"]  # EFBIG: not a full disk, a refused write
    assert same == "True"
    assert files == "['again', 'small']"
