"""The lease itself: buffer protocol, views, item access, numpy, sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import numpy as np
import pytest

from poolalloc import Buffer, BufferPool, LeaseReleasedError


@pytest.fixture
def pool() -> Iterator[BufferPool]:
    with BufferPool(4096, capacity=8, name="lease-tests") as p:
        yield p


def test_view_is_exactly_nbytes_writable_bytes(pool: BufferPool) -> None:
    with pool.acquire() as buf:
        view = buf.view
        assert isinstance(buf, Buffer)
        assert (view.nbytes, view.format, view.itemsize, view.readonly) == (4096, "B", 1, False)
        assert view.contiguous
        assert view.ndim == 1
        assert len(buf) == 4096
        view[10] = 99
        assert buf[10] == 99
        view.release()


def test_address_is_aligned_and_matches_numpy(pool: BufferPool) -> None:
    with pool.acquire() as buf:
        arr = np.frombuffer(buf, dtype=np.uint8)
        assert buf.address % 64 == 0
        assert arr.ctypes.data == buf.address
        assert arr.flags.writeable
        assert arr.size == 4096
        del arr


def test_item_access_in_bounds_and_out(pool: BufferPool) -> None:
    with pool.acquire() as buf:
        buf[0] = 1
        buf[-1] = 255
        assert (buf[0], buf[4095], buf[-1]) == (1, 255, 255)
        with pytest.raises(IndexError):
            buf[4096] = 1
        with pytest.raises(IndexError):
            _ = buf[-4097]
        with pytest.raises(ValueError, match="range"):
            buf[0] = 256
        with pytest.raises(TypeError):
            del buf[0]


def test_slice_get_and_set_go_through_memoryview(pool: BufferPool) -> None:
    with pool.acquire() as buf:
        buf[0:4] = b"abcd"
        part = buf[1:3]
        assert bytes(part) == b"bc"
        assert buf.exports == 1
        part.release()
        assert buf.exports == 0


def test_as_array_dtype_and_shape_without_copy(pool: BufferPool) -> None:
    with pool.acquire() as buf:
        arr = buf.as_array("uint32", (32, 32))
        arr[0, 1] = 0x01020304
        assert arr.shape == (32, 32)
        assert arr.dtype == np.uint32
        assert bytes(buf[4:8]) == (0x01020304).to_bytes(4, "little")
        assert buf.as_array().dtype == np.uint8
        del arr


def test_exports_count_views_slices_and_arrays_exactly(pool: BufferPool) -> None:
    buf = pool.acquire()
    view = buf.view
    sub = view[10:20]  # shares the managed buffer of `view`: no new export
    arr = np.frombuffer(buf, np.uint8)
    mv2 = memoryview(buf)
    assert buf.exports == 3
    del view
    assert buf.exports == 3  # `sub` keeps the first export alive
    del sub
    assert buf.exports == 2
    del arr, mv2
    assert buf.exports == 0
    buf.release()


def test_recv_into_lease_on_a_real_socketpair(pool: BufferPool) -> None:
    left, right = socket.socketpair()
    with left, right, pool.acquire() as buf:
        left.sendall(b"pooled bytes")
        n = right.recv_into(buf)
        assert bytes(buf[:n]) == b"pooled bytes"
        right.sendall(b"back")
        n = left.recv_into(buf.view[100:])
        assert bytes(buf[100 : 100 + n]) == b"back"
        assert buf.exports == 0


def test_context_manager_releases_and_tolerates_release_inside(pool: BufferPool) -> None:
    with pool.acquire() as buf:
        pass
    assert buf.released
    with pool.acquire() as buf2:
        buf2.release()
    assert buf2.released
    assert pool.outstanding() == 0


def test_with_block_that_raises_releases_and_does_not_swallow(pool: BufferPool) -> None:
    with pytest.raises(KeyError, match="boom"), pool.acquire() as buf:
        raise KeyError("boom")
    assert buf.released
    assert pool.outstanding() == 0


def test_enter_and_exit_called_directly_behave_like_the_with_statement(pool: BufferPool) -> None:
    buf = pool.acquire()
    assert buf.__enter__() is buf
    assert "Buffer.__exit__" in repr(buf.__exit__)
    assert "__enter__" in repr(Buffer.__enter__)
    assert Buffer.__enter__(buf) is buf
    assert buf.__exit__(None, None, None) is False
    assert buf.released
    # released inside the block: __exit__ has nothing left to do and still returns False
    assert buf.__exit__(KeyError, KeyError("x"), None) is False
    other = pool.acquire()
    assert Buffer.__exit__(other, None, None, None) is False
    assert other.released
    assert pool.outstanding() == 0


def test_enter_and_exit_reject_bad_calls(pool: BufferPool) -> None:
    buf = pool.acquire()
    with pytest.raises(TypeError, match="exactly 3"):
        buf.__exit__()
    with pytest.raises(TypeError, match="exactly 0"):
        buf.__enter__(1)
    with pytest.raises(TypeError, match="keyword"):
        buf.__exit__(None, None, exc_tb=None)
    with pytest.raises(TypeError, match=r"poolalloc\.Buffer"):
        Buffer.__exit__(b"not a lease", None, None, None)
    with pytest.raises(TypeError, match=r"poolalloc\.Buffer"):
        Buffer.__enter__()
    assert not buf.released
    buf.release()


def test_with_statement_allocates_nothing_per_block(pool: BufferPool) -> None:
    import tracemalloc

    def cycle(n: int) -> None:
        for _ in range(n):
            with pool.acquire() as b:
                b[0] = 1

    cycle(100)
    tracemalloc.start()
    try:
        cycle(10)
        before = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        cycle(10_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= before + 256, (before, peak)


def test_released_lease_refuses_every_memory_access(pool: BufferPool) -> None:
    buf = pool.acquire()
    buf.release()
    for touch in (
        lambda: buf.view,
        lambda: buf.address,
        lambda: buf[0],
        buf.as_array,
        lambda: memoryview(buf),
        lambda: np.frombuffer(buf, np.uint8),
        buf.__enter__,
    ):
        with pytest.raises(LeaseReleasedError):
            touch()
    with pytest.raises(LeaseReleasedError):
        buf[0] = 1
    assert buf.released
    assert buf.nbytes == 4096
    assert "released" in repr(buf)


def test_buffer_cannot_be_built_directly() -> None:
    with pytest.raises(TypeError):
        Buffer()
