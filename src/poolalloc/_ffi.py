"""The only module that touches the compiled core ``poolalloc._native``.

Thin typed wrappers named after the C functions (``pa_`` dropped). Pointers cross this layer as
plain ``int`` addresses and pools as an opaque :class:`PoolHandle`; every C return code goes
through :func:`poolalloc.errors.check_rc`. Nothing here is public API: ``slab.py`` and the
buffer layer build the friendly objects on top.

Example:
    >>> from poolalloc import _ffi
    >>> h = _ffi.pool_create()
    >>> addr = _ffi.alloc(h, 100, 64)
    >>> _ffi.block_size(addr)
    128
    >>> _ffi.free(addr)
    >>> _ffi.pool_destroy(h)
"""

from __future__ import annotations

import errno
import threading
from typing import Any, Final, NewType

from poolalloc._ints import integer, shown
from poolalloc._native import ffi, lib
from poolalloc.errors import PoolOverflowError, PoolValueError, check_rc

#: An opaque pool pointer (a cffi ``pa_pool_t *``); only this module looks inside.
PoolHandle = NewType("PoolHandle", object)

MIN_ALIGN: Final[int] = int(lib.PA_MIN_ALIGN)
PAGE_ALIGN: Final[int] = int(lib.PA_PAGE_ALIGN)
MAX_ALIGN: Final[int] = int(lib.PA_MAX_ALIGN)
NUMA_ANY: Final[int] = int(lib.PA_NUMA_ANY)
NUMA_LOCAL: Final[int] = int(lib.PA_NUMA_LOCAL)
DEBUG_POISON: Final[int] = int(lib.PA_DEBUG_POISON)
DEBUG_CANARY: Final[int] = int(lib.PA_DEBUG_CANARY)
DEBUG_UNPOOLED: Final[int] = int(lib.PA_DEBUG_UNPOOLED)
FAULT_MAP: Final[int] = int(lib.PA_FAULT_MAP)
FAULT_BIND: Final[int] = int(lib.PA_FAULT_BIND)
API_VERSION: Final[int] = int(lib.PA_API_VERSION)

_SIZE_LIMIT: Final[int] = 1 << 64

STATS_FIELDS: Final[tuple[str, ...]] = (
    "mapped_bytes", "mapped_peak", "in_use_bytes", "in_use_blocks", "in_use_peak", "allocs",
    "frees", "cache_hits", "cache_misses", "depot_exchanges", "trims", "trimmed_bytes",
    "failed_allocs", "huge_allocs", "numa_node", "numa_bound", "closed", "debug",
)  # fmt: skip
CLASS_STATS_FIELDS: Final[tuple[str, ...]] = (
    "block_size", "slab_bytes", "slabs", "in_use_blocks", "free_blocks", "allocs", "frees",
    "cache_hits", "cache_misses", "depot_exchanges",
)  # fmt: skip


def _size(value: int, what: str = "size") -> int:
    """``value`` as an int, an integer of numpy's too; no bool (numpy's bool has no
    ``__index__``), nothing negative or past a size_t."""
    try:
        value = integer(value, what)
    except TypeError as exc:  # SlabPool's convention: the core's EINVAL, as for a negative
        raise PoolValueError(str(exc), errno.EINVAL) from None
    if value < 0:
        raise PoolValueError(f"{what} must not be negative: {shown(value)}", errno.EINVAL)
    if value >= _SIZE_LIMIT:
        raise PoolOverflowError(f"{what} does not fit in size_t: {shown(value)}", errno.EOVERFLOW)
    return value


def _check_request(size: int, align: int) -> None:
    """Name the argument the core refused with EINVAL (its return code cannot say which)."""
    _size(size)
    _size(align, "alignment")
    if size == 0:
        raise PoolValueError("size must be at least 1 byte, not 0", errno.EINVAL)
    if align & (align - 1) or align == 0:
        raise PoolValueError(
            f"alignment must be a power of two (64, 128, ..., 4096, ...), not {align}", errno.EINVAL
        )
    if align > MAX_ALIGN:
        raise PoolValueError(f"alignment must be at most {MAX_ALIGN}, not {align}", errno.EINVAL)


def _ptr(address: int) -> object:
    return ffi.cast("void *", _size(address, "address"))


def _addr(cdata: object) -> int:
    return int(ffi.cast("uintptr_t", cdata))


# ---- pools ----


def pool_create(
    max_bytes: int = 0,
    retain_bytes: int | None = None,
    numa_node: int = NUMA_ANY,
    debug: int = 0,
    decay_ms: int | None = None,
) -> PoolHandle:
    """``pa_pool_create``; None retain_bytes or decay_ms keeps the C default."""
    cfg = ffi.new("pa_config_t *")
    lib.pa_config_init(cfg)
    cfg.max_bytes = _size(max_bytes, "max_bytes")
    if retain_bytes is not None:
        cfg.retain_bytes = _size(retain_bytes, "retain_bytes")
    if decay_ms is not None:
        cfg.decay_ms = _size(decay_ms, "decay_ms")
    cfg.numa_node = numa_node
    cfg.debug = debug
    out = ffi.new("pa_pool_t **")
    rc = lib.pa_pool_create(cfg, out)
    context = "pool_create"
    if rc == errno.ENODEV:
        context = f"NUMA node {numa_node} does not exist (nodes present: {_node_list()})"
    check_rc(rc, context)
    return PoolHandle(out[0])


