"""poolalloc: pooled, aligned buffers and objects for high-performance Python IO.

Example:
    >>> import poolalloc
    >>> isinstance(poolalloc.__version__, str)
    True
"""

from __future__ import annotations

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

__version__ = "0.1.0"

__all__ = [
    "CorruptionError",
    "DoubleReleaseError",
    "ForeignBufferError",
    "ForeignLeaseError",
    "LeaseBusyError",
    "LeaseReleasedError",
    "NumaError",
    "PoolClosedError",
    "PoolError",
    "PoolExhausted",
    "PoolMemoryError",
    "PoolOverflowError",
    "PoolValueError",
    "__version__",
    # ObjectPool (objects.py)
    "AsyncAcquire",
    "CloseReport",
    "Lease",
    "ObjectPool",
    "ObjectPoolStats",
]
