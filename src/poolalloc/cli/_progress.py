"""A one-line progress bar on stderr for the CLI; silent when stderr is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class ProgressBar:
    """Redraws ``label [#####.....] 42% 420/1000 3.1s`` in place, at most ten times a second.

    When the stream is not a terminal (CI logs, pipes) it prints one line when done instead,
    so logs stay readable.
    """

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.is_tty = self.stream.isatty()
        self.started = time.perf_counter()
        self.last_draw = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if not self.is_tty or (now - self.last_draw < 0.1 and done < total):
            return
        self.last_draw = now
        frac = done / total if total else 1.0
        bar = "#" * int(frac * WIDTH) + "." * (WIDTH - int(frac * WIDTH))
        self.stream.write(
            f"\r{self.label} [{bar}] {frac:4.0%} {done}/{total} {now - self.started:.1f}s"
        )
        self.stream.flush()

    def finish(self, note: str = "") -> None:
        """End the bar's line (or, off a terminal, print the one summary line)."""
        elapsed = time.perf_counter() - self.started
        prefix = "\r" if self.is_tty else ""
        self.stream.write(f"{prefix}{self.label} done in {elapsed:.1f}s {note}".rstrip())
        self.stream.write(" " * 20 + "\n" if self.is_tty else "\n")
        self.stream.flush()