def _node_list() -> str:
    count = numa_node_count()
    return "0" if count == 1 else f"0-{count - 1}"


def pool_close(pool: PoolHandle) -> None:
    """``pa_pool_close``: refuse new allocations, trim what is free."""
    check_rc(lib.pa_pool_close(pool), "pool_close")


CLOSE_REPORT_FIELDS: Final[tuple[str, ...]] = (
    "caches_reclaimed", "caches_busy", "reclaimed_bytes", "mapped_bytes", "in_use_bytes",
)  # fmt: skip


def pool_close_report(pool: PoolHandle) -> dict[str, int]:
    """``pa_pool_close_report``: close, empty idle threads' caches, say what is left."""
    out = ffi.new("pa_close_report_t *")
    check_rc(lib.pa_pool_close_report(pool, out), "pool_close")
    return _fields(out, CLOSE_REPORT_FIELDS)


def pool_decay(pool: PoolHandle, max_age_ms: int = 0) -> int:
    """``pa_pool_decay``; returns the bytes given back to the OS."""
    out = ffi.new("size_t *")
    check_rc(lib.pa_pool_decay(pool, _size(max_age_ms, "max_age_ms"), out), "pool_decay")
    return int(out[0])


def pool_destroy(pool: PoolHandle) -> None:
    """``pa_pool_destroy``: drop the handle (closes the pool)."""
    lib.pa_pool_destroy(pool)


def pool_trim(pool: PoolHandle) -> int:
    """``pa_pool_trim``; returns the bytes given back to the OS."""
    out = ffi.new("size_t *")
    check_rc(lib.pa_pool_trim(pool, out), "pool_trim")
    return int(out[0])


def _fields(cdata: object, names: tuple[str, ...]) -> dict[str, int]:
    return {name: int(getattr(cdata, name)) for name in names}


def pool_stats(pool: PoolHandle) -> dict[str, int]:
    """``pa_pool_stats`` as a dict keyed by the C field names."""
    out = ffi.new("pa_stats_t *")
    check_rc(lib.pa_pool_stats(pool, out), "pool_stats")
    return _fields(out, STATS_FIELDS)


def pool_node_stats(pool: PoolHandle, node: int) -> dict[str, int]:
    """``pa_pool_node_stats`` as a dict keyed by the C field names."""
    out = ffi.new("pa_stats_t *")
    check_rc(lib.pa_pool_node_stats(pool, node, out), f"pool_node_stats(node={node})")
    return _fields(out, STATS_FIELDS)


def pool_class_stats(pool: PoolHandle, cls: int) -> dict[str, int]:
    """``pa_pool_class_stats`` as a dict keyed by the C field names."""
    out = ffi.new("pa_class_stats_t *")
    check_rc(lib.pa_pool_class_stats(pool, cls, out), "pool_class_stats")
    return _fields(out, CLASS_STATS_FIELDS)


def pool_check(pool: PoolHandle) -> None:
    """``pa_pool_check``: raise CorruptionError / ForeignBufferError when it fails."""
    check_rc(lib.pa_pool_check(pool), "pool_check")


def pool_address(pool: PoolHandle) -> int:
    """The integer address of the ``pa_pool_t`` (for the lease extension)."""
    return _addr(pool)


def api_address() -> int:
    """The integer address of the core's ``pa_api_t`` table (for the lease extension)."""
    return _addr(lib.pa_api())


# ---- blocks ----


def alloc(pool: PoolHandle, size: int, align: int = MIN_ALIGN) -> int:
    """``pa_alloc``; returns the block's address."""
    return alloc_sized(pool, size, align)[0]


class _OutParams(threading.local):
    """Per-thread out-parameters, so that the hot calls allocate no cffi objects."""

    def __init__(self) -> None:
        self.addr = ffi.new("uintptr_t *")
        self.usable = ffi.new("size_t *")


_out = _OutParams()


def alloc_sized(pool: PoolHandle, size: int, align: int = MIN_ALIGN) -> tuple[int, int]:
    """``pa_alloc`` + ``pa_block_size`` in one call: (address, usable bytes)."""
    out = _out
    try:
        rc = lib.pa_py_alloc(pool, size, align, out.addr, out.usable)
    except (TypeError, OverflowError):
        rc = lib.pa_py_alloc(pool, _size(size), _size(align, "alignment"), out.addr, out.usable)
    if rc:
        if rc == errno.EINVAL:
            _check_request(size, align)
        check_rc(rc, "alloc")
    return int(out.addr[0]), int(out.usable[0])


