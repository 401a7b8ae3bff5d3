"""A child process whose stderr goes to a file, stopped politely then firmly.

The demo's server and the workload helpers both run as children of the CLI. Their stderr goes
to a temporary file rather than a pipe: a chatty child whose pipe nobody reads would block once
the pipe is full, and the last lines are what explains a failure.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from typing import Any

#: Seconds a child gets to exit after SIGTERM before it is killed.
STOP_GRACE = 10.0


class LoggedChild:
    """``subprocess.Popen(cmd, stderr=<temporary file>, **popen)``.

    Example:
        >>> import sys
        >>> c = LoggedChild([sys.executable, "-c", "import sys; sys.stderr.write('hi')"])
        >>> _ = c.proc.wait(); c.stop(); c.stderr
        'hi'
    """

    def __init__(self, cmd: list[str], **popen: Any) -> None:
        # closed by stop(), once the child has exited and its last words are read
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stderr=self.log, **popen)
        self._printed = ""

    @property
    def stderr(self) -> str:
        """Everything the child wrote to stderr so far (also after :meth:`stop`)."""
        if self.log.closed:
            return self._printed
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def last_words(self) -> str:
        """The child's last line on stderr, or its exit status when it printed nothing."""
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit status {self.proc.returncode}"

    def stop(self) -> None:
        """SIGTERM, wait up to :data:`STOP_GRACE` seconds, then SIGKILL; close its pipes."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if not self.log.closed:
            self._printed = self.stderr
            self.log.close()
