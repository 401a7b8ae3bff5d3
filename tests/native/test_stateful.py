"""A hypothesis model of the allocator: random alloc/free/write/trim/close across class edges."""

from __future__ import annotations

import itertools

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from poolalloc import PoolClosedError, SlabPool, size_classes
from poolalloc.slab import Block

CLASSES = [bs for bs, _ in size_classes()]
EDGE_SIZES = sorted({n + d for n in CLASSES[:36] for d in (-1, 0, 1) if n + d > 0})
SIZES = st.one_of(
    st.sampled_from(EDGE_SIZES),
    st.integers(min_value=1, max_value=20000),
    st.sampled_from([CLASSES[-1], CLASSES[-1] + 1, (2 << 20) + 5]),
)
ALIGNMENTS = st.sampled_from([1, 8, 64, 128, 512, 4096])


class AllocatorModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pool = SlabPool(max_bytes=64 << 20)
        self.live: dict[int, tuple[Block, bytes]] = {}
        self.freed = 0
        self.counter = 0

    def _pattern(self, size: int) -> bytes:
        self.counter += 1
        stamp = self.counter.to_bytes(4, "little")
        return (stamp * ((min(size, 256) + 3) // 4))[: min(size, 256)]

    @precondition(lambda self: not self.pool.closed)
    @rule(size=SIZES, alignment=ALIGNMENTS)
    def alloc(self, size: int, alignment: int) -> None:
        block = self.pool.alloc(size, alignment)
        assert block.address not in self.live, "block handed out twice"
        pattern = self._pattern(size)
        block.write(0, pattern)
        if size > len(pattern):
            block.write(size - 1, pattern[:1])
        self.live[block.address] = (block, pattern)
        assert block.address % max(alignment, 64) == 0
        if block.block_size >= 4096:
            assert block.address % 4096 == 0

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        address = data.draw(st.sampled_from(sorted(self.live)))
        block, pattern = self.live.pop(address)
        assert block.read(0, len(pattern)) == pattern
        block.free()
        self.freed += 1

    @rule()
    def trim(self) -> None:
        self.pool.trim()

    @precondition(lambda self: not self.pool.closed)
    @rule()
    def close(self) -> None:
        self.pool.close()
        try:
            self.pool.alloc(64)
        except PoolClosedError:
            pass
        else:
            raise AssertionError("a closed pool handed out a block")

    @invariant()
    def blocks_do_not_overlap(self) -> None:
        spans = sorted((b.address, b.address + b.block_size) for b, _ in self.live.values())
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, "two live blocks overlap"

    @invariant()
    def contents_survive(self) -> None:
        for block, pattern in self.live.values():
            assert block.read(0, len(pattern)) == pattern
            if block.nbytes > len(pattern):
                assert block.read(block.nbytes - 1, 1) == pattern[:1]

    @invariant()
    def stats_balance(self) -> None:
        stats = self.pool.stats()
        assert stats.in_use_blocks == len(self.live)
        assert stats.allocs - stats.frees == stats.in_use_blocks
        assert stats.in_use_bytes == sum(b.block_size for b, _ in self.live.values())
        assert stats.in_use_peak >= stats.in_use_bytes
        assert stats.mapped_peak >= stats.mapped_bytes
        assert stats.mapped_bytes <= 64 << 20
        self.pool.check()

    def teardown(self) -> None:
        for block, _ in self.live.values():
            block.free()
        self.pool.close()
        assert self.pool.stats().mapped_bytes == 0


AllocatorModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAllocatorModel = AllocatorModel.TestCase
