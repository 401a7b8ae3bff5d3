"""Server metrics as a flat dict of numbers, and the same in Prometheus' text format.

Counters are kept as plain integer attributes on each connection (no shared lock, no dict
lookup per request) and folded into the server's totals when the connection closes; a
snapshot adds the live connections. Pool statistics are whatever the pools' ``stats()``
return (a mapping, a dataclass or an object with public attributes); numeric fields are
flattened under the pool's prefix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

__all__ = ["COUNTERS", "flatten_stats", "prometheus_text"]

#: Metric names that only grow (typed ``counter``); everything else is a ``gauge``.
COUNTERS = frozenset(
    {
        "connections_total",
        "requests_total",
        "bytes_in_total",
        "bytes_out_total",
        "errors_total",
        "accept_paused_total",
        "timeouts_total",
    }
)


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


def prometheus_text(metrics: Mapping[str, float], *, namespace: str = "poolalloc") -> str:
    """Render ``metrics`` in the Prometheus exposition format (version 0.0.4).

    Example:
        >>> print(prometheus_text({"requests_total": 3}), end="")
        # TYPE poolalloc_requests_total counter
        poolalloc_requests_total 3
    """
    lines = []
    for name in sorted(metrics):
        full = f"{namespace}_{name}"
        kind = "counter" if name in COUNTERS else "gauge"
        lines.append(f"# TYPE {full} {kind}")
        lines.append(f"{full} {_number(metrics[name])}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))
