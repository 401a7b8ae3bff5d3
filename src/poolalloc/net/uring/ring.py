"""Typed bindings of the io_uring part of the native core (``native/include/pa_uring.h``).

This module is the io_uring corner of the binding layer: it takes ``ffi`` and ``lib`` from
:mod:`poolalloc._ffi` (the only module that imports the compiled ``_native``) and keeps every
cffi object behind small typed classes. The proactor above it sees ints, bytes-like objects and
tuples of ``(user_data, res, flags)``.

Example:
    >>> from poolalloc.net.uring.ring import probe
    >>> isinstance(probe().reason, str)
    True
"""

from __future__ import annotations

import errno
import os
import struct
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from poolalloc._ffi import uring_ffi as ffi
from poolalloc._ffi import uring_lib as lib
from poolalloc.errors import check_rc
from poolalloc.net.uring._fastpath import CopySender

__all__ = [
    "CQE_BUFFER_SHIFT",
    "CQE_F_BUFFER",
    "CQE_F_BUF_MORE",
    "CQE_F_MORE",
    "CQE_F_NOTIF",
    "CSEND_MAX",
    "CSEND_PENDING_MAX",
    "SEND_MAX",
    "BufRing",
    "ProbeResult",
    "Ring",
    "cqe_error",
    "new_iov",
    "pin",
    "probe",
]

CQE_F_BUFFER = 1
CQE_F_MORE = 2
CQE_F_NOTIF = 8
#: an incremental buffer (``IOU_PBUF_RING_INC``) the kernel goes on filling after this completion
CQE_F_BUF_MORE = int(lib.PA_URING_CQE_F_BUF_MORE)
CQE_BUFFER_SHIFT = 16
#: largest write :meth:`Ring.csend` copies, and how much it buffers behind a send in flight
CSEND_MAX = int(lib.PA_URING_CSEND_MAX)
CSEND_PENDING_MAX = int(lib.PA_URING_CSEND_PENDING_MAX)
#: most one send moves (the kernel's ``MAX_RW_COUNT``); :meth:`Ring.prep_send_buffer` refuses more
SEND_MAX = int(lib.PA_URING_SEND_MAX)
_CSEND_DECLINED = frozenset({errno.EMSGSIZE, errno.EAGAIN, errno.EPIPE})
_CQE = struct.Struct("=QiI")
_from_buffer = ffi.from_buffer
_prep_send = lib.pa_uring_prep_send
_prep_sendv = lib.pa_uring_prep_sendv


