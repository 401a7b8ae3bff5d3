"""ObjectPool behaviour, one rule per test: leases, reset, validate, lifetime, limits, close."""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from objpool_helpers import Factory, Thing

from poolalloc import (
    BufferPool,
    DoubleReleaseError,
    ForeignBufferError,
    ForeignLeaseError,
    LeaseReleasedError,
    ObjectPool,
    PoolClosedError,
    PoolExhausted,
    PoolValueError,
)

MakePool = Callable[..., ObjectPool[Thing]]


def test_with_form_reuses_the_same_object(make_pool: MakePool) -> None:
    pool = make_pool()
    with pool.acquire() as first:
        assert isinstance(first, Thing)
    with pool.acquire() as second:
        assert second is first
    s = pool.stats()
    assert (s.created, s.reused, s.acquires, s.in_use, s.idle) == (1, 1, 2, 0, 1)
    assert s.hit_rate == 0.5


def test_explicit_lease_and_pool_release(make_pool: MakePool) -> None:
    pool = make_pool()
    a, b = pool.acquire(), pool.acquire()
    assert a.obj is not b.obj
    assert pool.stats().in_use == 2
    a.release()
    pool.release(b)
    assert a.is_released
    assert b.is_released
    assert pool.stats().in_use == 0


def test_double_release_and_use_after_release_raise(make_pool: MakePool) -> None:
    pool = make_pool()
    lease = pool.acquire()
    lease.release()
    with pytest.raises(DoubleReleaseError):
        lease.release()
    with pytest.raises(DoubleReleaseError):
        pool.release(lease)
    with pytest.raises(LeaseReleasedError):
        _ = lease.obj
    with pytest.raises(LeaseReleasedError), lease:
        pass
    assert pool.stats().in_use == 0


def test_stale_lease_cannot_release_a_later_lease_of_the_same_object(make_pool: MakePool) -> None:
    pool = make_pool()
    old = pool.acquire()
    thing = old.obj
    old.release()
    new = pool.acquire()
    assert new.obj is thing  # same object, different lease
    with pytest.raises(DoubleReleaseError):
        old.release()
    assert not new.is_released
    assert pool.stats().in_use == 1
    new.release()


def test_foreign_lease_is_refused(make_pool: MakePool) -> None:
    pool, other = make_pool(), make_pool()
    lease = other.acquire()
    with pytest.raises(ForeignLeaseError) as info:
        pool.release(lease)
    assert isinstance(info.value, ForeignBufferError)
    with pytest.raises(ForeignLeaseError):
        pool.release("not a lease")  # type: ignore[arg-type]
    assert not lease.is_released
    lease.release()


def test_exception_inside_with_still_returns_after_reset(make_pool: MakePool) -> None:
    resets: list[int] = []
    pool = make_pool(reset=lambda t: resets.append(t.id))
    with pytest.raises(KeyError), pool.acquire() as thing:
        raise KeyError("boom")
    assert resets == [thing.id]
    assert pool.stats().idle == 1
    with pool.acquire() as again:
        assert again is thing