def alloc_batch(pool: PoolHandle, size: int, align: int, n: int) -> list[int]:
    """``pa_alloc_batch``: n blocks, all or nothing."""
    out = ffi.new("void *[]", max(_size(n, "n"), 1))
    rc = lib.pa_alloc_batch(pool, _size(size), _size(align, "alignment"), n, out)
    if rc == errno.EINVAL:
        _check_request(size, align)
    check_rc(rc, "alloc")
    return [_addr(out[i]) for i in range(n)]


def free(address: int) -> None:
    """``pa_free`` of any integer address (foreign ones raise ForeignBufferError)."""
    try:
        rc = lib.pa_py_free(address)
    except (TypeError, OverflowError):
        rc = lib.pa_py_free(_size(address, "address"))
    if rc:
        check_rc(rc, "free")


def free_batch(addresses: list[int]) -> int:
    """``pa_free_batch``; returns how many went back (raises at the first bad one)."""
    ptrs = ffi.new("void *[]", [_ptr(a) for a in addresses] or [ffi.NULL])
    freed = ffi.new("size_t *")
    rc = lib.pa_free_batch(ptrs, len(addresses), freed)
    check_rc(rc, f"free_batch (freed {int(freed[0])})")
    return int(freed[0])


def block_size(address: int) -> int:
    """``pa_block_size``: usable bytes of the live block at ``address``."""
    out = ffi.new("size_t *")
    check_rc(lib.pa_block_size(_ptr(address), out), "block_size")
    return int(out[0])


def block_pool_address(address: int) -> int:
    """``pa_block_pool``, as the owning pool's integer address."""
    out = ffi.new("pa_pool_t **")
    check_rc(lib.pa_block_pool(_ptr(address), out), "block_pool")
    return _addr(out[0])


def write(address: int, data: bytes | bytearray | memoryview) -> None:
    """Copy ``data`` to memory at ``address`` (the caller checked the bounds)."""
    src = ffi.from_buffer("char[]", data)
    ffi.memmove(ffi.cast("char *", address), src, len(src))


def read(address: int, n: int) -> bytes:
    """Copy ``n`` bytes from memory at ``address`` (the caller checked the bounds)."""
    return bytes(ffi.buffer(ffi.cast("char *", address), n))


def buffer(address: int, n: int) -> memoryview:
    """A writable memoryview of ``n`` bytes at ``address``; it does not own the memory."""
    return memoryview(ffi.buffer(ffi.cast("char *", address), n))


# ---- size classes ----


def class_count() -> int:
    """``pa_class_count``."""
    return int(lib.pa_class_count())


def class_info(cls: int) -> tuple[int, int]:
    """``pa_class_info``: (block_size, slab_bytes)."""
    bs, slab = ffi.new("size_t *"), ffi.new("size_t *")
    check_rc(lib.pa_class_info(cls, bs, slab), "class_info")
    return int(bs[0]), int(slab[0])


def size_class(size: int, align: int = MIN_ALIGN) -> int | None:
    """``pa_size_class``: the class index, or None above the largest class."""
    out = ffi.new("unsigned *")
    rc = lib.pa_size_class(_size(size), _size(align, "alignment"), out)
    if rc == errno.ERANGE:
        return None
    if rc == errno.EINVAL:
        _check_request(size, align)
    check_rc(rc, "size_class")
    return int(out[0])


# ---- tests: fault injection and a fake NUMA topology ----


def fault_set(what: int, skip: int, count: int, err: int = errno.ENOMEM) -> None:
    """``pa_fault_set``: fail the OS call ``what`` ``count`` times after ``skip`` successes."""
    check_rc(lib.pa_fault_set(what, skip, count, err), "fault_set")


def numa_fake(nodes: int, cpu_to_node: list[int]) -> None:
    """``pa_numa_fake``; ``numa_fake(0, [])`` restores the real topology."""
    table = ffi.new("int[]", cpu_to_node or [0])
    check_rc(lib.pa_numa_fake(nodes, table, len(cpu_to_node)), "numa_fake")


def numa_fake_set_cpu(cpu: int) -> None:
    """``pa_numa_fake_set_cpu``: the calling thread now appears to run on ``cpu``."""
    check_rc(lib.pa_numa_fake_set_cpu(cpu), "numa_fake_set_cpu")


def numa_page_node(address: int) -> int:
    """``pa_numa_page_node``: the node of the page at ``address``."""
    out = ffi.new("int *")
    check_rc(lib.pa_numa_page_node(_ptr(address), out), "numa_page_node")
    return int(out[0])


def numa_node_count() -> int:
    """``pa_numa_node_count``."""
    out = ffi.new("unsigned *")
    check_rc(lib.pa_numa_node_count(out), "numa_node_count")
    return int(out[0])


# ---- io_uring ----
#: The same ffi/lib for the io_uring bindings, ``poolalloc/net/uring/ring.py`` (the io_uring corner
#: of this layer: it keeps every cffi object to itself, so ``Any`` stops there too).
uring_ffi: Final[Any] = ffi
uring_lib: Final[Any] = lib
