"""The ``poolalloc`` command and what only it uses.

Floor 6, the top: may import anything below (the pools, ``poolalloc.net``); nothing imports it.

* ``commands.py``: the argument parser and ``main`` (``info``, ``serve``, ``demo``, ``bench``,
  ``selfcheck``).
* ``_info.py``, ``_demo.py``, ``_bench.py``, ``_selfcheck.py``: one command each.
* ``loadgen.py``: the HTTP load generator the demo and the benchmarks drive servers with.
* ``baseline.py``: the fresh-``bytearray`` read "pool" the demo compares against.
* ``_progress.py``: the demo's progress bar.

Example:
    >>> from poolalloc.cli import main
    >>> callable(main)
    True
"""

from __future__ import annotations

from poolalloc.cli.commands import main

__all__ = ["main"]
