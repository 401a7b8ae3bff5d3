"""poolalloc: pooled, aligned buffers and objects for high-performance Python IO.

Example:
    >>> import poolalloc
    >>> isinstance(poolalloc.__version__, str)
    True
"""

from __future__ import annotations

from poolalloc import _moved
from poolalloc._version import __version__
from poolalloc.buffers import Allocator, Buffer, BufferPin, BufferPool
from poolalloc.errors import (
    CorruptionError,
    DoubleReleaseError,
    ForeignBufferError,
    ForeignLeaseError,
    LeaseBusyError,
    LeaseReleasedError,
    NumaError,
    PoolClosedError,
    PoolError,
    PoolExhausted,
    PoolMemoryError,
    PoolOverflowError,
    PoolValueError,
)
from poolalloc.objects import AsyncAcquire, CloseReport, Lease, ObjectPool, ObjectPoolStats
from poolalloc.slab import Block, SlabPool, size_class_of, size_classes
from poolalloc.stats import ClassStats, PoolStats

_moved.install()

__all__ = [
    "Allocator",
    "AsyncAcquire",
    "Block",
    "Buffer",
    "BufferPin",
    "BufferPool",
    "ClassStats",
    "CloseReport",
    "CorruptionError",
    "DoubleReleaseError",
    "ForeignBufferError",
    "ForeignLeaseError",
    "Lease",
    "LeaseBusyError",
    "LeaseReleasedError",
    "NumaError",
    "ObjectPool",
    "ObjectPoolStats",
    "PoolClosedError",
    "PoolError",
    "PoolExhausted",
    "PoolMemoryError",
    "PoolOverflowError",
    "PoolStats",
    "PoolValueError",
    "SlabPool",
    "__version__",
    "size_class_of",
    "size_classes",
]
