"""The exceptions of poolalloc, and the one table that turns C error codes into them.

Every fallible C function returns 0 or a positive errno value. :func:`check_rc` is the only
place that maps such a code to an exception, so the mapping below is the whole contract
(``docs/errors.md`` is checked against it by a test). Each exception is also the builtin a
caller would expect (``MemoryError``, ``ValueError``...), so ``except MemoryError`` keeps
working for code that knows nothing of poolalloc.

Example:
    >>> import errno
    >>> from poolalloc.errors import check_rc, PoolExhausted
    >>> try:
    ...     check_rc(errno.ENOSPC, "acquire")
    ... except PoolExhausted as exc:
    ...     print(exc.errno == errno.ENOSPC, isinstance(exc, MemoryError))
    True True
"""

from __future__ import annotations

import errno as _errno
import os


class PoolError(Exception):
    """Base class of every poolalloc error; ``errno`` holds the C code when there is one.

    Example:
        >>> issubclass(PoolClosedError, PoolError)
        True
    """

    errno: int | None = None

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.errno = code


class PoolMemoryError(PoolError, MemoryError):
    """The operating system refused memory (``mmap`` failed, ``ENOMEM``).

    Example:
        >>> issubclass(PoolMemoryError, MemoryError)
        True
    """


class PoolExhausted(PoolMemoryError):
    """The pool reached its capacity and the wait (if any) ran out (``ENOSPC``).

    Example:
        >>> issubclass(PoolExhausted, MemoryError)
        True
    """


class PoolValueError(PoolError, ValueError):
    """An argument is out of range: size 0, alignment not a power of two... (``EINVAL``).

    Example:
        >>> issubclass(PoolValueError, ValueError)
        True
    """


class PoolOverflowError(PoolError, OverflowError):
    """A size computation would overflow (``EOVERFLOW``).

    Example:
        >>> issubclass(PoolOverflowError, OverflowError)
        True
    """


class ForeignBufferError(PoolValueError):
    """The memory was not handed out by this pool (``EFAULT``).

    Example:
        >>> issubclass(ForeignBufferError, ValueError)
        True
    """


class DoubleReleaseError(PoolValueError):
    """The block or lease was already released (``EALREADY``).

    Example:
        >>> issubclass(DoubleReleaseError, ValueError)
        True
    """


class LeaseReleasedError(PoolValueError):
    """A released lease was used again.

    Example:
        >>> issubclass(LeaseReleasedError, ValueError)
        True
    """


class PoolClosedError(PoolError, RuntimeError):
    """The pool is closed and accepts no new acquisitions (``ESHUTDOWN``).

    Example:
        >>> issubclass(PoolClosedError, RuntimeError)
        True
    """


class LeaseBusyError(PoolError, BufferError):
    """A strict release found views of the buffer still alive (``EBUSY``).

    Example:
        >>> issubclass(LeaseBusyError, BufferError)
        True
    """


class CorruptionError(PoolError, RuntimeError):
    """Debug mode found a canary overwritten or a write after free (``EILSEQ``).

    Example:
        >>> issubclass(CorruptionError, RuntimeError)
        True
    """


class NumaError(PoolValueError):
    """A NUMA node that does not exist or has no memory was named (``ENODEV``).

    Example:
        >>> issubclass(NumaError, ValueError)
        True
    """


#: The whole C-code-to-exception contract. Anything not listed becomes ``OSError``.
ERRNO_TO_EXC: dict[int, type[PoolError]] = {
    _errno.ENOMEM: PoolMemoryError,
    _errno.ENOSPC: PoolExhausted,
    _errno.EINVAL: PoolValueError,
    _errno.EOVERFLOW: PoolOverflowError,
    _errno.EFAULT: ForeignBufferError,
    _errno.EALREADY: DoubleReleaseError,
    _errno.ESHUTDOWN: PoolClosedError,
    _errno.EBUSY: LeaseBusyError,
    _errno.EILSEQ: CorruptionError,
    _errno.ENODEV: NumaError,
}


#: What each code of the table means here, in our words: the C library's text for some of them
#: says something else (EILSEQ is "Invalid or incomplete multibyte or wide character").
ERRNO_MESSAGES: dict[int, str] = {
    _errno.ENOMEM: "the operating system refused memory",
    _errno.ENOSPC: "the pool is at its capacity",
    _errno.EINVAL: "invalid argument",
    _errno.EOVERFLOW: "the size computation overflows",
    _errno.EFAULT: "the memory was not handed out by this pool",
    _errno.EALREADY: "already released",
    _errno.ESHUTDOWN: "the pool is closed",
    _errno.EBUSY: "views of the buffer are still alive",
    _errno.EILSEQ: "memory corruption detected (canary or poison overwritten)",
    _errno.ENODEV: "no such NUMA node, or the node has no memory",
}


def error_for(rc: int, context: str | None = None) -> Exception:
    """Build (not raise) the exception for C return code ``rc``.

    Example:
        >>> type(error_for(22)).__name__
        'PoolValueError'
        >>> str(error_for(84, "release"))
        'release: memory corruption detected (canary or poison overwritten)'
    """
    text = ERRNO_MESSAGES.get(rc) or os.strerror(rc)
    message = f"{context}: {text}" if context else text
    cls = ERRNO_TO_EXC.get(rc)
    if cls is None:
        return OSError(rc, message)
    return cls(message, rc)


def check_rc(rc: int, context: str | None = None) -> None:
    """Raise the mapped exception when ``rc`` is not 0.

    Example:
        >>> check_rc(0)  # success: nothing happens
    """
    if rc:
        raise error_for(rc, context)


class ForeignLeaseError(ForeignBufferError):
    """An ObjectPool was given a lease that it did not hand out (another pool's, or not a lease).

    Example:
        >>> issubclass(ForeignLeaseError, ForeignBufferError)
        True
    """