def test_reset_that_raises_disposes_the_object(
    make_pool: MakePool, factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    def reset(thing: Thing) -> None:
        if thing.dirty:
            raise RuntimeError("cannot clean")

    pool = make_pool(reset=reset, max_size=1)
    with caplog.at_level(logging.WARNING, logger="poolalloc.objects"), pool.acquire() as thing:
        thing.dirty = True
    assert thing.disposed
    assert "reset raised" in caplog.text
    s = pool.stats()
    assert (s.disposed, s.reset_failures, s.idle, s.alive) == (1, 1, 0, 0)
    with pool.acquire() as fresh:  # the bound of 1 is free again
        assert fresh is not thing


def test_reset_raising_base_exception_disposes_and_propagates(make_pool: MakePool) -> None:
    def reset(thing: Thing) -> None:
        raise KeyboardInterrupt

    pool = make_pool(reset=reset)
    with pytest.raises(KeyboardInterrupt), pool.acquire() as thing:
        pass
    assert thing.disposed
    assert pool.stats().alive == 0


def test_validate_false_or_raising_replaces_the_object(make_pool: MakePool) -> None:
    def validate(thing: Thing) -> bool:
        if thing.holder == "raise":
            raise OSError("connection reset")
        return not thing.dirty

    pool = make_pool(validate=validate, max_size=2)
    with pool.acquire() as first:
        first.dirty = True
    with pool.acquire() as second:
        assert second is not first
        second.holder = "raise"
    with pool.acquire() as third:
        assert third not in (first, second)
    assert first.disposed
    assert second.disposed
    assert not third.disposed
    s = pool.stats()
    assert (s.invalid, s.created, s.disposed) == (2, 3, 2)


def test_validate_also_checks_objects_from_the_shared_list(make_pool: MakePool) -> None:
    pool = make_pool(validate=lambda t: not t.dirty, min_idle=2, stash_size=0)
    bad = pool.acquire()
    bad.obj.dirty = True
    bad.release()
    with pool.acquire() as thing:
        assert not thing.dirty
    assert pool.stats().invalid == 1


def test_max_lifetime_retires_on_return(make_pool: MakePool) -> None:
    pool = make_pool(max_lifetime=0.05)
    lease = pool.acquire()
    young = lease.obj
    lease.release()
    with pool.acquire() as again:
        assert again is young
        time.sleep(0.06)
    assert young.disposed
    assert pool.stats().retired == 1


def test_max_size_with_zero_timeout_raises_at_once(make_pool: MakePool) -> None:
    pool = make_pool(max_size=2, timeout=0)
    a, b = pool.acquire(), pool.acquire()
    with pytest.raises(PoolExhausted):
        pool.acquire()
    assert pool.stats().timeouts == 1
    first = a.obj
    a.release()
    c = pool.acquire()
    assert c.obj is first
    b.release()
    c.release()


def test_acquire_waits_its_timeout_then_raises(make_pool: MakePool) -> None:
    pool = make_pool(max_size=1)
    held = pool.acquire()
    start = time.monotonic()
    with pytest.raises(PoolExhausted):
        pool.acquire(timeout=0.05)
    assert time.monotonic() - start >= 0.045
    s = pool.stats()
    assert (s.timeouts, s.waiting, s.in_use) == (1, 0, 1)
    first = held.obj
    held.release()
    with pool.acquire(timeout=0) as thing:
        assert thing is first


def test_factory_failure_gives_the_capacity_back(make_pool: MakePool, factory: Factory) -> None:
    pool = make_pool(max_size=1, timeout=0)
    factory.fail_next = 1
    with pytest.raises(RuntimeError, match="on purpose"):
        pool.acquire()
    with pool.acquire():
        pass
    assert pool.stats().created == 1


def test_min_idle_prefills_and_trim_keeps_it(make_pool: MakePool, factory: Factory) -> None:
    pool = make_pool(min_idle=2)
    assert pool.stats().idle == 2
    assert len(factory.made) == 2
    leases = [pool.acquire() for _ in range(5)]
    for lease in leases:
        lease.release()
    assert pool.stats().idle == 5
    assert pool.trim() == 3
    s = pool.stats()
    assert (s.idle, s.disposed, s.alive) == (2, 3, 2)


def test_trim_retires_expired_idle_objects(make_pool: MakePool) -> None:
    pool = make_pool(max_lifetime=0.02, min_idle=1)
    time.sleep(0.03)
    assert pool.trim() == 1
    assert pool.stats().retired == 1


def test_max_idle_disposes_returns_beyond_it(make_pool: MakePool) -> None:
    pool = make_pool(max_idle=1)
    leases = [pool.acquire() for _ in range(3)]
    for lease in leases:
        lease.release()
    s = pool.stats()
    assert (s.idle, s.disposed) == (1, 2)


def test_close_disposes_idle_refuses_acquire_and_reports(
    make_pool: MakePool, factory: Factory
) -> None:
    pool = make_pool(max_size=3)
    out = pool.acquire()
    with pool.acquire():
        pass
    with pytest.warns(ResourceWarning, match="1 object"):
        report = pool.close()
    assert (report.outstanding, report.is_clean, report.stacks) == (1, False, ())
    assert len(factory.disposed) == 1
    with pytest.raises(PoolClosedError):
        pool.acquire()
    thing = out.obj
    out.release()  # returned after close: disposed
    assert thing.disposed
    assert len(factory.disposed) == 2
    assert pool.stats().alive == 0
    assert pool.close().is_clean  # closing twice is harmless


def test_close_report_carries_acquisition_stacks_when_tracking(make_pool: MakePool) -> None:
    pool = make_pool(track_leaks=True)

    def leaky_handler() -> object:
        return pool.acquire()

    lease = leaky_handler()
    with pool.acquire():
        pass
    with pytest.warns(ResourceWarning) as record:
        report = pool.close()
    # the warning names where, as BufferPool's does: `with pool:` drops the report
    assert "1 lease(s) acquired at:" in str(record[0].message)
    assert "return pool.acquire()" in str(record[0].message)
    assert report.outstanding == 1
    assert len(report.stacks) == 1
    assert "leaky_handler" in report.stacks[0]
    # it ends at the acquiring line, not inside the pool (it ended with the pool's own frames)
    assert report.stacks[0].rstrip().endswith("return pool.acquire()")
    lease.release()  # type: ignore[attr-defined]


def test_leak_tracking_follows_the_environment(
    factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOLALLOC_LEAKS", "all")
    pool = ObjectPool(factory)
    lease = pool.acquire()
    with pytest.warns(ResourceWarning):
        assert len(pool.close().stacks) == 1
    lease.release()


def test_pool_is_a_context_manager(make_pool: MakePool, factory: Factory) -> None:
    with make_pool() as pool, pool.acquire():
        pass
    assert pool.is_closed
    assert all(t.disposed for t in factory.made)


def test_dispose_that_raises_is_logged_not_raised(
    factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    def dispose(thing: Thing) -> None:
        raise RuntimeError("cannot close")

    pool = ObjectPool(factory, dispose=dispose, max_idle=0)
    with caplog.at_level(logging.WARNING, logger="poolalloc.objects"), pool.acquire():
        pass
    assert "dispose raised" in caplog.text
    assert pool.stats().disposed == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_size": 0},
        {"max_size": -1},
        {"max_size": True},
        {"min_idle": -1},
        {"min_idle": 3, "max_size": 2},
        {"min_idle": 2, "max_idle": 1},
        {"max_idle": -1},
        {"max_lifetime": 0},
        {"max_lifetime": True},  # was taken as 1 s
        {"max_lifetime": "1"},  # was a bare TypeError from the comparison
        {"max_lifetime": float("nan")},
        {"timeout": -1},
        {"stash_size": -1},
    ],
)
def test_bad_limits_raise_pool_value_error(factory: Factory, kwargs: dict[str, object]) -> None:
    with pytest.raises(PoolValueError):
        ObjectPool(factory, **kwargs)  # type: ignore[arg-type]


def test_limits_take_numpy_integers_as_the_buffer_pools_do(factory: Factory) -> None:
    """Counts of numpy's integer types are counts (``BufferPool`` and ``Allocator`` take them;
    ObjectPool refused them), numpy's bool is not, and a count too long to print is named."""
    pool = ObjectPool(
        factory, max_size=np.int64(4), min_idle=np.int32(1), max_idle=np.uint8(3),
        stash_size=np.int64(2),
    )  # fmt: skip
    try:
        stats = pool.stats()
        assert (stats.max_size, stats.idle) == (4, 1)
        assert type(stats.max_size) is int
    finally:
        pool.close()
    with pytest.raises(
        PoolValueError, match=r"max_size must be an int >= 1 or None, got np\.True_"
    ):
        ObjectPool(factory, max_size=np.True_)  # type: ignore[arg-type]
    with pytest.raises(PoolValueError, match="got an int of 16610 bits"):
        ObjectPool(factory, max_size=-(10**5000))
    with pytest.raises(PoolValueError, match=r"min_idle \(5\) exceeds max_size \(2\)"):
        ObjectPool(factory, max_size=np.int64(2), min_idle=5)


def test_negative_acquire_timeout_is_refused(make_pool: MakePool) -> None:
    pool = make_pool(max_size=1)
    with pool.acquire(), pytest.raises(PoolValueError):
        pool.acquire(timeout=-1)


BAD_TIMEOUTS = [
    pytest.param(-1, PoolValueError, id="negative"),
    pytest.param(float("nan"), PoolValueError, id="nan"),
    pytest.param(float("-inf"), PoolValueError, id="-inf"),
    pytest.param("soon", TypeError, id="str"),
    pytest.param(True, TypeError, id="bool"),
]


@pytest.mark.parametrize(("timeout", "error"), BAD_TIMEOUTS)
@pytest.mark.parametrize("idle", ["idle object", "room to create", "at max_size"])
def test_bad_acquire_timeout_is_refused_whether_or_not_it_must_wait(
    make_pool: MakePool, timeout: object, error: type[Exception], idle: str
) -> None:
    # BufferPool refuses these on every call; an ObjectPool used to look at them only when it
    # had to wait, so the same call passed or failed depending on what was idle
    pool = make_pool(max_size=2)
    held = []
    if idle == "idle object":
        pool.acquire().release()
    elif idle == "at max_size":
        held = [pool.acquire(timeout=0) for _ in range(2)]
    with pytest.raises(error, match="timeout must be"):
        pool.acquire(timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(error, match="timeout must be"), pool.acquire(timeout=timeout):  # type: ignore[arg-type]
        pass
    with pytest.raises(error, match="timeout must be"):
        asyncio.run(_acquire_async_with(pool, timeout))
    for lease in held:
        lease.release()
    assert pool.stats().in_use == 0


@pytest.mark.parametrize("timeout", ["soon", True, [1]])
def test_a_default_timeout_of_no_number_is_a_type_error_as_in_buffer_pools(
    factory: Factory, timeout: object
) -> None:
    # ObjectPool(timeout="soon") said PoolValueError where BufferPool(64, timeout="soon") says
    # TypeError: one check for every pool now
    with pytest.raises(TypeError, match="timeout must be a number"):
        ObjectPool(factory, timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="timeout must be a number"):
        BufferPool(64, timeout=timeout)  # type: ignore[arg-type]


def test_a_timeout_past_every_float_is_no_limit(factory: Factory) -> None:
    # float(10**400) raises OverflowError: acquire(timeout=10**400) leaked it from every pool
    huge = 10**400
    with ObjectPool(factory, max_size=1, timeout=huge) as pool:
        with pool.acquire() as thing:
            assert isinstance(thing, Thing)
        with pool.acquire(timeout=huge):
            pass
        assert asyncio.run(_acquire_async_with(pool, huge)) is None
        with pytest.raises(PoolValueError, match="not a negative int"):
            pool.acquire(timeout=-huge)
        assert pool.stats().in_use == 0


async def _acquire_async_with(pool: ObjectPool[Thing], timeout: object) -> None:
    async with pool.acquire_async(timeout=timeout):  # type: ignore[arg-type]
        pass


def test_non_callable_factory_is_refused() -> None:
    with pytest.raises(TypeError):
        ObjectPool(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("hook", ["reset", "validate", "dispose"])
def test_a_hook_that_cannot_be_called_is_refused(hook: str) -> None:
    # taken, it failed at every use; the failure was only logged and each object disposed
    with pytest.raises(TypeError, match=f"{hook} must be callable or None, got 'clear'"):
        ObjectPool(list, **{hook: "clear"})  # type: ignore[arg-type]


def test_repr_names_the_pool(make_pool: MakePool) -> None:
    pool = make_pool(name="parsers", max_size=2)
    assert repr(pool) == "<ObjectPool 'parsers' max_size=2>"
    lease = pool.acquire()
    assert "Thing" in repr(lease)
    lease.release()
    assert repr(lease) == "<Lease released>"


def test_close_warning_points_at_the_users_with_statement(make_pool: MakePool) -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with make_pool() as pool:
            lease = pool.acquire()
    assert [w.filename for w in record] == [__file__]
    lease.release()


def test_close_warning_names_each_place_once(make_pool: MakePool) -> None:
    pool = make_pool(track_leaks=True)

    def leaky_handler() -> object:
        return pool.acquire()

    leases = [leaky_handler() for _ in range(20)]
    with pytest.warns(ResourceWarning) as record:
        pool.close()
    message = str(record[0].message)
    assert message.count("acquired at:") == 1
    assert "20 lease(s) acquired at:" in message
    for lease in leases:
        lease.release()  # type: ignore[attr-defined]
