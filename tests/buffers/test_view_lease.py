"""ViewLeaseBase, the C base of the leases that wrap one memoryview (an incremental ring's
slice, HeldBytes): it exports its view by the buffer protocol on every Python version, and takes
nothing but a memoryview as that view."""

from __future__ import annotations

import pytest

from poolalloc._lease import ViewLeaseBase


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


def test_dropping_the_view_says_whether_it_is_still_exported() -> None:
    released = memoryview(b"")
    released.release()
    shown = memoryview(bytearray(b"abc"))
    lease = ViewLeaseBase(shown)
    assert lease._drop_view(released) is None  # nothing exported: nothing to wait for
    assert lease.view is released
    lease.view = shown
    export = memoryview(lease)
    assert lease._drop_view(released) is shown  # exported: the caller waits for the export
    export.release()
    lease.view = shown
    assert lease._drop_view(released) is None
