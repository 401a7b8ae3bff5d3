"""Leak tracking levels: outstanding leases are reported at close() with the acquiring stack."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from poolalloc import Allocator, BufferPool, leaks


def acquire_and_forget(pool: BufferPool) -> object:
    return pool.acquire()


def test_all_reports_each_outstanding_lease_with_its_stack() -> None:
    pool = BufferPool(128, leaks="all", name="tracked")
    kept = [acquire_and_forget(pool), acquire_and_forget(pool)]
    pool.acquire().release()  # released leases are not reported
    with pytest.warns(leaks.LeakWarning) as record:
        pool.close()
    text = str(record[0].message)
    assert "'tracked'" not in text
    assert "tracked: 2 lease(s) outstanding" in text
    assert text.count(", in acquire_and_forget") == 1  # one place, named once with its count
    assert "  2 lease(s) acquired at:" in text
    assert "test_tracking.py" in text
    for buf in kept:
        buf.release()  # type: ignore[attr-defined]


def test_report_names_parked_leases() -> None:
    pool = BufferPool(128, leaks="all")
    buf = pool.acquire()
    view = buf.view
    buf.release()
    text = pool.leak_report()
    assert "1 lease(s) outstanding (0 not released, 1 released but still viewed)" in text
    del view
    assert pool.leak_report() == ""
    pool.close()


def test_garbage_collected_lease_is_reported_as_leak() -> None:
    with Allocator(leaks="all") as alloc:
        alloc.alloc(100)  # dropped without release
        gc.collect()
        assert alloc.outstanding() == 0
        assert alloc.stats().gc_returns == 1
        text = alloc.leak_report()
        assert "garbage-collected without release()" in text
        assert "test_garbage_collected_lease_is_reported_as_leak" in text
        with pytest.warns(leaks.LeakWarning):
            alloc.close()


def test_sampled_tracks_one_in_sample_every() -> None:
    with BufferPool(64, leaks="sampled") as pool:
        bufs = pool.acquire_many(leaks.SAMPLE_EVERY * 2)
        assert len(pool._leases.tracked) == 2
        text = pool.leak_report()
        assert f"{leaks.SAMPLE_EVERY * 2 - 2} lease(s) without a stack" in text
        pool.release_many(bufs)
        assert len(pool._leases.tracked) == 0


def test_off_records_nothing_and_close_reports_with_a_resource_warning() -> None:
    pool = BufferPool(64, leaks="off")
    buf = pool.acquire()
    assert pool._leases.tracked == {}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        report = pool.close()
    assert [w.category for w in record] == [ResourceWarning]
    assert "1 lease(s) live" in str(record[0].message)
    assert (report.live, report.parked, report.outstanding, report.stacks) == (1, 0, 1, ())
    assert not report.is_clean
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pool.close() == report  # closing again: the same report, no second warning
    buf.release()


def test_close_report_counts_parked_leases_and_is_clean_when_nothing_is_out() -> None:
    pool = BufferPool(64, leaks="off")
    buf = pool.acquire()
    view = buf.view
    buf.release()
    with pytest.warns(ResourceWarning, match="1 released but held by views"):
        report = pool.close()
    assert (report.live, report.parked) == (0, 1)
    del view
    with BufferPool(64) as clean:
        clean.acquire().release()
    assert clean.close().is_clean


def test_level_from_environment_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLALLOC_LEAKS", "all")
    assert leaks.level() == "all"
    with BufferPool(64) as pool:
        buf = pool.acquire()
        assert len(pool._leases.tracked) == 1
        buf.release()
    monkeypatch.setenv("POOLALLOC_LEAKS", "loud")
    with pytest.raises(ValueError, match="POOLALLOC_LEAKS"):
        leaks.level()
    with pytest.raises(ValueError, match="level"):
        leaks.set_level("everything")


def test_teardown_fixture_reports_an_outstanding_lease(tmp_path: Path) -> None:
    """The test-wide fixture fails a test that leaves a lease out, naming the stack."""
    root = Path(__file__).resolve().parents[1]
    test = tmp_path / "test_leaky.py"
    test.write_text(
        textwrap.dedent(
            """
            from poolalloc import BufferPool
            KEEP = []
            def test_leaks_a_lease():
                pool = BufferPool(64, leaks="all")
                KEEP.append(pool.acquire())
            """
        )
    )
    conftest = (root / "conftest.py").read_text()
    (tmp_path / "conftest.py").write_text(conftest)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:memray",
         str(test)],
        capture_output=True, text=True, timeout=120, cwd=str(tmp_path), check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "leases still outstanding at the end of the test" in out
    assert "test_leaky.py" in out
    assert "KEEP.append(pool.acquire())" in out


def test_collected_leases_without_a_stack_are_still_reported() -> None:
    # tracking off (or a lease the sampler skipped): the lease counters saw the leak, so the
    # report must not say "" as if the pool were clean
    for level in ("off", "sampled"):
        pool = BufferPool(64, leaks=level, name="quiet")
        acquire_and_forget(pool)
        gc.collect()
        assert pool.stats().gc_returns == 1
        text = pool.leak_report()
        assert "quiet: 1 lease(s) garbage-collected without release() and no stack" in text
        assert "POOLALLOC_LEAKS=all" in text
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            pool.close()
        # with tracking on (sampled), close() warns of what the report says, as for `all`
        assert [str(w.message) for w in record] == ([text] if level == "sampled" else [])


def test_a_recurring_leak_is_reported_once_and_kept_bounded() -> None:
    n = leaks.GC_LEAKS_KEPT + 100
    pool = BufferPool(64, leaks="all", name="loop")
    for _ in range(n):
        acquire_and_forget(pool)
    gc.collect()
    assert pool.stats().gc_returns == n
    assert len(pool._leases.gc_leaks) == leaks.GC_LEAKS_KEPT  # the tracker does not grow for good
    text = pool.leak_report()
    assert text.count("acquired at:") == 1
    assert f"loop: {leaks.GC_LEAKS_KEPT} leases were garbage-collected without release()" in text
    assert "loop: 100 lease(s) garbage-collected without release() and no stack" in text
    assert f"only the first {leaks.GC_LEAKS_KEPT} stacks are kept" in text
    with pytest.warns(leaks.LeakWarning) as record:
        pool.close()
    assert str(record[0].message) == text


@pytest.mark.parametrize("level", ["off", "all"])
def test_close_warning_points_at_the_users_with_statement(level: str) -> None:
    # `with pool:` closes from __exit__: the warning's location must be the user's line, not
    # poolalloc's __exit__ (the same for every pool, so it says nothing about which one)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with BufferPool(64, leaks=level) as pool:
            kept = pool.acquire()
    assert [Path(w.filename).name for w in record] == [Path(__file__).name]
    kept.release()


def test_outstanding_leases_are_reported_once_per_place() -> None:
    # 300 leases held from one line (a list that only grows) and one from another: two stacks
    # in the warning, not 301 (it was one stack per lease)
    pool = BufferPool(64, leaks="all", name="held")
    kept = [acquire_and_forget(pool) for _ in range(300)]
    kept.append(pool.acquire())
    with pytest.warns(leaks.LeakWarning) as record:
        report = pool.close()
    text = str(record[0].message)
    assert "held: 301 lease(s) outstanding" in text
    assert "  300 lease(s) acquired at:" in text
    assert "  1 lease(s) acquired at:" in text
    assert text.count("acquired at:") == 2
    assert len(report.stacks) == 301  # the report object still has one stack per lease
    for buf in kept:
        buf.release()  # type: ignore[attr-defined]