def cqe_error(res: int) -> OSError:
    """The exception for a failed completion: the one place where ``-res`` becomes an errno.

    Example:
        >>> cqe_error(-104).errno == 104
        True
    """
    code = -res
    return OSError(code, os.strerror(code))


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`probe` found; ``code == 0`` means io_uring is usable here.

    Example:
        >>> p = probe(); p.ok == (p.code == 0)
        True
    """

    code: int
    reason: str
    setup_flags: int
    features: int
    has_send_zc: bool
    has_splice: bool
    io_uring_disabled: int
    seccomp: int
    memlock_bytes: int
    #: incremental provided buffers (``IOU_PBUF_RING_INC``, Linux 6.12); optional
    has_pbuf_inc: bool = False

    @property
    def ok(self) -> bool:
        """True when the proactor can run."""
        return self.code == 0


def probe() -> ProbeResult:
    """Build a test ring and report what the kernel and the process limits allow.

    Example:
        >>> probe().memlock_bytes > 0
        True
    """
    out = ffi.new("pa_uring_probe_t *")
    check_rc(lib.pa_uring_probe(out), "io_uring probe")
    return ProbeResult(
        code=int(out.code),
        reason=ffi.string(out.reason).decode("utf-8", "replace"),
        setup_flags=int(out.setup_flags),
        features=int(out.features),
        has_send_zc=bool(out.has_send_zc),
        has_splice=bool(out.has_splice),
        io_uring_disabled=int(out.disabled),
        seccomp=int(out.seccomp),
        memlock_bytes=int(out.memlock_cur),
        has_pbuf_inc=bool(out.has_pbuf_inc),
    )


class Ring:
    """One io_uring instance with a completion array that Python walks in batches.

    The ``prep_*`` methods queue a submission; :meth:`enter` submits them all, waits and yields
    the completions. Memory passed to a send stays owned by the caller until its completion.
    ``single_issuer`` binds the ring to the first thread that calls :meth:`enter`
    (``SINGLE_ISSUER`` + ``DEFER_TASKRUN``); other threads then get ``EEXIST``.

    Example:
        >>> r = Ring(8)
        >>> r.prep_nop(5)
        >>> list(r.enter(1, -1))
        [(5, 0, 0)]
        >>> r.close()

    :raises OSError: the kernel refused the ring (see :func:`probe` for why).
    """

    def __init__(
        self, entries: int = 256, completions: int = 4096, *, single_issuer: bool = False
    ) -> None:
        out = ffi.new("pa_uring_t **")
        options = lib.PA_URING_SINGLE_ISSUER if single_issuer else 0
        check_rc(lib.pa_uring_create(entries, options, out), "io_uring_setup")
        self._ring: Any = out[0]
        self._cap = completions
        self._cqes: Any = ffi.new("pa_uring_cqe_t[]", completions)
        self._cq_mem = memoryview(ffi.buffer(self._cqes)).cast("B")
        self._n: Any = ffi.new("unsigned *")
        self._busy: Any = ffi.new("int *")
        self._csent: Any = ffi.new("uint64_t *")
        #: ``csend_raw(fd, data, len(data), ud) -> errno``: :meth:`csend` without a Python frame
        #: or an exception, for the write path (any nonzero code: send it the ordinary way);
        #: a direct call into the C function (``_fastpath.CopySender``), not one through cffi
        self.csend_raw: Callable[[int, bytes, int, int], int] = CopySender(
            int(ffi.cast("uintptr_t", ffi.addressof(lib, "pa_uring_csend"))),
            int(ffi.cast("uintptr_t", self._ring)),
        )
        self.setup_flags = int(lib.pa_uring_setup_flags(self._ring))
        self.fd = int(lib.pa_uring_fd(self._ring))
        # closed with the ring: a buffer ring's C side points into the ring's
        self._bufrings: weakref.WeakSet[BufRing] = weakref.WeakSet()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return not self._ring

    def enter(self, wait_nr: int, timeout_ns: int) -> Iterator[tuple[int, int, int]]:
        """Submit what is queued, wait for ``wait_nr`` completions, return ``(ud, res, flags)``.

        ``timeout_ns`` < 0 waits without limit, 0 never waits.

        :raises OSError: the ring failed (``ECHILD`` when used in a forked child).
        """
        return _CQE.iter_unpack(self.reap(wait_nr, timeout_ns))

    def reap(self, wait_nr: int, timeout_ns: int) -> memoryview:
        """:meth:`enter`, returning the completions as they were copied out: 16 bytes each
        (``=QiI``), valid until the next call.

        :raises OSError: the ring failed (``ECHILD`` when used in a forked child).
        """
        check_rc(
            lib.pa_uring_enter(self._ring, wait_nr, timeout_ns, self._cqes, self._cap, self._n),
            "io_uring_enter",
        )
        return self._cq_mem[: self._n[0] * 16]

    def csend(self, fd: int, data: bytes, ud: int) -> int:
        """Copy ``data`` and send it on ``fd`` after the earlier copied sends; returns 0, or an
        errno code when the caller must send it itself (``EMSGSIZE`` over
        :data:`CSEND_MAX`, ``EAGAIN`` when :data:`CSEND_PENDING_MAX` bytes already wait,
        ``EPIPE`` after a failed one). Nothing needs keeping alive. Its completions are handled
        in C: ``ud`` gets an event only when a send fails (``res`` < 0) or, after
        :meth:`csend_busy` asked, once all is sent (``res`` 0).

        :raises OSError: the ring is unusable (``ECHILD`` in a forked child).
        """
        rc = self.csend_raw(fd, data, len(data), ud)
        if rc and rc not in _CSEND_DECLINED:
            check_rc(rc, "send")
        return int(rc)

    def csend_busy(self, fd: int, ud: int, *, notify: bool = True) -> int:
        """1 while copied sends of ``fd`` are in flight (then, with ``notify``, ``ud`` gets the
        event with ``res`` 0 once they are all sent), ``-EPIPE`` after one failed, else 0."""
        check_rc(lib.pa_uring_csend_busy(self._ring, fd, int(notify), ud, self._busy), "send")
        return int(self._busy[0])

    def csend_sent(self, fd: int) -> int:
        """Bytes of ``fd``'s copied sends the kernel completed since the last call (counted at
        completion, as a plain send counts what it sent); 0 on a closed ring."""
        if not self._ring:
            return 0
        check_rc(lib.pa_uring_csend_sent(self._ring, fd, self._csent), "send")
        return int(self._csent[0])

    def csend_detach(self, fd: int) -> int:
        """Forget ``fd``'s copied sends before it is closed (one in flight is cancelled); a
        closed ring has none left. Returns what :meth:`csend_sent` would have just before."""
        if not self._ring:
            return 0
        check_rc(lib.pa_uring_csend_detach(self._ring, fd, self._csent), "cancel")
        return int(self._csent[0])

    def csend_inflight(self) -> int:
        """Copied sends still in flight, detached ones included."""
        return int(lib.pa_uring_csend_inflight(self._ring))

    @property
    def registered_index(self) -> int:
        """The registered ring fd index it enters by (``IORING_REGISTER_RING_FDS``), -1 when
        none: only ``single_issuer`` rings register, at their first :meth:`enter`."""
        return int(lib.pa_uring_registered_index(self._ring))

    def pending(self) -> int:
        """Submissions queued and not yet handed to the kernel."""
        return int(lib.pa_uring_pending(self._ring))

    def submit(self) -> None:
        """Hand what is queued to the kernel now (no wait, no completions reaped).

        A queued submission names its socket by fd number, which the kernel resolves only when
        it is submitted: a connection submits before it closes its socket, so that nothing
        queued for it can act on a socket that reuses the number.

        :raises OSError: the ring failed (``ECHILD`` in a forked child).
        """
        if self._ring:  # closed: nothing queued, no system call
            check_rc(lib.pa_uring_submit(self._ring), "io_uring_enter")

    def prep_nop(self, ud: int) -> None:
        """Queue a no-op (tests, wakeups)."""
        check_rc(lib.pa_uring_prep_nop(self._ring, ud), "nop")

    def prep_accept(self, fd: int, ud: int, multishot: bool = True) -> None:
        """Queue an accept; multishot posts one completion per connection."""
        check_rc(lib.pa_uring_prep_accept(self._ring, fd, multishot, ud), "accept")

    def prep_recv(self, fd: int, bgid: int, ud: int, multishot: bool = True) -> None:
        """Queue a receive into a buffer the kernel picks from group ``bgid``."""
        check_rc(lib.pa_uring_prep_recv(self._ring, fd, bgid, multishot, ud), "recv")

    def prep_send(self, fd: int, address: int, nbytes: int, ud: int, zc: bool = False) -> None:
        """Queue a send of ``nbytes`` at ``address`` (zero-copy when ``zc``)."""
        check_rc(
            lib.pa_uring_prep_send(self._ring, fd, ffi.cast("void *", address), nbytes, zc, ud),
            "send",
        )

    def prep_send_buffer(self, fd: int, data: Any, ud: int, zc: bool = False) -> Any:
        """Queue a send of the whole of ``data`` (any buffer); returns the handle that must be
        kept alive until the completion (it pins ``data``'s memory)."""
        keep = _from_buffer(data)
        rc = _prep_send(self._ring, fd, keep, len(keep), zc, ud)
        if rc:
            # release the pin now: a traceback cycle must never hold an exported memoryview
            ffi.release(keep)
            check_rc(rc, "send")
        return keep

    def prep_sendmsg(self, fd: int, iov: Any, n: int, msg: Any, ud: int) -> None:
        """Queue a gather send of ``n`` iovecs (cffi arrays made by :func:`new_iov`)."""
        check_rc(lib.pa_uring_prep_sendmsg(self._ring, fd, iov, n, msg, ud), "sendmsg")

    def prep_sendv(self, fd: int, views: list[Any], iov: Any, msg: Any, ud: int) -> list[Any]:
        """Queue a gather send of ``views`` (buffers, at most as many as ``iov`` holds, see
        :func:`new_iov`): C writes the iovecs into ``iov``, so Python builds none of them.
        Returns the handles pinning the views' memory: they, ``iov`` and ``msg`` must be kept
        alive until the completion."""
        pins = [_from_buffer(view) for view in views]
        rc = _prep_sendv(self._ring, fd, pins, [len(p) for p in pins], len(pins), iov, msg, ud)
        if rc:
            pins.clear()  # release the pins now, as prep_send_buffer does
            check_rc(rc, "sendmsg")
        return pins

    def prep_splice(
        self, fd_in: int, fd_out: int, *, nbytes: int, ud: int, off_in: int = -1, off_out: int = -1
    ) -> None:
        """Queue a splice (``off`` -1: the descriptor's own position, required for pipes)."""
        rc = lib.pa_uring_prep_splice(self._ring, fd_in, off_in, fd_out, off_out, nbytes, ud)
        check_rc(rc, "splice")

    def prep_poll(self, fd: int, events: int, ud: int, multishot: bool = True) -> None:
        """Queue a readiness poll on ``fd``."""
        check_rc(lib.pa_uring_prep_poll(self._ring, fd, events, multishot, ud), "poll")

    def prep_cancel(self, ud: int, target: int = 0, fd: int = -1) -> None:
        """Queue the cancellation of every operation on ``fd``, or of the one tagged ``target``."""
        check_rc(lib.pa_uring_prep_cancel(self._ring, fd, target, ud), "cancel")

    def prep_cancel_all(self, ud: int) -> None:
        """Queue the cancellation of every operation in flight on this ring."""
        check_rc(lib.pa_uring_prep_cancel_all(self._ring, ud), "cancel all")

    def close(self) -> None:
        """Tear the ring down (idempotent), its buffer rings first. Every call on a closed
        ring raises ``OSError(EBADF)`` but :meth:`close`, :meth:`submit` and the counters
        (which say 0)."""
        if self._ring:
            try:
                for bufring in list(self._bufrings):
                    bufring.close()
            finally:  # a buffer ring that failed to unregister still goes with the ring
                self.csend_raw = _closed_csend  # the CopySender holds the pointer freed below
                self._cq_mem.release()
                ring, self._ring = self._ring, ffi.NULL  # the C functions answer EBADF for NULL
                self.fd = -1
                lib.pa_uring_destroy(ring)

    def new_bufring(self, bgid: int, entries: int, *, incremental: bool = False) -> BufRing:
        """Register a provided-buffer ring of ``entries`` (a power of two) as group ``bgid``;
        ``incremental``: receives consume its buffers bit by bit (``IOU_PBUF_RING_INC``).

        :raises OSError: the kernel refused it (``EINVAL`` for ``incremental`` before 6.12).
        """
        bufring = BufRing(self._ring, bgid, entries, incremental=incremental)
        self._bufrings.add(bufring)
        return bufring


def _closed_csend(fd: int, data: bytes, n: int, ud: int) -> int:
    return errno.EBADF


def new_iov(n: int) -> tuple[Any, Any]:
    """Storage for a sendmsg of up to ``n`` buffers: ``(iovec array, msghdr storage)``.

    Example:
        >>> iov, msg = new_iov(4)
    """
    return ffi.new("uint64_t[]", 2 * n), ffi.new("pa_uring_msg_t *")


def pin(data: Any) -> tuple[Any, int]:
    """A cffi handle that keeps ``data``'s memory alive and its address.

    Example:
        >>> keep, addr = pin(b"abc"); addr > 0
        True
    """
    handle = ffi.from_buffer(data)
    return handle, int(ffi.cast("uintptr_t", handle))


class BufRing:
    """A provided-buffer ring (``IORING_REGISTER_PBUF_RING``); entries are staged then published.

    Example:
        >>> r = Ring(8); b = r.new_bufring(1, 8)
        >>> b.close(); r.close()
    """

    def __init__(self, ring: Any, bgid: int, entries: int, *, incremental: bool = False) -> None:
        out = ffi.new("pa_bufring_t **")
        flags = lib.PA_URING_BUFRING_INC if incremental else 0
        rc = lib.pa_uring_bufring_create(ring, bgid, entries, flags, out)
        check_rc(rc, "IORING_REGISTER_PBUF_RING")
        self._br: Any = out[0]
        self.bgid = bgid
        self.entries = entries
        self.incremental = incremental
        self._add = lib.pa_uring_bufring_add

    def add(self, address: int, nbytes: int, bid: int) -> None:
        """Stage one buffer (not visible to the kernel before :meth:`publish`)."""
        rc = self._add(self._br, address, nbytes, bid)
        if rc:
            check_rc(rc, "buffer ring add")

    def add_many(self, entries: list[tuple[int, int]], nbytes: int) -> None:
        """Stage ``(address, bid)`` buffers of ``nbytes`` each and publish them."""
        add, br = self._add, self._br
        if not br:  # closed: said also when there is nothing to stage
            check_rc(errno.EBADF, "buffer ring add")
        for address, bid in entries:
            rc = add(br, address, nbytes, bid)
            if rc:
                check_rc(rc, "buffer ring add")
        lib.pa_uring_bufring_publish(br)

    def publish(self) -> None:
        """Make every staged buffer visible to the kernel."""
        if not self._br:
            check_rc(errno.EBADF, "buffer ring publish")
        lib.pa_uring_bufring_publish(self._br)

    def readd(self, bids: Any) -> None:
        """Stage again and publish the blocks last added under ``bids`` (an ``array('H')``)."""
        if not self._br:
            check_rc(errno.EBADF, "readd")
        if bids:
            ptr = _from_buffer("uint16_t[]", bids)
            check_rc(lib.pa_uring_bufring_readd(self._br, ptr, len(bids)), "readd")

    def close(self) -> None:
        """Unregister and unmap (idempotent; the owning :class:`Ring`'s close does it too).
        A closed buffer ring's calls raise ``OSError(EBADF)``."""
        if self._br:
            br, self._br = self._br, ffi.NULL
            check_rc(lib.pa_uring_bufring_destroy(br), "IORING_UNREGISTER_PBUF_RING")
