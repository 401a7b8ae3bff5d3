"""Typed, immutable snapshots of a pool's statistics (built from the C ``pa_stats_t``).

Example:
    >>> from poolalloc import SlabPool
    >>> with SlabPool() as pool:
    ...     block = pool.alloc(100)
    ...     stats = pool.stats()
    ...     block.free()
    >>> stats.in_use_blocks, stats.allocs
    (1, 1)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self


def _ratio(hits: int, misses: int) -> float:
    total = hits + misses
    return hits / total if total else 0.0


@dataclass(frozen=True, slots=True)
class PoolStats:
    """One pool's figures at one moment; field meanings are those of ``pa_stats_t``.

    Example:
        >>> s = PoolStats.from_mapping({"allocs": 3, "cache_hits": 3})
        >>> s.hit_rate
        1.0
    """

    mapped_bytes: int = 0
    mapped_peak: int = 0
    in_use_bytes: int = 0
    in_use_blocks: int = 0
    in_use_peak: int = 0
    allocs: int = 0
    frees: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    depot_exchanges: int = 0
    trims: int = 0
    trimmed_bytes: int = 0
    failed_allocs: int = 0
    huge_allocs: int = 0
    numa_node: int = -1
    numa_bound: int = 0
    closed: int = 0
    debug: int = 0

    @property
    def hit_rate(self) -> float:
        """Share of allocations served by a thread cache (0.0 when there were none).

        Example:
            >>> PoolStats(cache_hits=3, cache_misses=1).hit_rate
            0.75
        """
        return _ratio(self.cache_hits, self.cache_misses)

    @classmethod
    def from_mapping(cls, values: Mapping[str, int]) -> Self:
        """Build from a mapping of C field names (unknown keys are ignored).

        Example:
            >>> PoolStats.from_mapping({"frees": 2, "other": 1}).frees
            2
        """
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: int(v) for k, v in values.items() if k in names})


@dataclass(frozen=True, slots=True)
class ClassStats:
    """One size class of one pool; field meanings are those of ``pa_class_stats_t``.

    Example:
        >>> ClassStats(block_size=64, cache_hits=1, cache_misses=1).hit_rate
        0.5
    """

    block_size: int = 0
    slab_bytes: int = 0
    slabs: int = 0
    in_use_blocks: int = 0
    free_blocks: int = 0
    allocs: int = 0
    frees: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    depot_exchanges: int = 0

    @property
    def hit_rate(self) -> float:
        """Share of this class's allocations served by a thread cache.

        Example:
            >>> ClassStats().hit_rate
            0.0
        """
        return _ratio(self.cache_hits, self.cache_misses)

    @classmethod
    def from_mapping(cls, values: Mapping[str, int]) -> Self:
        """Build from a mapping of C field names (unknown keys are ignored).

        Example:
            >>> ClassStats.from_mapping({"block_size": 128}).block_size
            128
        """
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: int(v) for k, v in values.items() if k in names})
