"""``poolalloc selfcheck``: a check that fails says so."""

from __future__ import annotations

import pytest

from poolalloc.cli import _selfcheck
from poolalloc.slab import SlabPool


def test_allocations_that_fail_fail_the_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A thread whose allocation failed (the machine out of memory, or more threads than it
    holds) died with a traceback of its own, and the check still said ``selfcheck: ok`` with
    status 0: its blocks were simply missing from the books. Each failure is now a ``FAIL:``
    line and the check fails (status 1)."""
    monkeypatch.setattr(_selfcheck, "SlabPool", lambda: SlabPool(max_bytes=8 << 20))
    assert _selfcheck.run(rounds=1, threads=2) == 1
    out, err = capsys.readouterr()
    assert out.rstrip().endswith("selfcheck: FAILED")
    fails = [line for line in err.splitlines() if line.startswith("FAIL: ")]
    assert fails
    assert all("allocating" in line for line in fails), err
    assert "Traceback" not in err
