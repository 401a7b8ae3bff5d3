"""Server metrics as a flat dict of numbers, and the same in Prometheus' text format.

Counters are kept as plain integer attributes on each connection (no shared lock, no dict
lookup per request) and folded into the server's totals when the connection closes; a
snapshot adds the live connections. Pool statistics are whatever the pools' ``stats()``
return (a mapping, a dataclass or an object with public attributes); numeric fields are
flattened under the pool's prefix.

In the exposition every metric has a ``# HELP`` and a ``# TYPE`` line. Figures that only grow
are ``counter``s and their names end in ``_total`` (a pool's ``acquires`` is exposed as
``poolalloc_buffer_pool_acquires_total``); everything else is a ``gauge``. The format is the
one ``prometheus_client``'s parser reads (the test suite uses it as the reference).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping

__all__ = ["COUNTERS", "COUNTER_FIELDS", "flatten_stats", "help_for", "prometheus_text"]

#: Server metric names that only grow (typed ``counter``).
COUNTERS = frozenset(
    {
        "connections_total",
        "requests_total",
        "bytes_in_total",
        "bytes_out_total",
        "errors_total",
        "accept_paused_total",
        "accept_dropped_total",
        "timeouts_total",
        "lingering_ended_total",
        "upload_leftovers_total",
    }
)

#: Pool statistics fields that only grow: the last part of a flattened name.
COUNTER_FIELDS = frozenset(
    {
        "acquires",
        "releases",
        "gc_returns",
        "refills",
        "drains",
        "allocs",
        "frees",
        "cache_hits",
        "cache_misses",
        "depot_exchanges",
        "trims",
        "trimmed_bytes",
        "failed_allocs",
        "huge_allocs",
        "created",
        "reused",
        "disposed",
        "timeouts",
        "invalid",
        "reset_failures",
        "retired",
    }
)

_SERVER_HELP = {
    "connections_total": "Connections accepted.",
    "connections_active": "Connections open now, not counting those lingering.",
    "connections_lingering": "Connections answered and closing, waiting for the peer's FIN "
    "(each still holds a connection slot until a new client needs it).",
    "lingering_ended_total": "Lingering closes ended early to make room for a new connection.",
    "requests_total": "Requests answered.",
    "bytes_in_total": "Bytes received.",
    "bytes_out_total": "Bytes sent.",
    "errors_total": "Requests refused as malformed or failed while being served.",
    "accept_paused_total": "Times accepting paused because the process ran out of descriptors "
    "or memory, or the server reached its connection limit.",
    "accept_waiting": "Connections accepted at the connection limit, waiting for a slot "
    "(io_uring; always 0 on epoll, where they wait in the listen backlog).",
    "accept_dropped_total": "Connections closed unanswered because the queue of those waiting "
    "for a slot was full (io_uring; always 0 on epoll).",
    "accepting": "1 while the server accepts connections, 0 while accepting is paused.",
    "timeouts_total": "Timeouts that ended a connection: idle, an unfinished request, a linger.",
    "upload_leftovers_total": "Uploads whose temporary part name could not be removed at the end.",
    "upload_leftovers_pending": "Temporary part names of uploads still waiting to be removed.",
    "overloaded_total": "Connections answered 503 because no read buffer was free (ASGI server).",
}

_PREFIX_HELP = {
    "buffer_pool_core": "Read-buffer pool's slab allocator",
    "buffer_pool": "Read-buffer pool",
    "connection_pool": "Connection-object pool",
}

_FIELD_HELP = {
    "acquires": "leases handed out",
    "releases": "leases given back",
    "gc_returns": "leases garbage-collected without release()",
    "refills": "batches of blocks taken from the allocator",
    "drains": "batches of blocks given back to the allocator",
    "block_size": "bytes per buffer",
    "capacity": "most buffers outstanding at once",
    "used": "buffers counted against the capacity",
    "peak": "high-water mark of used buffers",
    "outstanding": "leases whose block is not back yet",
    "live": "leases handed out and not released",
    "parked": "released leases whose block waits for its last view to die",
    "stashed": "ready blocks held in front of the allocator",
    "waiters": "threads or tasks waiting for a lease",
    "mapped_bytes": "bytes mapped from the kernel",
    "mapped_peak": "high-water mark of mapped bytes",
    "in_use_bytes": "bytes in blocks handed out",
    "in_use_blocks": "blocks handed out",
    "in_use_peak": "high-water mark of bytes in blocks handed out",
    "allocs": "blocks allocated",
    "frees": "blocks freed",
    "cache_hits": "allocations served by a thread cache",
    "cache_misses": "allocations that went past the thread cache",
    "depot_exchanges": "batches exchanged with the shared depot",
    "trims": "trims run",
    "trimmed_bytes": "bytes returned to the kernel by trims",
    "failed_allocs": "allocations refused",
    "huge_allocs": "allocations too large for a size class",
    "numa_node": "NUMA node the memory is bound to (-1: none, -2: each thread's local node)",
    "numa_bound": "1 when the memory is bound to a NUMA node",
    "closed": "1 once closed",
    "debug": "1 in debug mode",
    "max_size": "most objects alive at once",
    "created": "objects created",
    "reused": "borrows served by an idle object",
    "disposed": "objects disposed",
    "in_use": "objects lent out now",
    "idle": "idle objects kept",
    "waiting": "borrowers waiting now",
    "timeouts": "borrowers that gave up waiting",
    "invalid": "objects that failed validation on borrow",
    "reset_failures": "objects whose reset raised on return",
    "retired": "objects retired for their age",
}

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")


def flatten_stats(prefix: str, stats: object) -> dict[str, float]:
    """Numeric fields of a pool's ``stats()`` result as ``{prefix_field: value}``.

    Nested statistics (a BufferPool's ``core``: the allocator's own counters) are flattened
    under ``prefix_key``.

    Example:
        >>> flatten_stats("buffers", {"in_use": 2, "name": "x", "hit_rate": 0.5})
        {'buffers_in_use': 2, 'buffers_hit_rate': 0.5}
        >>> flatten_stats("buffers", {"core": {"mapped_bytes": 4096}})
        {'buffers_core_mapped_bytes': 4096}
    """
    if isinstance(stats, Mapping):
        items = dict(stats)
    elif dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        items = dataclasses.asdict(stats)
    else:
        items = {k: getattr(stats, k) for k in dir(stats) if not k.startswith("_")}
    out: dict[str, float] = {}
    for key, value in items.items():
        if isinstance(value, Mapping):
            out.update(flatten_stats(f"{prefix}_{key}", value))
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out[f"{prefix}_{key}"] = value
    return out


def _is_counter(name: str) -> bool:
    # a name ending in _total is a counter by the format's convention, whichever server made it
    # (the ASGI server's overloaded_total is not in COUNTERS); exposed as a gauge, it would lie
    if name in COUNTERS or name.endswith("_total"):
        return True
    return any(name.endswith(f"_{field}") for field in COUNTER_FIELDS) and name not in _SERVER_HELP


def help_for(name: str) -> str:
    """The ``# HELP`` text of metric ``name`` (a key of ``metrics()``).

    Example:
        >>> help_for("buffer_pool_core_allocs")
        "Read-buffer pool's slab allocator: blocks allocated."
        >>> help_for("requests_total")
        'Requests answered.'
    """
    if name in _SERVER_HELP:
        return _SERVER_HELP[name]
    for prefix, what in _PREFIX_HELP.items():
        field = name.removeprefix(f"{prefix}_")
        if field != name and field in _FIELD_HELP:
            return f"{what}: {_FIELD_HELP[field]}."
    return f"poolalloc figure {name}."


def prometheus_text(metrics: Mapping[str, float], *, namespace: str = "poolalloc") -> str:
    """Render ``metrics`` in the Prometheus text exposition format (version 0.0.4).

    :raises ValueError: a name is not a valid metric name, or two metrics would be exposed
        under one name (a gauge ``x`` beside a counter ``x_total``).

    Example:
        >>> print(prometheus_text({"requests_total": 3, "buffer_pool_acquires": 5}), end="")
        # HELP poolalloc_buffer_pool_acquires_total Read-buffer pool: leases handed out.
        # TYPE poolalloc_buffer_pool_acquires_total counter
        poolalloc_buffer_pool_acquires_total 5
        # HELP poolalloc_requests_total Requests answered.
        # TYPE poolalloc_requests_total counter
        poolalloc_requests_total 3
    """
    families: dict[str, str] = {}
    lines = []
    for name in sorted(metrics):
        counter = _is_counter(name)
        exposed = f"{namespace}_{name}"
        if counter and not exposed.endswith("_total"):
            exposed += "_total"
        if not _NAME.match(exposed):
            raise ValueError(f"{name!r} is not a valid Prometheus metric name")
        family = exposed.removesuffix("_total") if counter else exposed
        if family in families:
            raise ValueError(
                f"metrics {families[family]!r} and {name!r} would share the name {family!r}"
            )
        families[family] = name
        help_text = help_for(name).replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {exposed} {help_text}")
        lines.append(f"# TYPE {exposed} {'counter' if counter else 'gauge'}")
        lines.append(f"{exposed} {_number(metrics[name])}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
