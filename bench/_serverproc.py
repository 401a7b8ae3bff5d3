"""What the HTTP benchmarks share about a server process: waiting for it, reading its CPU time.

Example:
    >>> proc = subprocess.Popen(cmd)  # doctest: +SKIP
    >>> wait_listening(proc, port, "nginx"); cpu_split(proc.pid)  # doctest: +SKIP
"""

from __future__ import annotations

import socket
import subprocess
import time


def wait_listening(
    proc: subprocess.Popen[bytes], port: int, name: str, within: float = 10.0
) -> subprocess.Popen[bytes]:
    """Return ``proc`` once 127.0.0.1:``port`` accepts; kill it and raise after ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{name} server did not start")


def cpu_split(pid: int) -> tuple[int, int]:
    """``(utime, stime)`` of ``pid`` in clock ticks, from /proc (fields 14 and 15 of stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])
