"""ViewLeaseBase, the C base of the leases that wrap one memoryview (an incremental ring's
slice, HeldBytes): it exports its view by the buffer protocol on every Python version, and takes
nothing but a memoryview as that view. And window_view, the views an io_uring slice shows."""

from __future__ import annotations

import ctypes
import weakref

import numpy as np
import pytest

from poolalloc._lease import ViewLeaseBase, Window, window_view


def test_exports_its_view_and_refuses_once_it_is_released() -> None:
    lease = ViewLeaseBase(memoryview(bytearray(b"abcdef"))[1:4])
    assert bytes(lease) == b"bcd"
    with memoryview(lease) as mv:
        assert mv.nbytes == 3
        assert not mv.readonly
    released = memoryview(b"x")
    released.release()
    lease.view = released
    with pytest.raises(ValueError, match="released memoryview"):
        memoryview(lease)


def test_without_a_view_it_says_so() -> None:
    lease = ViewLeaseBase()
    with pytest.raises(ValueError, match="no view"):
        memoryview(lease)
    with pytest.raises(AttributeError, match="view"):
        _ = lease.view
    lease.view = memoryview(b"ok")
    del lease.view
    with pytest.raises(ValueError, match="no view"):
        bytes(lease)


class _RunsCode:
    """An exporter whose export runs Python code (PEP 688 on 3.12+) and could free the view."""

    def __init__(self, lease: ViewLeaseBase) -> None:
        self.lease = lease

    def __buffer__(self, flags: int, /) -> memoryview:
        del self.lease.view
        return memoryview(b"x" * 64)


def test_exports_only_a_memoryview() -> None:
    # Anything else could run code during the export (and free the view under it) or lead back
    # to a lease, itself or another viewing it, and export in an endless loop.
    a, b = ViewLeaseBase(), ViewLeaseBase()
    for bad in (b"bytes", bytearray(3), a, b, _RunsCode(a), 3):
        b.view = bad  # type: ignore[assignment]
        with pytest.raises(TypeError, match="must be a memoryview"):
            memoryview(b)
    with pytest.raises(TypeError, match="must be a memoryview"):
        ViewLeaseBase(b)  # type: ignore[arg-type]


def test_window_views_keep_their_window_alive_as_long_as_any_view_of_them_lives() -> None:
    """window_view shows raw bytes through a Window: slices, exports and arrays made from the
    view hold it, so the Window dies with the last of them (what the io_uring ring watches)."""
    backing = bytearray(b"0123456789")
    address = ctypes.addressof((ctypes.c_char * len(backing)).from_buffer(backing))
    view = window_view(address + 2, 5)
    assert bytes(view) == b"23456"
    assert not view.readonly
    window = view.obj
    assert isinstance(window, Window)
    assert window.exports == 1
    gone: list[bool] = []
    weakref.finalize(window, gone.append, True)
    del window
    part = view[1:3]  # a slice shares the view's managed buffer: no new export
    arr = np.frombuffer(view, dtype=np.uint8)  # an export of the view, not of the window
    del view
    assert not gone
    part[0] = ord("x")
    assert backing == bytearray(b"012x456789")
    del part
    assert not gone  # the array still shows the bytes
    assert arr.tolist() == list(b"2x456")
    del arr
    assert gone == [True]
    assert bytes(window_view(address, 0)) == b""
    with pytest.raises(ValueError, match="no 5 bytes"):
        window_view(0, 5)


def test_swapping_a_released_view_asks_its_managed_buffer_not_the_stale_copy() -> None:
    """``with lease.view as v`` releases the lease's own view: its Window is gone with it unless
    a slice still holds the bytes, and ``_swap_view`` must say so without touching the freed
    Window (the released view keeps a stale pointer to it)."""
    backing = bytearray(64)
    address = ctypes.addressof((ctypes.c_char * len(backing)).from_buffer(backing))
    released = memoryview(b"")
    released.release()
    others = []
    for _ in range(2000):
        lease = ViewLeaseBase(window_view(address, 8))
        with lease.view as shown:
            shown[0] = 1
        others.append(window_view(address + 32, 8))  # a live Window where the freed one was
        assert lease._swap_view(released) is None
    lease = ViewLeaseBase(window_view(address, 8))
    part = lease.view[2:4]  # a slice holds the managed buffer: the bytes are still viewed
    lease.view.release()
    window = lease._swap_view(released)
    assert isinstance(window, Window)
    assert window.exports == 1
    del part
    assert window.exports == 0
